#!/usr/bin/env bash
# What `deepsentry train --from` costs and keeps. Prints two tables.
#
# 1. On every loghub/*_2k.log present: a full training on lines 1-1200 against a bundle
#    trained on lines 1-600 and then updated with lines 601-1200; both replay lines 1201-2000
#    (`eval --line-labels`). Labelled files (every first token `-` or a category) train on
#    their normal lines with the label removed, as benches/eval.sh.
# 2. On hdfs-deeplog, where present: train.log cut into seven parts ("days"), a bundle trained
#    on the first and updated with each next one, against a full training on every part so
#    far; each judged per block on test.log (recall, false positives among its 971 normal
#    blocks, count invariants).
#
#   bash benches/train-from.sh [DATA_DIR]
#
# DATA_DIR holds loghub/ and hdfs-deeplog/ (default: ../shared/data next to the repository).
# DEEPSENTRY_BIN picks the binary (default: target/release/deepsentry).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$root/../shared/data}"
bin="${DEEPSENTRY_BIN:-$root/target/release/deepsentry}"
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
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
  if is_labelled "$log"; then
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

hdfs=$data/hdfs-deeplog
[ -f "$hdfs/train.log" ] || exit 0
key='blk_-?\d+'
judged() { # "recall | false positives | invariants" of model $1 on the HDFS test blocks
  "$bin" eval --model "$1" --input "$hdfs/test.log" --labels "$hdfs/test_labels.csv" \
    --session-key "$key" --json >"$work/hdfs.json" 2>/dev/null
  python3 - "$work/hdfs.json" "$1/model.yml" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["scores"]
invariants = sum(1 for line in open(sys.argv[2]) if line.startswith("- terms:"))
print(f"{s['recall']:.4f} | {s['fp']} | {invariants}")
PY
}
echo
echo "## HDFS: a bundle updated with each next seventh of train.log, against a full training"
echo
echo "| parts | full: train s | recall | FP | invariants | update: train s | recall | FP | invariants |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
split -n l/7 -d "$hdfs/train.log" "$work/part"
: >"$work/so-far.log"
for k in 0 1 2 3 4 5 6; do
  cat "$work/part0$k" >>"$work/so-far.log"
  t=$(date +%s%N)
  "$bin" train --input "$work/so-far.log" --session-key "$key" --out "$work/full-$k" >/dev/null 2>&1
  full_s=$(seconds "$t")
  if [ "$k" = 0 ]; then
    cp -r "$work/full-0" "$work/updated-0"
    update="- | $(judged "$work/updated-0")"
  else
    t=$(date +%s%N)
    "$bin" train --from "$work/updated-$((k - 1))" --input "$work/part0$k" \
      --out "$work/updated-$k" >/dev/null 2>&1
    update="$(seconds "$t") | $(judged "$work/updated-$k")"
  fi
  echo "| 1-$((k + 1)) | $full_s | $(judged "$work/full-$k") | $update |"
done
