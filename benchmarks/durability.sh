#!/usr/bin/env bash
# The cost of durability, side by side in one run: benchmarks/ingest.sh (demo config on
# the real clock) with the in-memory index, the sqlite index with synchronous = full (the
# default: every commit fsynced) and with synchronous = normal, alternating, ROUNDS times.
#   benchmarks/durability.sh [EVENTS] [ROUNDS]     (defaults: 200000 events, 2 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-200000}
rounds=${2:-2}
for round in $(seq "$rounds"); do
  for mode in memory sqlite-full sqlite-normal; do
    case $mode in
      memory) backend='"memory"'; options='{}' ;;
      sqlite-full) backend='"sqlite"'; options='{ synchronous = "full" }' ;;
      sqlite-normal) backend='"sqlite"'; options='{ synchronous = "normal" }' ;;
    esac
    echo "=== $mode (round $round)"
    HELIOS_INDEX__BACKEND=$backend HELIOS_INDEX__OPTIONS=$options \
      bash benchmarks/ingest.sh "$events" | grep -E '^==|sustained|in the daemon|COMPLETE latency|all outcomes|DISAGREE'
  done
done
