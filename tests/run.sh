#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests that run the
# built binary against real files, pipes and sockets. Run from anywhere:
#
#   bash tests/run.sh
#
# It installs what the tests need first, so it works on a fresh Debian machine: rustfmt and
# clippy; Mesa's software Vulkan driver (lavapipe), so the GPU backend's test has a wgpu
# adapter to run on even where the machine has no GPU; the C toolchain and OpenSSL headers that
# build the bundled librdkafka with TLS; Tansu, the Kafka-protocol broker the Kafka tests start
# (tests/kafka-broker.sh; set KAFKA_BOOTSTRAP=host:port to run them against your own Kafka
# instead); and rsyslog, the syslog daemon the syslog tests start on loopback ports with their
# own configuration. Before
# the Rust checks, tests/lint-deploy.sh checks the Dockerfile, the Kubernetes manifests, the
# systemd unit, the Grafana dashboard and the shell scripts.
#
# Everything is built with the `gpu` feature, so the test build is also the check that the
# wgpu backend compiles (`cargo build` alone would resolve other features for shared
# dependencies and build burn a second time).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing mesa-vulkan-drivers (software Vulkan for the wgpu test)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      mesa-vulkan-drivers >/dev/null) || echo "could not install mesa-vulkan-drivers;" \
      "the wgpu test will say it has no adapter" >&2
  else
    echo "mesa-vulkan-drivers is not installed; the wgpu test will say it has no adapter" >&2
  fi
fi

# The bundled librdkafka is compiled from C with make; its configure script needs these, and
# OpenSSL's headers for TLS and SASL. The Kafka-over-TLS test makes its certificate with the
# `openssl` tool; the http and syslog source tests send with `curl` and `logger`.
missing=()
for tool in gcc g++ make pkg-config openssl curl logger; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing build tools for librdkafka and the tests' clients: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config \
      zlib1g-dev libssl-dev openssl curl bsdutils >/dev/null
  else
    echo "missing for the librdkafka build or the tests: ${missing[*]}" >&2
  fi
fi

if ! command -v rsyslogd >/dev/null && [ ! -x /usr/sbin/rsyslogd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing rsyslog (the syslog daemon of the syslog tests; it is not started as a service)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null
  else
    echo "rsyslog is not installed; the syslog tests will fail" >&2
  fi
fi

if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  bash tests/kafka-broker.sh install
fi

features=(--features deepsentry/gpu)

cargo fmt --all -- --check
bash tests/lint-deploy.sh
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings

# The test run, then one closing line with the totals of every test binary.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "${features[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
