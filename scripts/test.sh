#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it is missing,
# then runs every check that gates a merge, and says how long each stage took.
#
# Two compiles, each done once (a fresh clone on 2 cores spends most of its time here):
# - the test build is also the clippy run: clippy-driver compiles this crate's targets
#   (cargo clippy's own mechanism: RUSTC_WORKSPACE_WRAPPER and CLIPPY_ARGS) while the
#   dependencies are compiled once by rustc, instead of once checked for clippy and once
#   built for the tests. Same targets (--all-targets), same lints, same -D warnings;
# - the release build serves the speed guard (benches/instructions.sh), the SDKs through
#   the proxy and the Debian package (scripts/deb-check.sh packs it with
#   `cargo deb --no-build`).
# The stages run in lanes, each lane its stages in order, side by side: the release build
# (niced) and the speed guard (instruction counts, which load does not move) start with
# the test build and take the CPU it leaves; once the test build is done, the tests and
# the SDK fixtures, tables and dashboards (scratch installs from PyPI and npm, little
# CPU) join them. The tests wait on sockets and child processes much of their time,
# which the release build fills. Then the SDKs through the proxy (with a restart) and
# the package, both on the release binary, side by side. A lane's output is printed
# whole when its group ends; the first failing stage fails the command.
set -euo pipefail
cd "$(dirname "$0")/.."
# One full build, not an edit loop: incremental compilation's saved state only costs here
# (and this crate compiles in 16 codegen units instead of 256). A plain `cargo test`
# afterwards recompiles this crate (not its dependencies) incrementally.
export CARGO_INCREMENTAL=0

logs=$(mktemp -d)
# On the way out (a stage failed), no lane is left running: each lane's commands (cargo,
# a script), then the lane.
stop_lanes() {
  local lane
  for lane in $(jobs -p); do
    pkill -TERM -P "$lane" 2>/dev/null || true
    kill "$lane" 2>/dev/null || true
  done
}
trap 'stop_lanes; rm -rf "$logs"' EXIT
# stage NAME COMMAND...: runs one check under a heading, and notes its time (in a file:
# lanes are subshells); a failure ends the script, or the lane it runs in.
stage() {
  local name=$1 started=$SECONDS
  shift
  echo "== $name"
  "$@" || { local rc=$?; echo "test.sh: stage failed: $name" >&2; exit "$rc"; }
  printf '%5ds  %s\n' $((SECONDS - started)) "$name" >> "$logs/timings"
}

# cargo clippy's driver for this crate, -D warnings: what `cargo clippy -- -D warnings` sets.
clippy_env=(
  "RUSTC_WORKSPACE_WRAPPER=$(rustc --print sysroot)/bin/clippy-driver"
  "CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
)

tests() { stage "cargo test" env "${clippy_env[@]}" cargo test --locked --all-targets; }
# Niced: it takes the CPU the tests leave, and yields it when a test wants it.
release() {
  stage "cargo build --release (the speed guard's, the SDK proxy's and the package's binary)" \
    nice -n 15 cargo build --release --locked
  stage "speed guard: instructions of a release scan against benches/instructions.baseline" \
    nice -n 15 env RUNWAY_BIN=target/release/runway-exporter benches/instructions.sh
}
sdks() {
  stage "SDK fixtures: tests/fixtures/sdk is what the pinned Runway SDKs write" \
    scripts/sdk-fixtures/run.sh --check
  stage "SDK tables: config/runway-api.toml is what the pinned Runway SDKs know" \
    scripts/sdk-tables/run.sh --check
  stage "Dashboards: dashboards/*.json is what dashboards/generate.py writes with the pinned SDK" \
    scripts/dashboards.sh --check
}

sdk_proxy() {
  stage "SDK proxy: the pinned Runway SDKs through the proxy (same answers, exact counts, a restart)" \
    env RUNWAY_BIN=target/release/runway-exporter scripts/sdk-proxy/run.sh
}
package() { stage "Debian package (of the release build above)" scripts/deb-check.sh --no-build; }

# start NAME...: starts the functions of those names, each in the background with its
# output in its own log. finish: waits for every lane started, prints each one's log
# whole, and fails when one failed.
started=()
start() {
  local name
  for name in "$@"; do
    ("$name") > "$logs/$name.log" 2>&1 &
    started+=("$name:$!")
  done
}
finish() {
  local lane failed=()
  for lane in "${started[@]}"; do
    wait "${lane#*:}" || failed+=("${lane%%:*}")
  done
  for lane in "${started[@]}"; do
    echo "== lane ${lane%%:*}"
    cat "$logs/${lane%%:*}.log"
  done
  started=()
  if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: failed in lane(s): ${failed[*]}" >&2
    return 1
  fi
}

stage "install what the tests need" scripts/install-test-deps.sh
stage "cargo fmt --check" cargo fmt --all -- --check
lanes_started=$SECONDS
# The release build starts now, niced: it takes what the test build leaves of the CPU
# (its last crates and links run on one core), and then what the tests leave.
start release
stage "cargo clippy -D warnings, and the test build (one compile)" \
  env "${clippy_env[@]}" cargo test --locked --all-targets --no-run
start tests sdks
finish
printf '%5ds  %s\n' $((SECONDS - lanes_started)) "(the test build and the three lanes, side by side)" >> "$logs/timings"
# Both want the release binary; neither takes much CPU.
start sdk_proxy package
finish

echo "== time per stage (${SECONDS}s in all)"
cat "$logs/timings"
# Every stage passed (set -e stops at the first that fails): the closing line says so.
echo "test.sh: $(grep -vc '(the test build and' "$logs/timings") passed, 0 failed"
