#!/usr/bin/env bash
# Writes config/runway-api.toml (Runway's routes, task-creating endpoints, their models,
# the task statuses and the usage report's models) with generate.py from the pinned SDKs,
# installed into a scratch dir by scripts/sdk-fixtures/install.sh and removed afterwards.
# The [legacy], [taskless] and [usage_alias] sections are kept by hand: generate.py reads
# them from the committed file and fails while a model the SDK knows is in none.
#
#   scripts/sdk-tables/run.sh           regenerate config/runway-api.toml
#   scripts/sdk-tables/run.sh --check   generate into a temp dir, diff against the
#                                       committed file, exit 1 on any difference
#   SDK_DIR=DIR scripts/sdk-tables/run.sh --check
#                                       use SDKs already installed in DIR (venv/, node/)
# Needs python3 (3.11) with venv and node 20 + npm; reaches only PyPI and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
table="$(cd "$here/../.." && pwd)/config/runway-api.toml"

case "${1:-}" in
  --check) check=1 ;;
  "") check=0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
sdk="${SDK_DIR:-$scratch}"
[ -n "${SDK_DIR:-}" ] || "$here/../sdk-fixtures/install.sh" "$scratch"

"$sdk/venv/bin/python" "$here/generate.py" "$table" "$scratch/runway-api.toml" "$sdk/node"
if [ "$check" = 0 ]; then
  cp "$scratch/runway-api.toml" "$table"
  echo "wrote $table (${SECONDS}s)"
  exit 0
fi
if ! diff -u "$table" "$scratch/runway-api.toml"; then
  echo "config/runway-api.toml differs from what the pinned SDKs know: run $0 and review" >&2
  exit 1
fi
echo "config/runway-api.toml matches the pinned SDKs (${SECONDS}s)"
