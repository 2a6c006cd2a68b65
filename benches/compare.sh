#!/usr/bin/env bash
# End-to-end comparison on one deterministic corpus: runway-exporter `scan` against mtail
# (Debian's package, --one_shot, benches/runway.mtail) and, when VECTOR_BIN is set,
# Vector (benches/runway.vector.toml, stdin source; ../shared/tools has a Vector 0.58.0
# binary: gunzip -c ../shared/tools/vector-0.58.0.gz > target/vector). Checks runway-exporter's counts against what the generator
# wrote (exact, also on hostile lines) and, on a clean corpus, that mtail counts the
# same; then prints lines per CPU-second, wall time and peak RSS of each, and the ratios
# to mtail and to `wc -l` (the distance to the I/O limit), all measured in this run.
# Exits 1 when a count is off or a target is missed. The speed targets are ratios to the
# peers measured in this same run, never an absolute rate (this VM's speed moves by tens
# of percent from one day to the next; both tools move together): lines per CPU-second
# at least 10x mtail's and 25x Vector's (fastest runs); and peak RSS <= 48 MiB. Vector
# is VECTOR_BIN, or target/vector when that exists; without it the Vector target is not
# measured, which fails. Each tool runs REPEAT times; the table
# shows its median and its fastest run, and the targets are checked on the fastest runs
# of both tools: on a shared VM, other work only ever adds CPU time to a run (the
# fastest is the least disturbed), and a median can land in a slow spell of minutes.
#
# usage: benches/compare.sh [LINES] [SEED] [HOSTILE_PERCENT]   (default 1000000 1 0)
#        REPEAT=9 benches/compare.sh            (runs per tool; default 5)
#        MTAIL_TIMEOUT=300 ...                   (seconds; mtail is stopped there, and
#                                                 reported as not finished; default 120)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
seed=${2:-1}
hostile=${3:-0}
mtail_timeout=${MTAIL_TIMEOUT:-120}
if [ -z "${VECTOR_BIN:-}" ] && [ -x target/vector ]; then
  VECTOR_BIN=target/vector
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v mtail >/dev/null 2>&1 || { echo "compare: mtail is not installed (apt-get install mtail)" >&2; exit 1; }
cargo build --release --locked -q
bin=target/release/runway-exporter
python3 benches/gen-corpus.py "$lines" --seed "$seed" --hostile "$hostile" --expect "$work/expect.json" > "$work/corpus.log"
want_rejected=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hostile"])' "$work/expect.json")
echo "corpus: $lines lines, $(du -m "$work/corpus.log" | cut -f1) MB, seed $seed, $want_rejected hostile lines"
cat "$work/corpus.log" > /dev/null   # warm the page cache for every tool alike

# measure NAME CMD...: runs it REPEAT times (default 5) and keeps the run with the
# median CPU time (user+sys CPU seconds, wall seconds, peak RSS in KiB) and the CPU
# time of the fastest run.
repeat=${REPEAT:-5}
measure() {
  local name=$1; shift
  : > "$work/$name.runs"
  for _ in $(seq "$repeat"); do
    local rc=0
    /usr/bin/time -f "%U %S %e %M" -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err" || rc=$?
    if [ "$rc" = 124 ]; then   # stopped by `timeout`
      echo "$name did not finish within ${mtail_timeout} s" >> "$work/unfinished"
      read -r u s e m < <(tail -1 "$work/$name.time")
      local cpu; cpu=$(echo "$u + $s" | bc -l)
      echo "$name $cpu $e $m $cpu unfinished" >> "$work/results"
      return
    elif [ "$rc" != 0 ]; then
      echo "compare: $name failed:" >&2; tail -5 "$work/$name.err" >&2; exit 1
    fi
    read -r u s e m < "$work/$name.time"
    echo "$(echo "$u + $s" | bc -l) $e $m" >> "$work/$name.runs"
  done
  read -r cpu e m < <(sort -n "$work/$name.runs" | sed -n "$(( (repeat + 1) / 2 ))p")
  read -r best _ < <(sort -n "$work/$name.runs" | head -1)
  echo "$name $cpu $e $m $best" >> "$work/results"
}

measure wc wc -l "$work/corpus.log"
measure runway "$bin" scan "$work/corpus.log"
mkdir -p "$work/progs" && cp benches/runway.mtail "$work/progs/"
if [ -n "${VECTOR_BIN:-}" ]; then
  measure vector sh -c '"$0" --quiet --config "$1" < "$2"' "$VECTOR_BIN" benches/runway.vector.toml "$work/corpus.log"
fi
measure mtail timeout "$mtail_timeout" mtail --one_shot --one_shot_format=prometheus --progs "$work/progs" --logs "$work/corpus.log" --logtostderr

# runway-exporter's counts must be exactly what the generator wrote, and mtail's must
# agree with them where mtail can count (a clean corpus, a finished run).
counts() {  # FILE: "status N" lines, then "code N" lines, sorted
  awk '/^runway_tasks_total\{/ { match($0, /status="[A-Z]+"/); st=substr($0, RSTART+8, RLENGTH-9); s[st]+=$NF } END { for (k in s) if (s[k] > 0) print k, s[k] }' "$1" | sort
  awk '/^runway_task_failures_total\{/ { match($0, /failure_code="[^"]+"/); c=substr($0, RSTART+14, RLENGTH-15); if (c != "none") s[c]+=$NF } END { for (k in s) if (s[k] > 0) print k, s[k] }' "$1" | sort
}
expected=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); [print(k, v) for d in (e["status"], e["codes"]) for k, v in sorted(d.items())]' "$work/expect.json")
rejected=$(awk '/^runway_exporter_records_total\{.*result="rejected"/ { n+=$NF } END { print n+0 }' "$work/runway.out")
if [ "$(counts "$work/runway.out")" != "$expected" ] || [ "$rejected" != "$want_rejected" ]; then
  echo "compare: runway-exporter's counts are not the corpus's" >&2
  diff <(echo "$expected"; echo "rejected $want_rejected") <(counts "$work/runway.out"; echo "rejected $rejected") >&2 || true
  exit 1
fi
echo "runway-exporter counts exactly what was written: $(counts "$work/runway.out" | head -3 | tr '\n' ' ')rejected $rejected"
if [ -s "$work/unfinished" ]; then
  cat "$work/unfinished"
elif [ "$hostile" = 0 ]; then
  if [ "$(counts "$work/runway.out")" != "$(counts "$work/mtail.out")" ]; then
    echo "compare: mtail's counts differ" >&2
    diff <(counts "$work/runway.out") <(counts "$work/mtail.out") >&2 || true
    exit 1
  fi
  echo "mtail counts the same"
else
  echo "mtail on the hostile corpus: $(diff <(counts "$work/runway.out") <(counts "$work/mtail.out") | grep -c '^>' || true) of its counts differ from the exact ones"
fi

if [ -n "${VECTOR_BIN:-}" ]; then
  # The console sink's JSON metric events, summed into the same "name N" lines.
  vector_counts=$(python3 -c '
import json, sys
sums = ({}, {})
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    m = m.get("metric", m)
    value = (m.get("counter") or {}).get("value", 0)
    tags = m.get("tags") or {}
    if m.get("name") == "runway_tasks_total":
        sums[0][tags.get("status")] = sums[0].get(tags.get("status"), 0) + value
    elif m.get("name") == "runway_task_failures_total":
        sums[1][tags.get("failure_code")] = sums[1].get(tags.get("failure_code"), 0) + value
for d in sums:
    for k in sorted(d):
        if d[k] > 0:
            print(k, int(d[k]))
' "$work/vector.out")
  if [ "$vector_counts" != "$expected" ]; then
    echo "compare: Vector's counts are not the corpus's" >&2
    diff <(echo "$expected") <(echo "$vector_counts") >&2 || true
    exit 1
  fi
  echo "Vector counts exactly what was written"
fi

printf '\n%-8s %14s %14s %10s %9s %12s\n' tool lines/CPU-s "(fastest)" wall-s peak-MiB vs-mtail
while read -r name cpu wall rss best _; do
  eval "rate_$name=$(echo "$lines / ($cpu + 0.0001)" | bc -l)"
  eval "best_$name=$(echo "$lines / ($best + 0.0001)" | bc -l)"
done < "$work/results"
while read -r name cpu wall rss best unfinished; do
  rate_var="rate_$name"; best_var="best_$name"
  printf '%-8s %14.0f %14.0f %10.2f %9.1f %11.1fx%s\n' "$name" "${!rate_var}" "${!best_var}" "$wall" \
    "$(echo "$rss / 1024" | bc -l)" "$(echo "${!best_var} / $best_mtail" | bc -l)" \
    "${unfinished:+  (did not finish: at most this rate; the ratio is at least this)}"
done < "$work/results"
printf '\nlines/CPU-s and wall of the median run, peak RSS of that run; vs-mtail: fastest runs\n'
printf 'runway-exporter vs wc -l (lines/CPU-s, fastest runs): %.2f\n' "$(echo "$best_runway / $best_wc" | bc -l)"

# The targets: ratios to the peers of this run (fastest runs), and the peak RSS of the
# median run. No absolute rate: a VM twice as slow today slows every tool alike.
runway_rss_mib=$(awk '$1 == "runway" { printf "%.1f", $4 / 1024 }' "$work/results")
verdict() { if [ "$1" = 1 ]; then echo ok; else echo MISSED; fi; }
ahead=$(echo "$best_runway >= 10 * $best_mtail" | bc -l)
if [ -n "${VECTOR_BIN:-}" ]; then
  printf 'runway-exporter vs Vector (lines/CPU-s, fastest runs): %.1fx\n' "$(echo "$best_runway / $best_vector" | bc -l)"
  ahead_vector=$(echo "$best_runway >= 25 * $best_vector" | bc -l)
  vector_verdict=$(verdict "$ahead_vector")
else
  ahead_vector=0
  vector_verdict="NOT MEASURED (VECTOR_BIN, or target/vector: see ../shared/tools/README.md)"
fi
lean=$(echo "$runway_rss_mib <= 48" | bc -l)
echo "targets: >= 10x mtail: $(verdict "$ahead"); >= 25x Vector: $vector_verdict; peak RSS <= 48 MiB: $(verdict "$lean")"
[ "$ahead" = 1 ] && [ "$ahead_vector" = 1 ] && [ "$lean" = 1 ]
