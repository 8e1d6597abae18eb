#!/usr/bin/env bash
# Passthrough benchmark: how fast DeepSentry moves lines from a file to a sink, next to the
# machine's plain copy speed (`cat`).
#
# It builds the release binary, generates an HDFS-style log with the built-in `demo` source
# (seed 42, so every run reads the same data), then times, best of RUNS:
#   cat         cat FILE > out                       (the machine's copy limit)
#   blackhole   file source -> blackhole sink        (read, frame and batch only)
#   file        file source -> file sink, text       (a full read-and-write passthrough)
#   detect      file source -> deepsentry transform -> blackhole (the anomaly detector, with
#               the model in $MODEL, default models/default, one session per block id)
# and prints a Markdown table. The file -> file output must hold exactly the input's lines.
#
# Environment:
#   LINES=1000000          lines to generate
#   RUNS=3                 runs per path; the best wall time is reported
#   CARGO_TARGET_DIR=target  where the release build goes (relative to the repository root)
#   DEEPSENTRY_BIN=PATH    use this binary and skip the build
#   BENCH_DIR=DIR          keep work files in DIR (kept afterwards) instead of a temp dir
#   MODEL=DIR              model bundle for the detect path (default models/default)
#   BACKEND=flex           backend of the detect path (flex, ndarray, wgpu, auto)
#
# Usage: benches/passthrough.sh            LINES=20000 RUNS=1 benches/passthrough.sh
set -euo pipefail

LINES=${LINES:-1000000}
RUNS=${RUNS:-3}
case "$LINES$RUNS" in *[!0-9]*) echo "LINES and RUNS must be whole numbers" >&2; exit 2 ;; esac
if (( LINES < 1 || RUNS < 1 )); then
    echo "LINES and RUNS must be at least 1" >&2
    exit 2
fi

invoked_from=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# shellcheck source=benches/common.sh
source "$root/benches/common.sh"

# --- work directory --------------------------------------------------------------------------
if [[ -n "${BENCH_DIR:-}" ]]; then
    work=$(absolute "$BENCH_DIR" "$invoked_from")
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/deepsentry-bench.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
model=$(absolute "${MODEL:-models/default}" "$root")
log="$work/deepsentry.log"
: >"$log"
export DEEPSENTRY_LOG=warn

# --- binary ----------------------------------------------------------------------------------
if [[ -n "${DEEPSENTRY_BIN:-}" ]]; then
    bin=$(absolute "$DEEPSENTRY_BIN" "$invoked_from")
else
    if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
        CARGO_TARGET_DIR=$(absolute "$CARGO_TARGET_DIR" "$invoked_from")
    else
        CARGO_TARGET_DIR="$root/target"
    fi
    export CARGO_TARGET_DIR
    echo "building: cargo build --release -p deepsentry (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
    cargo build --release -p deepsentry >&2
    bin="$CARGO_TARGET_DIR/release/deepsentry"
fi
[[ -x "$bin" ]] || { echo "no deepsentry binary at $bin" >&2; exit 1; }

# --- timing ----------------------------------------------------------------------------------
if [[ -x /usr/bin/time ]] && /usr/bin/time -f '%e %M' -o /dev/null true 2>/dev/null; then
    gnu_time=1
else
    gnu_time=0
    echo "note: GNU time (/usr/bin/time) not found, so peak RSS is not measured;" \
        "install it with \`apt-get install time\`" >&2
fi

# measure OUTFILE CMD...: runs CMD (stdout to OUTFILE, stderr to the log) and sets `secs` (wall
# time, ms resolution from bash's `time`) and `rss_kb` (peak RSS from GNU time, or n/a).
measure() {
    local out=$1
    shift
    local tfile="$work/time.out" bfile="$work/bashtime.out" rc=0
    local TIMEFORMAT=%3R
    rm -f "$tfile"
    if (( gnu_time )); then
        { time /usr/bin/time -f '%e %M' -o "$tfile" "$@" >"$out" 2>>"$log"; } 2>"$bfile" || rc=$?
    else
        { time "$@" >"$out" 2>>"$log"; } 2>"$bfile" || rc=$?
    fi
    if (( rc != 0 )); then
        echo "FAILED (exit $rc): $*" >&2
        echo "--- last lines of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    secs=$(tail -n 1 "$bfile")
    if (( gnu_time )); then
        rss_kb=$(tail -n 1 "$tfile" | awk '{print $2}')
    else
        rss_kb=n/a
    fi
}

count_lines() { wc -l <"$1" | tr -d ' '; }

# --- input -----------------------------------------------------------------------------------
input="$work/hdfs.log"
demo_pipeline "$work/data-generate" "$input" "$LINES" >"$work/generate.yml"
echo "generating $LINES lines into $input" >&2
measure /dev/null "$bin" run -c "$work/generate.yml"
input_lines=$(count_lines "$input")
if [[ "$input_lines" != "$LINES" ]]; then
    echo "FAILED: the generator wrote $input_lines lines, expected $LINES" >&2
    exit 1
fi
input_bytes=$(stat -c %s "$input")

# pipeline YAML for one run: source `file` reading the input once, into sink $1.
pipeline() {
    local yml=$1 data_dir=$2 sink=$3 out=${4:-}
    {
        echo "data_dir: $(yaml_str "$data_dir")"
        echo "sources:"
        echo "  in:"
        echo "    type: file"
        echo "    include: [$(yaml_str "$input")]"
        echo "    read_from: beginning"
        echo "    exit_on_eof: true"
        if [[ $sink == detect ]]; then
            echo "transforms:"
            echo "  detect:"
            echo "    type: deepsentry"
            echo "    inputs: [in]"
            echo "    model: $(yaml_str "$model")"
            echo "    backend: ${BACKEND:-flex}"
            echo "    session_key: 'blk_-?\\d+'"
        fi
        echo "sinks:"
        echo "  out:"
        if [[ $sink == detect ]]; then
            echo "    inputs: [detect]"
        else
            echo "    inputs: [in]"
        fi
        if [[ $sink == blackhole || $sink == detect ]]; then
            echo "    type: blackhole"
        else
            echo "    type: file"
            echo "    path: $(yaml_str "$out")"
            echo "    encoding: text"
            echo "    append: false"
        fi
    } >"$yml"
}

# --- runs ------------------------------------------------------------------------------------
declare -A best_secs best_rss
record() { # record PATH: keeps the best wall time and the highest peak RSS of PATH's runs
    local path=$1
    if [[ -z "${best_secs[$path]:-}" ]] || awk -v a="$secs" -v b="${best_secs[$path]}" 'BEGIN { exit !(a < b) }'; then
        best_secs[$path]=$secs
    fi
    if [[ $rss_kb == n/a ]]; then
        best_rss[$path]=n/a
    elif [[ -z "${best_rss[$path]:-}" ]] || (( rss_kb > best_rss[$path] )); then
        best_rss[$path]=$rss_kb
    fi
}

copy="$work/cat.out"
sunk="$work/file-sink.out"
for ((run = 1; run <= RUNS; run++)); do
    echo "run $run/$RUNS" >&2

    measure "$copy" cat "$input"
    record cat
    rm -f "$copy"

    data=$(mktemp -d "$work/data.XXXXXX")
    pipeline "$work/blackhole.yml" "$data" blackhole
    measure /dev/null "$bin" run -c "$work/blackhole.yml"
    record blackhole
    rm -rf "$data"

    data=$(mktemp -d "$work/data.XXXXXX")
    rm -f "$sunk"
    pipeline "$work/file.yml" "$data" file "$sunk"
    measure /dev/null "$bin" run -c "$work/file.yml"
    record file
    rm -rf "$data"
    got=$(count_lines "$sunk")
    if [[ "$got" != "$input_lines" ]]; then
        echo "FAILED: file -> file wrote $got lines, the input has $input_lines" >&2
        exit 1
    fi
    rm -f "$sunk"

    data=$(mktemp -d "$work/data.XXXXXX")
    pipeline "$work/detect.yml" "$data" detect
    measure /dev/null "$bin" run -c "$work/detect.yml"
    record detect
    rm -rf "$data"
done

# --- report ----------------------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo
echo "DeepSentry passthrough: $input_lines lines, $(awk -v b="$input_bytes" 'BEGIN { printf "%.1f", b / 1e6 }') MB," \
    "best of $RUNS run(s); ${cpu:-unknown CPU}, $(nproc) cores"
echo
echo "| path | lines | seconds | lines/s | MB/s | peak RSS (MB) | vs cat |"
echo "|---|---:|---:|---:|---:|---:|---:|"
cat_secs=${best_secs[cat]}
for path in cat blackhole file detect; do
    case $path in
        detect) label='file -> deepsentry -> blackhole' ;;
        cat) label="\`cat FILE > out\`" ;;
        blackhole) label='file -> blackhole' ;;
        file) label='file -> file (text)' ;;
    esac
    awk -v label="$label" -v lines="$input_lines" -v bytes="$input_bytes" \
        -v s="${best_secs[$path]}" -v cs="$cat_secs" -v rss="${best_rss[$path]}" 'BEGIN {
        if (s <= 0) s = 0.001; if (cs <= 0) cs = 0.001
        r = (rss == "n/a") ? "n/a" : sprintf("%.1f", rss / 1024)
        printf "| %s | %d | %.3f | %.0f | %.1f | %s | %.2fx |\n",
            label, lines, s, lines / s, bytes / s / 1e6, r, (lines / s) / (lines / cs)
    }'
done
echo
echo "seconds: best wall time; MB/s: input bytes (1 MB = 10^6 bytes) per second;" \
    "peak RSS: highest of the runs (MiB); vs cat: lines/s relative to cat."
