#!/usr/bin/env bash
# The detector on log shapes the loghub samples lack (a benchmark, not a test).
#
#   bash benches/formats.sh [SEED]
#
# Generates two web access logs and eight application logs (JSON lines, Kubernetes' klog,
# log4j's `yy/MM/dd` pattern, logfmt twice, interleaved requests, Chinese messages, customer
# names of two words) with
# benches/gen-formats.py, then runs the loghub protocol of benches/eval.sh on them: train on
# lines 1-1200, replay lines 1201-2000. The access log counts every line as normal; six
# others hold nine labelled lines of one new error statement in three bursts, so their rows
# also show whether it is found (a detector that learns new templates flags its first five
# occurrences: recall 5/9 = 0.556), `Rare` a burst of 20 lines of an error statement
# training showed three times, `Requests` interleaved requests of which three skip a
# step, and `Outage` the access log's shape with a backend outage (server errors) in the
# replay.
#
# DEEPSENTRY_BIN=path skips the release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/benches/gen-formats.py" "$work" "${1:-7}"
SEEDS='' bash "$root/benches/eval.sh" "$work" | sed -n '/^## loghub/,$p'
