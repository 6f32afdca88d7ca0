#!/usr/bin/env bash
# The main job on the default plant. Today: set up, `check` the plant (the
# backup, its target set, its safety on the validation set), `adapt` it with
# SCPO into runs/<plant>/ (re-running replaces that run: --force), `export`
# it to ONNX and C for the host and the Cortex-M4F, `verify` the export
# (certificate.json; exit 1 if a check finds a counterexample), and run the
# generated C in the loop (`hil`: SIL as a host process, then the Cortex-M4F
# under QEMU), then write the evidence report (`report`: RUN_DIR/report.html,
# one self-contained page; its path is the last line printed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PLANT="${1:-models/double_integrator.yaml}"
.venv/bin/scpo-ctrl check "$PLANT"
.venv/bin/scpo-ctrl adapt "$PLANT" --force
NAME="$(.venv/bin/python -c 'import sys; from scpo_ctrl.config.plant_spec import load_plant_spec; print(load_plant_spec(sys.argv[1]).name)' "$PLANT")"
.venv/bin/scpo-ctrl export "runs/$NAME" --target cortex-m4
.venv/bin/scpo-ctrl verify "runs/$NAME"
.venv/bin/scpo-ctrl hil "runs/$NAME" --target sil
.venv/bin/scpo-ctrl hil "runs/$NAME" --target qemu
.venv/bin/scpo-ctrl report "runs/$NAME"
