#!/usr/bin/env bash
# Set up and run the whole test suite: Debian's chromium + chromium-driver for the
# console tests and redis-server for the Redis index (the tests start their own on free
# ports; the Debian service is not used), the dev tools, then lint, type-check and pytest.
#   scripts/test.sh [PYTEST ARGS]   (arguments go to the first pytest run)
set -euo pipefail
cd "$(dirname "$0")/.."
source_apt() {
  local missing=()
  for pkg in chromium chromium-driver redis-server openssl; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "please install: ${missing[*]}" >&2; return 1; }
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
source_apt
# Debian starts a redis-server service on 6379 when it installs one; the tests do not use it.
scripts/setup.sh dev
export SE_OFFLINE=true  # selenium must not try to download a browser
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict"; PYTHON=.venv/bin/python scripts/typecheck.sh
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
