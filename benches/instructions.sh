#!/usr/bin/env bash
# Speed guard: counts the instructions (valgrind's callgrind, "Ir") that the release
# binary's `runway-exporter scan` executes over one fixed corpus, and compares them with
# the committed baseline, benches/instructions.baseline. Exits 1 when the count is more
# than 3 % above the baseline; prints the ratio either way. Part of scripts/test.sh.
#
# Why instructions: on this shared 2-core VM wall and CPU time move by 10-30 % from one
# run (or day) to the next; the instruction count of the same binary on the same input
# moves by less than 0.1 % (thread scheduling and hash seeds only). It does not see
# cache misses or contention, which benches/compare.sh (ratios to mtail and Vector in one
# run) and benches/pipeline.rs measure.
#
# The corpus: benches/gen-corpus.py 30000 --seed 1 --hostile 2 (about 10 MB, 2 % hostile
# lines), checked against the SHA-256 in the baseline so that a change to the generator
# cannot move the count unseen. About 30 s under callgrind on this VM.
#
# The baseline moves only in a commit that says why: `benches/instructions.sh --update`
# rewrites it from this run, and the commit message gives the old and new counts and the
# reason (a feature that costs instructions on purpose, a new toolchain, a faster
# parser). A count that falls by more than 3 % is reported, so that the baseline can be
# lowered (in its own commit) and the gain kept.
#
# usage: benches/instructions.sh [--update]
#        RUNWAY_BIN=path benches/instructions.sh   (another build; default: builds
#                                                   target/release/runway-exporter)
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benches/instructions.baseline
corpus_args=(30000 --seed 1 --hostile 2)
limit=1.03
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v valgrind >/dev/null 2>&1 || { echo "instructions: valgrind is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }
bin=${RUNWAY_BIN:-target/release/runway-exporter}
if [ -z "${RUNWAY_BIN:-}" ]; then
  cargo build --release --locked -q
fi

python3 benches/gen-corpus.py "${corpus_args[@]}" > "$work/corpus.log"
corpus_sha=$(sha256sum "$work/corpus.log" | cut -d' ' -f1)
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$bin" scan "$work/corpus.log" \
  > "$work/scan.out" 2> "$work/valgrind.err" \
  || { echo "instructions: scan failed under callgrind:" >&2; tail -5 "$work/valgrind.err" >&2; exit 1; }
count=$(sed -n 's/^summary: //p' "$work/callgrind.out")
[ -n "$count" ] || { echo "instructions: no count in callgrind's output" >&2; exit 1; }
toolchain="$(rustc --version | cut -d' ' -f1-2), $(valgrind --version)"

if [ "${1:-}" = --update ]; then
  {
    echo "# Instructions (callgrind Ir) of release \`runway-exporter scan\` over"
    echo "# benches/gen-corpus.py ${corpus_args[*]}; read by benches/instructions.sh."
    echo "# Moves only in a commit whose message says why (old count, new count, reason)."
    echo "toolchain $toolchain"
    echo "corpus-sha256 $corpus_sha"
    echo "instructions $count"
  } > "$baseline"
  echo "instructions: baseline written: $count"
  exit 0
fi

field() { sed -n "s/^$1 //p" "$baseline"; }
if [ "$(field corpus-sha256)" != "$corpus_sha" ]; then
  echo "instructions: the corpus is not the baseline's (benches/gen-corpus.py changed?):" \
    "rewrite the baseline with --update in a commit that says why" >&2
  exit 1
fi
base=$(field instructions)
ratio=$(echo "scale=4; $count / $base" | bc -l)
printf 'instructions: %d for %s lines (baseline %d): ratio %.4f, limit %s\n' \
  "$count" "${corpus_args[0]}" "$base" "$ratio" "$limit"
if [ "$(field toolchain)" != "$toolchain" ]; then
  echo "instructions: note: the baseline was counted with $(field toolchain); this is $toolchain"
fi
if [ "$(echo "$ratio > $limit" | bc -l)" = 1 ]; then
  mkdir -p target && cp "$work/callgrind.out" target/instructions.callgrind.out
  echo "instructions: FAILED: more than 3 % above the baseline. Find the cost" \
    "(callgrind_annotate target/instructions.callgrind.out), or, when it is wanted, move the" \
    "baseline with --update in a commit that says why" >&2
  exit 1
fi
if [ "$(echo "$ratio < 0.97" | bc -l)" = 1 ]; then
  echo "instructions: more than 3 % below the baseline: lower it (--update) in a commit that says why"
fi
echo "instructions: 1 passed, 0 failed"
