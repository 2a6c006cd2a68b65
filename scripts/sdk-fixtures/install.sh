#!/usr/bin/env bash
# Installs Runway's SDKs, pinned, side by side into a scratch dir, quietly:
# runwayml with its dependencies (requirements.txt) into DIR/venv, @runwayml/sdk into
# DIR/node. Used by scripts/sdk-fixtures/run.sh and scripts/sdk-tables/run.sh.
#
#   scripts/sdk-fixtures/install.sh DIR
# Needs python3 (3.11) with venv and node 20 + npm; reaches only PyPI and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
NODE_SDK="@runwayml/sdk@4.20.1"
[ $# = 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir="$1"

python3 -m venv "$dir/venv" || { echo "python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
"$dir/venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" &
pip_pid=$!
mkdir -p "$dir/node"
npm install --prefix "$dir/node" --no-audit --no-fund --loglevel=error --ignore-scripts \
  --no-package-lock --save-exact "$NODE_SDK" >/dev/null &
npm_pid=$!
wait "$pip_pid"
wait "$npm_pid"
