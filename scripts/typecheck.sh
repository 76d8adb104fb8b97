#!/usr/bin/env bash
# mypy --strict over the package as `helios.*`: a tree of links maps the repo's folders to
# their import names (the installed, editable copy is site-packages to mypy, which it
# does not report on).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/helios
rm -rf build/typecheck
mkdir -p "$tree"
for pair in daemon:daemon control:control plugins:plugins ui:ui ml:ml v1:proto/helios/v1; do
  ln -s "$PWD/${pair#*:}" "$tree/${pair%%:*}"
done
exec "${PYTHON:-python}" -m mypy
