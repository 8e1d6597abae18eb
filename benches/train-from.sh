#!/usr/bin/env bash
# What `deepsentry train --from` costs and keeps, on every loghub/*_2k.log present: a full
# training on lines 1-1200 against a bundle trained on lines 1-600 and then updated with
# lines 601-1200; both replay lines 1201-2000 (`eval --line-labels`). Prints a table.
#
#   bash benches/train-from.sh [DATA_DIR]
#
# DATA_DIR holds loghub/ (default: ../shared/data next to the repository). DEEPSENTRY_BIN
# picks the binary (default: target/release/deepsentry). Labelled files (every first token
# `-` or a category) train on their normal lines with the label removed, as benches/eval.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$root/../shared/data}"
bin="${DEEPSENTRY_BIN:-$root/target/release/deepsentry}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

seconds() { # seconds since the nanosecond time $1
  python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.1f}')" "$1" "$(date +%s%N)"
}
flagged() { # "N (P %)" of normal lines flagged by model $1 on test file $2
  "$bin" eval --model "$1" --input "$2" --line-labels --json --events "$work/events.jsonl" >/dev/null
  python3 - "$2" "$work/events.jsonl" <<'PY'
import json, sys
truth = [line.split(" ", 1)[0] != "-" for line in open(sys.argv[1])]
lines = [e for e in map(json.loads, open(sys.argv[2])) if not e.get("session_end")]
normal = sum(1 for t in truth if not t)
n = sum(1 for t, e in zip(truth, lines) if not t and e.get("is_anomaly"))
print(f"{n} ({100 * n / max(normal, 1):.2f} %)")
PY
}

echo "| system | full 1-1200: train s | flagged normal | 1-600: train s | update 601-1200: train s | flagged normal |"
echo "|---|---:|---:|---:|---:|---:|"
for log in "$data"/loghub/*_2k.log; do
  name=$(basename "$log" _2k.log)
  if awk '$1 != "-" && $1 !~ /^[A-Z]+$/ { bad = 1; exit } END { exit bad }' "$log"; then
    strip() { awk '$1 == "-"' | cut -d' ' -f2-; }
    tail -n +1201 "$log" >"$work/test.log"
  else
    strip() { cat; }
    tail -n +1201 "$log" | sed 's/^/- /' >"$work/test.log"
  fi
  head -n 1200 "$log" | strip >"$work/full.log"
  head -n 600 "$log" | strip >"$work/first.log"
  sed -n 601,1200p "$log" | strip >"$work/second.log"
  rm -rf "$work"/full-model "$work"/first-model "$work"/updated-model
  t=$(date +%s%N); "$bin" train --input "$work/full.log" --out "$work/full-model" >/dev/null 2>&1
  full_s=$(seconds "$t")
  t=$(date +%s%N); "$bin" train --input "$work/first.log" --out "$work/first-model" >/dev/null 2>&1
  first_s=$(seconds "$t")
  t=$(date +%s%N)
  "$bin" train --from "$work/first-model" --input "$work/second.log" --out "$work/updated-model" >/dev/null 2>&1
  update_s=$(seconds "$t")
  echo "| $name | $full_s | $(flagged "$work/full-model" "$work/test.log") | $first_s | $update_s | $(flagged "$work/updated-model" "$work/test.log") |"
done
