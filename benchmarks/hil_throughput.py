"""HIL throughput: steps per second and round-trip latency for the SIL (pipe) and QEMU (UART over TCP) targets.

    .venv/bin/python benchmarks/hil_throughput.py [--run runs/double_integrator] [--episodes 8]

RUN_DIR must hold an adapted policy; it is copied to a temporary directory and exported there with
``--target cortex-m4``. Each configuration runs ``scpo-ctrl hil``'s code (no plots) on the same
episodes (the plant's validation set, its safety horizon each). Round trips are wall-clock, from the
moment the harness sends a STATE frame to the accepted CONTROL frame; they include the harness's
framing, the link, and the target's parsing and step. The harness's per-step Python work (plant step)
is outside the round trip but inside steps/s. QEMU runs with -icount shift=0: its instruction counts
are not cycles of a real chip, and its wall-clock speed says nothing about a real Cortex-M4F.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scpo_ctrl.export.run import ExportRequest, run_export  # noqa: E402
from scpo_ctrl.hil.run import HilRequest, run_hil  # noqa: E402

CONFIGURATIONS = (
    ("sil", "sil", ""),
    ("sil, faults", "sil", "drop=0.05,corrupt=0.05,delay=0.02,noise=0.01"),
    ("qemu", "qemu", ""),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "double_integrator"))
    parser.add_argument("--episodes", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / Path(args.run).name
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("export", "hil"))
        run_export(ExportRequest(run_dir=str(run), target="cortex-m4"))
        print("| target | episodes x steps | steps/s | round trip p50 [ms] | p99 [ms] | max [ms] | "
              "target compute per step (p50) | watchdog replies | passed |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, target, faults in CONFIGURATIONS:
            report = run_hil(HilRequest(run_dir=str(run), target=target, episodes=args.episodes, faults=faults,
                                        plots=False)).report.to_json()
            latency, compute = report["latency_seconds"], report["compute"]
            if "instructions_per_step_p50" in compute:
                work = f"{compute['instructions_per_step_p50']:.0f} instructions (QEMU -icount)"
            else:
                work = f"{compute['seconds_p50'] * 1e6:.2f} us (clock_gettime)"
            print(f"| {label} | {report['episodes']} x {report['steps_per_episode']} | "
                  f"{report['steps_per_second']:.0f} | {latency['p50'] * 1e3:.3f} | {latency['p99'] * 1e3:.3f} | "
                  f"{latency['max'] * 1e3:.2f} | {work} | {report['frames']['watchdog_replies']} | "
                  f"{report['summary']['passed']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
