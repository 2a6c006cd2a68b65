#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it is missing,
# then runs every check that gates a merge, and says how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."

timings=()
# stage NAME COMMAND...: runs one check under a heading, and notes its time.
stage() {
  local name=$1 started=$SECONDS
  shift
  echo "== $name"
  "$@"
  timings+=("$(printf '%5ds  %s' $((SECONDS - started)) "$name")")
}

stage "install what the tests need" scripts/install-test-deps.sh
stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy" cargo clippy --locked --all-targets -- -D warnings
stage "cargo test" cargo test --locked --all-targets
stage "SDK fixtures: tests/fixtures/sdk is what the pinned Runway SDKs write" \
  scripts/sdk-fixtures/run.sh --check
stage "SDK tables: config/runway-api.toml is what the pinned Runway SDKs know" \
  scripts/sdk-tables/run.sh --check
stage "Dashboards: dashboards/*.json is what dashboards/generate.py writes with the pinned SDK" \
  scripts/dashboards.sh --check
stage "Debian package" scripts/deb-check.sh

echo "== time per stage (${SECONDS}s in all)"
printf '%s\n' "${timings[@]}"
# Every stage passed (set -e stops at the first that fails): the closing line says so.
echo "test.sh: ${#timings[@]} passed, 0 failed"
