"""The exported MPC-backed law in the SIL firmware: per-step cost against the solver alone and the law alone.

    .venv/bin/python benchmarks/mpc_sil.py [--episodes 4] [--steps 100] [--out benchmarks/results/mpc_sil.md]

For models/pendulum_mpc.yaml and models/cartpole_mpc.yaml (validation set reduced to 8 states, one SCPO
iteration: the weights do not change the work per step): adapt, export for the host, run
``hil --target sil`` (no faults). Reported per plant:

* the firmware's step (``compute_ticks``: clock_gettime around policy_step, which holds the MPC solve
  and the law), median and p99, and the round trip through the pipe;
* in the same command, the references on the same states in the same order: the exported controller
  alone (``lib<name>_mpc.so`` through ctypes: ``scpo_mpc_controller_sequence`` per episode, timed from
  Python, so its time includes the call) and the exported C law alone (``<name>_policy_batch`` on the
  same states and MPC inputs);
* the ratio firmware step / controller step (about 1: the law and the firmware add nothing measurable)
  and the law's share.

Host timings (clock_gettime); absolute times drift between runs on a shared VM, the ratios less so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export.host_library import HostLaw  # noqa: E402
from scpo_ctrl.export.law import law_from_run  # noqa: E402
from scpo_ctrl.export.mpc_bundle import MpcController  # noqa: E402
from scpo_ctrl.export.run import ExportRequest, run_export  # noqa: E402
from scpo_ctrl.files import atomic_write_text  # noqa: E402
from scpo_ctrl.hil.run import HilRequest, run_hil  # noqa: E402

PLANTS = ("pendulum_mpc", "cartpole_mpc")


def _reduced_plant(name: str, directory: Path) -> Path:
    import yaml

    data = yaml.safe_load((ROOT / "models" / f"{name}.yaml").read_text())
    data["safety"]["initial_states"]["count"] = 8
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure(name: str, directory: Path, episodes: int, steps: int) -> dict:
    run = directory / name
    run_adapt(AdaptRequest(plant=str(_reduced_plant(name, directory)), out=str(run), iterations=1,
                           progress=False))
    export = run_export(ExportRequest(run_dir=str(run)))
    report = run_hil(HilRequest(run_dir=str(run), target="sil", episodes=episodes, steps=steps,
                                plots=False)).report.to_json()
    law = law_from_run(run)
    trace = json.loads((run / "hil" / "sil" / "report.json").read_text())
    x0 = np.array(trace["initial_states"])
    # the states the firmware solved at: replay them from the Python closed loop of the same law and MPC
    from scpo_ctrl.export.mpc_bundle import MpcLawInTheLoop
    from scpo_ctrl.plant.model import build_plant
    from scpo_ctrl.sim.closed_loop import simulate

    model = build_plant(load_plant_spec(run / "plant.yaml"))
    library = run / "export" / "host" / f"lib{law.name}_mpc.so"
    loop = simulate(model, MpcLawInTheLoop(library, law, len(x0)), x0, steps - 1, law.P, law.c, law.x_eq)
    X = loop.x.astype(np.float32).astype(float)  # (E, steps, nx): what the wire carried
    controller = MpcController(library, law.nx, law.nu, law.u_eq)
    per_step, U = [], []
    for episode in X:
        start = time.perf_counter()
        sequence = controller.sequence(episode)
        per_step.append((time.perf_counter() - start) / len(episode))
        U.append(sequence.u)
    host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, "float32",
                   backup_input=True)
    flat_X, flat_U = X.reshape(-1, law.nx), np.concatenate(U)
    repeats = 200
    start = time.perf_counter()
    for _ in range(repeats):
        host.evaluate(flat_X, flat_U)
    law_seconds = (time.perf_counter() - start) / (repeats * len(flat_X))
    compute = report["compute"]
    controller_seconds = float(np.median(per_step))
    return {
        "plant": name, "horizon": load_plant_spec(run / "plant.yaml").backup.horizon,
        "episodes": episodes, "steps": steps, "passed": report["summary"]["passed"],
        "equivalence_ratio": report["equivalence"]["worst_bound_ratio"],
        "firmware_step_p50_ms": compute["seconds_p50"] * 1e3, "firmware_step_p99_ms": compute["seconds_p99"] * 1e3,
        "round_trip_p50_ms": report["latency_seconds"]["p50"] * 1e3,
        "round_trip_p99_ms": report["latency_seconds"]["p99"] * 1e3,
        "controller_step_ms": controller_seconds * 1e3, "law_step_us": law_seconds * 1e6,
        "firmware_over_controller": compute["seconds_p50"] / controller_seconds,
        "law_share": law_seconds / compute["seconds_p50"],
        "self_check": export.manifest.self_check_passed,
    }


def table(rows: list, command: str) -> str:
    lines = [
        "# The MPC-backed law in the SIL firmware", "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}; host clock_gettime, one process per "
        "firmware; absolute times drift between runs on this VM).", "",
        "| plant | MPC horizon | SIL passed | firmware step p50 / p99 [ms] | round trip p50 / p99 [ms] | "
        "controller alone [ms/step] | firmware / controller | C law alone [us/step] | law share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['plant']} | {r['horizon']} | {'yes' if r['passed'] else 'no'} | "
            f"{r['firmware_step_p50_ms']:.3f} / {r['firmware_step_p99_ms']:.3f} | "
            f"{r['round_trip_p50_ms']:.3f} / {r['round_trip_p99_ms']:.3f} | {r['controller_step_ms']:.3f} | "
            f"{r['firmware_over_controller']:.2f} | {r['law_step_us']:.2f} | {r['law_share']:.2%} |")
    lines += ["", "Firmware step: the timed `policy_step` (MPC solve + law) inside the SIL process. Controller "
              "alone: `scpo_mpc_controller_sequence` on the same states in the same order, timed from Python "
              "per episode. C law alone: `<name>_policy_batch` on the same states and MPC inputs."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mpc_sil.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpc-sil-") as temporary:
        rows = [measure(name, Path(temporary), args.episodes, args.steps) for name in PLANTS]
    command = f".venv/bin/python benchmarks/mpc_sil.py --episodes {args.episodes} --steps {args.steps}"
    text = table(rows, command)
    atomic_write_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
