#!/usr/bin/env bash
# Builds the .deb with cargo-deb, installs it with dpkg, and checks the installed
# binary and configuration. Part of scripts/test.sh; installs cargo-deb when missing
# (pinned, --locked: once per machine, ~/.cargo/bin keeps it).
#
# usage: scripts/deb-check.sh              (cargo deb builds the release binary)
#        scripts/deb-check.sh --no-build   (packs target/release/runway-exporter as it
#                                           is; scripts/test.sh has just built it)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deb_version=3.8.0

build=()
case "${1:-}" in
  --no-build) build=(--no-build) ;;
  "") ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac
if ! cargo deb --version >/dev/null 2>&1; then
  echo "deb-check: installing cargo-deb $cargo_deb_version" >&2
  cargo install --locked "cargo-deb@$cargo_deb_version" >/dev/null
fi
if [ ${#build[@]} -gt 0 ] && [ ! -x target/release/runway-exporter ]; then
  echo "deb-check: --no-build, and there is no target/release/runway-exporter" >&2
  exit 1
fi
cargo deb --locked "${build[@]}" >/dev/null
deb=$(ls -t target/debian/runway-exporter_*.deb | head -n 1)
echo "deb-check: $deb"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo dpkg -i "$deb" >/dev/null

fail() { echo "deb-check: FAILED: $*" >&2; exit 1; }
want_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
got=$(/usr/bin/runway-exporter --version)
[ "$got" = "runway-exporter $want_version" ] || fail "--version says '$got'"
/usr/bin/runway-exporter check-config --config /etc/runway-exporter/runway-exporter.toml >/dev/null \
  || fail "check-config on the installed configuration"
[ "$(stat -c %a /etc/runway-exporter/runway-api-key)" = 600 ] || fail "the API key file is not mode 600"
for f in /usr/lib/systemd/system/runway-exporter.service /etc/default/runway-exporter \
         /usr/share/runway-exporter/prometheus/rules.yml /usr/share/runway-exporter/dashboards/runway-overview.json \
         /usr/share/doc/runway-exporter/README.md /usr/share/doc/runway-exporter/docs/runbook.md; do
  [ -f "$f" ] || fail "$f is not installed"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /usr/lib/systemd/system/runway-exporter.service || fail "systemd-analyze verify"
fi
echo "deb-check: 1 passed, 0 failed"
