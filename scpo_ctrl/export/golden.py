"""Golden vectors of the generated C: a fixed law, states -> float32 input bits, branch and reason.

``verification/golden/<plant>.json`` holds, per shipped plant, a deterministic law (the plant's backup
plus a seeded network, every number stored, so the file alone rebuilds it), a few states (and, for an
MPC-backed law, the backup's inputs) and what the host C generated for that law computes on them in
float32: the bits of each input, the branch and the reason. Rendering and compiling the C again from the
stored law and comparing bit for bit catches a change in what the code generator emits (or in how the
compiler flags make it round) without re-running ``adapt``. ``scripts/regenerate_goldens.py`` writes the
files; a regeneration is a deliberate change of the generated arithmetic, to be reviewed as such.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .campaign import equivalence_campaign
from .c_bundle import DEFAULT_PROFILE
from .equivalence import compare
from .law import BRANCHES, REASONS, DeployedLaw, LawOutput, evaluate, law_digest
from .run import build_host_law

GOLDEN_FORMAT = "scpo-golden/1"
PRECISION = "float32"
#: states per kind of the equivalence campaign's mix (plus x_eq, a NaN state and an infinite one)
STATES_PER_KIND = 4
_ARRAYS = ("x_eq", "u_eq", "K", "P", "x_scale", "u_scale", "u_min", "u_max", "region_min", "region_max")
_TEXTS = ("state_names", "input_names", "state_units", "input_units")


@dataclass(frozen=True)
class GoldenVectors:
    """States and what the generated C computes on them.

    Attributes
    ----------
    X : ndarray, shape (N, nx)
        States (float32-representable; NaN and infinities included).
    U_backup : ndarray, shape (N, nu), or None
        The backup's inputs of an MPC-backed law (None for an LQR law).
    u_bits : ndarray of uint32, shape (N, nu)
        The float32 bits of the input the C computed.
    branch, reason : ndarray of int, shape (N,)
        Codes of :data:`~scpo_ctrl.export.law.BRANCHES` and :data:`~scpo_ctrl.export.law.REASONS`.
    """

    X: np.ndarray
    U_backup: np.ndarray | None
    u_bits: np.ndarray
    branch: np.ndarray
    reason: np.ndarray


@dataclass(frozen=True)
class Golden:
    """A golden file: the law, how it was made (``provenance``), the code ``profile``, and the vectors."""

    law: DeployedLaw
    provenance: dict
    profile: str
    vectors: GoldenVectors


def golden_states(law: DeployedLaw, seed: int = 0) -> tuple:
    """``(X (N, nx), U_backup (N, nu) or None)``: a small equivalence campaign plus x_eq, a NaN and an
    infinite state; for an MPC-backed law seeded backup inputs (one NaN: a failed solve)."""
    mix = {kind: STATES_PER_KIND for kind in ("inside", "beyond", "boundary", "target_surface", "gate_surface",
                                              "equilibrium")}
    X = equivalence_campaign(law, seed=seed, mix=mix).X
    special = np.vstack([law.x_eq, np.full(law.nx, np.nan), np.full(law.nx, np.inf)])
    X = np.vstack([X, special]).astype(np.float32).astype(float)
    if law.backup_kind.in_closed_form:
        return X, None
    rng = np.random.default_rng(seed + 1)
    low = np.where(np.isfinite(law.u_min), law.u_min, law.u_eq - law.u_scale)
    high = np.where(np.isfinite(law.u_max), law.u_max, law.u_eq + law.u_scale)
    U = rng.uniform(low - 0.1 * (high - low), high + 0.1 * (high - low), size=(len(X), law.nu))
    U[len(X) // 2] = np.nan
    return X, U.astype(np.float32).astype(float)


def compute(law: DeployedLaw, X: np.ndarray, U_backup: np.ndarray | None, directory: Path,
            profile: str = DEFAULT_PROFILE) -> GoldenVectors:
    """Render and compile the law's host C (float32, ``profile``) into ``directory`` and run it on ``X``."""
    host = build_host_law(law, PRECISION, Path(directory), input_hash="golden", profile=profile)
    output = host.evaluate(X, U_backup)
    return GoldenVectors(X=X, U_backup=U_backup, u_bits=np.asarray(output.u, dtype=np.float32).view(np.uint32),
                         branch=np.asarray(output.branch, dtype=int), reason=np.asarray(output.reason, dtype=int))


def check_against_reference(law: DeployedLaw, vectors: GoldenVectors) -> str | None:
    """None when the vectors agree with the float64 reference law (on finite states within the float32 error
    bound and branch rules of ``export``; on the others the same branch and reason); else what is wrong (a
    golden file must not record a wrong C)."""
    finite = np.all(np.isfinite(vectors.X), axis=1)
    u = vectors.u_bits.view(np.float32).astype(float)
    output = LawOutput(u=u[finite], branch=vectors.branch[finite], reason=vectors.reason[finite],
                       gate=np.zeros(int(finite.sum())), level=np.zeros(int(finite.sum())))
    U = None if vectors.U_backup is None else vectors.U_backup[finite]
    result = compare(law, "golden", PRECISION, vectors.X[finite], output, U_backup=U)
    if not result.passed:
        return (f"the C differs from the reference: worst |du| {result.worst_error:.3g} "
                f"({result.worst_bound_ratio:.3g} of the bound), {result.branch_mismatches} branch and "
                f"{result.reason_mismatches} reason mismatches on {int(finite.sum())} finite states")
    reference = evaluate(law, vectors.X[~finite], None if vectors.U_backup is None else vectors.U_backup[~finite])
    if (np.any(reference.branch != vectors.branch[~finite]) or np.any(reference.reason != vectors.reason[~finite])
            or np.any(reference.u.astype(np.float32) != u[~finite].astype(np.float32))):
        return "on a non-finite state the C's input, branch or reason differs from the reference's"
    return None


def mismatches(expected: GoldenVectors, actual: GoldenVectors) -> list:
    """One line per state where ``actual`` differs from ``expected`` in any input bit, the branch or the reason."""
    lines = []
    for i in range(len(expected.X)):
        problems = []
        if not np.array_equal(expected.u_bits[i], actual.u_bits[i]):
            problems.append(f"u {[_hex(b) for b in expected.u_bits[i]]} -> {[_hex(b) for b in actual.u_bits[i]]}")
        if expected.branch[i] != actual.branch[i]:
            problems.append(f"branch {BRANCHES[expected.branch[i]]} -> {BRANCHES[actual.branch[i]]}")
        if expected.reason[i] != actual.reason[i]:
            problems.append(f"reason {REASONS[expected.reason[i]]} -> {REASONS[actual.reason[i]]}")
        if problems:
            lines.append(f"state {i} {expected.X[i].tolist()}: " + ", ".join(problems))
    return lines


# -- the file -----------------------------------------------------------------------------------------------
def to_json(golden: Golden) -> dict:
    """The golden file's content (numbers exact: float64 as JSON numbers, non-finite ones as text)."""
    law, vectors = golden.law, golden.vectors
    entries = []
    for i in range(len(vectors.X)):
        entry = {"x": _numbers(vectors.X[i])}
        if vectors.U_backup is not None:
            entry["u_backup"] = _numbers(vectors.U_backup[i])
        entry.update(u_float32_bits=[_hex(bits) for bits in vectors.u_bits[i]],
                     u=_numbers(vectors.u_bits[i].view(np.float32).astype(float)),
                     branch=BRANCHES[vectors.branch[i]], reason=REASONS[vectors.reason[i]])
        entries.append(entry)
    return {
        "format": GOLDEN_FORMAT, "plant": law.name, "precision": PRECISION, "profile": golden.profile,
        "provenance": golden.provenance, "law_sha256": law_digest(law), "law": _law_to_json(law),
        "vectors": entries,
    }


def from_json(data: dict) -> Golden:
    """The inverse of :func:`to_json`; raises ValueError when the rebuilt law's digest differs from the file's."""
    if data.get("format") != GOLDEN_FORMAT:
        raise ValueError(f"not a {GOLDEN_FORMAT} file (format {data.get('format')!r})")
    law = _law_from_json(data["law"])
    if law_digest(law) != data["law_sha256"]:
        raise ValueError("the law rebuilt from the file does not have the file's law_sha256")
    entries = data["vectors"]
    X = np.array([_floats(e["x"]) for e in entries])
    U = None if law.backup_kind.in_closed_form else np.array([_floats(e["u_backup"]) for e in entries])
    bits = np.array([[int(text, 16) for text in e["u_float32_bits"]] for e in entries], dtype=np.uint32)
    branch = np.array([BRANCHES.index(e["branch"]) for e in entries])
    reason = np.array([REASONS.index(e["reason"]) for e in entries])
    return Golden(law=law, provenance=data["provenance"], profile=data["profile"],
                  vectors=GoldenVectors(X=X, U_backup=U, u_bits=bits, branch=branch, reason=reason))


def read_golden(path: Path) -> Golden:
    return from_json(json.loads(Path(path).read_text()))


def _law_to_json(law: DeployedLaw) -> dict:
    out = {}
    for field in fields(DeployedLaw):
        value = getattr(law, field.name)
        if field.name in ("weights", "biases"):
            out[field.name] = [_numbers(array) for array in value]
        elif field.name in _ARRAYS:
            out[field.name] = _numbers(value)
        elif field.name in _TEXTS:
            out[field.name] = list(value)
        elif isinstance(value, float):
            out[field.name] = _number(value)
        else:
            out[field.name] = value
    return out


def _law_from_json(data: dict) -> DeployedLaw:
    values = {}
    for field in fields(DeployedLaw):
        value = data[field.name]
        if field.name in ("weights", "biases"):
            values[field.name] = tuple(np.array(_floats(array)) for array in value)
        elif field.name in _ARRAYS:
            values[field.name] = np.array(_floats(value))
        elif field.name in _TEXTS:
            values[field.name] = tuple(value)
        elif field.name in ("dt", "c", "gate_ratio"):
            values[field.name] = _float(value)
        else:
            values[field.name] = value
    return DeployedLaw(**values)


def _number(value: float):
    value = float(value)
    return value if math.isfinite(value) else repr(value)  # 'nan', 'inf', '-inf'


def _numbers(array) -> list:
    array = np.asarray(array, dtype=float)
    if array.ndim == 0:
        return _number(array)
    return [_numbers(row) if np.ndim(row) else _number(row) for row in array]


def _float(value) -> float:
    return float(value)  # float('nan'), float('inf') read the text form back


def _floats(values):
    return [_floats(v) if isinstance(v, list) else _float(v) for v in values]


def _hex(bits) -> str:
    return f"0x{int(bits):08x}"
