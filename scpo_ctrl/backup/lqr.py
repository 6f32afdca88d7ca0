"""The LQR backup: gain from python-control's ``dlqr`` on the linearised plant."""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..errors import SpecError
from ..plant.linear import LinearModel, uncontrollable_modes
from ..plant.model import PlantModel


@dataclass(frozen=True)
class LqrBackup:
    """``u = sat(u_eq - K (x - x_eq))`` with its Lyapunov matrix.

    Attributes
    ----------
    K : ndarray, shape (nu, nx)
        Gain, python-control's sign convention.
    P : ndarray, shape (nx, nx)
        Solution of the discrete algebraic Riccati equation; V(x) = dx^T P dx.
    x_eq, u_eq : ndarray, shapes (nx,), (nu,)
    u_min, u_max : ndarray, shape (nu,)
        Saturation bounds (``-inf``/``inf`` where the file gives none).
    closed_loop_eigenvalues : ndarray, shape (nx,), complex
        Of ``A - B K`` on the linearisation.
    linear : LinearModel
        The linearisation the gain was designed on.
    """

    K: np.ndarray
    P: np.ndarray
    x_eq: np.ndarray
    u_eq: np.ndarray
    u_min: np.ndarray
    u_max: np.ndarray
    closed_loop_eigenvalues: np.ndarray
    linear: LinearModel

    def control(self, x):
        """Saturated backup control for a CasADi (or numeric) column ``x (nx,)``."""
        return ca.fmin(ca.fmax(self.control_unsaturated(x), ca.DM(self.u_min)), ca.DM(self.u_max))

    def control_unsaturated(self, x):
        """``u_eq - K (x - x_eq)`` without saturation."""
        return ca.DM(self.u_eq) - ca.mtimes(ca.DM(self.K), x - ca.DM(self.x_eq))

    def function(self) -> ca.Function:
        """``pi_b: (x (nx,), theta (0,)) -> u (nu,)``, the policy interface with no parameters."""
        x = ca.SX.sym("x", self.K.shape[1])
        theta = ca.SX.sym("theta", 0)
        return ca.Function("backup", [x, theta], [self.control(x)], ["x", "theta"], ["u"])


def design_lqr(model: PlantModel) -> LqrBackup:
    """Design the LQR backup on the linearisation of ``model`` at its equilibrium.

    Raises
    ------
    SpecError
        If the linearisation is not stabilisable, or the Riccati equation has
        no stabilising solution for the given Q, R.
    """
    spec = model.spec
    linear = model.linearise()
    A, B = linear.A, linear.B
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        raise SpecError(spec.source, "dynamics", "the linearisation at the equilibrium is not finite")
    bad = uncontrollable_modes(A, B, discrete=True)
    if bad:
        shown = ", ".join(f"{lam:.4g}" for lam in bad)
        raise SpecError(
            spec.source, "dynamics",
            f"the linearisation at the equilibrium is not stabilisable: unstable mode(s) {shown} cannot be "
            "steered by the inputs, so no LQR backup exists",
        )
    import control  # imported here: it pulls in scipy.signal (about 1.5 s), needless for a bad file

    Q, R = np.array(spec.backup.Q), np.array(spec.backup.R)
    try:
        K, P, _ = control.dlqr(A, B, Q, R)
    except Exception as exc:  # python-control raises several types for an unsolvable DARE
        raise SpecError(spec.source, "backup", f"LQR design failed (is (A, Q) detectable?): {exc}") from None
    K, P = np.asarray(K, dtype=float), np.asarray(P, dtype=float)
    P = 0.5 * (P + P.T)
    eigenvalues = np.linalg.eigvals(A - B @ K)
    if not np.all(np.isfinite(K)) or np.max(np.abs(eigenvalues)) >= 1.0:
        raise SpecError(spec.source, "backup", "LQR design did not give a stabilising gain (check Q and R)")
    u_min = np.array([-np.inf if v.min is None else v.min for v in spec.inputs])
    u_max = np.array([np.inf if v.max is None else v.max for v in spec.inputs])
    return LqrBackup(
        K=K, P=P, x_eq=np.array(spec.x_eq), u_eq=np.array(spec.u_eq), u_min=u_min, u_max=u_max,
        closed_loop_eigenvalues=eigenvalues, linear=linear,
    )
