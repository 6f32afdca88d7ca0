"""The ARCH-COMP AINNCS peer suite: our verdicts per check against the published ones, with times.

Run (from the repository root; needs ../shared/archcomp)::

    python benchmarks/archcomp.py [--archcomp ../shared/archcomp] [--only NAME,...] [--cells N]
        [--out benchmarks/results/archcomp.md]

Each instance of ``tests/archcomp/instances.json`` goes through ``scpo_ctrl.verify(plant, controller=onnx)``
(the same code as ``scpo-ctrl verify PLANT --controller NET.onnx``) with 1,000 i.i.d. uniform plus 256 Halton
Monte Carlo states, 10 falsification rounds, and reachability bisecting to depth 16 within the instance's
``bench_cells`` budget. The table gives the published verdict, ours per check, the proven fraction of the box
and the wall time per check. Every verdict is at the sampling instants, for the plant file's discrete map
(RK4 with the file's substeps), not in continuous time. Wall times are upper bounds on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scpo_ctrl  # noqa: E402
from scpo_ctrl.files import atomic_write_text  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archcomp", default=str(ROOT.parent / "shared" / "archcomp"))
    parser.add_argument("--only", default="")
    parser.add_argument("--cells", type=int, help="override every instance's reachability cell budget")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "archcomp.md"))
    args = parser.parse_args()
    archcomp = Path(args.archcomp)
    if not archcomp.is_dir():
        print(f"{archcomp}: no such folder (the ARCH-COMP data)", file=sys.stderr)
        return 2
    table = json.loads((ROOT / "tests" / "archcomp" / "instances.json").read_text())["instances"]
    only = set(filter(None, args.only.split(",")))
    rows = []
    for instance in table:
        if only and instance["name"] not in only:
            continue
        cells = args.cells or instance["bench_cells"]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            result = scpo_ctrl.verify(ROOT / "tests" / "archcomp" / instance["plant"],
                                      controller=archcomp / instance["network"], out=Path(directory) / "c.json",
                                      samples=1000, halton=256, falsify_iterations=10, max_depth=16, max_cells=cells)
        total = time.perf_counter() - start
        certificate = result.certificate
        checks = {check.name: check for check in certificate.checks}
        reach = checks["reachability"]
        fraction = reach.details.get("proven_fraction_of_box")
        counterexample = checks["falsification"].counterexample
        rows.append({
            "name": instance["name"], "published": instance["published"], "network": certificate.network,
            "mc": checks["closed_loop_safety"].verdict, "falsify": checks["falsification"].verdict,
            "reach": reach.verdict, "fraction": fraction, "cells": reach.details.get("cells_analysed"),
            "budget": cells, "failing": reach.details.get("failing_rows", {}),
            "t_mc": checks["closed_loop_safety"].seconds, "t_falsify": checks["falsification"].seconds,
            "t_reach": reach.seconds, "total": total,
            "cex": None if counterexample is None
            else {k: counterexample[k] for k in ("x0", "row", "step", "replayed")},
        })
        print(f"{instance['name']}: MC {rows[-1]['mc']}, falsification {rows[-1]['falsify']}, reach "
              f"{rows[-1]['reach']} ({fraction}), {total:.1f} s", flush=True)
    atomic_write_text(Path(args.out), _markdown(rows, args))
    print(f"wrote {args.out}")
    return 0


def _markdown(rows: list, args) -> str:
    lines = [
        "## ARCH-COMP AINNCS peer suite (`verify PLANT --controller NET.onnx`)",
        "",
        "Command: `python benchmarks/archcomp.py" + (f" --cells {args.cells}" if args.cells else "")
        + (f" --only {args.only}" if args.only else "") + "` (plant files in `tests/archcomp/`, networks from "
        "`../shared/archcomp`). Monte Carlo: 1,000 i.i.d. uniform + 256 Halton initial states (scenario bound "
        "beta = 1e-6); falsification: corners, the Monte Carlo's 8 worst, 10 rounds of 128 perturbations, a "
        "violation replayed in float64 and with onnxruntime on the file; reachability: zonotopes, bisection to "
        "depth 16 within the cell budget. Verdicts are at the sampling instants, for the plant file's RK4 map "
        "(ARCH-COMP states its properties in continuous time: a weaker claim). Times are wall seconds on a "
        "shared 2-core machine (other jobs running): upper bounds.",
        "",
        "| instance | network | published | Monte Carlo | falsification | reachability | proven fraction | cells "
        "(budget) | time MC / falsify / reach [s] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fraction = "-" if r["fraction"] is None else f"{r['fraction']:.4f}"
        lines.append(f"| {r['name']} | {r['network']} | {r['published']} | {r['mc']} | {r['falsify']} | {r['reach']} "
                     f"| {fraction} | {r['cells']} ({r['budget']}) | {r['t_mc']:.1f} / {r['t_falsify']:.1f} / "
                     f"{r['t_reach']:.1f} |")
    lines += ["", "Not proven (rows where unproven cells may fail) and counterexamples:", ""]
    for r in rows:
        if r["failing"]:
            lines.append(f"* {r['name']}: reachability UNKNOWN, unproven cells may fail "
                         + ", ".join(f"{k} ({v} cells)" for k, v in sorted(r["failing"].items())))
        if r["cex"]:
            lines.append(f"* {r['name']}: counterexample x0 = {[round(v, 6) for v in r['cex']['x0']]}, row "
                         f"{r['cex']['row']} at step {r['cex']['step']}, replayed margins {r['cex']['replayed']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
