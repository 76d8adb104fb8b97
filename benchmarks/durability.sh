#!/usr/bin/env bash
# The cost of durability, side by side in one run: benchmarks/ingest.sh (demo config on
# the real clock) with the in-memory index, the sqlite index with synchronous = full (the
# default: every commit fsynced), with synchronous = normal, and the Redis index (a
# redis-server this script starts on a free port, appendonly off as Redis ships), and
# (mode redis-replica, not in the default list) the same Redis with a replica the index
# waits for (index.options.replicas = 1: WAIT after each group commit), alternating,
# ROUNDS times.
#   benchmarks/durability.sh [EVENTS] [ROUNDS] [MODES]
#   (defaults: 200000 events, 2 rounds, "memory sqlite-full sqlite-normal redis")
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-200000}
rounds=${2:-2}
modes=${3:-memory sqlite-full sqlite-normal redis}
redis_port=""
if [[ " $modes " == *" redis"* ]]; then
  redis_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis_dir=$(mktemp -d)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
    >"$redis_dir/log" 2>&1 &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null; rm -rf "$redis_dir"' EXIT
  sleep 0.5
fi
if [[ " $modes " == *" redis-replica "* ]]; then
  replica_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$replica_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$redis_dir" --replicaof 127.0.0.1 "$redis_port" >"$redis_dir/replica.log" 2>&1 &
  replica_pid=$!
  trap 'kill $redis_pid $replica_pid 2>/dev/null; rm -rf "$redis_dir"' EXIT
  until redis-cli -p "$replica_port" INFO replication | grep -q master_link_status:up; do sleep 0.2; done
fi
for round in $(seq "$rounds"); do
  for mode in $modes; do
    case $mode in
      memory) backend='"memory"'; options='{}' ;;
      sqlite-full) backend='"sqlite"'; options='{ synchronous = "full" }' ;;
      sqlite-normal) backend='"sqlite"'; options='{ synchronous = "normal" }' ;;
      redis) backend='"redis"'; options="{ url = \"redis://127.0.0.1:$redis_port/0\" }"
        redis-cli -p "$redis_port" FLUSHALL >/dev/null ;;
      redis-replica) backend='"redis"'
        options="{ url = \"redis://127.0.0.1:$redis_port/0\", replicas = 1 }"
        redis-cli -p "$redis_port" FLUSHALL >/dev/null ;;
    esac
    echo "=== $mode (round $round)"
    HELIOS_INDEX__BACKEND=$backend HELIOS_INDEX__OPTIONS=$options \
      bash benchmarks/ingest.sh "$events" | grep -E '^==|sustained|in the daemon|COMPLETE latency|decided|all outcomes|DISAGREE|no outcome watched' \
      || true  # a disagreement is printed; the comparison goes on
  done
done
