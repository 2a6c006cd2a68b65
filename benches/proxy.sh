#!/usr/bin/env bash
# The proxy against nginx (issue 24 point 6), all on 127.0.0.1, in one run:
#   - a stand-in of Runway's API: nginx (Debian's package, its own prefix and config in a
#     temp dir, one worker) answering canned JSON: GET /v1/tasks/{id} a RUNNING task,
#     POST /v1/image_to_video a create answer; /v1/sink streams a body on to
#     benches/proxy-sink.py, which reads it whole and only then answers;
#   - nginx as a reverse proxy in front of it: proxy_pass to an upstream with HTTP/1.1
#     keepalive, 2 workers (the exporter's proxy has one thread a core: 2 here), and
#     streaming like the exporter's: `proxy_request_buffering off; proxy_buffering off;`
#     (by default nginx would spool bodies to memory and temp files), no body size
#     limit, no access log;
#   - runway-exporter (release build, `[proxy] enabled = true`, upstream = the stand-in,
#     state dir in the temp dir, no task logs, log level warn) in front of the same.
# wrk (`--latency`, benches/proxy-wrk.lua) measures, for GET of a task and POST of a small
# create body, at 1 and 64 connections: p50, p99 and requests/s directly, through nginx
# and through the exporter, alternating targets; the added latency is through-proxy minus
# direct; and the CPU time (user + system, from /proc) each proxy's processes spent per
# request in that run, the figure the VM's noise moves least. Then 16 clients upload 2 MB and then 20 MB bodies through each proxy (POST
# /v1/sink) and the table shows each proxy's peak RSS in that phase (VmHWM, reset with
# /proc/PID/clear_refs before it; for nginx the sum of its workers' peaks).
#
# Prints a markdown table. With --check, exits 1 when a goal is missed: the exporter's
# added p50 and p99 at or below nginx's (GET and POST, 1 and 64 connections), its added
# p99 at 1 connection under 1 ms, and its peak RSS with 20 MB bodies within 4 MiB of its
# peak with 2 MB bodies. On a shared VM one run is noisy (latencies move by tens of
# percent from minute to minute): the table, the load average it prints and ROUNDS > 1
# are what to read; --check is a tripwire, not a verdict.
#
# With --instructions, the two proxies are measured under valgrind's callgrind: the
# instructions the exporter's whole process (every thread: the proxy threads, the
# observation consumer) executes a request, for GET and create at 64 connections, counted
# from after a warm-up to the end of a run of DURATION seconds, commits set an hour apart
# so that no periodic work is in the count; and beside it nginx's, one process doing all
# the work (`master_process off`, one worker: callgrind follows one process), counted the
# same way; and the floor under both, benches/relay-floor (the least work an HTTP/1.1
# keep-alive relay does a request: each head parsed, the body's end found, the bytes moved;
# nothing checked, rewritten or observed). Timings move by tens of percent on this VM;
# these counts move by a few percent (the exporter's: how requests fall into the
# consumer's batches), so they are the figures to compare two builds by (EXPORTER_BIN),
# and the user-space work of the proxies by.
#
# With --syscalls, the system calls a request of the threads that serve requests (nginx's
# workers; the exporter's proxy threads, not its consumer or committer), counted by
# `strace -c` for GET and create at 1 and 64 connections: a count that moves little from
# run to run, beside nginx's. Exits 1 when the exporter's proxy threads make more than
# nginx's workers at one connection (with 0.1 a request of slack for a run's edges).
#
# usage: benches/proxy.sh [--check | --instructions | --syscalls]
#        DURATION=10 ROUNDS=1 UPLOAD_DURATION=6 benches/proxy.sh   (defaults; seconds;
#        with ROUNDS > 1 each figure is the median of the rounds)
#        EXPORTER_BIN=path benches/proxy.sh   (measure that binary; no cargo build of the
#        exporter: --instructions still builds benches/relay-floor, a few seconds)
# Installs wrk and nginx (and for --syscalls strace) from Debian's packages when missing (as
# scripts/install-test-deps.sh does); runs as any user, never touches a system nginx.
set -euo pipefail
# A failure inside $(...) ends the script too (counted, below, runs in one).
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
check=0
instructions=0
syscalls=0
case "${1:-}" in
  --check) check=1 ;;
  --instructions) instructions=1 ;;
  --syscalls) syscalls=1 ;;
  "") ;;
  *) echo "usage: benches/proxy.sh [--check | --instructions | --syscalls]" >&2; exit 64 ;;
esac
duration=${DURATION:-10}
rounds=${ROUNDS:-1}
upload_duration=${UPLOAD_DURATION:-6}

# --- tools ----------------------------------------------------------------------------
nginx_bin() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -n "$(nginx_bin)" ] || missing+=(nginx)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ "$syscalls" = 0 ] || command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
  echo "proxy bench: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "proxy bench: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # The nginx package's post-install may start the system's nginx where an init system
  # runs; this script never uses it (its own instances have their own prefix and ports).
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  command -v wrk >/dev/null 2>&1 || { echo "proxy bench: wrk still missing after install" >&2; exit 1; }
  [ -n "$(nginx_bin)" ] || { echo "proxy bench: nginx still missing after install" >&2; exit 1; }
fi
nginx=$(nginx_bin)
if [ "$instructions" = 1 ] && ! command -v valgrind >/dev/null 2>&1; then
  echo "proxy bench: valgrind is not installed (scripts/install-test-deps.sh)" >&2; exit 1
fi
if [ "$instructions" = 1 ]; then
  CARGO_TARGET_DIR=target/relay-floor cargo build --release --locked -q \
    --manifest-path benches/relay-floor/Cargo.toml
fi
if [ -n "${EXPORTER_BIN:-}" ]; then
  bin=$EXPORTER_BIN
else
  cargo build --release --locked -q
  bin=target/release/runway-exporter
fi

# --- set-up ---------------------------------------------------------------------------
work=$(mktemp -d)
# nginx started by root runs its workers as nobody: they must reach their prefix.
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
standin_port=$(free_port); sink_port=$(free_port); nginx_port=$(free_port); exporter_port=$(free_port)
floor_port=$(free_port)

# wait_http PORT PATH: until something answers there with any status (30 s at most).
wait_http() {
  for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  echo "proxy bench: nothing answers on 127.0.0.1:$1" >&2; exit 1
}

# nginx_conf NAME WORKERS SERVER-BLOCK-BODY UPSTREAMS [MAIN]: an nginx whose every path is
# under $work/NAME; MAIN, more directives of the main context.
nginx_conf() {
  local dir=$work/$1
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<EOF
daemon off;
worker_processes $2;
${5:-}
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 10000000;
  client_max_body_size 0;
  $4
  server {
    $3
  }
}
EOF
}

task_id=17f20503-6c24-4c16-946b-35dbbce2af2f
task_json="{\"id\":\"$task_id\",\"status\":\"RUNNING\",\"createdAt\":\"2026-12-06T09:00:00.000Z\",\"progress\":0.42,\"estimatedCost\":{\"credits\":50}}"
create_json="{\"id\":\"$task_id\",\"estimatedCost\":{\"credits\":50}}"
# Streaming both ways, HTTP/1.1 keepalive to the upstream: as the exporter forwards.
streaming="proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_request_buffering off; proxy_buffering off;"

nginx_conf standin 1 "
    listen 127.0.0.1:$standin_port;
    default_type application/json;
    location /v1/tasks/ { return 200 '$task_json'; }
    location = /v1/image_to_video { return 200 '$create_json'; }
    location = /v1/sink { proxy_pass http://sink; $streaming }" \
  "upstream sink { server 127.0.0.1:$sink_port; keepalive 32; keepalive_requests 10000000; }"
# Under callgrind (--instructions), one process: callgrind follows the one it starts.
proxy_workers=2 proxy_main=""
[ "$instructions" = 1 ] && proxy_workers=1 proxy_main="master_process off;"
nginx_conf nginx "$proxy_workers" "
    listen 127.0.0.1:$nginx_port;
    location /v1/ { proxy_pass http://standin; proxy_set_header Host 127.0.0.1:$standin_port; $streaming }" \
  "upstream standin { server 127.0.0.1:$standin_port; keepalive 64; keepalive_requests 10000000; }" \
  "$proxy_main"
mkdir -p "$work/exporter/state"
commit_interval=1s
[ "$instructions" = 1 ] && commit_interval=1h
cat > "$work/exporter/runway-exporter.toml" <<EOF
[state]
dir = "$work/exporter/state"
commit_interval = "$commit_interval"
[proxy]
enabled = true
listen = "127.0.0.1:$exporter_port"
upstream = "http://127.0.0.1:$standin_port"
EOF

# start_nginx NAME [callgrind] / start_exporter: set $started to the new process's id.
# Under callgrind (--instructions) a process writes its counts to $work/NAME.callgrind.N.
start_nginx() {
  local under=()
  [ "${2:-}" = callgrind ] && under=(valgrind --tool=callgrind -q --callgrind-out-file="$work/$1.callgrind")
  "${under[@]}" "$nginx" -p "$work/$1" -c "$work/$1/nginx.conf" -e "$work/$1/error.log" & started=$!; pids+=($started)
}
start_exporter() {
  local under=()
  [ "$instructions" = 1 ] && under=(valgrind --tool=callgrind -q --callgrind-out-file="$work/exporter.callgrind")
  "${under[@]}" "$bin" --config "$work/exporter/runway-exporter.toml" --web.listen-address 127.0.0.1:0 \
    --log.level warn 2>> "$work/exporter/stderr.log" & started=$!; pids+=($started)
}
# stop PID: ends one of the processes this script started, and waits for it.
stop() {
  kill "$1"; wait "$1" 2>/dev/null || true
  local p kept=(); for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done; pids=("${kept[@]}")
}
python3 benches/proxy-sink.py "$sink_port" & pids+=($!)
start_nginx standin; standin_master=$started
start_nginx nginx "$([ "$instructions" = 1 ] && echo callgrind)"; nginx_master=$started
start_exporter; exporter=$started
for port in $sink_port $standin_port $nginx_port $exporter_port; do wait_http "$port" /v1/tasks/x; done
nginx_workers() { ps -o pid= --ppid "$nginx_master" | tr -d ' '; }
# cpu_ticks PID...: their user + system CPU time so far, in clock ticks.
cpu_ticks() { local s=0 p; for p in "$@"; do s=$(( s + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done; echo $s; }
# serving_pids TARGET: the processes that do the work of TARGET's requests.
serving_pids() {
  case $1 in
    direct) ps -o pid= --ppid "$standin_master" | tr -d ' ' ;;
    nginx) nginx_workers ;;
    exporter) echo "$exporter" ;;
  esac
}
tick_us=$(( 1000000 / $(getconf CLK_TCK) ))

# --- latency --------------------------------------------------------------------------
declare -A port=([direct]=$standin_port [nginx]=$nginx_port [exporter]=$exporter_port)
# run_wrk TARGET CONNECTIONS SECONDS TIMEOUT MODE...: prints wrk's RESULT line.
run_wrk() {
  local target=$1 conns=$2 secs=$3 timeout=$4; shift 4
  local threads=$(( conns < 2 ? 1 : 2 ))
  local out
  out=$(wrk --latency -t"$threads" -c"$conns" -d"${secs}s" --timeout "${timeout}s" \
    -s benches/proxy-wrk.lua "http://127.0.0.1:${port[$target]}" -- "$@") \
    || { echo "proxy bench: wrk failed against $target" >&2; exit 1; }
  local line; line=$(grep '^RESULT ' <<< "$out")
  local errors non2xx
  errors=$(sed -E 's/.* errors=([0-9]+).*/\1/' <<< "$line")
  non2xx=$(sed -E 's/.* non2xx=([0-9]+).*/\1/' <<< "$line")
  if [ "$errors" != 0 ] || [ "$non2xx" != 0 ]; then
    echo "proxy bench: $target $* at $conns connections: $errors socket errors, $non2xx error answers" >&2
    exit 1
  fi
  echo "$line"
}
field() { sed -E "s/.* $1=([0-9]+).*/\1/" <<< "$2"; }

# --- instructions (--instructions) ------------------------------------------------------
# counted TARGET MODE DUMP: instructions a request of TARGET's process (under callgrind)
# in one run of MODE at 64 connections, after a warm-up; its counts dumped as number DUMP.
counted() {
  local pid=${callgrinded[$1]}
  run_wrk "$1" 64 2 30 "$2" > /dev/null   # warm-up: connections, first allocations
  callgrind_control -z "$pid" > /dev/null 2>&1
  local line; line=$(run_wrk "$1" 64 "$duration" 30 "$2")
  callgrind_control -d "$pid" > /dev/null 2>&1
  local ir; ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$work/$1.callgrind.$3")
  [ -n "$ir" ] || { echo "proxy bench: no callgrind count in $work/$1.callgrind.$3" >&2; exit 1; }
  echo $(( ir / $(field requests "$line") ))
}
if [ "$instructions" = 1 ]; then
  valgrind --tool=callgrind -q --callgrind-out-file="$work/floor.callgrind" \
    target/relay-floor/release/relay-floor "127.0.0.1:$standin_port" "127.0.0.1:$floor_port" \
    2>> "$work/floor.log" & floor=$!; pids+=($floor)
  wait_http "$floor_port" /v1/tasks/x
  port[floor]=$floor_port
  declare -A callgrinded=([floor]=$floor [nginx]=$nginx_master [exporter]=$exporter)
  echo "| request | clients | instructions a request: floor | nginx | exporter | exporter / nginx |"
  echo "|---|---|---|---|---|---|"
  dump=0
  for mode in get create; do
    dump=$((dump + 1))
    floor_ir=$(counted floor "$mode" "$dump")
    nginx_ir=$(counted nginx "$mode" "$dump")
    exporter_ir=$(counted exporter "$mode" "$dump")
    label="GET /v1/tasks/{id}"; [ "$mode" = create ] && label="POST /v1/image_to_video"
    ratio=$(python3 -c "print(f'{$exporter_ir / $nginx_ir:.2f}')")
    echo "| $label | 64 | $floor_ir | $nginx_ir | $exporter_ir | $ratio |"
  done
  exit 0
fi

# --- system calls (--syscalls) ---------------------------------------------------------
# serving_threads TARGET: the ids of the threads (nginx: processes) that serve TARGET's
# requests.
serving_threads() {
  case $1 in
    nginx) nginx_workers ;;
    exporter) grep -l '^proxy-' /proc/"$exporter"/task/*/comm | cut -d/ -f5 ;;
  esac
}
if [ "$syscalls" = 1 ]; then
  for mode in get create; do
    for target in nginx exporter; do run_wrk "$target" 8 1 5 "$mode" > /dev/null; done  # warm-up
  done
  for mode in get create; do
    for conns in 1 64; do
      for target in nginx exporter; do
        traced=()
        for t in $(serving_threads "$target"); do traced+=(-p "$t"); done
        strace -c -q -o "$work/strace" "${traced[@]}" & tracer=$!
        # strace attaches within a moment; calls made before it has are not counted, so
        # at most a fraction of a request a run is missed either way.
        sleep 1
        line=$(run_wrk "$target" "$conns" "$duration" 30 "$mode")
        kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
        # strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall.
        awk -v k="$mode $conns $target $(field requests "$line")" \
          '$1 ~ /^[0-9.]+$/ && $NF != "total" {print k, $NF, $4}' "$work/strace" >> "$work/syscalls"
      done
    done
  done
  python3 - "$work/syscalls" <<'EOF'
import collections, sys
requests, calls = {}, collections.defaultdict(dict)
for line in open(sys.argv[1]):
    mode, conns, target, n, name, c = line.split()
    requests[(mode, conns, target)] = max(int(n), 1)
    calls[(mode, conns, target)][name] = int(c)
print("| request | clients | serving | requests | system calls a request | the most frequent, a request |")
print("|---|---|---|---|---|---|")
missed = []
for mode, label in (("get", "GET /v1/tasks/{id}"), ("create", "POST /v1/image_to_video")):
    for conns in ("1", "64"):
        total = {}
        for target, who in (("nginx", "nginx workers"), ("exporter", "exporter proxy threads")):
            k = (mode, conns, target)
            n = requests[k]
            total[target] = sum(calls[k].values()) / n
            top = sorted(calls[k].items(), key=lambda kv: -kv[1])[:5]
            names = ", ".join(f"{name} {c / n:.2f}" for name, c in top)
            print(f"| {label} | {conns} | {who} | {n:,} | {total[target]:.2f} | {names} |")
        if conns == "1" and total["exporter"] > total["nginx"] + 0.1:
            missed.append(f"{label} at 1: the exporter's proxy threads make {total['exporter']:.2f} a request, nginx's workers {total['nginx']:.2f}")
for m in missed:
    print(f"- more system calls than nginx: {m}")
sys.exit(1 if missed else 0)
EOF
  exit $?
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)" >&2
for mode in get create; do
  for target in direct nginx exporter; do run_wrk "$target" 8 1 5 "$mode" > /dev/null; done  # warm-up
done
order=(direct nginx exporter)
for round in $(seq "$rounds"); do
  for mode in get create; do
    for conns in 1 64; do
      for target in "${order[@]}"; do
        mapfile -t serving < <(serving_pids "$target")
        before=$(cpu_ticks "${serving[@]}")
        line=$(run_wrk "$target" "$conns" "$duration" 5 "$mode")
        cpu_us=$(( ($(cpu_ticks "${serving[@]}") - before) * tick_us ))
        echo "$mode $conns $target $(field p50_us "$line") $(field p99_us "$line") $(field requests "$line") $(field duration_us "$line") $cpu_us" >> "$work/latency"
        echo "  round $round: $mode c=$conns $target: $line" >&2
      done
    done
  done
  order=("${order[2]}" "${order[1]}" "${order[0]}")   # the next round runs them the other way
done
echo "load after latency: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# --- memory while bodies stream -------------------------------------------------------
# Each proxy starts afresh before each phase, so that its peak RSS (VmHWM) is that of the
# phase alone and not what an earlier phase left in its allocator.
# peak_kib PID...: the sum of their VmHWM.
peak_kib() { local s=0 p; for p in "$@"; do s=$(( s + $(awk '/^VmHWM:/ {print $2}' "/proc/$p/status") )); done; echo $s; }
for size_mb in 2 20; do
  bytes=$(( size_mb * 1000 * 1000 ))
  for target in nginx exporter; do
    if [ "$target" = nginx ]; then
      stop "$nginx_master"; start_nginx nginx; nginx_master=$started; wait_http "$nginx_port" /v1/tasks/x
      mapfile -t watched < <(nginx_workers)
    else
      stop "$exporter"; start_exporter; exporter=$started; wait_http "$exporter_port" /v1/tasks/x
      watched=("$exporter")
    fi
    idle=$(peak_kib "${watched[@]}")
    line=$(run_wrk "$target" 16 "$upload_duration" 60 upload "$bytes")
    peak=$(peak_kib "${watched[@]}")
    mb_s=$(awk -v r="$(field requests "$line")" -v b="$bytes" -v d="$(field duration_us "$line")" 'BEGIN { printf "%.0f", r * b / d }')
    echo "$size_mb $target $peak $idle $(field requests "$line") $mb_s" >> "$work/memory"
    echo "  upload ${size_mb} MB x16 via $target: peak ${peak} KiB (after start ${idle}), $line" >&2
  done
done

# --- report ---------------------------------------------------------------------------
python3 - "$work/latency" "$work/memory" "$check" "$duration" "$rounds" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import statistics, sys
lat_file, mem_file, check, duration, rounds, load = sys.argv[1:]
runs = {}
for line in open(lat_file):
    mode, conns, target, p50, p99, n, dur_us, cpu_us = line.split()
    runs.setdefault((mode, int(conns), target), []).append(
        (int(p50), int(p99), int(n) / (int(dur_us) / 1e6), int(cpu_us) / int(n)))
med = {k: tuple(statistics.median(r[i] for r in v) for i in range(4)) for k, v in runs.items()}
ms = lambda us: f"{us / 1000:.3f}"
print(f"Latency: wrk --latency, {duration} s per run, {rounds} round(s); times in ms; "
      "added = through the proxy minus direct, same run\n")
print("| request | clients | direct p50 / p99 | nginx p50 / p99 | exporter p50 / p99 "
      "| added p50 nginx / exporter | added p99 nginx / exporter | req/s direct / nginx / exporter "
      "| CPU µs a request nginx / exporter |")
print("|---|---|---|---|---|---|---|---|---|")
missed = []
for mode, label in (("get", "GET /v1/tasks/{id}"), ("create", "POST /v1/image_to_video")):
    for conns in (1, 64):
        d, n, e = (med[(mode, conns, t)] for t in ("direct", "nginx", "exporter"))
        add = {t: (v[0] - d[0], v[1] - d[1]) for t, v in (("nginx", n), ("exporter", e))}
        print(f"| {label} | {conns} | {ms(d[0])} / {ms(d[1])} | {ms(n[0])} / {ms(n[1])} "
              f"| {ms(e[0])} / {ms(e[1])} | {ms(add['nginx'][0])} / {ms(add['exporter'][0])} "
              f"| {ms(add['nginx'][1])} / {ms(add['exporter'][1])} "
              f"| {d[2]:,.0f} / {n[2]:,.0f} / {e[2]:,.0f} | {n[3]:.1f} / {e[3]:.1f} |")
        for i, p in ((0, "p50"), (1, "p99")):
            if add["exporter"][i] > add["nginx"][i]:
                missed.append(f"{label} at {conns}: the exporter adds {ms(add['exporter'][i])} ms at {p}, nginx {ms(add['nginx'][i])} ms")
        if conns == 1 and add["exporter"][1] >= 1000:
            missed.append(f"{label} at 1: the exporter adds {ms(add['exporter'][1])} ms at p99 (goal: under 1 ms)")
print("\nMemory: 16 clients each uploading one body after another (POST /v1/sink, "
      "read whole by the sink); peak RSS in MiB (nginx: the sum of its 2 workers' peaks)\n")
print("| body | nginx peak RSS (after start) | exporter peak RSS (after start) | uploads nginx / exporter | MB/s nginx / exporter |")
print("|---|---|---|---|---|")
mem = {}
for line in open(mem_file):
    size, target, kib, idle, n, mbs = line.split()
    mem[(int(size), target)] = (int(kib), int(n), int(mbs), int(idle))
for size in (2, 20):
    n, e = mem[(size, "nginx")], mem[(size, "exporter")]
    print(f"| {size} MB | {n[0] / 1024:.1f} ({n[3] / 1024:.1f}) | {e[0] / 1024:.1f} ({e[3] / 1024:.1f}) | {n[1]} / {e[1]} | {n[2]} / {e[2]} |")
growth = mem[(20, "exporter")][0] - mem[(2, "exporter")][0]
if growth > 4096:
    missed.append(f"the exporter's peak RSS grows {growth / 1024:.1f} MiB from 2 MB to 20 MB bodies (goal: flat, within 4 MiB)")
print(f"\nLoad average at the end: {load}")
for m in missed:
    print(f"- goal missed: {m}")
if not missed:
    print("- every goal met")
sys.exit(1 if missed and check == "1" else 0)
EOF
