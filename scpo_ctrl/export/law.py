"""The deployed control law: what the ONNX file and the C bundle compute, and its float64 reference.

The law, for a measured state ``x`` (nx,):

1. monitor: if any ``x_i`` is not finite -> reason ``NONFINITE_STATE``; else if
   ``x`` is outside the monitor region (the state limits of the plant file,
   rounded outward to float32 so every precision takes the same decision)
   -> ``OUTSIDE_REGION``;
2. ``dx = x - x_eq``; backup ``u_b = u_eq - K dx`` (LQR), or ``u_b`` given as an input (an MPC backup:
   the first input of the acados solver's plan at ``x``, computed outside the law, see
   :mod:`scpo_ctrl.export.mpc_bundle`);
3. level ``V(x) / c`` with ``V = dx^T P dx``; gate ``sigma = smoothstep(s)``,
   ``s = clip((V/c - 1) / (gate_ratio - 1), 0, 1)``;
4. network ``y = phi_theta(dx / x_scale)`` (tanh hidden layers, linear output);
5. ``u = u_b + sigma * (u_scale * y)``; if not finite -> ``NONFINITE_OUTPUT``;
6. ``u = min(max(u, u_min), u_max)``.

If the monitor tripped, the output is the saturated backup instead (``sat(u_eq)``
when the state is not finite or the backup is NaN: the backup of a NaN is undefined). The
network is evaluated on every call anyway, so the work per call is fixed.

Branch codes: 0 backup (sigma = 0, inside the target set), 1 blend, 2 network
(sigma = 1), 3 fallback (the monitor tripped; see the reason code).

The operation order above is the C code's. :func:`float_error_bound` follows
it to bound, state by state, how far a float32 (or float64) evaluation can be
from the exact law.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..backup.kinds import Backup, backup_for
from ..config.plant_spec import load_plant_spec
from ..errors import UsageError
from ..policy.residual import ResidualPolicy

BRANCHES = ("backup", "blend", "network", "fallback")
REASONS = ("ok", "nonfinite_state", "outside_region", "nonfinite_output")
BRANCH_BACKUP, BRANCH_BLEND, BRANCH_NETWORK, BRANCH_FALLBACK = range(4)
REASON_OK, REASON_NONFINITE_STATE, REASON_OUTSIDE_REGION, REASON_NONFINITE_OUTPUT = range(4)

#: Largest error of the C library's double ``tanh`` (float64 builds) assumed by the error bound,
#: in units of 2^-52 |tanh|; glibc documents at most 2 ulp. The float32 builds use their own
#: tanh with a proven bound (:mod:`.activation`).
ACTIVATION_ULPS = 4.0


@dataclass(frozen=True)
class DeployedLaw:
    """Everything the exported artefacts compute, in float64 (the values as certified).

    Attributes
    ----------
    name : str
        Plant name (prefix of the C symbols).
    state_names, input_names, state_units, input_units : tuple of str
    dt : float
        Control period [s].
    weights : tuple of ndarray
        ``W_l`` of shape ``(n_out, n_in)``, hidden layers then output layer.
    biases : tuple of ndarray
        ``b_l`` of shape ``(n_out,)``.
    activation : str
        Hidden-layer activation (``tanh``).
    x_eq : ndarray, shape (nx,)
    u_eq : ndarray, shape (nu,)
    K : ndarray, shape (nu, nx)
    P : ndarray, shape (nx, nx)
    c : float
        Target-set level: T = {V <= c}.
    gate_ratio : float
    x_scale : ndarray, shape (nx,)
    u_scale : ndarray, shape (nu,)
    u_min, u_max : ndarray, shape (nu,)
        Input limits (``-inf``/``inf`` where absent).
    region_min, region_max : ndarray, shape (nx,)
        Monitor region (float32-representable; ``-inf``/``inf`` where absent).
    backup : {'lqr', 'mpc'}
        ``lqr``: the backup is ``u_eq - K dx`` inside the law. ``mpc``: the backup's input is an input
        of the law (``K`` is then the LQR the MPC's terminal cost and set come from, not used by the law).
    """

    name: str
    state_names: tuple
    input_names: tuple
    state_units: tuple
    input_units: tuple
    dt: float
    weights: tuple
    biases: tuple
    activation: str
    x_eq: np.ndarray
    u_eq: np.ndarray
    K: np.ndarray
    P: np.ndarray
    c: float
    gate_ratio: float
    x_scale: np.ndarray
    u_scale: np.ndarray
    u_min: np.ndarray
    u_max: np.ndarray
    region_min: np.ndarray
    region_max: np.ndarray
    backup: str = "lqr"

    @property
    def backup_kind(self) -> Backup:
        """The backup, as far as the law knows it (its type; see :func:`scpo_ctrl.backup.kinds.backup_for`)."""
        return backup_for(self.backup)

    @property
    def nx(self) -> int:
        return len(self.x_eq)

    @property
    def nu(self) -> int:
        return len(self.u_eq)

    @property
    def sizes(self) -> tuple:
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

    @property
    def multiply_accumulates(self) -> int:
        return int(sum(W.size for W in self.weights))


@dataclass(frozen=True)
class LawOutput:
    """The law evaluated on a batch of states.

    Attributes
    ----------
    u : ndarray, shape (N, nu)
        Control [input units].
    branch : ndarray of int32, shape (N,)
    reason : ndarray of int32, shape (N,)
    gate : ndarray, shape (N,)
        sigma(x) in [0, 1] (NaN if the state is not finite).
    level : ndarray, shape (N,)
        V(x) / c (the target set is level <= 1).
    """

    u: np.ndarray
    branch: np.ndarray
    reason: np.ndarray
    gate: np.ndarray
    level: np.ndarray


def _outward_float32(values: np.ndarray, direction: float) -> np.ndarray:
    """Round to float32 in ``direction`` (-1: result <= value, +1: result >= value; infinities kept)."""
    rounded = values.astype(np.float32)
    needs = np.isfinite(values) & ((rounded.astype(float) - values) * direction < 0)
    rounded[needs] = np.nextafter(rounded[needs], np.float32(direction * np.inf))
    return rounded.astype(float)


def deployed_input_limits(law: DeployedLaw, precision: str) -> tuple:
    """The saturation limits as the artefacts store them: in float32 rounded *inward* (the lower limit
    up, the upper down), so a float32 output never exceeds a declared limit; in float64 exact."""
    if precision == "float64":
        return law.u_min, law.u_max
    return _outward_float32(law.u_min, +1.0), _outward_float32(law.u_max, -1.0)


def law_from_run(run_dir: Path) -> DeployedLaw:
    """Read ``policy.npz`` and the copy of the plant file in a run directory."""
    run_dir = Path(run_dir)
    policy_path, plant_path = run_dir / "policy.npz", run_dir / "plant.yaml"
    for path in (policy_path, plant_path):
        if not path.is_file():
            raise UsageError(f"{run_dir}: not a run directory ({path.name} is missing; run `scpo-ctrl adapt` first)")
    spec = load_plant_spec(plant_path)
    try:
        policy, theta, _ = ResidualPolicy.load(policy_path)
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"{policy_path}: cannot read the policy ({exc})") from None
    if policy.plant != spec.name or policy.layout.sizes[0] != spec.nx or policy.layout.sizes[-1] != spec.nu:
        raise UsageError(f"{policy_path}: does not belong to the plant in {plant_path}")
    if policy.backup != spec.backup.type:
        raise UsageError(f"{policy_path}: the policy runs on a {policy.backup} backup but {plant_path} declares "
                         f"backup type {spec.backup.type}")
    return law_from_policy(policy, theta, spec)


def law_from_policy(policy: ResidualPolicy, theta: np.ndarray, spec) -> DeployedLaw:
    """The deployed law of ``policy`` at ``theta``, with units and monitor region from ``spec``."""
    layers = []
    offset = 0
    sizes = policy.layout.sizes
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = np.asarray(theta[offset:offset + n_in * n_out], dtype=float).reshape(n_out, n_in, order="F")
        offset += n_in * n_out
        b = np.asarray(theta[offset:offset + n_out], dtype=float)
        offset += n_out
        layers.append((W, b))
    lower = np.array([-np.inf if v.min is None else v.min for v in spec.states], dtype=float)
    upper = np.array([np.inf if v.max is None else v.max for v in spec.states], dtype=float)
    return DeployedLaw(
        name=spec.name, state_names=tuple(spec.state_names), input_names=tuple(spec.input_names),
        state_units=tuple(v.unit for v in spec.states), input_units=tuple(v.unit for v in spec.inputs),
        dt=float(spec.dt), weights=tuple(W for W, _ in layers), biases=tuple(b for _, b in layers),
        activation=policy.layout.activation, x_eq=np.asarray(policy.x_eq, float), u_eq=np.asarray(policy.u_eq, float),
        K=np.asarray(policy.K, float), P=np.asarray(policy.P, float), c=float(policy.c),
        gate_ratio=float(policy.gate_ratio), x_scale=np.asarray(policy.x_scale, float),
        u_scale=np.asarray(policy.u_scale, float), u_min=np.asarray(policy.u_min, float),
        u_max=np.asarray(policy.u_max, float), region_min=_outward_float32(lower, -1.0),
        region_max=_outward_float32(upper, +1.0), backup=policy.backup,
    )


def lqr_fallback(law: DeployedLaw) -> DeployedLaw:
    """The same network, gate and monitor on the LQR ``u_eq - K dx`` instead of the MPC: what a target
    without acados (the Cortex-M4) runs. Not the law SCPO certified when ``law`` is MPC-backed."""
    return replace(law, backup="lqr")


def law_digest(law: DeployedLaw) -> str:
    """sha256 over every number and name of the law (the export's input hash, with the plant file)."""
    digest = hashlib.sha256()
    texts = (law.name, law.activation, *law.state_names, *law.input_names, *law.state_units, *law.input_units,
             *law.backup_kind.digest_texts)
    for text in texts:
        digest.update(text.encode() + b"\0")
    arrays = [np.array([law.dt, law.c, law.gate_ratio]), *law.weights, *law.biases, law.x_eq, law.u_eq, law.K, law.P,
              law.x_scale, law.u_scale, law.u_min, law.u_max, law.region_min, law.region_max]
    for array in arrays:
        array = np.ascontiguousarray(array, dtype="<f8")
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def backup_inputs(law: DeployedLaw, X: np.ndarray, U_backup: np.ndarray | None) -> np.ndarray:
    """The backup's unsaturated input at ``X (N, nx)``: ``u_eq - K dx`` (LQR) or ``U_backup (N, nu)`` (MPC)."""
    if law.backup_kind.in_closed_form:
        if U_backup is not None:
            raise ValueError("an LQR-backed law computes its backup itself; U_backup must not be given")
        with np.errstate(invalid="ignore", over="ignore"):
            return law.u_eq - _dot_rows(X - law.x_eq, law.K)
    if U_backup is None:
        raise ValueError(f"the law runs on an {law.backup.upper()} backup: its inputs U_backup (N, nu) are needed")
    U_backup = np.atleast_2d(np.asarray(U_backup, dtype=float))
    if U_backup.shape != (len(X), law.nu):
        raise ValueError(f"U_backup has shape {U_backup.shape}, expected {(len(X), law.nu)}")
    return U_backup


def evaluate(law: DeployedLaw, X: np.ndarray, U_backup: np.ndarray | None = None) -> LawOutput:
    """The law in float64 on states ``X (N, nx)``, in the C code's operation order.

    ``U_backup (N, nu)``: the backup's inputs at ``X``, for a law whose backup is an input (MPC).
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    finite = np.all(np.isfinite(X), axis=1)
    u_backup = backup_inputs(law, X, U_backup)
    with np.errstate(invalid="ignore", over="ignore"):
        inside = np.all((X >= law.region_min) & (X <= law.region_max), axis=1)
        dX = X - law.x_eq
        level = np.sum(dX * _dot_rows(dX, law.P), axis=1) / law.c
        s = np.clip((level - 1.0) / (law.gate_ratio - 1.0), 0.0, 1.0)
        gate = s * s * (3.0 - 2.0 * s)
        y = network(law, dX / law.x_scale)
        u = u_backup + gate[:, None] * (law.u_scale * y)
    output_finite = np.all(np.isfinite(u), axis=1)
    reason = np.full(len(X), REASON_OK, dtype=np.int32)
    reason[~output_finite] = REASON_NONFINITE_OUTPUT
    reason[~inside] = REASON_OUTSIDE_REGION
    reason[~finite] = REASON_NONFINITE_STATE
    fallback = np.where(finite[:, None] & ~np.isnan(u_backup), u_backup, law.u_eq)
    u = np.where((reason == REASON_OK)[:, None], u, fallback)
    u = np.minimum(np.maximum(u, law.u_min), law.u_max)
    branch = np.where(gate <= 0.0, BRANCH_BACKUP, np.where(gate >= 1.0, BRANCH_NETWORK, BRANCH_BLEND)).astype(np.int32)
    branch[reason != REASON_OK] = BRANCH_FALLBACK
    return LawOutput(u=u, branch=branch, reason=reason, gate=gate, level=level)


def network(law: DeployedLaw, Z: np.ndarray) -> np.ndarray:
    """phi_theta on normalised inputs ``Z (N, nx)``; returns ``(N, nu)``."""
    H = Z
    for index, (W, b) in enumerate(zip(law.weights, law.biases)):
        H = _dot_rows(H, W) + b
        if index < len(law.weights) - 1:
            H = np.tanh(H)
    return H


#: rows of X per block in :func:`_dot_rows`: a block's (rows, m) products stay in cache (measured twice as fast
#: as whole-array passes for 100,000 states and 32 units; the same operations, so the same bits)
DOT_ROWS_BLOCK = 2048


def _dot_rows(X: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``X (N, k) @ M.T (k, m)`` summed term by term in index order (as the C loops do): ``(N, m)``."""
    out = np.empty((X.shape[0], M.shape[0]))
    for r in range(0, X.shape[0], DOT_ROWS_BLOCK):
        rows = X[r:r + DOT_ROWS_BLOCK]
        block = np.zeros((rows.shape[0], M.shape[0]))
        term = np.empty_like(block)
        for j in range(M.shape[1]):
            np.multiply(rows[:, j:j + 1], M[:, j], out=term)
            block += term
        out[r:r + DOT_ROWS_BLOCK] = block
    return out
