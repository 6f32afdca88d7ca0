#!/usr/bin/env bash
# Sets up scpo-ctrl on a fresh machine: Debian packages, then a virtualenv in .venv
# with the package installed in editable mode plus the test tools and Ray (the `--ray` extra), then acados into .vendor/acados
# (for MPC backups). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-debian-packages.sh
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,ray]'
PYTHON=.venv/bin/python bash scripts/install-acados.sh
echo "setup ok: $(.venv/bin/python -c 'import scpo_ctrl; print("scpo_ctrl", scpo_ctrl.__version__)')"
