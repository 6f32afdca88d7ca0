#!/usr/bin/env bash
# The main job on the default plant. Today: set up, `check` the plant (the
# backup, its target set, its safety on the validation set), then `adapt` it
# with SCPO into runs/<plant>/ (re-running replaces that run: --force). Each
# verb joins this script as it lands (export, verify, hil, report).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PLANT="${1:-models/double_integrator.yaml}"
.venv/bin/scpo-ctrl check "$PLANT"
.venv/bin/scpo-ctrl adapt "$PLANT" --force
