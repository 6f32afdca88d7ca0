"""``scpo-ctrl``: the command line. Thin: parse, call the library, print.

Exit codes: 0 success; 1 the check ran and found the artefact unsafe; 2 bad
input or usage (one message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

from . import __version__
from .errors import ScpoError, UsageError
from .files import json_safe
from .resources import plant_file, shipped_plants

EXIT_OK, EXIT_UNSAFE, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.handler(args)
    except ScpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scpo-ctrl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"scpo-ctrl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details on stderr")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    check = verbs.add_parser("check", help="validate a plant file, design the backup, check it on the validation set")
    check.add_argument("plant", help="plant YAML file (schema scpo-plant/1), or the name of a shipped example: "
                       + _shipped_plants())
    check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    check.set_defaults(handler=_check)

    adapt = verbs.add_parser("adapt", help="adapt the residual neural policy with SCPO (or a baseline)")
    adapt.add_argument("plant", help="plant YAML file, or the name of a shipped example")
    adapt.add_argument("--out", help="run directory (default runs/<plant name>)")
    adapt.add_argument("--iterations", type=int, help="override scpo.iterations")
    adapt.add_argument("--seed", type=int, help="override scpo.seed")
    adapt.add_argument("--method", default="scpo", help="scpo (default) | unconstrained | penalty | lagrangian")
    adapt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a setting, e.g. --set scpo.step_size=0.5 (repeatable)")
    adapt.add_argument("--resume", action="store_true", help="continue an interrupted run in its directory")
    adapt.add_argument("--force", action="store_true", help="overwrite a finished or interrupted run")
    adapt.add_argument("--no-verify-loop", dest="verify_loop", action="store_false",
                       help="do not grow the validation set with the verifier's counterexamples")
    adapt.add_argument("--json", action="store_true", help="print adaptation.json on stdout")
    adapt.add_argument("--quiet", action="store_true", help="no progress bar")
    adapt.set_defaults(handler=_adapt)

    export = verbs.add_parser("export", help="write the certified law as ONNX and C99 (RUN_DIR/export/)")
    export.add_argument("run_dir", help="run directory written by `adapt`")
    export.add_argument("--precision", default="float32", help="float32 (default) | float64")
    export.add_argument("--target", default="host", help="host (default) | cortex-m4 (also cross-compiles)")
    export.add_argument("--profile", default="speed",
                        help="code profile of the C: speed (default; blocked inner products, fewest instructions) "
                             "| size (one table, one dense routine; smallest code) | unrolled (the previous code)")
    export.add_argument("--json", action="store_true", help="print manifest.json on stdout")
    export.set_defaults(handler=_export)

    verify = verbs.add_parser("verify", help="check the exported artefacts; write RUN_DIR/certificate.json")
    verify.add_argument("run_dir", help="run directory with an export/")
    # left out, these take the campaign file's values (verification/campaign.yaml, or --campaign FILE)
    verify.add_argument("--samples", type=int, help="uniform random initial states")
    verify.add_argument("--halton", type=int, help="low-discrepancy initial states")
    verify.add_argument("--beta", type=float, help="confidence parameter of the scenario bound")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--cells", type=int, dest="cells_per_axis", help="reachability grid cells per state")
    verify.add_argument("--depth", type=int, dest="max_depth", help="bisections of failing cells")
    verify.add_argument("--max-cells", type=int, dest="max_cells", help="reachability cells analysed in all")
    verify.add_argument("--campaign", metavar="FILE",
                        help="campaign file whose values the flags left out take (default: $SCPO_CTRL_CAMPAIGN, "
                        "else verification/campaign.yaml)")
    verify.add_argument("--json", action="store_true", help="print certificate.json on stdout")
    verify.set_defaults(handler=_verify)

    hil = verbs.add_parser("hil", help="run the exported C on a target against the simulated plant (HIL)")
    hil.add_argument("run_dir", help="run directory with an export/ (float32)")
    hil.add_argument("--target", default="sil", help="sil (default) | qemu | serial:PORT")
    hil.add_argument("--steps", type=int, help="steps per episode (default: the plant's safety horizon)")
    hil.add_argument("--episodes", type=int, default=8, help="initial states, from the validation set (8)")
    hil.add_argument("--faults", default="", metavar="SPEC",
                     help="e.g. drop=0.05,corrupt=0.05,delay=0.02,delay_s=0.08,noise=0.01, or a preset of "
                     "verification/campaign.yaml, optionally followed by ,KEY=VALUE")
    hil.add_argument("--watchdog-ms", type=float, help="target watchdog deadline [ms] (default dt/2)")
    hil.add_argument("--realtime", action="store_true",
                     help="run the target's watchdog on its own clock (always for serial:); by default sil and "
                     "qemu advance on simulated time, where host load cannot trigger the watchdog")
    hil.add_argument("--seed", type=int, default=0)
    hil.add_argument("--no-plots", action="store_true", help="skip traces.png and latency.png")
    hil.add_argument("--json", action="store_true", help="print the report on stdout")
    hil.set_defaults(handler=_hil)

    report = verbs.add_parser("report", help="write the evidence report RUN_DIR/report.html (one self-contained page)")
    report.add_argument("run_dir", help="run directory written by `adapt` (and export, verify, hil)")
    report.add_argument("--json", action="store_true", help="print the sections and source hashes on stdout")
    report.set_defaults(handler=_report)

    acados = verbs.add_parser("setup-acados", help="install acados, which MPC backups need (from the package registry)")
    acados.add_argument("--dir", dest="directory",
                        help="target directory (default $SCPO_CTRL_ACADOS_DIR, else ~/.local/share/scpo-ctrl/acados)")
    acados.set_defaults(handler=_setup_acados)
    return parser


def _check(args: argparse.Namespace) -> int:
    from .check import run_check

    report = run_check(plant_file(args.plant))
    if args.json:
        print(json.dumps(json_safe(report.to_dict()), indent=2))
    else:
        print(_format_check(report))
    return EXIT_OK if report.backup_safe else EXIT_UNSAFE


def _adapt(args: argparse.Namespace) -> int:
    from .adapt import AdaptRequest, run_adapt

    request = AdaptRequest(
        plant=plant_file(args.plant), out=args.out, iterations=args.iterations, seed=args.seed, method=args.method,
        overrides=tuple(args.overrides), resume=args.resume, force=args.force, progress=not args.quiet,
        verify_loop=args.verify_loop,
    )
    result = run_adapt(request)
    summary = result.summary
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        ratio = summary["loss_ratio"]
        print(f"run directory {result.run_dir}")
        print(f"  method {summary['method']}, {summary['iterations']} iterations ({summary['stop_reason']}), "
              f"{summary['seconds']:.1f} s")
        print(f"  loss {summary['initial_loss']:.6g} (backup) -> {summary['final_loss']:.6g}"
              + (f"  (ratio {ratio:.4f})" if ratio is not None else ""))
        print(f"  steps: {summary['accepted']} accepted, {summary['rejected']} rejected, {summary['zero_steps']} zero")
        print(f"  safe at every iteration: {'yes' if summary['feasible_every_iteration'] else 'NO'}"
              f" ({summary['violating_iterations']} violating iterations, worst g {summary['worst_g']:.4g})")
        loop = summary.get("verification_loop", {})
        if loop.get("enabled"):
            proven = loop["proven_fraction"]
            print(f"  verification loop: {loop['rounds']} round(s), {loop['validation_states_added']} validation states "
                  f"added ({loop['validation_states']} now)"
                  + (f", reachability proves {100 * proven:.1f}% of the box" if proven is not None else "")
                  + ("; the last round found nothing" if loop["clean"] else ""))
            unsafe = (loop.get("last_round") or {}).get("backup_unsafe", 0)
            if unsafe:
                print(f"  WARNING: the backup itself breaks a row from {unsafe} state(s) the last round found in the "
                      "initial box (not added: no law adapted from it can be certified there; see `check`)")
    if result.interrupted:
        print("interrupted: the last accepted iterate is in policy.npz; continue with --resume", file=sys.stderr)
        return 130
    return EXIT_OK if summary["final_safe"] else EXIT_UNSAFE


def _export(args: argparse.Namespace) -> int:
    from .export.run import ExportRequest, run_export

    result = run_export(ExportRequest(run_dir=args.run_dir, precision=args.precision, target=args.target,
                                      profile=args.profile))
    manifest = result.manifest
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        print(f"export {result.export_dir} ({manifest['precision']}, target {manifest['target']}, "
              f"profile {manifest['profile']})")
        for path, digest in manifest["artefacts"].items():
            print(f"  {digest[:16]}  {path}")
        for name, info in manifest["builds"].items():
            sections = info["sections_bytes"]
            stack = max(info["stack_bytes"].values(), default=0)
            print(f"  {name}: text {sections['text']} B, rodata {sections['rodata']} B, data {sections['data']} B, "
                  f"bss {sections['bss']} B, deepest stack frame {stack} B")
        for check in manifest["self_check"]:
            print(f"  self-check {check['implementation']}: {check['states']} states, worst |du| "
                  f"{check['worst_error']:.3g} ({check['worst_bound_ratio']:.3f} of the tolerance), "
                  f"branch mismatches {check['branch_mismatches']} -> {'ok' if check['passed'] else 'FAILED'}")
    return EXIT_OK if result.equivalent else EXIT_UNSAFE


def _verify(args: argparse.Namespace) -> int:
    from .verify.run import VerifyRequest, run_verify

    if ((args.samples is not None and args.samples < 1) or (args.halton is not None and args.halton < 0)
            or (args.max_depth is not None and args.max_depth < 0)
            or (args.cells_per_axis is not None and args.cells_per_axis < 1)
            or (args.max_cells is not None and args.max_cells < 1)):
        raise UsageError("--samples, --cells, --max-cells must be >= 1; --halton, --depth >= 0")
    # flags left out stay None: run_verify takes the campaign file's values (the one place they are set)
    result = run_verify(VerifyRequest(run_dir=args.run_dir, samples=args.samples, halton=args.halton,
                                      beta=args.beta, seed=args.seed, cells_per_axis=args.cells_per_axis,
                                      max_depth=args.max_depth, max_cells=args.max_cells, campaign=args.campaign))
    certificate = result.certificate
    if args.json:
        print(json.dumps(json_safe(certificate), indent=2))
        return result.exit_code
    print(f"certificate {result.path}")
    for check in certificate["checks"]:
        print(f"  {check['verdict']:<9} {check['name']}: {check['evidence']}, {check['seconds']:.1f} s")
        details, counterexample = check["details"], check["counterexample"]
        if check["name"] == "closed_loop_safety":
            print(f"            {details['initial_states']} closed loops, {details['violating_trajectories']} "
                  f"violating; C in the loop at {details['steps_per_second_c_in_the_loop']:.3g} steps/s")
            if details["scenario_bound"]:
                print(f"            {details['scenario_bound']['statement']}")
        if check["name"] == "closed_loop_reach":
            print(f"            reach rate {details['reach_rate']:.4f}")
        if check["name"] == "reachability" and "cells" in details:
            print(f"            {details['verified_cells']} of {details['cells']} cells verified "
                  f"({100 * details['verified_fraction_of_box']:.1f}% of the box)")
        if counterexample:
            print(f"            counterexample: {json.dumps(json_safe(counterexample))}")
            alone = counterexample.get("backup_alone")
            if alone and alone["breaks_the_row"]:
                print(f"            the backup alone breaks {counterexample['row']} from this state too "
                      f"({alone['value']:.4g}): the box holds states this backup cannot save (see `check`)")
    print("  safe for every initial state of the box: "
          + ("yes (proof)" if certificate["summary"]["safe_for_every_initial_state_of_the_box"] else "not shown"))
    return result.exit_code


def _hil(args: argparse.Namespace) -> int:
    from .hil.run import HilRequest, run_hil

    result = run_hil(HilRequest(run_dir=args.run_dir, target=args.target, steps=args.steps, episodes=args.episodes,
                                faults=args.faults, seed=args.seed, watchdog_ms=args.watchdog_ms,
                                plots=not args.no_plots, realtime=args.realtime))
    report = result.report
    if args.json:
        print(json.dumps(json_safe(report), indent=2))
        return EXIT_OK if result.passed else EXIT_UNSAFE
    latency, compute, frames = report["latency_seconds"], report["compute"], report["frames"]
    print(f"hil report {result.path}")
    print(f"  target {report['description']}")
    print(f"  law: {report['law']}")
    print(f"  timing: {report['timing']}, watchdog {report['watchdog_seconds'] * 1e3:g} ms")
    print(f"  {report['episodes']} episodes x {report['steps_per_episode']} steps, "
          f"{report['steps_per_second']:.0f} steps/s; round trip p50 {latency['p50'] * 1e3:.3f} ms, "
          f"p99 {latency['p99'] * 1e3:.3f} ms, max {latency['max'] * 1e3:.3f} ms; "
          f"deadline misses (> dt = {report['dt_seconds']:g} s): {report['deadline_misses']}")
    if "instructions_per_step_p50" in compute:
        print(f"  target compute: {compute['instructions_per_step_p50']:.0f} instructions per step (p50, QEMU "
              f"-icount instruction count, not cycles), max {compute['instructions_per_step_max']:.0f}")
    elif "seconds_p50" in compute:
        print(f"  target compute: {compute['seconds_p50'] * 1e6:.2f} us per step (p50, clock_gettime), "
              f"max {compute['seconds_max'] * 1e6:.2f} us")
    equivalence = report["equivalence"]
    print(f"  equivalence: worst |du| {equivalence['worst_error']:.3g} ({equivalence['worst_bound_ratio']:.3f} of "
          f"the float32 tolerance), branch mismatches {equivalence['branch_mismatches']}")
    print("  branches: " + ", ".join(f"{name} {count}" for name, count in report["branches"].items()))
    trajectory = report["trajectory_vs_python"]
    if "within_propagated_bound" in trajectory:
        print(f"  trajectory vs Python closed loop: max |dx| {max(trajectory['max_abs_state_deviation']):.3g}, "
              f"propagated float32 bound up to {max(trajectory['propagated_bound_max']):.3g} "
              f"(worst {trajectory['worst_deviation_over_bound']:.3f} of it)")
    safety = report["safety"]
    print(f"  safety: {safety['violating_steps']} violating steps; worst rows "
          + ", ".join(f"{n} {v:.4g}" for n, v in zip(safety["row_names"], safety["worst_per_row"])))
    injected = ", ".join(f"{k} {v}" for k, v in frames["injected"].items() if v) or "none"
    target = frames["target"]
    print(f"  faults injected: {injected}; target rejected crc {target['crc_errors']}, length "
          f"{target['length_errors']}, header {target['header_errors']}, sequence {target['sequence_errors']}; "
          f"watchdog replies {frames['watchdog_replies']} (late host {frames['late_host_steps']}, unexplained "
          f"{frames['watchdog_replies_unexplained']}); repeats {frames['repeat_requests']}")
    for name, ok in report["summary"]["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    print(f"  safety held: {'yes' if report['summary']['safety_held'] else 'NO'}")
    return EXIT_OK if result.passed else EXIT_UNSAFE


def _report(args: argparse.Namespace) -> int:
    from .report import ReportRequest, run_report

    result = run_report(ReportRequest(run_dir=args.run_dir))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    for section in result.data.sections:
        if not section.present:
            print(f"  {section.title}: {section.missing}")
    print(f"report {result.path}")
    return EXIT_OK


def _setup_acados(args: argparse.Namespace) -> int:
    from .backup.acados_setup import setup_acados

    result = setup_acados(args.directory)
    state = "already installed" if result.already_installed else "installed"
    print(f"acados ({result.version}) {state} in {result.directory}")
    return EXIT_OK


def _shipped_plants() -> str:
    return ", ".join(shipped_plants()) or "none installed"


def _format_matrix(rows: list, indent: str) -> str:
    return "\n".join(indent + "[" + ", ".join(f"{v: .6g}" for v in row) + "]" for row in rows)


def _bounds(variable: dict) -> str:
    lo = "-inf" if variable["min"] is None else f"{variable['min']:g}"
    hi = "inf" if variable["max"] is None else f"{variable['max']:g}"
    unit = f" {variable['unit']}" if variable["unit"] else ""
    return f"{variable['name']} in [{lo}, {hi}]{unit}"


def _format_check(report) -> str:
    lines = [
        f"plant {report.plant} ({report.source})",
        f"  dimensions    nx={report.nx} nu={report.nu} dt={report.dt:g} s, dynamics: {report.dynamics}"
        f" ({'affine' if report.dynamics_affine else 'nonlinear'})",
        "  states        " + "; ".join(_bounds(v) for v in report.states),
        "  inputs        " + "; ".join(_bounds(v) for v in report.inputs),
        f"  equilibrium   x={report.x_eq} u={report.u_eq}: ok",
        "  LQR gain K (u = u_eq - K (x - x_eq)):",
        _format_matrix(report.K, "    "),
        "  closed-loop eigenvalues (linearisation): "
        + ", ".join(_complex(re, im) for re, im in report.closed_loop_eigenvalues)
        + f"  (spectral radius {report.closed_loop_spectral_radius:.4f})",
        f"  target set    V(x) = (x - x_eq)' P (x - x_eq) <= c = {report.target_level:.6g}"
        f"  (set by {report.target_binding}; {'exact' if report.target_exact else 'ray search + NLP, see docs'})",
    ]
    for level in report.target_levels:
        if math.isfinite(level["level"]):
            shown = f"c <= {level['level']:.6g}"
        elif math.isfinite(level["searched_up_to"]):
            shown = f"c up to {level['searched_up_to']:.6g} (no violation found below)"
        else:
            shown = "any c"
        lines.append(f"    {level['name']:<22} allows {shown:<18} ({level['method']})")
    if report.mpc is not None:
        m = report.mpc
        lines[5] = "  LQR gain K (terminal ingredients of the MPC; u = u_eq - K (x - x_eq)):"
        kind = ("embedded linear MPC, float32 C, fixed ADMM" if m["solver"] == "admm"
                else f"acados {m['solver'].upper()}")
        lines.append(
            f"  backup        MPC ({kind}), horizon {m['horizon']} steps, terminal cost P, "
            f"terminal set V <= {m['terminal_level']:.6g}, state limits as exact-penalty soft constraints"
            + (f", planned {100 * m['tighten']:g} % inside them" if m["tighten"] else "")
        )
        lines.append(
            f"    {m['solves']} solves in the validation closed loops: median {m['solve_us_median']:.0f} us, "
            f"p99 {m['solve_us_p99']:.0f} us, median {m['iterations_median']:.0f} "
            f"{'ADMM' if m['solver'] == 'admm' else 'SQP'} iterations, "
            + ("fixed work" if m["solver"] == "admm" else f"{m['not_converged']} not converged")
        )
    lines.append(
        f"  validation    {report.validation_states} initial states, horizon {report.horizon} steps;"
        " backup worst value per constraint (<= 0 safe):"
    )
    lines.extend(_margin_lines(report.backup_margins))
    if report.expert_margins is not None:
        lines.append("  expert (task, for information) closed loop from the same states:")
        lines.extend(_margin_lines(report.expert_margins))
    verdict = "SAFE" if report.backup_safe else "UNSAFE"
    lines.append(f"backup: {verdict} from every validation state" if report.backup_safe else
                 f"backup: {verdict}: it violates a constraint from some validation states; SCPO cannot start feasible")
    if report.backup_box is not None:
        lines.extend(_box_lines(report.backup_box))
    return "\n".join(lines)


def _box_lines(box) -> list:
    """What the backup does from the whole initial box (sampled), in the words of ``check``'s output."""
    sample = (f"{box.examined} initial states of the box ({box.corners} corners, "
              f"{box.examined - box.corners} Halton points)")
    if box.safe:
        return [f"backup on the box: no row broken from {sample} (a sample, not a proof)"]
    broken = [m for m in box.rows if m.worst > 0]
    lines = [f"backup on the box: WARNING: it breaks a row from {box.violating} of {sample}"
             f" ({box.violating_corners} of them corners):"]
    lines.extend(f"    {m.name:<22} {m.worst: .6g}  from {m.violating_states} state(s)  ({m.description})"
                 for m in broken)
    state = ", ".join(f"{v:.6g}" for v in box.worst_state)
    lines.append(f"  worst from x0 = [{state}] ({box.worst_row}). No law SCPO adapts from this backup can be "
                 "certified there, and verify will find it: narrow the initial box or strengthen the backup")
    return lines


def _margin_lines(margins: list) -> list:
    out = []
    for margin in margins:
        status = "ok" if margin["worst"] <= 0 else f"VIOLATED from {margin['violating_states']} state(s)"
        out.append(f"    {margin['name']:<22} {margin['worst']: .6g}  {status}  ({margin['description']})")
    return out


def _complex(re: float, im: float) -> str:
    return f"{re:.4f}" if abs(im) < 1e-12 else f"{re:.4f}{im:+.4f}j"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
