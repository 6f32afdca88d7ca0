"""The run directory's JSON files as frozen dataclasses: one reader and one writer each.

=============================  ============================  =====================
file (relative to the run)     dataclass                     written by
=============================  ============================  =====================
``adaptation.json``            :class:`AdaptationSummary`    ``adapt``
``export/manifest.json``       :class:`ExportManifest`       ``export``
``certificate.json``           :class:`Certificate`          ``verify``
``hil/<target>/report.json``   :class:`HilReport`            ``hil``
``hil/report.json``            :class:`HilIndex`             ``hil`` (every target)
=============================  ============================  =====================

``X.read(path)`` parses and checks a file against the dataclass's field types and raises
:class:`RunFileError` naming the file and the key path of the first problem; ``x.write(path)`` writes it
atomically. The JSON a writer produces has exactly the keys, in the order, of the dataclass's fields
(optional fields marked ``absent_if_none`` are left out when ``None``), so ``read`` then ``write`` gives
the same bytes back.

Conventions of the conversion (one place, :func:`from_json` and :func:`to_json`):

* A ``float`` field holds ``nan`` where the file has ``null``: the writers turn every non-finite number into
  ``null`` (JSON has no NaN or infinity), and ``nan`` goes back to ``null``.
* JSON arrays typed ``tuple[...]`` become tuples, objects typed ``Mapping[str, X]`` dicts; keys a file has
  beyond the fields are ignored (files from a newer version still read), keys it lacks are an error unless the
  field has a default.
* Parts whose shape depends on the run (a check's ``details``, a HIL target's ``compute``) are typed
  ``Mapping[str, Any]`` and kept as read (plain JSON data, so ``json.dumps`` takes them as they are).
"""

from __future__ import annotations

import collections.abc
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, TypeVar, Union

from .errors import ScpoError
from .files import atomic_write_json, json_safe

T = TypeVar("T")

#: field metadata: leave the key out of the file when the value is None (files from older versions lack it)
ABSENT_IF_NONE = MappingProxyType({"absent_if_none": True})


class RunFileError(ScpoError):
    """A run-directory file is missing, not JSON, or not what its dataclass expects.

    Parameters
    ----------
    path : str
        The file, as given to the reader.
    key_path : str
        Dotted key path of the problem inside the file (``checks[2].verdict``); empty for the whole file.
    message : str
    """

    def __init__(self, path: str, key_path: str, message: str):
        self.path, self.key_path, self.message = path, key_path, message
        super().__init__(f"{path}: {key_path + ': ' if key_path else ''}{message}")


# -- the conversion ---------------------------------------------------------------------------------
def _json_kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _type_name(kind) -> str:
    if kind is type(None):
        return "null"
    if isinstance(kind, type):
        return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
            kind, "an object" if is_dataclass(kind) else kind.__name__)
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(kind))
    if origin is tuple:
        return "an array"
    if origin in (collections.abc.Mapping, dict):
        return "an object"
    return str(kind)


def _convert(kind, value, path: str, where: str):
    """``value`` (parsed JSON) as the Python type ``kind``; :class:`RunFileError` at ``where`` otherwise."""
    if kind is Any:
        return value
    if kind is type(None):
        if value is None:
            return None
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if value is None:
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif is_dataclass(kind):
        if isinstance(value, dict):
            return _dataclass(kind, value, path, where)
    else:
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            problem = None
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return _convert(arg, value, path, where)
                except RunFileError as exc:
                    problem = problem or exc
            if problem is not None and problem.key_path != where:
                raise problem  # the value had the right shape, something inside it did not
        elif origin is tuple:
            if isinstance(value, list):
                items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
                if len(items) == len(value):
                    return tuple(_convert(item_kind, item, path, f"{where}[{i}]")
                                 for i, (item_kind, item) in enumerate(zip(items, value)))
                raise RunFileError(path, where, f"expected {len(items)} elements, got {len(value)}")
        elif origin in (collections.abc.Mapping, dict):
            if isinstance(value, dict):
                return {key: _convert(args[1], item, path, _key(where, key)) for key, item in value.items()}
        else:  # pragma: no cover - a dataclass of this module with an unsupported annotation
            raise TypeError(f"unsupported field type {kind!r}")
    raise RunFileError(path, where, f"expected {_type_name(kind)}, got {_json_kind(value)}")


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _dataclass(cls, data: dict, path: str, where: str):
    hints = typing.get_type_hints(cls)
    values = {}
    for item in fields(cls):
        if not item.init:
            continue
        if item.name not in data:
            if item.default is MISSING and item.default_factory is MISSING:
                raise RunFileError(path, _key(where, item.name), "missing")
            continue
        values[item.name] = _convert(hints[item.name], data[item.name], path, _key(where, item.name))
    return cls(**values)


def from_json(cls: type[T], data, path: str = "<json>") -> T:
    """``data`` (parsed JSON) as an instance of the dataclass ``cls``.

    Raises
    ------
    RunFileError
        Naming ``path`` and the key path of the first value that does not fit ``cls``'s field types.
    """
    return _convert(cls, data, str(path), "")


def to_json(value):
    """A dataclass of this module (or anything inside one) as plain JSON data, keys in field order.

    Non-finite floats stay as they are here; the writers turn them into ``null``.
    """
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for item in fields(value):
            item_value = getattr(value, item.name)
            if item_value is None and item.metadata.get("absent_if_none"):
                continue
            out[item.name] = to_json(item_value)
        return out
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


class RunFile:
    """Mixin of the file dataclasses: :meth:`read`, :meth:`loads`, :meth:`write`, :meth:`to_json`."""

    @classmethod
    def read(cls: type[T], path: str | Path) -> T:
        """Read and check the file at ``path`` (:class:`RunFileError` when it is missing or malformed)."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise RunFileError(str(path), "", "no such file") from None
        except OSError as exc:
            raise RunFileError(str(path), "", f"cannot read ({exc.strerror})") from None
        return cls.loads(data, path)

    @classmethod
    def loads(cls: type[T], data: bytes, path: str | Path = "<json>") -> T:
        """Parse and check the bytes of a file (``path`` names it in messages)."""
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFileError(str(path), "", f"not valid JSON ({exc})") from None
        return from_json(cls, parsed, str(path))

    def to_json(self) -> dict:
        """The file's content as plain JSON data (what :meth:`write` writes, before non-finite -> null)."""
        return json_safe(to_json(self))

    def write(self, path: str | Path) -> None:
        """Write the file atomically (indented JSON)."""
        atomic_write_json(Path(path), self.to_json())


# -- adaptation.json --------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerificationLoop:
    """``adaptation.json``'s ``verification_loop``: the counterexample rounds of ``adapt``.

    When the loop was off (``enabled`` false) the file holds ``enabled`` alone and every other field is None.
    """

    enabled: bool
    settings: Mapping[str, int] | None = field(default=None, metadata=ABSENT_IF_NONE)
    rounds: int | None = field(default=None, metadata=ABSENT_IF_NONE)
    validation_states_added: int | None = field(default=None, metadata=ABSENT_IF_NONE)
    initial_validation_states: int | None = field(default=None, metadata=ABSENT_IF_NONE)
    validation_states: int | None = field(default=None, metadata=ABSENT_IF_NONE)
    last_round: Mapping[str, Any] | None = None
    proven_fraction: float | None = None
    clean: bool | None = field(default=None, metadata=ABSENT_IF_NONE)


def _loop_json(loop: VerificationLoop) -> dict:
    return {"enabled": False} if not loop.enabled else to_json(loop)


@dataclass(frozen=True)
class AdaptationSummary(RunFile):
    """``adaptation.json``: how the adaptation went (written when ``adapt`` ends or is interrupted).

    Attributes
    ----------
    plant, method, task : str
    iterations : int
        Iterations run.
    stop_reason : str
    feasible_every_iteration : bool
        Every iteration's worst constraint row was <= 0 on the validation set.
    violating_iterations : int
    worst_g : float
        Worst constraint value over the iterations (<= 0 safe).
    initial_loss, final_loss : float
        Task loss of the backup alone and of the last accepted iterate.
    loss_ratio : float or None
        ``final_loss / initial_loss`` (None when the backup's loss is 0).
    accepted, rejected, zero_steps : int
    final_g_per_constraint, l_final : Mapping[str, float]
        Per constraint group: worst row value and curvature bound of the last iterate.
    final_safe : bool
    validation_states, constraint_rows, weights : int
    seconds : float
        Wall time of the iterations [s].
    policy_sha256 : str
    guarantee : str
    verification_loop : VerificationLoop or None
        None: a file from before the loop existed.
    """

    RELATIVE_PATH = "adaptation.json"

    plant: str
    method: str
    task: str
    iterations: int
    stop_reason: str
    feasible_every_iteration: bool
    violating_iterations: int
    worst_g: float
    initial_loss: float
    final_loss: float
    loss_ratio: float | None
    accepted: int
    rejected: int
    zero_steps: int
    final_g_per_constraint: Mapping[str, float]
    final_safe: bool
    l_final: Mapping[str, float]
    validation_states: int
    constraint_rows: int
    weights: int
    seconds: float
    policy_sha256: str
    guarantee: str
    verification_loop: VerificationLoop | None = field(default=None, metadata=ABSENT_IF_NONE)

    def to_json(self) -> dict:
        out = to_json(replace(self, verification_loop=None))
        if self.verification_loop is not None:
            out["verification_loop"] = _loop_json(self.verification_loop)
        return json_safe(out)


# -- export/manifest.json ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EquivalenceRecord:
    """One implementation against the float64 reference law on a set of states (export's self-check,
    verify's equivalence campaign); see :class:`scpo_ctrl.export.equivalence.EquivalenceResult`."""

    implementation: str
    precision: str
    states: int
    worst_error: float
    worst_state: tuple[float, ...]
    worst_bound_ratio: float
    tolerance: str
    max_tolerance: float
    branch_mismatches: int
    branch_mismatches_near_switching: int
    reason_mismatches: int
    passed: bool


@dataclass(frozen=True)
class NetworkInfo:
    sizes: tuple[int, ...]
    activation: str
    multiply_accumulates: int


@dataclass(frozen=True)
class OnnxInfo:
    file: str
    opset: int
    ir_version: int
    onnxruntime: str


@dataclass(frozen=True)
class BuildInfo:
    """One compiled object of the export: compiler, flags, section sizes [bytes], stack per function [bytes]."""

    object: str
    compiler: str
    flags: tuple[str, ...]
    sections_bytes: Mapping[str, int]
    stack_bytes: Mapping[str, int]
    backup: str | None = field(default=None, metadata=ABSENT_IF_NONE)
    #: a Cortex-M4 build on the embedded MPC: the object of the MPC's solver with the law on top
    mpc_object: BuildInfo | None = field(default=None, metadata=ABSENT_IF_NONE)


@dataclass(frozen=True)
class ExportManifest(RunFile):
    """``export/manifest.json``: what was exported, from what, how it was built, and its self-check.

    Attributes
    ----------
    format, generator, plant : str
    precision : str
        ``float32`` or ``float64``.
    target : str
        ``host`` or ``cortex-m4``.
    profile : str or None
        C code profile; None in exports from before profiles (read as ``unrolled``, see :attr:`code_profile`).
    inputs_sha256, plant_sha256, law_sha256 : str
    network : NetworkInfo
    onnx : OnnxInfo
    backup : Mapping[str, Any]
        ``{"type": "lqr"}`` or the MPC's solver, libraries and runtime hashes.
    builds : Mapping[str, BuildInfo]
        Per target (``host``, ``cortex-m4``).
    self_check : tuple of EquivalenceRecord
    artefacts : Mapping[str, str]
        sha256 of every exported file, by its path relative to ``export/``.
    """

    RELATIVE_PATH = "export/manifest.json"

    format: str
    generator: str
    plant: str
    precision: str
    target: str
    profile: str | None = field(default=None, kw_only=True, metadata=ABSENT_IF_NONE)
    inputs_sha256: str
    plant_sha256: str
    law_sha256: str
    network: NetworkInfo
    onnx: OnnxInfo
    backup: Mapping[str, Any]
    builds: Mapping[str, BuildInfo]
    self_check: tuple[EquivalenceRecord, ...]
    artefacts: Mapping[str, str]

    @property
    def code_profile(self) -> str:
        """The code profile of the export (``unrolled`` for exports from before profiles)."""
        return self.profile or "unrolled"

    @property
    def backup_type(self) -> str:
        return str(self.backup.get("type", "lqr"))

    @property
    def self_check_passed(self) -> bool:
        return all(check.passed for check in self.self_check)


# -- certificate.json -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One check of the certificate.

    Attributes
    ----------
    name : str
    claim : str
        Exactly what the verdict is about (e.g. "on these 10,000 states ...", "for every initial
        state of the box ...").
    verdict : str
        VERIFIED (the claim holds, by exhaustive checking of its stated domain or by proof),
        FALSIFIED (a concrete counterexample is given), UNKNOWN (neither).
    evidence : str
        How: "hash comparison", "sampled", "search", "proof (...)".
    seconds : float
    details : Mapping
    counterexample : Mapping or None
    """

    name: str
    claim: str
    verdict: str
    evidence: str
    seconds: float
    details: Mapping[str, Any] = field(default_factory=dict)
    counterexample: Mapping[str, Any] | None = None

    def to_dict(self) -> dict:
        return to_json(self)


@dataclass(frozen=True)
class CertificateSummary:
    verified: tuple[str, ...]
    falsified: tuple[str, ...]
    unknown: tuple[str, ...]
    safe_for_every_initial_state_of_the_box: bool


@dataclass(frozen=True)
class Certificate(RunFile):
    """``certificate.json``: the verdict of every check of ``verify`` on the exported artefacts.

    Attributes
    ----------
    format, generator, plant, run_dir, precision : str
    manifest_sha256 : str
        sha256 of the ``export/manifest.json`` checked.
    inputs_sha256 : str or None
    artefacts : Mapping[str, str]
    initial_box : Mapping[str, tuple of float]
        Per state, ``(lo, hi)`` [state unit].
    horizon_steps : int
    summary : CertificateSummary
    checks : tuple of Check
    exit_code : int
        0 when integrity holds and nothing is FALSIFIED, else 1.
    """

    RELATIVE_PATH = "certificate.json"

    format: str
    generator: str
    plant: str
    run_dir: str
    precision: str
    manifest_sha256: str
    inputs_sha256: str | None
    artefacts: Mapping[str, str]
    initial_box: Mapping[str, tuple[float, float]]
    horizon_steps: int
    summary: CertificateSummary
    checks: tuple[Check, ...]
    exit_code: int

    def check(self, name: str) -> Check | None:
        """The check called ``name`` (None when the certificate has none)."""
        return next((check for check in self.checks if check.name == name), None)


# -- a foreign controller's certificate (verify PLANT --controller NET.onnx) ---------------------------------
@dataclass(frozen=True)
class ForeignCertificateSummary:
    verified: tuple[str, ...]
    falsified: tuple[str, ...]
    unknown: tuple[str, ...]
    safe_for_every_initial_state_of_the_box: bool


@dataclass(frozen=True)
class ForeignCertificate(RunFile):
    """The certificate of ``verify PLANT --controller NET.onnx``: the closed loop of a foreign network alone.

    Attributes
    ----------
    format, generator, plant : str
    plant_file, plant_sha256 : str
        The plant file as named, and the sha256 of its text.
    controller, controller_sha256 : str
        The ONNX file as named, and the sha256 of its bytes.
    network : str
        Layer summary (``4 -> 256 tanh -> 256 tanh -> 2 tanh``).
    onnx_ops : tuple of str
        The ONNX operations the reader found.
    input_map, output_map : tuple of str
        The plant file's ``controller`` maps as written (empty: identity).
    sampling, discrete_map : str
        At which instants rows are checked, and which discrete map the verdicts are about.
    initial_box : Mapping[str, tuple of float]
    horizon_steps : int
    summary : ForeignCertificateSummary
    checks : tuple of Check
    exit_code : int
        1 when a check is FALSIFIED, else 0.
    """

    format: str
    generator: str
    plant: str
    plant_file: str
    plant_sha256: str
    controller: str
    controller_sha256: str
    network: str
    onnx_ops: tuple[str, ...]
    input_map: tuple[str, ...]
    output_map: tuple[str, ...]
    sampling: str
    discrete_map: str
    initial_box: Mapping[str, tuple[float, float]]
    horizon_steps: int
    summary: ForeignCertificateSummary
    checks: tuple[Check, ...]
    exit_code: int

    def check(self, name: str) -> Check | None:
        """The check called ``name`` (None when the certificate has none)."""
        return next((check for check in self.checks if check.name == name), None)


# -- hil/<target>/report.json and hil/report.json ------------------------------------------------------
@dataclass(frozen=True)
class Latency:
    """Round trips [s]: over every reply, and over the target's own (non-watchdog) replies."""

    p50: float | None
    p99: float | None
    max: float | None
    p50_ok_replies: float | None
    p99_ok_replies: float | None


@dataclass(frozen=True)
class HilEquivalence:
    """The target's commands against the float64 reference law on the same sent states."""

    worst_error: float
    worst_bound_ratio: float
    worst_step: int
    tolerance: str
    branch_mismatches: int


@dataclass(frozen=True)
class HilSafety:
    row_names: tuple[str, ...]
    worst_per_row: tuple[float, ...]
    violating_steps: int
    all_states_finite: bool
    safety_held: bool


@dataclass(frozen=True)
class HilVerdict:
    checks: Mapping[str, bool]
    passed: bool
    safety_held: bool


@dataclass(frozen=True)
class HilReport(RunFile):
    """``hil/<target>/report.json``: one HIL run of the exported C on a target.

    Attributes
    ----------
    format, plant, target, description : str
    episodes, steps_per_episode, seed : int
    dt_seconds, watchdog_seconds : float
        Control period and target watchdog deadline [s].
    timing, watchdog_note : str
        ``simulated time`` or ``real time``, and what that means for the watchdog.
    faults : Mapping[str, float]
    wall_seconds, steps_per_second : float
    initial_states : tuple of tuple of float
        ``(episodes, nx)``.
    latency_seconds : Latency
    compute : Mapping
        The target's compute per step (instructions under QEMU, seconds on the host).
    deadline_misses : int
    deadline_note : str
    equivalence : HilEquivalence
    safety : HilSafety
    branches : Mapping[str, int]
    trajectory_vs_python : Mapping
    frames : Mapping
        Injected faults and the target's and harness's frame counters.
    hello : Mapping or None
    summary : HilVerdict
    law : str
        Which law ran on the target.
    plots : tuple of str or None
        Relative to the run directory (None: written with ``--no-plots``).
    """

    format: str
    plant: str
    target: str
    description: str
    episodes: int
    steps_per_episode: int
    seed: int
    dt_seconds: float
    watchdog_seconds: float
    timing: str
    watchdog_note: str
    faults: Mapping[str, Any]
    wall_seconds: float
    steps_per_second: float
    initial_states: tuple[tuple[float, ...], ...]
    latency_seconds: Latency
    compute: Mapping[str, Any]
    deadline_misses: int
    deadline_note: str
    equivalence: HilEquivalence
    safety: HilSafety
    branches: Mapping[str, int]
    trajectory_vs_python: Mapping[str, Any]
    frames: Mapping[str, Any]
    hello: Mapping[str, Any] | None
    summary: HilVerdict
    law: str
    plots: tuple[str, ...] | None = field(default=None, metadata=ABSENT_IF_NONE)

    @staticmethod
    def relative_path(label: str) -> str:
        return f"hil/{label}/report.json"


@dataclass(frozen=True)
class HilTargetSummary:
    """One target's entry in ``hil/report.json`` (the fields of its report that compare targets)."""

    target: str
    timing: str
    faults: Mapping[str, Any]
    episodes: int
    steps_per_episode: int
    steps_per_second: float
    latency_seconds: Latency
    compute: Mapping[str, Any]
    deadline_misses: int
    equivalence: HilEquivalence
    safety: HilSafety
    summary: HilVerdict
    law: str
    report: str

    @classmethod
    def of(cls, report: HilReport, label: str) -> HilTargetSummary:
        """The summary of ``report`` (written to ``hil/<label>/report.json``)."""
        names = [f.name for f in fields(cls) if f.name != "report"]
        return cls(**{name: getattr(report, name) for name in names}, report=f"{label}/report.json")


@dataclass(frozen=True)
class HilIndex(RunFile):
    """``hil/report.json``: the latest run of every target, by target label."""

    RELATIVE_PATH = "hil/report.json"

    format: str
    targets: Mapping[str, HilTargetSummary]

    def with_target(self, label: str, report: HilReport) -> HilIndex:
        """This index with ``label``'s entry replaced by ``report``'s summary (the other targets kept)."""
        return replace(self, targets={**self.targets, label: HilTargetSummary.of(report, label)})
