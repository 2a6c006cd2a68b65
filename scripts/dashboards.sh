#!/usr/bin/env bash
# Writes the Grafana dashboards (dashboards/*.json) with dashboards/generate.py and the
# pinned grafana-foundation-sdk (dashboards/requirements.txt), installed from PyPI into
# a scratch venv that is removed afterwards.
#
#   scripts/dashboards.sh           regenerate the dashboards in dashboards/
#   scripts/dashboards.sh --check   generate into a temp dir, diff against the committed
#                                   files, exit 1 on any difference
# Needs python3 (3.11) with venv; reaches only PyPI.
set -euo pipefail
dashboards="$(cd "$(dirname "$0")/../dashboards" && pwd)"

case "${1:-}" in
  --check) check=1 ;;
  "") check=0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv" || { echo "python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
"$scratch/venv/bin/pip" install -q --disable-pip-version-check -r "$dashboards/requirements.txt"

if [ "$check" = 0 ]; then
  "$scratch/venv/bin/python" "$dashboards/generate.py" "$dashboards"
  echo "wrote the dashboards in $dashboards (${SECONDS}s)"
  exit 0
fi

mkdir "$scratch/out"
"$scratch/venv/bin/python" "$dashboards/generate.py" "$scratch/out"
status=0
for new in "$scratch/out"/*.json; do
  diff -u "$dashboards/$(basename "$new")" "$new" || status=1
done
if [ "$status" != 0 ]; then
  echo "dashboards/ differs from what dashboards/generate.py writes: run $0" >&2
  exit 1
fi
echo "dashboards/*.json match dashboards/generate.py (${SECONDS}s)"
