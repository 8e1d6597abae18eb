#!/usr/bin/env bash
# Accuracy of the anomaly detector on the public benchmarks (a benchmark, not a test).
#
#   bash benches/eval.sh [DATA_DIR]
#
# DATA_DIR holds hdfs-deeplog/ and loghub/ (default: ../shared/data next to the repository).
# HDFS: the model in $MODEL (default models/default, trained on hdfs-deeplog/train.log) is
# replayed over hdfs-deeplog/test.log and judged per block against test_labels.csv.
# BGL: a model is trained on the normal lines of the first 60% of loghub/BGL_2k.log and judged
# per line on the last 40% (labels are the first token of each line, stripped before scoring).
# DEEPSENTRY_BIN=path skips the release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$root/../shared/data}
model=${MODEL:-$root/models/default}
if [ -z "${DEEPSENTRY_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked -p deepsentry >&2)
  DEEPSENTRY_BIN=$root/target/release/deepsentry
fi
export DEEPSENTRY_LOG=${DEEPSENTRY_LOG:-warn}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "## HDFS (hdfs-deeplog), session level, model $model"
echo
"$DEEPSENTRY_BIN" eval --model "$model" \
  --input "$data/hdfs-deeplog/test.log" \
  --labels "$data/hdfs-deeplog/test_labels.csv" \
  --session-key 'blk_-?\d+'
echo

echo "## BGL (loghub BGL_2k), line level: train on normal lines 1-1200, evaluate lines 1201-2000"
echo
head -n 1200 "$data/loghub/BGL_2k.log" | awk '$1 == "-"' | cut -d' ' -f2- > "$work/bgl-train.log"
tail -n +1201 "$data/loghub/BGL_2k.log" > "$work/bgl-test.log"
"$DEEPSENTRY_BIN" train --input "$work/bgl-train.log" --out "$work/bgl-model" >/dev/null
"$DEEPSENTRY_BIN" eval --model "$work/bgl-model" --input "$work/bgl-test.log" --line-labels
