"""The decay envelope: every closed loop must shrink V at a guaranteed exponential rate.

With ``V(x) = (x - x_eq)^T P (x - x_eq)`` the backup's Lyapunov function and
``c`` its target-set level, the envelope of a trajectory from ``x_0`` is

    e_k = max(floor, beta gamma^k V(x_0)),     floor = reach_level c,

and the safety rows ``V(x_k) - e_k <= 0`` at every step k say that the
closed loop converges exponentially (rate ``gamma`` per step in V, so
``sqrt(gamma)`` in the P-norm) until it is ``floor`` deep in the target set.
Unlike the single final-step row ``V(x_H) <= floor``, every one of these rows
is as smooth in the policy's parameters as the trajectory itself: a
trajectory cannot linger in the gate band and then cross into the target set
at the last step, the switch-like behaviour that stalled SCPO (SCPO.md
section 7).

The rate comes from the backup's own contraction: ``gamma_b``, the largest
``V(A_cl x) / V(x)`` of the unsaturated backup's linearised closed loop, and
``gamma = gamma_b ** rate_fraction`` (default one half: the adapted law may
converge at half the backup's exponential rate). The gain ``beta`` is the
smallest that lets the backup's own validation trajectories (saturation and
nonlinearity included) meet the envelope with ``headroom`` to spare, so the
backup is always feasible. Both can be set in the plant file instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RATE_FRACTION = 0.5
DEFAULT_HEADROOM = 1.25


@dataclass(frozen=True)
class DecayEnvelope:
    """``e_k = max(floor, gain * rate**k * V(x_0))``.

    Attributes
    ----------
    rate : float
        gamma in (0, 1): the decay of V per step.
    gain : float
        beta >= 1.
    floor : float
        The level [V units] below which the envelope stops shrinking (``reach_level * c``).
    backup_rate : float
        gamma_b, the unsaturated backup's contraction of V per step (for the record).
    derived : bool
        True when rate and gain were derived here, False when the plant file set them.
    """

    rate: float
    gain: float
    floor: float
    backup_rate: float
    derived: bool

    def bound(self, V0: np.ndarray, steps: int) -> np.ndarray:
        """The envelope for initial values ``V0 (N,)`` over steps ``0..steps-1``, shape ``(N, steps)``."""
        decay = self.rate ** np.arange(steps, dtype=float)
        return np.maximum(self.floor, self.gain * np.asarray(V0, dtype=float)[:, None] * decay[None, :])


def contraction_rate(A_cl: np.ndarray, P: np.ndarray) -> float:
    """The largest ``V(A_cl dx) / V(dx)``: the squared spectral norm of ``L A_cl L^-1`` with ``P = L^T L``."""
    L = np.linalg.cholesky(P).T
    M = L @ A_cl @ np.linalg.inv(L)
    return float(np.linalg.norm(M, 2) ** 2)


def derive_envelope(V_backup: np.ndarray, backup_rate: float, floor: float, rate: float | None = None,
                    gain: float | None = None, rate_fraction: float = DEFAULT_RATE_FRACTION,
                    headroom: float = DEFAULT_HEADROOM) -> DecayEnvelope:
    """The envelope for the backup's validation trajectories ``V_backup (N, H+1)`` [V units].

    ``rate``/``gain`` override the derived values. Raises ValueError when a
    given pair leaves the backup itself outside the envelope (SCPO could not start).
    """
    V_backup = np.asarray(V_backup, dtype=float)
    derived = rate is None and gain is None
    if rate is None:
        rate = float(min(backup_rate, 1.0 - 1e-9) ** rate_fraction)
    steps = V_backup.shape[1]
    decay = rate ** np.arange(steps, dtype=float)
    V0 = V_backup[:, :1]
    if gain is None:
        # wherever the backup's V (with headroom) is above the floor, the envelope must cover it
        needs = (headroom * V_backup > floor) & (V0 > 0)
        ratio = np.where(needs, headroom * V_backup / np.maximum(decay[None, :] * V0, 1e-300), 0.0)
        gain = float(max(1.0, ratio[:, 1:].max(initial=1.0)))
    envelope = DecayEnvelope(float(rate), float(gain), float(floor), float(backup_rate), derived)
    excess = V_backup[:, 1:] - envelope.bound(V0[:, 0], steps)[:, 1:]
    if not derived and np.any(excess > 0):
        state, step = np.unravel_index(int(np.argmax(excess)), excess.shape)
        raise ValueError(f"the backup itself leaves this envelope (validation state {state}, step {step + 1}): "
                         f"raise the gain or the rate")
    return envelope
