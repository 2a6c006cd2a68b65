#!/usr/bin/env bash
# Appends a random Runway task outcome to demo/live.log (git ignores it) every half second, so the demo
# (cargo run --release -- --config config/demo.toml) shows counters moving. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
codes=(SAFETY.INPUT.TEXT SAFETY.INPUT.IMAGE SAFETY.OUTPUT.VIDEO INTERNAL.BAD_OUTPUT.CODE01 \
       INPUT_PREPROCESSING.INTERNAL ASSET.INVALID THIRD_PARTY.UNAVAILABLE INTERNAL)
models=(gen4_turbo gen4.5 veo3 gen4_aleph)
n=0
while true; do
  n=$((n + 1))
  id="demo-$$-$n"
  model=${models[RANDOM % ${#models[@]}]}
  # Today's task type states its cost: moderated failures are charged, others refunded.
  if (( RANDOM % 10 < 8 )); then
    printf '{"id":"%s","status":"SUCCEEDED","cost":{"credits":25},"model":"%s","duration":5}\n' "$id" "$model"
  else
    code=${codes[RANDOM % ${#codes[@]}]}
    cost=0
    [[ $code == SAFETY.* ]] && cost=25
    printf '{"id":"%s","status":"FAILED","failureCode":"%s","cost":{"credits":%d},"model":"%s","duration":5}\n' "$id" "$code" "$cost" "$model"
  fi >> demo/live.log
  sleep 0.5
done
