"""The Python API: one function per command-line verb, same code, typed results.

Each function takes plain Python values (paths, numbers), runs what ``scpo-ctrl <verb>`` runs and returns a
frozen dataclass; the files a verb writes are returned as their :mod:`scpo_ctrl.run_files` dataclasses (the
ones ``read`` gives back from the run directory). Defaults are the command line's, taken from the request
dataclasses (one place). Bad input raises :class:`scpo_ctrl.errors.ScpoError` with the message the command
line prints.

Example (a notebook; sizes kept small)::

    import control, scpo_ctrl
    plant = scpo_ctrl.plant_from_state_space(
        control.ss([[1, 0.1], [0, 1]], [[0.005], [0.1]], [[1, 0]], [[0]], 0.1), name="cart",
        state_limits=[(-5, 5), (-2, 2)], input_limits=[(-1, 1)], initial_box=[(-3, 3), (-1, 1)], horizon=60)
    scpo_ctrl.check(plant).backup_safe
    run = scpo_ctrl.adapt(plant, "runs/cart", iterations=3)
    scpo_ctrl.export(run.run_dir)
    scpo_ctrl.verify(run.run_dir, samples=200, halton=0).certificate.summary
"""

from __future__ import annotations

from pathlib import Path

from .adapt import AdaptRequest, AdaptResult, run_adapt
from .check import CheckReport, run_check
from .config.plant_spec import PlantSpec, load_plant_spec
from .errors import UsageError
from .resources import plant_file

__all__ = ["load_plant", "check", "adapt", "export", "verify", "hil", "report"]


def load_plant(plant: str | Path) -> PlantSpec:
    """Read and validate a plant file.

    Parameters
    ----------
    plant : str or Path
        A plant YAML file (schema ``scpo-plant/1``), or the name of a shipped example (``double_integrator``).

    Returns
    -------
    PlantSpec

    Raises
    ------
    SpecError
        Naming the file, the key path, the line and what was expected.
    """
    return load_plant_spec(plant_file(str(plant)))


def _plant(plant: str | Path | PlantSpec) -> str | PlantSpec:
    return plant if isinstance(plant, PlantSpec) else plant_file(str(plant))


def check(plant: str | Path | PlantSpec) -> CheckReport:
    """``scpo-ctrl check``: design the backup and check it on the validation set.

    Parameters
    ----------
    plant : str, Path or PlantSpec
        A plant file, a shipped example's name, or a spec from :func:`load_plant` /
        :func:`scpo_ctrl.plant_from_state_space`.

    Returns
    -------
    CheckReport
        The LQR gain, target set, and the backup's worst value per safety row; ``backup_safe`` is the
        command line's exit status 0 (else 1).
    """
    return run_check(_plant(plant))


def adapt(plant: str | Path | PlantSpec, out: str | Path | None = AdaptRequest.out, *,
          iterations: int | None = AdaptRequest.iterations, seed: int | None = AdaptRequest.seed,
          method: str = AdaptRequest.method, overrides: tuple = AdaptRequest.overrides,
          resume: bool = AdaptRequest.resume, force: bool = AdaptRequest.force,
          progress: bool = AdaptRequest.progress, verify_loop: bool = AdaptRequest.verify_loop,
          ray: str | None = AdaptRequest.ray, plots: bool = AdaptRequest.plots) -> AdaptResult:
    """``scpo-ctrl adapt``: adapt the residual policy with SCPO (or a baseline); writes the run directory.

    Parameters
    ----------
    plant : str, Path or PlantSpec
        As for :func:`check`; a spec's text becomes the run's ``plant.yaml``.
    out : str or Path, optional
        Run directory (default ``runs/<plant name>``).
    iterations, seed : int, optional
        Override the plant file's ``scpo.iterations`` / ``scpo.seed``.
    method : str
        ``scpo``, ``unconstrained``, ``penalty`` or ``lagrangian``.
    overrides : tuple of str
        ``"key=value"`` settings, as ``--set`` (e.g. ``"scpo.step_size=0.5"``).
    resume, force : bool
        Continue an interrupted run; overwrite an existing one.
    progress : bool
        Progress bar on stderr.
    verify_loop : bool
        Grow the validation set with the verifier's counterexamples.
    ray : str, optional
        Run SCPO's closed-loop bank (and, on an MPC backup, the closed-loop cost's loops) on Ray: ``"auto"``
        joins the Ray on this machine or starts one, else a cluster address. None (default): in this process.
        Results are bit-identical either way.
    plots : bool
        Draw ``plots/*.png`` at the end (the report leaves out the figures a run does not have).

    Returns
    -------
    AdaptResult
        ``run_dir``, ``summary`` (:class:`scpo_ctrl.run_files.AdaptationSummary`, the run's ``adaptation.json``;
        ``summary.final_safe`` is exit status 0) and ``interrupted``.
    """
    return run_adapt(AdaptRequest(plant=_plant(plant), out=None if out is None else str(out), iterations=iterations,
                                  seed=seed, method=method, overrides=tuple(overrides), resume=resume, force=force,
                                  progress=progress, verify_loop=verify_loop, ray=ray, plots=plots))


def export(run_dir: str | Path, *, precision: str | None = None, target: str | None = None,
           profile: str | None = None):
    """``scpo-ctrl export``: the certified law as ONNX and C99 in ``RUN_DIR/export/``, built and self-checked.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :func:`adapt`.
    precision : str, optional
        ``float32`` (default) or ``float64``.
    target : str, optional
        ``host`` (default) or ``cortex-m4`` (also cross-compiles; needs arm-none-eabi-gcc).
    profile : str, optional
        C code profile: ``speed`` (default), ``size`` or ``unrolled``.

    Returns
    -------
    ExportResult
        ``export_dir``, ``manifest`` (:class:`scpo_ctrl.run_files.ExportManifest`) and ``equivalent`` (the
        self-check passed: exit status 0).
    """
    from .export.run import ExportRequest, run_export

    given = {name: value for name, value in (("precision", precision), ("target", target), ("profile", profile))
             if value is not None}
    return run_export(ExportRequest(run_dir=str(run_dir), **given))


def verify(run_dir: str | Path, *, samples: int | None = None, halton: int | None = None,
           beta: float | None = None, seed: int | None = None, cells_per_axis: int | None = None,
           max_depth: int | None = None, max_cells: int | None = None, falsify_starts: int | None = None,
           campaign: str | Path | None = None, controller: str | Path | None = None, out: str | Path | None = None,
           falsify_iterations: int | None = None, reach: bool | None = None, ray: str | None = None):
    """``scpo-ctrl verify``: check the exported artefacts; writes ``RUN_DIR/certificate.json``.

    With ``controller`` (an ONNX file), ``run_dir`` is a plant file instead and the closed loop of that network
    alone is verified (``scpo-ctrl verify PLANT --controller NET.onnx``, :mod:`scpo_ctrl.verify.foreign`): the
    certificate goes to ``out`` (default ``PLANT-STEM.certificate.json`` in the current directory) and the
    result is a :class:`~scpo_ctrl.verify.foreign.ForeignVerifyResult`; ``falsify_iterations`` and ``reach``
    (False skips the reachability analysis) apply to it only, ``campaign`` and ``falsify_starts`` do not.

    Parameters
    ----------
    run_dir : str or Path
        A run directory with an ``export/``.
    samples, halton : int, optional
        Uniform and low-discrepancy Monte Carlo initial states (default: the campaign file's).
    beta : float, optional
        Confidence parameter of the scenario bound (default: the campaign file's).
    seed : int, optional
    cells_per_axis, max_depth, max_cells : int, optional
        Reachability grid, bisections of failing cells, cells analysed in all (None: by dimension).
    falsify_starts : int, optional
        Random starts per row of the falsification search.
    campaign : str or Path, optional
        Campaign file whose values the settings left at None take (default: ``$SCPO_CTRL_CAMPAIGN``, else
        ``verification/campaign.yaml``).
    ray : str, optional
        Run the Monte Carlo closed loops and the reachability cells on Ray: ``"auto"`` joins the Ray on this
        machine or starts one, else a cluster address (LQR-backed runs; not with ``controller``). None (default):
        in this process.

    Returns
    -------
    VerifyResult
        ``certificate`` (:class:`scpo_ctrl.run_files.Certificate`), ``path``, ``exit_code`` (0: integrity holds
        and nothing is FALSIFIED).

    Raises
    ------
    UsageError
        A count below its minimum.
    """
    if controller is not None:
        return _verify_foreign(run_dir, controller, out=out, samples=samples, halton=halton, beta=beta, seed=seed,
                               cells_per_axis=cells_per_axis, max_depth=max_depth, max_cells=max_cells,
                               falsify_iterations=falsify_iterations, reach=reach, campaign=campaign,
                               falsify_starts=falsify_starts, ray=ray)
    if out is not None or falsify_iterations is not None or reach is not None:
        raise UsageError("out, falsify_iterations and reach apply with a controller only")
    from .verify.run import VerifyRequest, run_verify

    given = {name: value for name, value in (("samples", samples), ("halton", halton), ("beta", beta),
                                             ("seed", seed), ("cells_per_axis", cells_per_axis),
                                             ("max_depth", max_depth), ("max_cells", max_cells),
                                             ("falsify_starts", falsify_starts),
                                             ("campaign", None if campaign is None else str(campaign)),
                                             ("ray", ray))
             if value is not None}
    return run_verify(VerifyRequest(run_dir=str(run_dir), **given))


def _verify_foreign(plant, controller, *, campaign, falsify_starts, ray, **settings):
    """``verify PLANT --controller NET.onnx`` (see :func:`verify`)."""
    from .verify.foreign import ForeignVerifyRequest, run_foreign_verify

    if campaign is not None or falsify_starts is not None or ray is not None:
        raise UsageError("campaign, falsify_starts and ray do not apply with a controller")
    given = {name: (str(value) if name == "out" else value) for name, value in settings.items() if value is not None}
    return run_foreign_verify(ForeignVerifyRequest(plant=str(plant), controller=str(controller), **given))


def hil(run_dir: str | Path, *, target: str | None = None, steps: int | None = None, episodes: int | None = None,
        faults: str | None = None, seed: int | None = None, watchdog_ms: float | None = None,
        plots: bool | None = None, realtime: bool | None = None):
    """``scpo-ctrl hil``: the exported C on a target in closed loop with the simulated plant.

    Parameters
    ----------
    run_dir : str or Path
        A run directory with a float32 ``export/``.
    target : str, optional
        ``sil`` (default), ``qemu`` (needs ``export(..., target="cortex-m4")``) or ``serial:PORT``.
    steps : int, optional
        Steps per episode (default: the plant's safety horizon).
    episodes : int, optional
        Initial states, the validation set's first (default 8).
    faults : str, optional
        As ``--faults``, e.g. ``"drop=0.05,noise=0.01"``.
    seed : int, optional
    watchdog_ms : float, optional
        Target watchdog deadline [ms] (default dt / 2).
    plots : bool, optional
        Write ``traces.png`` and ``latency.png`` (default yes).
    realtime : bool, optional
        The target's watchdog on its own clock (default: simulated time for sil and qemu).

    Returns
    -------
    HilResult
        ``report`` (:class:`scpo_ctrl.run_files.HilReport`), ``path``, ``passed`` (exit status 0).
    """
    from .hil.run import HilRequest, run_hil

    given = {name: value for name, value in (("target", target), ("steps", steps), ("episodes", episodes),
                                             ("faults", faults), ("seed", seed), ("watchdog_ms", watchdog_ms),
                                             ("plots", plots), ("realtime", realtime)) if value is not None}
    return run_hil(HilRequest(run_dir=str(run_dir), **given))


def report(run_dir: str | Path):
    """``scpo-ctrl report``: write the evidence page ``RUN_DIR/report.html`` from the run directory's files.

    Returns
    -------
    ReportResult
        ``path`` and ``data`` (every section with the files it was read from and their sha256).
    """
    from .report import ReportRequest, run_report

    return run_report(ReportRequest(run_dir=str(run_dir)))
