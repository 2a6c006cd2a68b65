#!/usr/bin/env bash
# Runway's real SDKs through the exporter's proxy (issue 24, points 4 and 5), with only
# RUNWAYML_BASE_URL changed. Installs pinned runwayml (Python) and @runwayml/sdk (Node)
# with scripts/sdk-fixtures/install.sh, and runs them against standin.py, a stand-in for
# Runway's API on 127.0.0.1 that serves several endpoints and models, failures, cancels
# and deletes, 429 and 5xx answers (decided by each request's prompt and attempt).
#
# 1. Same answers, exact counts. client.py and client.mjs run one plan straight to a
#    stand-in and, at the same time, through the proxy to another. Every object returned and every
#    error raised (with status, headers, body) must be the same both times (diff); the
#    stand-in must have got the same requests both times (method, path, end-to-end
#    headers, body); and the exporter's /metrics must hold the counts that follow from
#    what the stand-in answered: requests by endpoint, method and code, tasks created by
#    endpoint and model, tasks by status, failures by code, credits charged and lost.
# 2. Restart under a stream of SDK calls. Both SDKs create and poll tasks through the
#    proxy without pause; the exporter gets SIGTERM and is started again on the same
#    port. Every call must succeed (after the SDKs' own retries: two, 0.5 s then 1 s,
#    less up to 25 % jitter) and every request and task must be counted once. Prints how
#    long the port was closed and where that time went.
#
#   scripts/sdk-proxy/run.sh
# Environment: RUNWAY_BIN (default target/release/runway-exporter); RUNWAY_SDK_DIR, the
# absolute path of a directory install.sh filled already (default: a fresh install in a
# scratch dir). Exits 1 on any difference; the run after the install is bounded to 90 s.
# Needs python3 (3.11) and node 20 + npm; reaches only PyPI and npm; binds 127.0.0.1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(cd "$root" && realpath "${RUNWAY_BIN:-target/release/runway-exporter}")"
[ -x "$bin" ] || { echo "$0: no exporter binary at $bin (cargo build --release)" >&2; exit 2; }

scratch="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 124' TERM INT
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 RUNWAYML_API_SECRET=key_sdk_proxy_check

sdk="${RUNWAY_SDK_DIR:-}"
if [ -z "$sdk" ]; then
  sdk="$scratch/sdk"
  "$here/../sdk-fixtures/install.sh" "$sdk"
fi
cp "$here/client.mjs" "$scratch/client.mjs"
ln -s "$sdk/node/node_modules" "$scratch/node_modules"
py="$sdk/venv/bin/python"
check="python3 $here/check.py"
started=$SECONDS
# A deadline for the whole run, whatever hangs: the SDKs' own timeouts are minutes.
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep 90 &
  s=$!
  wait "$s"
  echo "$0: over 90 s, stopping" >&2
  kill -TERM $$
) &
watchdog=$!
pids+=("$watchdog")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_standin() { # $1: name; sets $standin (its base URL)
  python3 "$here/standin.py" serve "$scratch/$1.port" &
  pids+=($!)
  for _ in $(seq 200); do [ -s "$scratch/$1.port" ] && break; sleep 0.05; done
  standin="http://127.0.0.1:$(cat "$scratch/$1.port")"
}
# configure NAME UPSTREAM PROXY_PORT: writes NAME.toml (state in NAME.state/, /metrics on a
# port of its own) and sets $metrics (its /metrics URL).
configure() {
  local metrics_port
  metrics_port="$(free_port)"
  cat >"$scratch/$1.toml" <<EOF
[web]
listen_address = "127.0.0.1:$metrics_port"
[log]
format = "json"
[state]
dir = "$scratch/$1.state"
commit_interval = "200ms"
[proxy]
enabled = true
listen = "127.0.0.1:$3"
upstream = "$2"
EOF
  metrics="http://127.0.0.1:$metrics_port/metrics"
}
launch() { # $1: NAME; starts the exporter on NAME.toml, sets $exporter (its pid)
  "$bin" --config "$scratch/$1.toml" 2>>"$scratch/$1.log" &
  exporter=$!
  pids+=("$exporter")
}
# Both SDKs run the plan side by side against $1; answers into $2.{py,node}.json.
run_plan() {
  RUNWAYML_BASE_URL="$1" "$py" "$here/client.py" plan "$scratch/plan.json" "$2.py.json" &
  local p=$!
  (cd "$scratch" && RUNWAYML_BASE_URL="$1" node client.mjs plan "$scratch/plan.json" "$2.node.json")
  wait "$p"
}
stop() { # $1: pid; SIGTERM, and its exit status must be 0
  kill -TERM "$1"
  wait "$1"
}

echo "== 1. the SDKs straight to a stand-in, and through the proxy to another"
python3 "$here/standin.py" plan >"$scratch/plan.json"
start_standin direct
direct="$standin"
start_standin proxied
proxy_port="$(free_port)"
configure one "$standin" "$proxy_port"
launch one
$check wait-port "$proxy_port" 10 >/dev/null
# Both routes at once (each its own stand-in): the answers do not depend on timing.
run_plan "$direct" "$scratch/direct" &
straight=$!
run_plan "http://127.0.0.1:$proxy_port" "$scratch/proxied"
wait "$straight"
$check get "$direct/_record" >"$scratch/direct.record.json"
$check get "$standin/_record" >"$scratch/proxied.record.json"
failed=0
for sdk_name in py node; do
  if diff -u "$scratch/direct.$sdk_name.json" "$scratch/proxied.$sdk_name.json" >"$scratch/$sdk_name.diff"; then
    echo "$sdk_name: every answer and error the same through the proxy ($(grep -c '"call"' "$scratch/direct.$sdk_name.json") calls)"
  else
    echo "$sdk_name: answers differ through the proxy:" >&2
    head -40 "$scratch/$sdk_name.diff" >&2
    failed=1
  fi
done
$check requests "$scratch/direct.record.json" "$scratch/proxied.record.json" || failed=1
$check metrics "$scratch/proxied.record.json" "$metrics" || failed=1
stop "$exporter"
[ "$failed" = 0 ] || { echo "$0: the SDKs through the proxy: FAILED" >&2; exit 1; }
echo "(part 1: $((SECONDS - started)) s)"

echo "== 2. restart under a stream of SDK calls"
start_standin stream
proxy_port="$(free_port)"
configure two "$standin" "$proxy_port"
launch two
$check wait-port "$proxy_port" 10 >/dev/null
# 4 Python threads and 2 Node loops, each creating 30 tasks (Node: 50) and polling each to
# its end (4 requests a task): 880 requests, with no pause between them.
RUNWAYML_BASE_URL="http://127.0.0.1:$proxy_port" "$py" "$here/client.py" stream 4 30 "$scratch/stream.py.json" &
stream_py=$!
(cd "$scratch" && RUNWAYML_BASE_URL="http://127.0.0.1:$proxy_port" node client.mjs stream 2 50 "$scratch/stream.node.json") &
stream_node=$!
# The restart comes once the stream is well under way.
before="$($check wait-count "$standin" 150 30)"
# A watcher connects every 2 ms: how long the port refuses connections.
$check outage "$proxy_port" 20 "$scratch/watching" >"$scratch/outage" &
watcher=$!
for _ in $(seq 200); do [ -e "$scratch/watching" ] && break; sleep 0.01; done
t0=$(date +%s%N)
kill -TERM "$exporter"
wait "$exporter"
t1=$(date +%s%N)
launch two
wait "$watcher"
read -r closed_at open_at <"$scratch/outage"
ms() { echo $((($2 - $1) / 1000000)); }
echo "restart at request $before of 880: the port refused connections for $(ms "$closed_at" "$open_at") ms" \
  "(SIGTERM to port closed $(ms "$t0" "$closed_at") ms, to exit $(ms "$t0" "$t1") ms;" \
  "exit to listening again $(ms "$t1" "$open_at") ms; seen every 2 ms)"
stream_failed=0
wait "$stream_py" || stream_failed=1
wait "$stream_node" || stream_failed=1
$check get "$standin/_record" >"$scratch/stream.record.json"
if [ "$stream_failed" = 1 ]; then
  echo "$0: SDK calls failed across the restart:" >&2
  python3 -c 'import json, sys; [print(e, file=sys.stderr) for f in sys.argv[1:] for e in json.load(open(f))["errors"]]' \
    "$scratch/stream.py.json" "$scratch/stream.node.json"
  exit 1
fi
$check stream "$scratch/stream.record.json" "$metrics" "$scratch/stream.py.json" "$scratch/stream.node.json"
stop "$exporter"
kill "$watchdog" 2>/dev/null || true
echo "sdk-proxy: both SDKs through the proxy, and a restart under their calls: passed ($((SECONDS - started)) s)"
