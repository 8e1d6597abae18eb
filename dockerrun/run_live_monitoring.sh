#!/usr/bin/env bash
# Live monitoring: scores log lines as they arrive and prints each in the live monitor's
# format, `[14:23:47] ANOMALY - score: 3.67 (threshold: 2.45) - "..." ⚠️`, writing anomalies
# with their context to `output_file` when set. Settings come from live_monitoring_config.yml
# (log_file, tail_mode, output_file, threshold_multiplier, window_size, sequence_length,
# batch_interval); see docs/configuration.md, "Live monitoring".
#
#   bash dockerrun/run_live_monitoring.sh                         # log_file from the config
#   tail -f /var/log/syslog | bash dockerrun/run_live_monitoring.sh
#   ./myapp 2>&1 | bash dockerrun/run_live_monitoring.sh
#   LOG_FILE=/var/log/app.log bash dockerrun/run_live_monitoring.sh
#   bash dockerrun/run_live_monitoring.sh | grep ANOMALY | logger -t deepsentry -p user.alert
#
# Environment:
#   LOG_FILE, ANOMALY_MODEL     override log_file and model of the config
#   LIVE_MONITORING_CONFIG      the config file (default: live_monitoring_config.yml in the
#                               working directory, else the one at the top of this repository)
#   DEEPSENTRY_BIN              the binary (default: `deepsentry` on PATH, else
#                               target/release/deepsentry, built on first use)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The shipped config names the shipped model relative to this.
export DEEPSENTRY_HOME="${DEEPSENTRY_HOME:-$root}"

config="${LIVE_MONITORING_CONFIG:-}"
if [ -z "$config" ]; then
  if [ -f live_monitoring_config.yml ]; then
    config=live_monitoring_config.yml
  else
    config="$root/live_monitoring_config.yml"
  fi
fi

bin="${DEEPSENTRY_BIN:-}"
if [ -z "$bin" ]; then
  if command -v deepsentry >/dev/null 2>&1; then
    bin=deepsentry
  else
    bin="$root/target/release/deepsentry"
    if [ ! -x "$bin" ]; then
      echo "run_live_monitoring.sh: building deepsentry (once; takes a while)" >&2
      cargo build --release --locked --manifest-path "$root/Cargo.toml" -p deepsentry >&2
    fi
  fi
fi

exec "$bin" live -c "$config" "$@"
