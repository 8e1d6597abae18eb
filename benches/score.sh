#!/usr/bin/env bash
# Scoring benchmark: how fast the `deepsentry` transform scores lines when its window cache
# helps (demo lines, HDFS blocks) and when it cannot (one stream, shuffled lines, another
# system's templates, a million sessions), next to the plain `file -> blackhole` passthrough
# of the same file.
#
# It builds the release binary and prints one Markdown table, a row per workload:
#   demo          LINES lines of the built-in `demo` source (HDFS-style blocks), keyed by block
#   hdfs-keyed    DATA/hdfs-deeplog/test.log, session_key 'blk_-?\d+'
#   hdfs-stream   the same lines as one stream (session_key: none, the sidecar case)
#   hdfs-shuffled the same lines shuffled (a fixed seed), one stream: every window is new
#   bgl           DATA/loghub/BGL_2k.log repeated to BGL_LINES lines, one stream, scored by a
#                 model this script trains on its first 1,200 lines (another system's templates)
#   sessions-1m   SESSIONS lines, each of its own block (a distinct session), keyed by block:
#                 memory must stay bounded by `max_sessions` and the caches' byte bounds
# Then the PyTorch peer (benches/peers/deeplog_torch.py: a DeepLog-style LSTM, 2 threads) at
# batch 1 and 1,024, in a virtual environment this script installs torch into from PyPI
# (target/tools/torch-venv); its row says why when that fails.
# Columns: lines/s over the whole run (start-up, model load and the drain at the end of the
# input included), windows the detector computed per second (cache misses, from the
# transform's `detector_windows_computed` counter), peak RSS, and the run's speed as a share
# of the passthrough of the same file. Rows whose data is missing say so.
#
# Environment:
#   DATA=../shared/data   the data folder (hdfs-deeplog/, loghub/)
#   LINES=500000          demo lines          BGL_LINES=500000   SESSIONS=1000000
#   MODEL=models/default  the model of every row but `bgl`
#   BACKEND=flex          the transform's backend (flex, ndarray, wgpu, auto)
#   DEEPSENTRY_BIN=PATH   use this binary and skip the build
#   BENCH_DIR=DIR         keep work files in DIR instead of a temporary directory
set -euo pipefail

invoked_from=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
LINES=${LINES:-500000}
BGL_LINES=${BGL_LINES:-500000}
SESSIONS=${SESSIONS:-1000000}
data=$(absolute "${DATA:-../shared/data}" "$invoked_from")
model=$(absolute "${MODEL:-models/default}" "$invoked_from")
backend=${BACKEND:-flex}

if [[ -n "${BENCH_DIR:-}" ]]; then
    work=$(absolute "$BENCH_DIR" "$invoked_from")
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/deepsentry-score.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
log="$work/deepsentry.log"
: >"$log"

if [[ -n "${DEEPSENTRY_BIN:-}" ]]; then
    bin=$(absolute "$DEEPSENTRY_BIN" "$invoked_from")
else
    echo "building: cargo build --release -p deepsentry" >&2
    cargo build --release --locked -p deepsentry >&2
    bin="$root/target/release/deepsentry"
fi
[[ -x "$bin" ]] || { echo "no deepsentry binary at $bin" >&2; exit 1; }
if ! /usr/bin/time -f '%M' -o /dev/null true 2>/dev/null; then
    echo "GNU time (/usr/bin/time) is needed for peak RSS: apt-get install time" >&2
    exit 1
fi


# run_pipeline INPUT MODEL SESSION_KEY|passthrough: runs the pipeline over INPUT once and sets
# `secs`, `rss_kb` and `windows`.
run_pipeline() {
    local input=$1 model=$2 key=$3 yml="$work/p.yml" tfile="$work/time.out" run_log="$work/run.log"
    rm -rf "$work/data"
    {
        echo "data_dir: $(yaml_str "$work/data")"
        echo "sources:"
        echo "  in:"
        echo "    type: file"
        echo "    include: [$(yaml_str "$input")]"
        echo "    read_from: beginning"
        echo "    exit_on_eof: true"
        if [[ $key != passthrough ]]; then
            echo "transforms:"
            echo "  detect:"
            echo "    type: deepsentry"
            echo "    inputs: [in]"
            echo "    model: $(yaml_str "$model")"
            echo "    backend: $backend"
            echo "    session_key: '$key'"
        fi
        echo "sinks:"
        echo "  out:"
        echo "    type: blackhole"
        if [[ $key == passthrough ]]; then echo "    inputs: [in]"; else echo "    inputs: [detect]"; fi
    } >"$yml"
    local TIMEFORMAT=%3R
    if ! { time DEEPSENTRY_LOG=info /usr/bin/time -f '%M' -o "$tfile" \
        "$bin" run -c "$yml" >/dev/null 2>"$run_log"; } 2>"$work/bashtime.out"; then
        echo "FAILED: $bin run -c $yml" >&2
        tail -n 20 "$run_log" >&2
        exit 1
    fi
    cat "$run_log" >>"$log"
    secs=$(tail -n 1 "$work/bashtime.out")
    rss_kb=$(tail -n 1 "$tfile")
    windows=$({ grep -o 'detector_windows_computed=[0-9]*' "$run_log" || true; } | tail -n 1 | cut -d= -f2)
    windows=${windows:-0}
}

rows=()
# row NAME INPUT MODEL SESSION_KEY: the detector's run and the passthrough of INPUT.
row() {
    local name=$1 input=$2 model=$3 key=$4
    local lines
    lines=$(wc -l <"$input" | tr -d ' ')
    echo "$name: $lines lines" >&2
    run_pipeline "$input" "$model" passthrough
    local pass_secs=$secs
    run_pipeline "$input" "$model" "$key"
    rows+=("$(awk -v n="$name" -v l="$lines" -v s="$secs" -v w="$windows" -v r="$rss_kb" -v p="$pass_secs" \
        'BEGIN { printf "| %s | %d | %.2f | %.0f | %.0f | %.0f | %.1f %% |", n, l, s, l / s, w / s, r / 1024, 100 * p / s }')")
}
missing_row() { rows+=("| $1 | - | - | - | - | - | $2 |"); }

# --- inputs ----------------------------------------------------------------------------------
demo="$work/demo.log"
demo_pipeline "$work/data-generate" "$demo" "$LINES" >"$work/generate.yml"
DEEPSENTRY_LOG=warn "$bin" run -c "$work/generate.yml" 2>>"$log"
row demo "$demo" "$model" 'blk_-?\d+'

hdfs="$data/hdfs-deeplog/test.log"
if [[ -f $hdfs ]]; then
    row hdfs-keyed "$hdfs" "$model" 'blk_-?\d+'
    row hdfs-stream "$hdfs" "$model" none
    shuf --random-source=<(yes 42) "$hdfs" >"$work/hdfs-shuffled.log"
    row hdfs-shuffled "$work/hdfs-shuffled.log" "$model" none
else
    for name in hdfs-keyed hdfs-stream hdfs-shuffled; do missing_row "$name" "no $hdfs"; done
fi

bgl="$data/loghub/BGL_2k.log"
if [[ -f $bgl ]]; then
    # BGL's first token is its label (`-` for a normal line); the model trains on normal lines.
    head -n 1200 "$bgl" | awk '$1 == "-"' | cut -d' ' -f2- >"$work/bgl-train.log"
    echo "bgl: training a model on its first 1,200 lines" >&2
    DEEPSENTRY_LOG=warn "$bin" train --input "$work/bgl-train.log" --out "$work/bgl-model" \
        >>"$log" 2>&1
    cut -d' ' -f2- "$bgl" >"$work/bgl-lines.log"
    : >"$work/bgl.log"
    while (( $(wc -l <"$work/bgl.log") < BGL_LINES )); do cat "$work/bgl-lines.log" >>"$work/bgl.log"; done
    head -n "$BGL_LINES" "$work/bgl.log" >"$work/bgl-repeated.log"
    row bgl "$work/bgl-repeated.log" "$work/bgl-model" none
else
    missing_row bgl "no $bgl"
fi

awk -v n="$SESSIONS" 'BEGIN { for (i = 0; i < n; i++)
    printf "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_%d terminating\n", 1000000000 + i }' \
    >"$work/sessions.log"
row sessions-1m "$work/sessions.log" "$model" 'blk_-?\d+'

venv="$root/target/tools/torch-venv"
peer=()
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "installing torch into $venv (from PyPI)" >&2
    { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check \
        torch numpy; } >>"$log" 2>&1 || true
fi
if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    while read -r _ batch rate _; do
        peer+=("| PyTorch DeepLog (LSTM 2x64, window 10, top-9 of 30 keys), batch ${batch%:} | $rate |")
    done < <("$venv/bin/python" "$root/benches/peers/deeplog_torch.py" --threads 2 2>>"$log")
else
    peer+=("| PyTorch DeepLog | not measured: torch could not be installed into $venv (see $log) |")
fi

echo
echo "| workload | lines | seconds | lines/s | windows computed/s | peak RSS MB | speed vs passthrough |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "| peer | windows/s |"
echo "|---|---:|"
printf '%s\n' "${peer[@]}"
