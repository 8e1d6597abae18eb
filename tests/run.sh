#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests that run the
# built binary against real files, pipes and sockets. Run from anywhere:
#
#   bash tests/run.sh
#
# It installs what the tests need first (nothing beyond the Rust toolchain yet), so it works
# on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The test run, then one closing line with the totals of every test binary.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
