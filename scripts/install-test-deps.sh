#!/usr/bin/env bash
# Installs what the test suite needs and the machine lacks, from Debian's packages:
#   promtool (package prometheus): checks every /metrics exposition and the alert rules;
#   systemd-analyze (package systemd): verifies and rates the systemd unit;
#   chromium: loads the status page headless and checks what a person would see;
#   python3 with venv and node with npm: scripts/sdk-fixtures/run.sh installs the pinned
#   Runway SDKs from PyPI and npm into a scratch dir and runs them; scripts/dashboards.sh
#   installs the pinned grafana-foundation-sdk from PyPI the same way;
#   faketime (its dependency libfaketime holds the preloaded library): steps the wall
#   clock of a running daemon back and forward (tests/it/clock.rs);
#   valgrind (callgrind) and bc: benches/instructions.sh counts the instructions of a
#   release scan and compares them with the committed baseline.
# Idempotent: installs nothing when everything is there.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v bc >/dev/null 2>&1 || missing+=(bc)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-test-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The prometheus package's post-install may try to start the service; where there is no
# init system that is harmless, and the tests start their own instances anyway.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for tool in promtool systemd-analyze chromium node npm faketime valgrind bc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing after install" >&2; exit 1; }
done
