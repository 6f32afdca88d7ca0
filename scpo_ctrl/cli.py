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

from .version import __version__
from .errors import ScpoError, UsageError
from .files import json_safe
from .resources import shipped_plants

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


#: where each verb's defaults live: flags left out keep them (argparse holds None), and --help shows them
_REQUESTS = {"adapt": ("scpo_ctrl.adapt", "AdaptRequest"), "export": ("scpo_ctrl.export.run", "ExportRequest"),
             "verify": ("scpo_ctrl.verify.run", "VerifyRequest"), "hil": ("scpo_ctrl.hil.run", "HilRequest")}


class _HelpFormatter(argparse.HelpFormatter):
    """Fills ``%(default)s`` of an option from its request dataclass (imported only when help is shown)."""

    def _expand_help(self, action):
        request = getattr(action, "request_field", None)
        if request is not None:
            (module, name), field = _REQUESTS[request[0]], request[1]
            action = argparse.Action(action.option_strings, action.dest, help=action.help, metavar=action.metavar,
                                     default=_request_default(module, name, field))
        return super()._expand_help(action)


def _request_default(module: str, name: str, field: str):
    from dataclasses import fields
    from importlib import import_module

    return next(f.default for f in fields(getattr(import_module(module), name)) if f.name == field)


def _option(parser: argparse.ArgumentParser, verb: str, *flags: str, **kwargs) -> None:
    """An option whose default is the ``verb`` request dataclass's field of the same name (``dest``)."""
    action = parser.add_argument(*flags, default=None, **kwargs)
    action.request_field = (verb, action.dest)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scpo-ctrl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"scpo-ctrl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details on stderr")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, **kwargs) -> argparse.ArgumentParser:
        return verbs.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    check = verb("check", help="validate a plant file, design the backup, check it on the validation set")
    check.add_argument("plant", help="plant YAML file (schema scpo-plant/1), or the name of a shipped example: "
                       + _shipped_plants())
    check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    check.set_defaults(handler=_check)

    adapt = verb("adapt", help="adapt the residual neural policy with SCPO (or a baseline)")
    adapt.add_argument("plant", help="plant YAML file, or the name of a shipped example")
    adapt.add_argument("--out", help="run directory (default runs/<plant name>)")
    adapt.add_argument("--iterations", type=int, help="override scpo.iterations")
    adapt.add_argument("--seed", type=int, help="override scpo.seed")
    _option(adapt, "adapt", "--method", help="scpo | unconstrained | penalty | lagrangian (default %(default)s)")
    adapt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a setting, e.g. --set scpo.step_size=0.5 (repeatable)")
    adapt.add_argument("--resume", action="store_true", help="continue an interrupted run in its directory")
    adapt.add_argument("--force", action="store_true", help="overwrite a finished or interrupted run")
    adapt.add_argument("--no-verify-loop", dest="verify_loop", action="store_false",
                       help="do not grow the validation set with the verifier's counterexamples")
    adapt.add_argument("--json", action="store_true", help="print adaptation.json on stdout")
    adapt.add_argument("--quiet", action="store_true", help="no progress bar")
    adapt.add_argument("--no-plots", dest="plots", action="store_false",
                       help="do not draw plots/*.png (matplotlib takes seconds per run; the report leaves them out)")
    adapt.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                       help="run the closed-loop bank (and, on an MPC backup, the closed-loop cost's loops) on Ray: "
                            "'auto' (the default when given without a value) joins the Ray on this machine or starts "
                            "one; ADDRESS joins that cluster (needs scpo-ctrl[ray])")
    adapt.set_defaults(handler=_adapt)

    export = verb("export", help="write the certified law as ONNX and C99 (RUN_DIR/export/)")
    export.add_argument("run_dir", help="run directory written by `adapt`")
    _option(export, "export", "--precision", help="float32 | float64 (default %(default)s)")
    _option(export, "export", "--target", help="host | cortex-m4 (also cross-compiles) (default %(default)s)")
    _option(export, "export", "--profile",
            help="code profile of the C: speed (blocked inner products, fewest instructions) "
                 "| size (one table, one dense routine; smallest code) | unrolled (the previous code) "
                 "(default %(default)s)")
    export.add_argument("--json", action="store_true", help="print manifest.json on stdout")
    export.set_defaults(handler=_export)

    verify = verb("verify", help="check the exported artefacts; write RUN_DIR/certificate.json")
    verify.add_argument("run_dir", help="run directory with an export/ (with --controller: a plant file)")
    # left out, these take the campaign file's values (verification/campaign.yaml, or --campaign FILE)
    verify.add_argument("--samples", type=int, help="uniform random initial states")
    verify.add_argument("--halton", type=int, help="low-discrepancy initial states")
    verify.add_argument("--beta", type=float, help="confidence parameter of the scenario bound")
    _option(verify, "verify", "--seed", type=int, help="(default %(default)s)")
    verify.add_argument("--cells", type=int, dest="cells_per_axis", help="reachability grid cells per state")
    verify.add_argument("--depth", type=int, dest="max_depth", help="bisections of failing cells")
    verify.add_argument("--max-cells", type=int, dest="max_cells", help="reachability cells analysed in all")
    verify.add_argument("--campaign", metavar="FILE",
                        help="campaign file whose values the flags left out take (default: $SCPO_CTRL_CAMPAIGN, "
                        "else verification/campaign.yaml)")
    verify.add_argument("--json", action="store_true", help="print certificate.json on stdout")
    verify.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                        help="run the Monte Carlo closed loops and the reachability cells on Ray: 'auto' (without a "
                             "value) joins the Ray on this machine or starts one; ADDRESS joins that cluster (needs "
                             "scpo-ctrl[ray])")
    # a foreign network: `verify PLANT.yaml --controller NET.onnx` (scpo_ctrl/verify/foreign.py)
    verify.add_argument("--controller", metavar="NET.onnx",
                        help="verify this ONNX network alone in the loop of the plant file given instead of RUN_DIR")
    verify.add_argument("--out", metavar="FILE", help="with --controller: the certificate's path "
                        "(default PLANT-STEM.certificate.json here)")
    verify.add_argument("--falsify-iterations", type=int, dest="falsify_iterations",
                        help="with --controller: rounds of the falsification search")
    verify.add_argument("--no-reach", dest="reach", action="store_false", default=None,
                        help="with --controller: skip the reachability analysis (UNKNOWN, not run)")
    verify.set_defaults(handler=_verify)

    hil = verb("hil", help="run the exported C on a target against the simulated plant (HIL)")
    hil.add_argument("run_dir", help="run directory with an export/ (float32)")
    _option(hil, "hil", "--target", help="sil | qemu | serial:PORT (default %(default)s)")
    hil.add_argument("--steps", type=int, help="steps per episode (default: the plant's safety horizon)")
    _option(hil, "hil", "--episodes", type=int,
            help="initial states, from the validation set (default %(default)s)")
    _option(hil, "hil", "--faults", metavar="SPEC",
            help="e.g. drop=0.05,corrupt=0.05,delay=0.02,delay_s=0.08,noise=0.01, or a preset of "
            "verification/campaign.yaml, optionally followed by ,KEY=VALUE")
    hil.add_argument("--watchdog-ms", type=float, help="target watchdog deadline [ms] (default dt/2)")
    hil.add_argument("--realtime", action="store_true", default=None,
                     help="run the target's watchdog on its own clock (always for serial:); by default sil and "
                     "qemu advance on simulated time, where host load cannot trigger the watchdog")
    _option(hil, "hil", "--seed", type=int, help="(default %(default)s)")
    hil.add_argument("--no-plots", dest="plots", action="store_false", default=None,
                     help="skip traces.png and latency.png")
    hil.add_argument("--json", action="store_true", help="print the report on stdout")
    hil.set_defaults(handler=_hil)

    report = verb("report", help="write the evidence report RUN_DIR/report.html (one self-contained page)")
    report.add_argument("run_dir", help="run directory written by `adapt` (and export, verify, hil)")
    report.add_argument("--json", action="store_true", help="print the sections and source hashes on stdout")
    report.set_defaults(handler=_report)

    acados = verb("setup-acados", help="install acados, which MPC backups need (from the package registry)")
    acados.add_argument("--dir", dest="directory",
                        help="target directory (default $SCPO_CTRL_ACADOS_DIR, else ~/.local/share/scpo-ctrl/acados)")
    acados.set_defaults(handler=_setup_acados)
    return parser


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` given on the command line (the rest keep the request's defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _json(data) -> str:
    return json.dumps(data, indent=2)


def _check(args: argparse.Namespace) -> int:
    from . import api

    report = api.check(args.plant)
    if args.json:
        print(_json(json_safe(report.to_dict())))
    else:
        print(_format_check(report))
    return EXIT_OK if report.backup_safe else EXIT_UNSAFE


def _adapt(args: argparse.Namespace) -> int:
    from . import api

    result = api.adapt(args.plant, args.out, iterations=args.iterations, seed=args.seed,
                       overrides=tuple(args.overrides), resume=args.resume, force=args.force,
                       progress=not args.quiet, verify_loop=args.verify_loop, ray=args.ray, plots=args.plots,
                       **_given(args, "method"))
    summary = result.summary
    if args.json:
        print(_json(summary.to_json()))
    else:
        print(f"run directory {result.run_dir}")
        print(f"  method {summary.method}, {summary.iterations} iterations ({summary.stop_reason}), "
              f"{summary.seconds:.1f} s")
        print(f"  loss {summary.initial_loss:.6g} (backup) -> {summary.final_loss:.6g}"
              + (f"  (ratio {summary.loss_ratio:.4f})" if summary.loss_ratio is not None else ""))
        print(f"  steps: {summary.accepted} accepted, {summary.rejected} rejected, {summary.zero_steps} zero")
        print(f"  safe at every iteration: {'yes' if summary.feasible_every_iteration else 'NO'}"
              f" ({summary.violating_iterations} violating iterations, worst g {summary.worst_g:.4g})")
        loop = summary.verification_loop
        if loop is not None and loop.enabled:
            proven = loop.proven_fraction
            print(f"  verification loop: {loop.rounds} round(s), {loop.validation_states_added} validation states "
                  f"added ({loop.validation_states} now)"
                  + (f", reachability proves {100 * proven:.1f}% of the box" if proven is not None else "")
                  + ("; the last round found nothing" if loop.clean else ""))
            unsafe = (loop.last_round or {}).get("backup_unsafe", 0)
            if unsafe:
                print(f"  WARNING: the backup itself breaks a row from {unsafe} state(s) the last round found in the "
                      "initial box (not added: no law adapted from it can be certified there; see `check`)")
    if result.interrupted:
        print(f"{summary.stop_reason}: the last accepted iterate is in policy.npz; continue with --resume",
              file=sys.stderr)
        return 130
    return EXIT_OK if summary.final_safe else EXIT_UNSAFE


def _export(args: argparse.Namespace) -> int:
    from . import api

    result = api.export(args.run_dir, **_given(args, "precision", "target", "profile"))
    manifest = result.manifest
    if args.json:
        print(_json(manifest.to_json()))
    else:
        print(f"export {result.export_dir} ({manifest.precision}, target {manifest.target}, "
              f"profile {manifest.profile})")
        for path, digest in manifest.artefacts.items():
            print(f"  {digest[:16]}  {path}")
        for name, info in manifest.builds.items():
            sections = info.sections_bytes
            stack = max(info.stack_bytes.values(), default=0)
            print(f"  {name}: text {sections['text']} B, rodata {sections['rodata']} B, data {sections['data']} B, "
                  f"bss {sections['bss']} B, deepest stack frame {stack} B")
        for check in manifest.self_check:
            print(f"  self-check {check.implementation}: {check.states} states, worst |du| "
                  f"{check.worst_error:.3g} ({check.worst_bound_ratio:.3f} of the tolerance), "
                  f"branch mismatches {check.branch_mismatches} -> {'ok' if check.passed else 'FAILED'}")
    return EXIT_OK if result.equivalent else EXIT_UNSAFE


def _verify(args: argparse.Namespace) -> int:
    from . import api

    if args.controller is not None:
        return _verify_foreign(args)
    for flag, value in (("--out", args.out), ("--falsify-iterations", args.falsify_iterations),
                        ("--no-reach", args.reach)):
        if value is not None:
            raise UsageError(f"{flag} applies with --controller only")
    result = api.verify(args.run_dir, **_given(args, "samples", "halton", "beta", "seed", "cells_per_axis",
                                                 "max_depth", "max_cells", "campaign", "ray"))
    certificate = result.certificate
    if args.json:
        print(_json(certificate.to_json()))
        return result.exit_code
    print(f"certificate {result.path}")
    for check in certificate.checks:
        print(f"  {check.verdict:<9} {check.name}: {check.evidence}, {check.seconds:.1f} s")
        details, counterexample = check.details, check.counterexample
        if check.name == "closed_loop_safety":
            print(f"            {details['initial_states']} closed loops, {details['violating_trajectories']} "
                  f"violating; C in the loop at {details['steps_per_second_c_in_the_loop']:.3g} steps/s")
            if details["scenario_bound"]:
                print(f"            {details['scenario_bound']['statement']}")
        if check.name == "closed_loop_reach":
            print(f"            reach rate {details['reach_rate']:.4f}")
        if check.name == "reachability" and "cells" in details:
            print(f"            {details['verified_cells']} of {details['cells']} cells verified "
                  f"({100 * details['verified_fraction_of_box']:.1f}% of the box)")
        if counterexample:
            print(f"            counterexample: {json.dumps(json_safe(counterexample))}")
            alone = counterexample.get("backup_alone")
            if alone and alone["breaks_the_row"]:
                row = counterexample.get("row", "the target set (V(x_H) <= c)")
                print(f"            the backup alone breaks {row} from this state too "
                      f"({alone['value']:.4g}): the box holds states this backup cannot save (see `check`)")
    print("  safe for every initial state of the box: "
          + ("yes (proof)" if certificate.summary.safe_for_every_initial_state_of_the_box else "not shown"))
    return result.exit_code


def _verify_foreign(args: argparse.Namespace) -> int:
    from . import api

    if args.campaign is not None or args.ray is not None:
        raise UsageError("--campaign and --ray do not apply with --controller")
    result = api.verify(args.run_dir, controller=args.controller, **_given(
        args, "out", "samples", "halton", "beta", "seed", "cells_per_axis", "max_depth", "max_cells",
        "falsify_iterations", "reach"))
    certificate = result.certificate
    if args.json:
        print(_json(certificate.to_json()))
        return result.exit_code
    print(f"certificate {result.path}")
    print(f"  controller {certificate.controller} (sha256 {certificate.controller_sha256[:16]}...): "
          f"{certificate.network}")
    for check in certificate.checks:
        print(f"  {check.verdict:<9} {check.name}: {check.evidence}, {check.seconds:.1f} s")
        details = check.details
        if check.name == "closed_loop_safety" and details.get("scenario_bound"):
            print(f"            {details['scenario_bound']['statement']}")
        if "proven_fraction_of_box" in details:
            print(f"            proven {100 * details['proven_fraction_of_box']:.1f}% of the box "
                  f"({details['cells_proven']} cells proven, {details['cells_unknown']} not)")
        if "reason" in details and check.verdict != "VERIFIED":
            print(f"            {details['reason']}")
        if check.counterexample:
            shown = {k: v for k, v in check.counterexample.items() if k != "trajectory"}
            print(f"            counterexample: {json.dumps(json_safe(shown))}")
    print(f"  {certificate.sampling}")
    print("  safe for every initial state of the box: "
          + (f"yes (proof), at the sampling instants only, for {certificate.discrete_map}; not between samples"
             if certificate.summary.safe_for_every_initial_state_of_the_box else "not shown"))
    return result.exit_code


def _hil(args: argparse.Namespace) -> int:
    from . import api

    result = api.hil(args.run_dir, steps=args.steps, watchdog_ms=args.watchdog_ms,
                     **_given(args, "target", "episodes", "faults", "seed", "plots", "realtime"))
    report = result.report
    if args.json:
        print(_json(report.to_json()))
        return EXIT_OK if result.passed else EXIT_UNSAFE
    latency, compute, frames = report.latency_seconds, report.compute, report.frames
    print(f"hil report {result.path}")
    print(f"  target {report.description}")
    print(f"  law: {report.law}")
    print(f"  timing: {report.timing}, watchdog {report.watchdog_seconds * 1e3:g} ms")
    print(f"  {report.episodes} episodes x {report.steps_per_episode} steps, "
          f"{report.steps_per_second:.0f} steps/s; round trip p50 {latency.p50 * 1e3:.3f} ms, "
          f"p99 {latency.p99 * 1e3:.3f} ms, max {latency.max * 1e3:.3f} ms; "
          f"deadline misses (> dt = {report.dt_seconds:g} s): {report.deadline_misses}")
    if "instructions_per_step_p50" in compute:
        print(f"  target compute: {compute['instructions_per_step_p50']:.0f} instructions per step (p50, QEMU "
              f"-icount instruction count, not cycles), max {compute['instructions_per_step_max']:.0f}")
    elif "seconds_p50" in compute:
        print(f"  target compute: {compute['seconds_p50'] * 1e6:.2f} us per step (p50, clock_gettime), "
              f"max {compute['seconds_max'] * 1e6:.2f} us")
    equivalence = report.equivalence
    print(f"  equivalence: worst |du| {equivalence.worst_error:.3g} ({equivalence.worst_bound_ratio:.3f} of "
          f"the float32 tolerance), branch mismatches {equivalence.branch_mismatches}")
    print("  branches: " + ", ".join(f"{name} {count}" for name, count in report.branches.items()))
    trajectory = report.trajectory_vs_python
    if "within_propagated_bound" in trajectory:
        print(f"  trajectory vs Python closed loop: max |dx| {max(trajectory['max_abs_state_deviation']):.3g}, "
              f"propagated float32 bound up to {max(trajectory['propagated_bound_max']):.3g} "
              f"(worst {trajectory['worst_deviation_over_bound']:.3f} of it)")
    safety = report.safety
    print(f"  safety: {safety.violating_steps} violating steps; worst rows "
          + ", ".join(f"{n} {v:.4g}" for n, v in zip(safety.row_names, safety.worst_per_row)))
    injected = ", ".join(f"{k} {v}" for k, v in frames["injected"].items() if v) or "none"
    target = frames["target"]
    print(f"  faults injected: {injected}; target rejected crc {target['crc_errors']}, length "
          f"{target['length_errors']}, header {target['header_errors']}, sequence {target['sequence_errors']}; "
          f"watchdog replies {frames['watchdog_replies']} (late host {frames['late_host_steps']}, unexplained "
          f"{frames['watchdog_replies_unexplained']}); repeats {frames['repeat_requests']}")
    for name, ok in report.summary.checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    print(f"  safety held: {'yes' if report.summary.safety_held else 'NO'}")
    return EXIT_OK if result.passed else EXIT_UNSAFE


def _report(args: argparse.Namespace) -> int:
    from . import api

    result = api.report(args.run_dir)
    if args.json:
        print(_json(result.to_dict()))
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
    from .backup.kinds import backup_for

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
    backup = backup_for(report.backup_type, (report.mpc or {}).get("solver"))
    if not backup.in_closed_form:
        m = report.mpc
        lines[5] = "  LQR gain K (terminal ingredients of the MPC; u = u_eq - K (x - x_eq)):"
        kind = (f"embedded linear MPC, float32 C, fixed {backup.algorithm}" if backup.fixed_work
                else f"acados {m['solver'].upper()}")
        lines.append(
            f"  backup        MPC ({kind}), horizon {m['horizon']} steps, terminal cost P, "
            f"terminal set V <= {m['terminal_level']:.6g}, state limits as exact-penalty soft constraints"
            + (f", planned {100 * m['tighten']:g} % inside them" if m["tighten"] else "")
        )
        lines.append(
            f"    {m['solves']} solves in the validation closed loops: median {m['solve_us_median']:.0f} us, "
            f"p99 {m['solve_us_p99']:.0f} us, median {m['iterations_median']:.0f} "
            f"{backup.algorithm} iterations, "
            + ("fixed work" if backup.fixed_work else f"{m['not_converged']} not converged")
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
