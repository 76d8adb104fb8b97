#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install HELIOS into it, editable.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh dev      with the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

apt_install() {  # apt_install PACKAGE... (only those missing)
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "please install: ${missing[*]}" >&2; return 1; }
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

python=""
for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { echo "HELIOS needs Python 3.11 or newer" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    # Debian ships venv separately.
    ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${ver}-venv" || apt_install python3-venv
    "$python" -m venv .venv
  fi
fi
extra=""
[ "${1:-}" = dev ] && extra="[dev,clouds]"
# Installed already from these very files? Then there is nothing to do. The stamp covers
# the build file and the list of modules (a strict editable install maps each file).
stamp=$( { echo "$extra"; cat pyproject.toml; find daemon control plugins ui ml proto -name '*.py' |
  LC_ALL=C sort; } | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.helios-installed 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
log=$(mktemp)
pip_quietly() {  # pip's and setuptools' chatter only when something fails
  if ! .venv/bin/python -m pip "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; exit 1; fi
}
pip_quietly install --quiet --upgrade pip
pip_quietly install --quiet --config-settings editable_mode=strict -e ".${extra}"
rm -f "$log"
echo "$stamp" > .venv/.helios-installed
.venv/bin/python -c 'import helios.daemon as d; print(f"HELIOS {d.__version__} installed")'
