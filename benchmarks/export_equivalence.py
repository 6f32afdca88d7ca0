"""Equivalence of the exported artefacts with the Python reference on every plant (issue 4, DoD 1).

    .venv/bin/python benchmarks/export_equivalence.py [--iterations 3] [--full-strength]

For each model: a short `adapt` (or, with --full-strength, random weights in every layer, the hardest case
for float32), then exports in float64 and float32, and the 10,000-state equivalence campaign (inside and
beyond the state box, on its boundary, near the target set's and the gate's switching surfaces, near the
equilibrium) through host C, onnxruntime, and the Cortex-M4F build under QEMU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def lqr_models() -> list:
    """The shipped plant files with an LQR backup (the *_mpc files are measured by benchmarks/mpc_*.py)."""
    return [path for path in sorted((ROOT / "models").glob("*.yaml"))
            if yaml.safe_load(path.read_text())["backup"]["type"] == "lqr"]


sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402
from scpo_ctrl.export.campaign import equivalence_campaign  # noqa: E402
from scpo_ctrl.export.equivalence import compare  # noqa: E402
from scpo_ctrl.export.error_bound import ONNX_ACTIVATION_ULPS  # noqa: E402
from scpo_ctrl.export.firmware import build_vector_firmware, run_vectors  # noqa: E402
from scpo_ctrl.export.host_library import HostLaw  # noqa: E402
from scpo_ctrl.export.law import law_from_run  # noqa: E402
from scpo_ctrl.export.run import ExportRequest, run_export, run_onnx  # noqa: E402
from scpo_ctrl.policy.mlp import MlpLayout  # noqa: E402
from scpo_ctrl.policy.residual import ResidualPolicy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--full-strength", action="store_true")
    args = parser.parse_args()
    print("| plant | implementation | states | worst abs error | largest tolerance | worst error / tolerance "
          "| branch mismatches (away / near switching) | reason mismatches |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        for model in lqr_models():
            base = Path(temporary) / model.stem
            run_adapt(AdaptRequest(plant=str(model), out=str(base), iterations=args.iterations, progress=False))
            if args.full_strength:
                policy, theta, metadata = ResidualPolicy.load(base / "policy.npz")
                theta = MlpLayout(policy.layout.sizes).initial_theta(np.random.default_rng(1), zero_last_layer=False)
                policy.save(base / "policy.npz", theta, metadata)
            law = law_from_run(base)
            X = equivalence_campaign(law, seed=7).X
            results = []
            for precision in ("float64", "float32"):
                run = Path(temporary) / f"{model.stem}-{precision}"
                run.mkdir()
                for name in ("plant.yaml", "policy.npz"):
                    shutil.copyfile(base / name, run / name)
                target = "cortex-m4" if precision == "float32" else "host"
                run_export(ExportRequest(run_dir=str(run), precision=precision, target=target))
                host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu,
                               precision)
                results.append(compare(law, f"C host {precision}", precision, X, host.evaluate(X)))
                results.append(compare(law, f"onnxruntime {precision}", precision, X,
                                       run_onnx(run / "export" / "policy.onnx", X, precision), any_order=True,
                                       activation_ulps=ONNX_ACTIVATION_ULPS))
                if precision == "float32":
                    elf = build_vector_firmware(run / "export", law.name, run / "qemu")
                    output, _ = run_vectors(elf, X, law.nu, precision, run / "qemu")
                    results.append(compare(law, "C Cortex-M4F float32 (QEMU)", precision, X, output))
            for r in results:
                print(f"| {model.stem} | {r.implementation} | {r.states} | {r.worst_error:.3g} | {r.max_tolerance:.3g} "
                      f"| {r.worst_bound_ratio:.3g} | {r.branch_mismatches} / {r.branch_mismatches_near_switching} "
                      f"| {r.reason_mismatches} |", flush=True)


if __name__ == "__main__":
    main()
