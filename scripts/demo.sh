#!/usr/bin/env bash
# Set up and run HELIOS in demo mode: three simulated clouds with injected faults, the
# console and gRPC live (addresses in heliosd's banner), no external services.
#
# Every run starts from a fresh state directory (.helios): the previous run's state is
# kept in .helios.previous, not reused. `scripts/demo.sh --resume` continues it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
resume=false
for arg in "$@"; do
  case "$arg" in
    --resume) resume=true ;;
    -h|--help) sed -n 2,6p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $arg (only --resume)" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
state=.helios
if [ "$resume" = true ]; then
  echo "HELIOS demo: resuming the previous run's state in $state"
elif [ -d "$state" ]; then
  rm -rf "$state.previous"
  mv "$state" "$state.previous"
  echo "HELIOS demo: fresh state in $state (the previous run's is in $state.previous; --resume continues it)"
else
  echo "HELIOS demo: fresh state in $state"
fi
echo "HELIOS demo: the clock runs 10x the wall clock; scheduled faults at simulated minutes 20, 30, 40, 50 (wall minutes 2, 3, 4, 5). Ctrl-C stops."
exec .venv/bin/heliosd -c helios.toml run
