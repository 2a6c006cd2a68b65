#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it is missing,
# then runs every check that gates a merge.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
echo "== SDK fixtures: tests/fixtures/sdk is what the pinned Runway SDKs write"
scripts/sdk-fixtures/run.sh --check
echo "== Dashboards: dashboards/*.json is what dashboards/generate.py writes with the pinned SDK"
scripts/dashboards.sh --check
echo "== Debian package"
scripts/deb-check.sh
