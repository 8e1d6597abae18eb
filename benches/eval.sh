#!/usr/bin/env bash
# Accuracy of the anomaly detector on the public benchmarks (a benchmark, not a test).
#
#   bash benches/eval.sh [DATA_DIR]
#
# DATA_DIR holds hdfs-deeplog/ and loghub/ (default: ../shared/data next to the repository).
#
# 1. HDFS: the model in $MODEL (default models/default, trained on hdfs-deeplog/train.log) is
#    replayed over hdfs-deeplog/test.log and judged per block against test_labels.csv.
# 2. loghub: for every loghub/*_2k.log present, a model is trained on lines 1-1200 and lines
#    1201-2000 are replayed through it. A file whose first token is a label on every line
#    (BGL's `-` = normal, anything else = an alert category) is trained on its normal lines
#    with the label removed and judged line by line; every other file counts every line as
#    normal, so its row measures the share of normal lines flagged. "alerts" are anomalies
#    after grouping (the first of each alert group; see docs/configuration.md); "session key"
#    is the key `train` found (`session_key: auto`), if any.
#    SPLITS="600 1200 1600" prints a table per split (the training lines; default 1200). A
#    split SKIP:TRAIN:TEST trains on the TRAIN lines after the first SKIP and replays the TEST
#    lines after them (SPLITS="0:700:400 300:700:400" looks at other places in the samples).
# 3. Seeds: the HDFS recipe trained with seeds 1 to 5 (SEEDS to change; SEEDS= skips it; each
#    training takes about ten seconds on two cores).
#
# DEEPSENTRY_BIN=path skips the release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$root/../shared/data}
model=${MODEL:-$root/models/default}
seeds=${SEEDS-1 2 3 4 5}
splits=${SPLITS:-1200}
if [ -z "${DEEPSENTRY_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked -p deepsentry >&2)
  DEEPSENTRY_BIN=$root/target/release/deepsentry
fi
export DEEPSENTRY_LOG=${DEEPSENTRY_LOG:-warn}
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hdfs_test=$data/hdfs-deeplog/test.log
hdfs_labels=$data/hdfs-deeplog/test_labels.csv

# A field of `deepsentry eval --json` output.
field() {
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    r = r[key]
print(r)' "$1" "$2"
}

if [ -f "$hdfs_test" ]; then
  echo "## HDFS (hdfs-deeplog), session level, model $model"
  echo
  "$DEEPSENTRY_BIN" eval --model "$model" --input "$hdfs_test" --labels "$hdfs_labels" \
    --session-key 'blk_-?\d+'
  echo
else
  echo "## HDFS: $data/hdfs-deeplog not found, skipped"
  echo
fi

for split in $splits; do
if compgen -G "$data/loghub/*_2k.log" >/dev/null; then
  case $split in
    *:*:*) IFS=: read -r skip train_lines test_lines <<<"$split" ;;
    *) skip=0 train_lines=$split test_lines=$((2000 - split)) ;;
  esac
  echo "## loghub: train on lines $((skip + 1))-$((skip + train_lines)), replay lines $((skip + train_lines + 1))-$((skip + train_lines + test_lines))"
  echo
  echo "| system | train lines | test lines | labelled | session key | lines flagged | flagged normal lines | alerts | alerts on normal lines | P | R | F1 | train s |"
  echo "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for log in "$data"/loghub/*_2k.log; do
    name=$(basename "$log" _2k.log)
    sed -n "$((skip + 1)),$((skip + train_lines + test_lines))p" "$log" >"$work/$name-window.log"
    if is_labelled "$log"; then
      labelled=yes
      head -n "$train_lines" "$work/$name-window.log" | awk '$1 == "-"' | cut -d' ' -f2- \
        >"$work/$name-train.log"
      tail -n +"$((train_lines + 1))" "$work/$name-window.log" >"$work/$name-test.log"
    else
      labelled=no
      head -n "$train_lines" "$work/$name-window.log" >"$work/$name-train.log"
      tail -n +"$((train_lines + 1))" "$work/$name-window.log" | sed 's/^/- /' \
        >"$work/$name-test.log"
    fi
    start=$(date +%s%N)
    "$DEEPSENTRY_BIN" train --input "$work/$name-train.log" --out "$work/$name-model" >/dev/null
    train_secs=$(( ($(date +%s%N) - start) / 1000000 ))e-3
    "$DEEPSENTRY_BIN" eval --model "$work/$name-model" --input "$work/$name-test.log" \
      --line-labels --json --events "$work/$name-events.jsonl" >"$work/$name.json"
    python3 - "$work/$name.json" "$work/$name-test.log" "$work/$name-events.jsonl" \
      "$name" "$(wc -l <"$work/$name-train.log")" "$labelled" "$train_secs" \
      "$(awk '/session_key_found:/ { $1 = ""; print substr($0, 2) }' "$work/$name-model/model.yml")" <<'EOF'
import json, sys
report, test, events, name, train_lines, labelled, secs, key = sys.argv[1:]
r = json.load(open(report))
truth = [line.split(" ", 1)[0] != "-" for line in open(test, errors="replace")]
scored = [json.loads(l) for l in open(events)]
lines = [e for e in scored if not e.get("session_end")]
alerts = sum(1 for e in scored if e.get("alert"))
normal_flagged = sum(1 for t, e in zip(truth, lines) if not t and e.get("is_anomaly"))
normal_alerts = sum(1 for t, e in zip(truth, lines) if not t and e.get("alert"))
normal = sum(1 for t in truth if not t)
n = len(lines)
s = r["scores"]
prf = (f"{s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f}" if labelled == "yes"
       else "- | - | -")
print(f"| {name} | {train_lines} | {n} | {labelled} | {key or 'none'} | {r['lines_flagged']} ({100 * r['lines_flagged'] / max(n, 1):.2f} %) "
      f"| {normal_flagged} of {normal} ({100 * normal_flagged / max(normal, 1):.2f} %) "
      f"| {alerts} ({100 * alerts / max(n, 1):.2f} %) "
      f"| {normal_alerts} ({100 * normal_alerts / max(n, 1):.2f} %) "
      f"| {prf} | {float(secs):.1f} |")
EOF
  done
  echo
  echo "Lines without a timestamp the detector reads are grouped by arrival time: a replay"
  echo "arrives within seconds, so their alert groups span the whole replay."
  echo
else
  echo "## loghub: $data/loghub not found, skipped"
  echo
  break
fi
done

if [ -n "$seeds" ] && [ -f "$hdfs_test" ]; then
  echo "## HDFS, the same recipe with other seeds"
  echo
  echo "| seed | floor | recall | FP | FPR | F1 | train s |"
  echo "|---:|---:|---:|---:|---:|---:|---:|"
  for seed in $seeds; do
    start=$(date +%s%N)
    "$DEEPSENTRY_BIN" train --input "$data/hdfs-deeplog/train.log" --session-key 'blk_-?\d+' \
      --seed "$seed" --out "$work/seed-$seed" >/dev/null
    train_secs=$(( ($(date +%s%N) - start) / 1000000 ))e-3
    "$DEEPSENTRY_BIN" eval --model "$work/seed-$seed" --input "$hdfs_test" \
      --labels "$hdfs_labels" --session-key 'blk_-?\d+' --json >"$work/seed-$seed.json"
    floor=$(awk '/score_floor:/ { print $2 }' "$work/seed-$seed/model.yml")
    printf '| %s | %.2f | %.4f | %s | %.2f %% | %.4f | %.0f |\n' "$seed" "$floor" \
      "$(field "$work/seed-$seed.json" scores.recall)" \
      "$(field "$work/seed-$seed.json" scores.fp)" \
      "$(python3 -c "print(100 * $(field "$work/seed-$seed.json" scores.false_positive_rate))")" \
      "$(field "$work/seed-$seed.json" scores.f1)" "$train_secs"
  done
fi
