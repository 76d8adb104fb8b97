#!/usr/bin/env bash
# Set up and run HELIOS in demo mode: three simulated clouds with injected faults, the
# console on http://127.0.0.1:8080 and gRPC on 127.0.0.1:50051, no external services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "HELIOS demo: console http://127.0.0.1:8080  gRPC 127.0.0.1:50051  (Ctrl-C stops)"
echo "try: .venv/bin/helios status   .venv/bin/helios watch --kind MISSING"
exec .venv/bin/heliosd -c helios.toml run
