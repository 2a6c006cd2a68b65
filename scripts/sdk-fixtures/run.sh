#!/usr/bin/env bash
# Makes tests/fixtures/sdk/ with Runway's real SDKs: installs pinned runwayml (Python) and
# @runwayml/sdk (Node) into a scratch dir (install.sh), points them at standin.py (a stand-in for
# Runway's API on 127.0.0.1) and lets write_python.py / write_node.mjs log its tasks the
# ways applications do; expected.json (the counts the exporter must find) comes from the
# stand-in's task table.
#
#   scripts/sdk-fixtures/run.sh OUT_DIR   write the fixtures into OUT_DIR
#   scripts/sdk-fixtures/run.sh --check   regenerate into a temp dir, diff -r against
#                                         tests/fixtures/sdk/, exit 1 on any difference
# Needs python3 (3.11) and node 20 + npm; reaches only PyPI and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
committed="$(cd "$here/../.." && pwd)/tests/fixtures/sdk"

case "${1:-}" in
  --check) check=1 ;;
  ""|-*) echo "usage: $0 OUT_DIR | --check" >&2; exit 2 ;;
  *) check=0; mkdir -p "$1"; out="$(cd "$1" && pwd)" ;;
esac

scratch="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
[ "$check" = 1 ] && out="$scratch/out" && mkdir "$out"
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1

# Install both SDKs side by side, quietly (pinned in install.sh and requirements.txt).
"$here/install.sh" "$scratch"
cp "$here/write_node.mjs" "$scratch/node/"

# One stand-in per writer: each GET steps a task through its timeline, from the start.
start_standin() { # $1: port file; sets $base
  python3 "$here/standin.py" serve "$1" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.05; done
  base="http://127.0.0.1:$(cat "$1")"
}
python3 "$here/standin.py" plan >"$scratch/plan.json"
start_standin "$scratch/port.py"
"$scratch/venv/bin/python" "$here/write_python.py" "$base" "$scratch/plan.json" "$out" &
py_pid=$!
start_standin "$scratch/port.node"
(cd "$scratch/node" && node write_node.mjs "$base" "$scratch/plan.json" "$out") &
node_pid=$!
wait "$py_pid"
wait "$node_pid"
python3 "$here/standin.py" expected >"$out/expected.json"

if [ "$check" = 1 ]; then
  if ! diff -r --exclude=README.md "$committed" "$out"; then
    echo "tests/fixtures/sdk/ differs from what the SDKs write now: run $0 tests/fixtures/sdk" >&2
    exit 1
  fi
  echo "tests/fixtures/sdk/ matches the SDKs' output (${SECONDS}s)"
else
  echo "wrote $(ls "$out" | wc -l) files to $out (${SECONDS}s)"
fi
