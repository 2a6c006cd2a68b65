#!/usr/bin/env bash
# End-to-end comparison on one deterministic corpus: runway-exporter `scan` against mtail
# (Debian's package, --one_shot, benches/runway.mtail) and, when VECTOR_BIN is set,
# Vector. Checks that the counts agree, then prints lines per CPU-second, wall time and
# peak RSS of each, and the ratios to mtail and to `wc -l` (the distance to the I/O
# limit), all measured in this run.
#
# usage: benches/compare.sh [LINES] [SEED]     (default 1000000 lines, seed 1)
#        REPEAT=5 benches/compare.sh            (runs per tool; the median is kept)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
seed=${2:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v mtail >/dev/null 2>&1 || { echo "compare: mtail is not installed (apt-get install mtail)" >&2; exit 1; }
cargo build --release --locked -q
bin=target/release/runway-exporter
python3 benches/gen-corpus.py "$lines" --seed "$seed" > "$work/corpus.log"
echo "corpus: $lines lines, $(du -m "$work/corpus.log" | cut -f1) MB, seed $seed"
cat "$work/corpus.log" > /dev/null   # warm the page cache for every tool alike

# measure NAME CMD...: runs it REPEAT times (default 3) and keeps the run with the
# median CPU time: user+sys CPU seconds, wall seconds, peak RSS in KiB.
repeat=${REPEAT:-3}
measure() {
  local name=$1; shift
  : > "$work/$name.runs"
  for _ in $(seq "$repeat"); do
    /usr/bin/time -f "%U %S %e %M" -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err" || {
      echo "compare: $name failed:" >&2; tail -5 "$work/$name.err" >&2; exit 1; }
    read -r u s e m < "$work/$name.time"
    echo "$(echo "$u + $s" | bc -l) $e $m" >> "$work/$name.runs"
  done
  read -r cpu e m < <(sort -n "$work/$name.runs" | sed -n "$(( (repeat + 1) / 2 ))p")
  echo "$name $cpu $e $m" >> "$work/results"
}

measure wc wc -l "$work/corpus.log"
measure runway "$bin" scan "$work/corpus.log"
mkdir -p "$work/progs" && cp benches/runway.mtail "$work/progs/"
measure mtail mtail --one_shot --one_shot_format=prometheus --progs "$work/progs" --logs "$work/corpus.log" --logtostderr

# The counts must agree.
runway_status=$(awk '/^runway_tasks_total\{/ { match($0, /status="[A-Z]+"/); st=substr($0, RSTART+8, RLENGTH-9); s[st]+=$NF } END { for (k in s) if (s[k] > 0) print k, s[k] }' "$work/runway.out" | sort)
mtail_status=$(awk '/^runway_tasks_total\{/ { match($0, /status="[A-Z]+"/); st=substr($0, RSTART+8, RLENGTH-9); s[st]+=$NF } END { for (k in s) if (s[k] > 0) print k, s[k] }' "$work/mtail.out" | sort)
runway_codes=$(awk '/^runway_task_failures_total\{/ { match($0, /failure_code="[^"]+"/); c=substr($0, RSTART+14, RLENGTH-15); if (c != "none") s[c]+=$NF } END { for (k in s) if (s[k] > 0) print k, s[k] }' "$work/runway.out" | sort)
mtail_codes=$(awk '/^runway_task_failures_total\{/ { match($0, /failure_code="[^"]+"/); c=substr($0, RSTART+14, RLENGTH-15); s[c]+=$NF } END { for (k in s) if (s[k] > 0) print k, s[k] }' "$work/mtail.out" | sort)
if [ "$runway_status" != "$mtail_status" ] || [ "$runway_codes" != "$mtail_codes" ]; then
  echo "compare: counts differ" >&2
  diff <(echo "$runway_status"; echo "$runway_codes") <(echo "$mtail_status"; echo "$mtail_codes") >&2 || true
  exit 1
fi
echo "counts agree: $(echo "$runway_status" | tr '\n' ' ')"

if [ -n "${VECTOR_BIN:-}" ]; then
  echo "compare: VECTOR_BIN is set, but the Vector run is not scripted yet" >&2
fi

printf '\n%-8s %14s %10s %9s %12s\n' tool lines/CPU-s wall-s peak-MiB vs-mtail
mtail_rate=""
while read -r name cpu wall rss; do
  rate=$(echo "$lines / ($cpu + 0.0001)" | bc -l)
  [ "$name" = mtail ] && mtail_rate=$rate
  eval "rate_$name=$rate"
done < "$work/results"
while read -r name cpu wall rss; do
  rate_var="rate_$name"; rate=${!rate_var}
  printf '%-8s %14.0f %10.2f %9.1f %11.1fx\n' "$name" "$rate" "$wall" "$(echo "$rss / 1024" | bc -l)" "$(echo "$rate / $mtail_rate" | bc -l)"
done < "$work/results"
printf '\nrunway-exporter vs wc -l (lines/CPU-s): %.2f\n' "$(echo "$rate_runway / $rate_wc" | bc -l)"
