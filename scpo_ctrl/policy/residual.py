"""The deployed control law: u = sat(u_eq - K (x - x_eq) + sigma(x) * u_scale * phi_theta((x - x_eq) / x_scale)).

* ``phi_theta`` is an MLP whose last layer starts at zero, so theta_0 gives
  exactly the backup.
* ``sigma`` is a gate from the backup's target set T = {V(x) <= c}: 0 on T
  (the LQR acts alone there, so local asymptotic stability is the LQR's),
  1 where V(x) >= gate_ratio * c, and the C^1 smoothstep ``3 s^2 - 2 s^3`` of
  ``s = (V / c - 1) / (gate_ratio - 1)`` in between.
* ``sat`` clips to the input limits.

Everything needed to rebuild the law without the plant file is stored in
``policy.npz`` (see :meth:`ResidualPolicy.save`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import casadi as ca
import numpy as np

from ..backup.kinds import backup_for
from ..files import atomic_write
from .mlp import MlpLayout

POLICY_FORMAT = "scpo-policy/1"
DEFAULT_GATE_RATIO = 2.0


@dataclass(frozen=True)
class ResidualPolicy:
    """The residual policy's structure (theta kept separately).

    Attributes
    ----------
    layout : MlpLayout
        ``(nx, hidden..., nu)``.
    K : ndarray, shape (nu, nx)
    x_eq : ndarray, shape (nx,)
    u_eq : ndarray, shape (nu,)
    u_min, u_max : ndarray, shape (nu,)
    P : ndarray, shape (nx, nx)
    c : float
        Target-set level.
    gate_ratio : float
        sigma = 1 for V >= gate_ratio * c.
    x_scale : ndarray, shape (nx,)
        Network input scaling [state units].
    u_scale : ndarray, shape (nu,)
        Network output scaling [input units].
    plant : str
    state_names, input_names : tuple of str
    dt : float
    backup : {'lqr', 'mpc'}
        What ``u_b`` is: the saturated LQR ``u_eq - K (x - x_eq)`` (a CasADi expression, so
        :meth:`control` and :meth:`function` exist), or an MPC solved outside CasADi (then the law
        takes the MPC's input as an argument: :meth:`control_on_backup`, :meth:`function_on_backup`).
    """

    layout: MlpLayout
    K: np.ndarray
    x_eq: np.ndarray
    u_eq: np.ndarray
    u_min: np.ndarray
    u_max: np.ndarray
    P: np.ndarray
    c: float
    gate_ratio: float
    x_scale: np.ndarray
    u_scale: np.ndarray
    plant: str
    state_names: tuple
    input_names: tuple
    dt: float
    backup: str = "lqr"

    @property
    def n_theta(self) -> int:
        return self.layout.n_theta

    # -- symbolic pieces ------------------------------------------------------
    def value(self, x):
        """V(x) = (x - x_eq)^T P (x - x_eq) for a CasADi column."""
        dx = x - ca.DM(self.x_eq)
        return ca.mtimes([dx.T, ca.DM(self.P), dx])

    def gate(self, x):
        """sigma(x) in [0, 1]: 0 on the target set, 1 far from it."""
        s = (self.value(x) / self.c - 1.0) / (self.gate_ratio - 1.0)
        s = ca.fmin(ca.fmax(s, 0.0), 1.0)
        return s * s * (3.0 - 2.0 * s)

    def residual(self, x, theta):
        """sigma(x) * u_scale * phi_theta(normalised x), before saturation."""
        z = (x - ca.DM(self.x_eq)) / ca.DM(self.x_scale)
        return self.gate(x) * ca.DM(self.u_scale) * self.layout.forward(z, theta)

    def control(self, x, theta):
        if not backup_for(self.backup).in_closed_form:
            raise ValueError(f"the {self.backup} backup is not a CasADi expression: use control_on_backup")
        u = ca.DM(self.u_eq) - ca.mtimes(ca.DM(self.K), x - ca.DM(self.x_eq)) + self.residual(x, theta)
        return ca.fmin(ca.fmax(u, ca.DM(self.u_min)), ca.DM(self.u_max))

    def control_on_backup(self, x, theta, u_backup):
        """``sat(u_backup + residual)``: the law on top of a backup input computed elsewhere (the MPC's)."""
        u = u_backup + self.residual(x, theta)
        return ca.fmin(ca.fmax(u, ca.DM(self.u_min)), ca.DM(self.u_max))

    def control_batch(self, X, theta, U_backup=None):
        """The control law on the columns of ``X (nx, M)`` at once (MX matrix form); returns ``(nu, M)``.

        ``U_backup (nu, M)``: the backup's inputs at those states (required for an MPC backup; the LQR's
        unsaturated ``u_eq - K (x - x_eq)`` when omitted).
        """
        M = X.shape[1]
        if U_backup is None and not backup_for(self.backup).in_closed_form:
            raise ValueError(f"the {self.backup} backup's inputs must be given")
        dX = X - ca.repmat(ca.DM(self.x_eq), 1, M)
        V = ca.sum1(dX * ca.mtimes(ca.DM(self.P), dX))
        s = ca.fmin(ca.fmax((V / self.c - 1.0) / (self.gate_ratio - 1.0), 0.0), 1.0)
        gate = s * s * (3.0 - 2.0 * s)  # (1, M)
        Z = dX / ca.repmat(ca.DM(self.x_scale), 1, M)
        residual = ca.repmat(gate, self.layout.sizes[-1], 1) * (
            ca.repmat(ca.DM(self.u_scale), 1, M) * self.layout.forward_batch(Z, theta)
        )
        if U_backup is None:
            U_backup = ca.repmat(ca.DM(self.u_eq), 1, M) - ca.mtimes(ca.DM(self.K), dX)
        U = U_backup + residual
        return ca.fmin(ca.fmax(U, ca.repmat(ca.DM(self.u_min), 1, M)), ca.repmat(ca.DM(self.u_max), 1, M))

    def function(self, symbolic=ca.SX) -> ca.Function:
        """``pi: (x (nx,), theta (n_theta,)) -> u (nu,)``.

        ``symbolic=ca.SX`` unrolls the network into scalar operations (fast to
        evaluate in a rollout); ``ca.MX`` keeps matrix products (compact
        derivatives and generated code, for losses over many weights).
        """
        x = symbolic.sym("x", self.layout.sizes[0])
        theta = symbolic.sym("theta", self.n_theta)
        return ca.Function("policy", [x, theta], [self.control(x, theta)], ["x", "theta"], ["u"])

    def function_on_backup(self, symbolic=ca.SX) -> ca.Function:
        """``pi: (x (nx,), theta (n_theta,), u_backup (nu,)) -> u (nu,)``, see :meth:`control_on_backup`."""
        x = symbolic.sym("x", self.layout.sizes[0])
        theta = symbolic.sym("theta", self.n_theta)
        u_backup = symbolic.sym("u_backup", self.layout.sizes[-1])
        return ca.Function("policy", [x, theta, u_backup], [self.control_on_backup(x, theta, u_backup)],
                           ["x", "theta", "u_backup"], ["u"])

    def law(self, symbolic=ca.SX) -> ca.Function:
        """The law in the form the problem's rollout engines take: :meth:`function` for the LQR backup,
        :meth:`function_on_backup` otherwise."""
        return self.function(symbolic) if backup_for(self.backup).in_closed_form else self.function_on_backup(symbolic)

    def initial_theta(self, seed: int) -> np.ndarray:
        """Glorot hidden layers, zero last layer: the policy equals the backup exactly."""
        return self.layout.initial_theta(np.random.default_rng(seed), zero_last_layer=True)

    # -- persistence ------------------------------------------------------------
    def save(self, path: Path, theta: np.ndarray, metadata: dict | None = None) -> None:
        """Write ``policy.npz`` atomically (temporary file in the same directory, then rename)."""
        arrays = {
            "format": np.array(POLICY_FORMAT),
            "theta": np.asarray(theta, dtype=float),
            "sizes": np.array(self.layout.sizes, dtype=np.int64),
            "activation": np.array(self.layout.activation),
            "K": self.K, "x_eq": self.x_eq, "u_eq": self.u_eq, "u_min": self.u_min, "u_max": self.u_max,
            "P": self.P, "c": np.array(self.c), "gate_ratio": np.array(self.gate_ratio),
            "x_scale": self.x_scale, "u_scale": self.u_scale, "plant": np.array(self.plant),
            "state_names": np.array(self.state_names), "input_names": np.array(self.input_names),
            "dt": np.array(self.dt), "backup": np.array(self.backup), "metadata": np.array(json.dumps(metadata or {}, sort_keys=True)),
        }
        atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))

    @staticmethod
    def load(path: Path) -> tuple["ResidualPolicy", np.ndarray, dict]:
        """Read ``policy.npz``; returns (policy, theta, metadata)."""
        with np.load(Path(path), allow_pickle=False) as data:
            if str(data["format"]) != POLICY_FORMAT:
                raise ValueError(f"{path}: not a {POLICY_FORMAT} file")
            policy = ResidualPolicy(
                layout=MlpLayout(tuple(int(v) for v in data["sizes"]), str(data["activation"])),
                K=data["K"], x_eq=data["x_eq"], u_eq=data["u_eq"], u_min=data["u_min"], u_max=data["u_max"],
                P=data["P"], c=float(data["c"]), gate_ratio=float(data["gate_ratio"]), x_scale=data["x_scale"],
                u_scale=data["u_scale"], plant=str(data["plant"]),
                state_names=tuple(str(v) for v in data["state_names"]),
                input_names=tuple(str(v) for v in data["input_names"]), dt=float(data["dt"]),
                backup=str(data["backup"]) if "backup" in data.files else "lqr",
            )
            return policy, np.array(data["theta"]), json.loads(str(data["metadata"]))
