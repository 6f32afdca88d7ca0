"""The default pipeline on the embedded MPC, adapt to QEMU: issue 19, Done-when 1, at the shipped plant's defaults.

    SCPO_CTRL_ACADOS_DIR=.vendor/acados .venv/bin/python benchmarks/empc_pipeline.py [--plant models/pendulum_empc.yaml]

Runs the verbs through the Python API exactly as a user would with every default of the plant file and of
``verification/campaign.yaml``: ``adapt`` (the verification loop on), ``export --target cortex-m4``, ``verify``,
``hil --target qemu`` and ``hil --target sil`` on the same episodes, then checks what Done-when 1 asks:

* the loss of the adapted law against the embedded MPC alone (the reference, measured in the same run by
  ``adapt``), with zero violating iterations;
* the M4 build is the certified law (embedded MPC + network + gate + monitor), not an LQR fallback;
* ``verify`` exits 0 (integrity holds, nothing FALSIFIED) and the solver check against the exact QP holds;
* under QEMU every HIL check passes, the law is bit-identical to the host float32 law along the HIL trajectory
  (no branch mismatch, deviation within the export's float32 bound), with instructions per step reported
  (QEMU ``-icount shift=0`` counts instructions, not cycles of a real chip);
* the SIL and QEMU runs of the same episodes agree exactly (worst rows, branch counts, deviations).

Writes ``benchmarks/results/empc_pipeline.md`` (the table for BENCHMARKS.md) and exits 1 when an item fails.
Wall times are of a 2-core machine shared with other jobs: noisy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scpo_ctrl  # noqa: E402

AGREEING_KEYS = ("safety", "branches", "trajectory_vs_python", "equivalence")


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - start


def run(plant: Path, work: Path) -> tuple[list[str], list[str]]:
    """The verbs in order; returns the table rows and the failed Done-when items."""
    rows, failed = [], []
    run_dir = work / "run"
    adapted, seconds = timed(scpo_ctrl.adapt, plant, run_dir, progress=False)
    s = adapted.summary
    loop = s.verification_loop
    rows.append(
        f"| adapt (defaults, loop on) | {s.iterations} iterations ({s.stop_reason}); loss {s.initial_loss:.4g} (the "
        f"embedded MPC alone, the reference) -> {s.final_loss:.4g}, ratio {s.loss_ratio:.3f}; "
        f"{s.violating_iterations} violating iterations; {loop.rounds} loop rounds, {loop.validation_states_added} "
        f"states added, last round clean: {loop.clean} | {seconds:.0f} |")
    if s.violating_iterations or not s.final_safe:
        failed.append(f"adapt: {s.violating_iterations} violating iterations, final safe {s.final_safe}")
    if s.loss_ratio is None or s.loss_ratio >= 1.0:
        failed.append(f"adapt: loss ratio {s.loss_ratio} is not below the embedded MPC's")

    exported, seconds = timed(scpo_ctrl.export, run_dir, target="cortex-m4")
    manifest = exported.manifest.to_json()
    arm = manifest["builds"]["cortex-m4"]
    objects = {key: value["sections_bytes"] for key, value in arm.items()
               if isinstance(value, dict) and "sections_bytes" in value}
    if "sections_bytes" in arm:
        objects = {"law object": arm["sections_bytes"], **objects}
    sizes = "; ".join(f"{name}: " + ", ".join(f"{k} {v:,} B" for k, v in sections.items())
                      for name, sections in objects.items())
    rows.append(
        f"| export --target cortex-m4 | {manifest['backup']['cortex_m4']}; self-check equivalent: "
        f"{exported.equivalent}; M4 sections ({sizes or 'not reported'}) "
        f"| {seconds:.0f} |")
    if not (exported.equivalent and manifest["backup"]["cortex_m4"].startswith("built: the certified law")):
        failed.append("export: the Cortex-M4 build is not the certified law, or the self-check failed")

    verified, seconds = timed(scpo_ctrl.verify, run_dir)
    checks = {c["name"]: c for c in verified.certificate.to_json()["checks"]}
    verdicts = ", ".join(f"{name} {c['verdict']}" for name, c in checks.items())
    rows.append(f"| verify (campaign defaults) | {verdicts}; exit {verified.exit_code} | {seconds:.0f} |")
    if verified.exit_code != 0 or any(c["verdict"] == "FALSIFIED" for c in checks.values()):
        failed.append(f"verify: exit {verified.exit_code}")
    if checks.get("mpc_solver", {}).get("verdict") != "VERIFIED":
        failed.append("verify: the embedded solver against the exact QP is not VERIFIED")

    reports = {}
    for target in ("qemu", "sil"):
        result, seconds = timed(scpo_ctrl.hil, run_dir, target=target, plots=False)
        report = result.report.to_json()
        reports[target] = report
        compute = report["compute"]
        work_per_step = (f"{int(compute['instructions_per_step_p50']):,} M4F instructions per step p50, "
                         f"{int(compute['instructions_per_step_max']):,} max (QEMU icount, not cycles)"
                         if "instructions_per_step_p50" in compute else "host compute")
        equivalence = report["equivalence"]
        rows.append(
            f"| hil --target {target} | {report['episodes']} x {report['steps_per_episode']} steps, passed: "
            f"{result.passed}; {report['safety']['violating_steps']} violating steps; branch mismatches "
            f"{equivalence['branch_mismatches']}; {work_per_step}; law: {report['law']} | {seconds:.0f} |")
        if not result.passed or equivalence["branch_mismatches"]:
            failed.append(f"hil {target}: {report['summary']}")
    differing = [key for key in AGREEING_KEYS if reports["sil"][key] != reports["qemu"][key]]
    rows.append(f"| SIL vs QEMU, same episodes | {'identical' if not differing else 'differ in ' + ', '.join(differing)}"
                f" ({', '.join(AGREEING_KEYS)}) | |")
    if differing:
        failed.append(f"SIL and QEMU differ in {differing}")
    return rows, failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plant", default=str(ROOT / "models" / "pendulum_empc.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "empc_pipeline.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        rows, failed = run(Path(args.plant), Path(work))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    lines = [f"Plant `{Path(args.plant).name}`, every default; `benchmarks/empc_pipeline.py` at "
             f"{commit.strip() or 'an unknown commit'}, finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "",
             "| step | result | wall s |", "|---|---|---|", *rows, "",
             "Done-when 1 items: " + ("all hold." if not failed else "FAILED: " + "; ".join(failed))]
    Path(args.out).write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
