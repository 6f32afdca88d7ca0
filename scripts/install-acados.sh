#!/usr/bin/env bash
# Installs acados (for MPC backups) into .vendor/acados with `scpo-ctrl setup-acados`: the registry wheel
# comma-deps-acados==0.2.2.post92 without its dependencies, its bundled casadi deleted, moved into place
# only once complete (scpo_ctrl/backup/acados_setup.py). scpo_ctrl/backup/acados_env.py looks there in a
# checkout (no prompt, no download). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SCPO_CTRL_ACADOS_DIR="$PWD/.vendor/acados" "$PYTHON" -m scpo_ctrl.cli setup-acados
