#!/usr/bin/env bash
# Kafka benchmark: kafka -> kafka passthrough through a DeepSentry pipeline, next to a plain
# rdkafka consume-and-produce loop (`kafka-tool copy`) measured in the same run, on the same
# broker and data.
#
# Each run creates a 6-partition topic, fills it with MESSAGES HDFS-style lines keyed by
# session, then copies it to a fresh topic twice: once with the plain loop, once with
#   kafka source -> kafka sink (text)
# Throughput is timed on the output topic by the same watcher for both (`kafka-tool wait`): from
# its first message to its MESSAGES-th, so consumer-group joins do not count. The table reports
# the best of RUNS.
#
# Environment:
#   MESSAGES=500000        messages per run
#   RUNS=3                 runs; the best time of each path is reported
#   KAFKA_BOOTSTRAP=h:p    use this Kafka instead of starting the Tansu test broker
#   CARGO_TARGET_DIR=target
#
# Usage: benches/kafka.sh              MESSAGES=100000 RUNS=1 benches/kafka.sh
set -euo pipefail

MESSAGES=${MESSAGES:-500000}
RUNS=${RUNS:-3}
case "$MESSAGES$RUNS" in *[!0-9]*) echo "MESSAGES and RUNS must be whole numbers" >&2; exit 2 ;; esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
echo "building: cargo build --release -p deepsentry -p deepsentry-kafka-tool" >&2
cargo build --release -p deepsentry -p deepsentry-kafka-tool >&2
bin="$CARGO_TARGET_DIR/release/deepsentry"
tool="$CARGO_TARGET_DIR/release/kafka-tool"

work=$(mktemp -d "${TMPDIR:-/tmp}/deepsentry-kafka-bench.XXXXXX")
port=19092
cleanup() {
    if [[ -n "${pipeline_pid:-}" ]]; then
        kill "$pipeline_pid" 2>/dev/null || true
    fi
    if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
        bash tests/kafka-broker.sh stop "$port" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
    bootstrap=$KAFKA_BOOTSTRAP
else
    bash tests/kafka-broker.sh start "$port"
    bootstrap=127.0.0.1:$port
fi
export DEEPSENTRY_LOG=warn

best_plain='' best_pipeline=''
better() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(b == "" || a < b) }'; }

for ((run = 1; run <= RUNS; run++)); do
    stamp="$(date +%s)-$run"
    input="bench-in-$stamp"
    "$tool" --bootstrap "$bootstrap" create-topic "$input" --partitions 6
    "$tool" --bootstrap "$bootstrap" produce "$input" --count "$MESSAGES"

    # The plain loop.
    "$tool" --bootstrap "$bootstrap" copy "$input" "bench-plain-$stamp" --count "$MESSAGES" \
        --group "bench-plain-$stamp" &
    copy_pid=$!
    secs=$("$tool" --bootstrap "$bootstrap" wait "bench-plain-$stamp" --count "$MESSAGES")
    wait "$copy_pid"
    echo "run $run: plain loop $secs s" >&2
    better "$secs" "$best_plain" && best_plain=$secs

    # The pipeline.
    cat >"$work/p.yml" <<YAML
data_dir: "$work/data"
sources:
  in:
    type: kafka
    bootstrap_servers: "$bootstrap"
    topics: ["$input"]
    group_id: "bench-pipeline-$stamp"
    auto_offset_reset: earliest
    librdkafka_options:
      session.timeout.ms: "6000"
sinks:
  out:
    type: kafka
    inputs: [in]
    bootstrap_servers: "$bootstrap"
    topic: "bench-pipeline-$stamp"
    encoding: text
    key_field: key
YAML
    "$bin" run -c "$work/p.yml" 2>>"$work/pipeline.log" &
    pipeline_pid=$!
    secs=$("$tool" --bootstrap "$bootstrap" wait "bench-pipeline-$stamp" --count "$MESSAGES")
    kill -TERM "$pipeline_pid"
    wait "$pipeline_pid" || { echo "the pipeline failed:" >&2; tail -n 20 "$work/pipeline.log" >&2; exit 1; }
    pipeline_pid=
    echo "run $run: pipeline $secs s" >&2
    better "$secs" "$best_pipeline" && best_pipeline=$secs
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo
echo "Kafka -> Kafka: $MESSAGES messages, 6 partitions, best of $RUNS run(s);" \
    "broker ${KAFKA_BOOTSTRAP:-Tansu (memory) on loopback}; ${cpu:-unknown CPU}, $(nproc) cores"
echo
echo "| path | messages | seconds | messages/s | vs plain loop |"
echo "|---|---:|---:|---:|---:|"
for path in plain pipeline; do
    case $path in
        plain) label='plain rdkafka consume -> produce loop'; s=$best_plain ;;
        pipeline) label='kafka source -> kafka sink (deepsentry)'; s=$best_pipeline ;;
    esac
    awk -v label="$label" -v n="$MESSAGES" -v s="$s" -v ps="$best_plain" 'BEGIN {
        if (s <= 0) s = 0.001; if (ps <= 0) ps = 0.001
        printf "| %s | %d | %.3f | %.0f | %.0f %% |\n", label, n, s, n / s, 100 * ps / s
    }'
done
echo
echo "seconds: from the first message in the output topic to the last (group joins excluded)."
