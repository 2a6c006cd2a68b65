#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it is missing,
# then runs every check that gates a merge, and says how long each stage took.
#
# Two compiles, each done once (a fresh clone on 2 cores spends most of its time here):
# - the test build is also the clippy run: clippy-driver compiles this crate's targets
#   (cargo clippy's own mechanism: RUSTC_WORKSPACE_WRAPPER and CLIPPY_ARGS) while the
#   dependencies are compiled once by rustc, instead of once checked for clippy and once
#   built for the tests. Same targets (--all-targets), same lints, same -D warnings;
# - the release build serves the speed guard (benches/instructions.sh) and the Debian
#   package (scripts/deb-check.sh packs it with `cargo deb --no-build`).
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

# cargo clippy's driver for this crate, -D warnings: what `cargo clippy -- -D warnings` sets.
clippy_env=(
  "RUSTC_WORKSPACE_WRAPPER=$(rustc --print sysroot)/bin/clippy-driver"
  "CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
)

stage "install what the tests need" scripts/install-test-deps.sh
stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy -D warnings, and the test build (one compile)" \
  env "${clippy_env[@]}" cargo test --locked --all-targets --no-run
stage "cargo test" env "${clippy_env[@]}" cargo test --locked --all-targets
stage "cargo build --release (the speed guard's and the package's binary)" \
  cargo build --release --locked
stage "speed guard: instructions of a release scan against benches/instructions.baseline" \
  env RUNWAY_BIN=target/release/runway-exporter benches/instructions.sh
stage "SDK fixtures: tests/fixtures/sdk is what the pinned Runway SDKs write" \
  scripts/sdk-fixtures/run.sh --check
stage "SDK tables: config/runway-api.toml is what the pinned Runway SDKs know" \
  scripts/sdk-tables/run.sh --check
stage "Dashboards: dashboards/*.json is what dashboards/generate.py writes with the pinned SDK" \
  scripts/dashboards.sh --check
stage "Debian package (of the release build above)" scripts/deb-check.sh --no-build

echo "== time per stage (${SECONDS}s in all)"
printf '%s\n' "${timings[@]}"
# Every stage passed (set -e stops at the first that fails): the closing line says so.
echo "test.sh: ${#timings[@]} passed, 0 failed"
