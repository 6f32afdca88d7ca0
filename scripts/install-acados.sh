#!/usr/bin/env bash
# Installs acados (libraries, headers, t_renderer, acados_template) into .vendor/acados from the only
# wheel that carries it for Python 3.11, comma-deps-acados==0.2.2.post92, without its dependencies.
# The wheel also ships a slim casadi 3.6.7 as a top-level package that would shadow the real one: it is
# deleted. scpo_ctrl/backup/acados_env.py loads what is left (no prompt, no download). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.2.2.post92
TARGET=.vendor/acados
STAMP="$TARGET/.installed-$VERSION"
PYTHON=${PYTHON:-.venv/bin/python}
if [ -f "$STAMP" ]; then
    exit 0
fi
rm -rf "$TARGET.partial"
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$TARGET.partial" \
    "comma-deps-acados==$VERSION"
rm -rf "$TARGET.partial/casadi"
rm -rf "$TARGET"
mv "$TARGET.partial" "$TARGET"
touch "$STAMP"
echo "acados installed in $TARGET"
