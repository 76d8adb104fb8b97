#!/usr/bin/env bash
# Ingest throughput, reconcile latency and outcome accuracy through PublishStream:
# starts the demo daemon on the real clock (benchmarks/bench.toml: helios.toml with
# clock = "real"; simulator, console and detectors on), then runs
# `helios bench` at full speed and at a paced 50,000 copies/s (half the 100k bar), then
# the paced run again with --end-to-end (every outcome streamed back, to time COMPLETE
# from the client's side; that stream is extra work for the daemon and the client).
#   benchmarks/ingest.sh [EVENTS]     (default 300000 events = ~900,000 copies)
#   CONFIG=benchmarks/bench-minimal.toml benchmarks/ingest.sh   (nothing but ingest)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/heliosd ] || scripts/setup.sh
events=${1:-300000}
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cport=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ready=$(mktemp)
rm -f "$ready"
HELIOS_DAEMON__DATA_DIR="\"$(mktemp -d)\"" \
HELIOS_DAEMON__GRPC_ADDRESS="\"127.0.0.1:$port\"" HELIOS_DAEMON__CONSOLE_ADDRESS="\"127.0.0.1:$cport\"" \
  .venv/bin/heliosd -c "${CONFIG:-benchmarks/bench.toml}" run --ready-file "$ready" > /tmp/helios-bench-daemon.log 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$ready" ] && break; sleep 0.1; done
echo "== full speed"
.venv/bin/helios --address "127.0.0.1:$port" bench --events "$events" --settle 20
echo
echo "== paced at 50,000 copies/s"
.venv/bin/helios --address "127.0.0.1:$port" bench --events "$events" --rate 50000 --settle 20
echo
echo "== paced at 50,000 copies/s, every outcome watched (end to end)"
.venv/bin/helios --address "127.0.0.1:$port" bench --events "$events" --rate 50000 --settle 20 --end-to-end
