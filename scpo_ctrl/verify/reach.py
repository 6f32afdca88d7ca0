"""Formal closed-loop reachability for plants with affine dynamics (sound over-approximation).

For ``x+ = A x + B u + e`` and the deployed law, each cell of the initial box is carried as a
zonotope ``x = c + G xi`` (``|xi| <= 1``). Per step, each input is written

    u = lam * (v0 + V xi) + w,

with ``v0 + V xi`` a linear part in the zonotope's own noise symbols (exact over the set), ``lam``
1 (tight while unsaturated), 0 (tight while saturated) or the saturation's chord slope (partly
saturated), chosen per cell, input and step, and ``w`` an interval. Then

    x+ = A c + B (lam v0 + mid(w)) + e + (A G + B diag(lam) V) xi + B rad(w) xi_new:

the linear part keeps its correlation with the state exactly, only ``w`` becomes new generators. The
candidate linear parts, of which the narrowest ``w`` wins per input:

* ``affine`` (default, ``ReachSettings.network_bounds``): the backup ``u_eq - K dx`` plus the residual
  ``sigma(x) u_scale phi(dx / x_scale)`` as an affine form in ``xi`` with a remainder interval
  (:mod:`scpo_ctrl.verify.affine_bounds`): exact through the layers' affine maps, ``tanh`` and the
  gate's smoothstep by per-neuron linear relaxations (min-slope or chord, the band exact), the level
  ``V = dx^T P dx`` exact up to its quadratic part, the product gate * network by affine
  multiplication;
* the backup alone, the residual an interval over the zonotope's bounding box (interval bound
  propagation through the network, the gate from bounds on ``V/c``);
* the backup plus the residual's mean-value linearisation at the box centre (interval Jacobian);

(``network_bounds='interval'`` keeps only the last two: the method before the affine forms.) Given the
ranges of the linear part and of the remainder, ``w``'s range is exact (``clip(v + e) - lam v`` is
non-decreasing in ``e`` and piecewise linear in ``v``). The float32 C's deviation from the exact law,
bounded over the box (:func:`~scpo_ctrl.export.error_bound.float_error_bound_box`), is added to ``w``:
the verdict is for the deployed float32 artefact, not only the maths.

At each step 0..H every safety row must hold on the zonotope (state limits by its support function,
exact; other rows by interval evaluation over its box). A cell is VERIFIED once its zonotope lies
inside the target set T and T is robustly invariant (contraction of ``A - B K`` in the P-norm beats
the float32 deviation) and inside the safety rows; from then on the law is the backup (gate 0) up to
the float32 deviation, forever. Cells that fail are bisected, up to ``max_depth`` times, along the
initial axis contributing most to the failing row's spread where it failed (``bisect='sensitive'``,
default) or along their widest side (``'widest'``); what still fails is reported (UNKNOWN), never
guessed.

Measured on the default double integrator run and not kept: halving zonotopes along their largest
generator during propagation where ``w`` is wide (a few tenths of a percent more of the box proven for
4 to 7 times the time; deeper bisection of the initial cells gains more per second).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..export.error_bound import float_error_bound_box
from ..export.law import DeployedLaw
from ..plant.interval import Interval, evaluate_interval
from ..plant.model import PlantModel
from . import affine_bounds
from .discrete_map import DiscreteMap, UnsupportedOperation

ROUND_OFF_WIDENING = 1e-12  # relative and absolute slack for this analysis's own float64 arithmetic
NETWORK_BOUNDS = ("affine", "interval")
BISECTIONS = ("sensitive", "widest")
TARGET_MISSED = "target set not reached within the horizon"
AFFINE_EXACT = "affine exact"
FIRST_ORDER = "first-order with interval remainder (discrete map)"
TARGET_LEVEL_FACTORS = 0.98 ** np.arange(400)  # levels c_T = c * factor tried for the target set's invariance
#: cells per call of the propagation, at least: a bisection pass of fewer cells is one block, a larger one is cut
#: into ``count // CELLS_PER_BLOCK`` blocks of equal size (+-1), in this process as on Ray (.distributed), so the
#: sets are the same bit for bit wherever the blocks run: numpy's float results for a cell depend on how many
#: cells share its batch (a batch of one is a matrix-vector product, not a matrix product). Measured on this
#: shared 2-core machine (load 2 to 10, a double integrator run, horizon 80, and a cart-pole run, horizon 100, at
#: the campaign's settings): one call costs 0.5 to 1.4 s whatever its cells (the horizon's vectorised steps), then
#: 8 to 25 ms per cell, least at a few hundred cells per call; 1,024 cells in blocks of 256 took 18-19 s against
#: 25-28 s in one call (double integrator) and 11-18 s against 11-12 s (cart-pole). A block of 256 cells takes 2 to
#: 6 s, so Ray's ~7 ms per task is ~0.2% of it.
CELLS_PER_BLOCK = 256


@dataclass(frozen=True)
class ReachSettings:
    """How fine the analysis goes.

    Attributes
    ----------
    cells_per_axis : int
        Initial grid of the initial box (per state).
    max_depth : int
        How many times a failing cell may be bisected.
    max_generators : int
        Zonotope order limit per cell (Girard reduction boxes the smallest generators beyond it).
    precision : str
        The deployed arithmetic whose deviation is accounted for ('float32' or 'float64').
    network_bounds : str
        How the residual is bounded per step: 'affine' (an affine form in the zonotope's noise
        symbols through the layers, gate and product, plus a remainder; also tries the two below) or
        'interval' (only the interval and mean-value bounds over the bounding box: the method before
        the affine forms, kept for comparison).
    bisect : str
        Which side of a failing cell is halved: 'sensitive' (the initial axis contributing most to the
        failing row's spread where it failed) or 'widest' (relative to the initial box).
    max_cells : int or None
        Cells analysed in all, over every bisection pass: a pass whose halves would exceed it is not
        started, and the cells still failing stay UNKNOWN. Bounds the work of a deep ``max_depth``
        by a count, not a clock, so the verdict does not depend on the machine's load. None: no limit.
    """

    cells_per_axis: int = 8
    max_depth: int = 4
    max_generators: int = 16
    precision: str = "float32"
    network_bounds: str = "affine"
    bisect: str = "sensitive"
    max_cells: int | None = None

    def __post_init__(self):
        if self.network_bounds not in NETWORK_BOUNDS:
            raise ValueError(f"network_bounds must be one of {NETWORK_BOUNDS}, not {self.network_bounds!r}")
        if self.bisect not in BISECTIONS:
            raise ValueError(f"bisect must be one of {BISECTIONS}, not {self.bisect!r}")



@dataclass(frozen=True)
class CellOutcome:
    """One final cell: its box, the verdict, and where it entered T or failed."""

    lo: np.ndarray
    hi: np.ndarray
    verified: bool
    entered_step: int | None
    failed_step: int | None
    failed_because: str | None


@dataclass(frozen=True)
class ReachResult:
    """The analysis of the whole initial box.

    Attributes
    ----------
    applicable : bool
        False when the plant's map has an operation without an interval rule (then nothing else is set).
    reason : str
    argument : str
        How a set is carried through one step: ``AFFINE_EXACT`` (the plant's own linear map) or
        ``FIRST_ORDER`` (:mod:`.discrete_map`: first-order model of the discrete map around the set's
        centre, the mean-value remainder from the interval Jacobian over the set's box).
    cells : tuple of CellOutcome
    pieces : dict
        ``origin (R,)`` (index into ``cells``), ``step (R,)``, ``lo (R, nx)``, ``hi (R, nx)``: the
        bounding box of every piece of every final cell's reachable set at every step until it
        entered T or failed.
    target_invariant : bool
    target_level : float
        ``c_T``: the target set is ``T = {V <= c_T}`` with ``c_T <= c`` (``c`` for an affine plant; for a
        nonlinear one the largest of ``c * TARGET_LEVEL_FACTORS`` whose robust invariance is proven).
    target_argument : str
        Why T is robustly invariant (or why not).
    contraction : float
        P-norm contraction factor of A - B K (the Jacobians at the equilibrium for a nonlinear plant).
    float32_deviation_in_target : float
        Largest float32 deviation bound over T's bounding box [input units].
    seconds : float
    """

    applicable: bool
    reason: str
    argument: str
    cells: tuple
    pieces: dict
    target_invariant: bool
    target_level: float
    target_argument: str
    contraction: float
    float32_deviation_in_target: float
    seconds: float

    @property
    def verified(self) -> bool:
        return self.applicable and self.target_invariant and all(cell.verified for cell in self.cells)


class _Analysis:
    def __init__(self, law: DeployedLaw, model: PlantModel, horizon: int, settings: ReachSettings):
        self.law, self.model, self.H, self.settings = law, model, horizon, settings
        linear = model.linearise()
        self.A, self.B = linear.A, linear.B
        self.e = np.array(model.f(np.zeros(model.nx), np.zeros(model.nu)), dtype=float).ravel()
        self.A_cl = self.A - self.B @ law.K
        self.offset = self.B @ law.u_eq + self.B @ law.K @ law.x_eq + self.e
        self.L = np.linalg.cholesky(law.P).T  # P = L^T L
        self.lambda_min = float(np.linalg.eigvalsh(law.P)[0])
        spec = model.spec
        self.x_min = np.array([-np.inf if v.min is None else v.min for v in spec.states])
        self.x_max = np.array([np.inf if v.max is None else v.max for v in spec.states])
        self.extra = [(c.name, c.expression) for c in spec.constraints]
        self.extra_affine = [affine_in_state(spec, expression) for _, expression in self.extra]
        self.map = None if model.dynamics_affine else DiscreteMap.of(model)
        self.argument = AFFINE_EXACT if self.map is None else FIRST_ORDER
        self.target_level = law.c  # c_T, lowered by target_facts for a nonlinear plant

    # -- bounds over boxes ---------------------------------------------------------------
    def level_range(self, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """Bounds on V/c over boxes (M, nx)."""
        law = self.law
        corners = np.array(list(itertools.product((0, 1), repeat=law.nx)), dtype=float)
        dlo, dhi = lo - law.x_eq, hi - law.x_eq
        vertices = dlo[:, None, :] + corners[None, :, :] * (dhi - dlo)[:, None, :]
        v_max = np.einsum("mki,ij,mkj->mk", vertices, law.P, vertices).max(axis=1)
        gap = np.maximum(0.0, np.maximum(dlo, -dhi))  # distance per axis from x_eq to the box
        v_min = self.lambda_min * np.sum(gap**2, axis=1)
        return v_min / law.c * (1 - ROUND_OFF_WIDENING), v_max / law.c * (1 + ROUND_OFF_WIDENING)

    def deviation_bounds(self, lo: np.ndarray, hi: np.ndarray, centre: np.ndarray, G: np.ndarray) -> tuple:
        """The control over zonotopes ``x = centre + G xi`` as ``u = lam * (v0 + V xi) + w`` per input.

        Candidate linear parts ``v0 + V xi`` with a remainder ``e`` (``u = clip(v0 + V xi + e)``):

        * ``interval``: the backup alone (``u_eq - K dx``), the network's contribution
          ``g = sigma u_scale phi`` an interval over the bounding box ``[lo, hi]``;
        * ``mean_value``: the backup plus the residual's mean-value linearisation at the box centre,
          the remainder ``+-J_rad |x - x_c|`` from the residual's interval Jacobian over the box;
        * ``affine`` (``settings.network_bounds == 'affine'``): the backup plus the residual's affine
          form in ``xi`` through the layers, the gate and the product
          (:func:`~scpo_ctrl.verify.affine_bounds.residual_form`), its remainder as ``e``.

        For each, ``lam`` is 1 (tight while unsaturated), 0 (tight while saturated) or the
        saturation's chord slope (partly saturated); ``w``'s range is exact given the ranges of
        ``v0 + V xi`` (exact over the zonotope) and of ``e``, because ``clip(v + e) - lam v`` is
        non-decreasing in ``e`` and piecewise linear in ``v`` (extremes at the ends or the kinks).
        The narrowest ``w`` wins, per input.

        Parameters
        ----------
        lo, hi : ndarray, shape (M, nx)
            Bounding boxes of the zonotopes.
        centre : ndarray, shape (M, nx)
        G : ndarray, shape (M, nx, m)

        Returns
        -------
        (lam, v0, V, w_lo, w_hi) of shapes (M, nu), (M, nu), (M, nu, m), (M, nu), (M, nu).
        """
        level_lo, level_hi = self.level_range(lo, hi)
        best = None
        for v0, V, e_lo, e_hi in self._linear_parts(lo, hi, centre, G, (level_lo, level_hi)):
            for option in self._saturation_options(v0, V, e_lo, e_hi):
                if best is None:
                    best = [np.array(v, dtype=float) for v in option]
                    continue
                lam, v0_, V_, w_lo, w_hi = option
                better = np.nan_to_num(w_hi - w_lo, nan=np.inf) < (best[4] - best[3])
                for k, value in ((0, lam), (1, v0_), (3, w_lo), (4, w_hi)):
                    best[k] = np.where(better, value, best[k])
                best[2] = np.where(better[:, :, None], V_, best[2])
        lam, v0, V, w_lo, w_hi = best
        delta = float_error_bound_box(self.law, lo, hi, self.settings.precision, level_range=(level_lo, level_hi))
        slack = ROUND_OFF_WIDENING * (1.0 + np.abs(w_lo) + np.abs(w_hi))
        return lam, v0, V, w_lo - delta - slack, w_hi + delta + slack

    def _saturation_options(self, v0: np.ndarray, V: np.ndarray, e_lo: np.ndarray, e_hi: np.ndarray):
        """For ``u = clip(v0 + V xi + e)``: yield ``(lam, v0, V, w_lo, w_hi)`` for lam 1, 0 and the chord."""
        law = self.law
        v_r = np.abs(V).sum(axis=2)
        v_lo, v_hi = v0 - v_r, v0 + v_r
        width = np.maximum(v_hi - v_lo, 1e-300)
        chord = (np.clip(v_hi, law.u_min, law.u_max) - np.clip(v_lo, law.u_min, law.u_max)) / width
        for lam in (np.ones_like(v_lo), np.zeros_like(v_lo), chord):
            yield (lam, v0, V, self._extreme(lam, v_lo, v_hi, e_lo, np.minimum),
                   self._extreme(lam, v_lo, v_hi, e_hi, np.maximum))

    def _linear_parts(self, lo, hi, centre, G, level_range):
        """Yield the candidate ``(v0 (M, nu), V (M, nu, m), e_lo (M, nu), e_hi (M, nu))`` of
        :meth:`deviation_bounds`, in xi coordinates."""
        law = self.law
        box_c, radius = (lo + hi) / 2 - law.x_eq, (hi - lo) / 2
        backup_v0 = law.u_eq - (centre - law.x_eq) @ law.K.T
        backup_V = -np.matmul(law.K, G)
        level_lo, level_hi = level_range
        s_lo = np.clip((level_lo - 1.0) / (law.gate_ratio - 1.0), 0.0, 1.0)
        s_hi = np.clip((level_hi - 1.0) / (law.gate_ratio - 1.0), 0.0, 1.0)
        gate_lo, gate_hi = s_lo * s_lo * (3 - 2 * s_lo), s_hi * s_hi * (3 - 2 * s_hi)
        # network by interval bound propagation; keep each layer's pre-activation bounds
        c, r = box_c / law.x_scale, radius / law.x_scale
        pre = []
        for index, (W, b) in enumerate(zip(law.weights, law.biases)):
            c, r = c @ W.T + b, r @ np.abs(W).T
            if index < len(law.weights) - 1:
                pre.append((c - r, c + r))
                low, high = np.tanh(c - r), np.tanh(c + r)
                c, r = (low + high) / 2, (high - low) / 2
        phi_lo, phi_hi = c - r, c + r
        y_lo, y_hi = phi_lo * law.u_scale, phi_hi * law.u_scale
        g_lo, g_hi = _interval_mul(gate_lo[:, None], gate_hi[:, None], y_lo, y_hi)
        # (1) the backup as the linear part, the whole residual as an interval
        yield backup_v0, backup_V, g_lo, g_hi
        # (2) mean-value form of the residual at the box centre
        J_lo, J_hi = self._residual_jacobian(box_c, radius, pre, (phi_lo, phi_hi), (gate_lo, gate_hi),
                                             (s_lo, s_hi))
        x_c = box_c + law.x_eq
        r_c = _residual_at(law, x_c)
        J_mid, J_rad = (J_lo + J_hi) / 2, (J_hi - J_lo) / 2
        remainder = np.einsum("mkj,mj->mk", J_rad, radius)
        F_mean = -law.K[None] + J_mid
        a_mean = law.u_eq + law.K @ law.x_eq + r_c - np.einsum("mkj,mj->mk", J_mid, x_c)
        usable = np.all(np.isfinite(J_mid), axis=(1, 2)) & np.all(np.isfinite(remainder), axis=1)
        remainder = np.where(usable[:, None], remainder, np.inf)
        F_mean = np.where(usable[:, None, None], F_mean, 0.0)
        yield a_mean + np.einsum("mkj,mj->mk", F_mean, centre), np.matmul(F_mean, G), -remainder, remainder
        # (3) the residual's affine form in xi (its linear part joins the zonotope's generators)
        if self.settings.network_bounds == "affine":
            r = affine_bounds.residual_form(law, centre, G)
            yield backup_v0 + r.centre, backup_V + r.linear, -r.radius, r.radius

    def _residual_jacobian(self, box_c, radius, pre, phi, gate, s) -> tuple:
        """Interval Jacobian of ``r(x) = sigma(x) u_scale phi(z(x))`` over boxes: (J_lo, J_hi), (M, nu, nx)."""
        law = self.law
        M = len(box_c)
        # d phi / d x by interval forward mode through the layers
        J_c = np.broadcast_to(np.diag(1.0 / law.x_scale), (M, law.nx, law.nx)).copy()
        J_r = np.zeros_like(J_c)
        for index, (W, _) in enumerate(zip(law.weights, law.biases)):
            J_c, J_r = np.einsum("ij,mjk->mik", W, J_c), np.einsum("ij,mjk->mik", np.abs(W), J_r)
            if index < len(law.weights) - 1:
                p_lo, p_hi = pre[index]
                d_hi = np.where((p_lo <= 0) & (p_hi >= 0), 1.0,
                                np.maximum(1 - np.tanh(p_lo) ** 2, 1 - np.tanh(p_hi) ** 2))
                d_lo = np.minimum(1 - np.tanh(p_lo) ** 2, 1 - np.tanh(p_hi) ** 2)
                lo_, hi_ = _interval_mul(d_lo[:, :, None], d_hi[:, :, None], J_c - J_r, J_c + J_r)
                J_c, J_r = (lo_ + hi_) / 2, (hi_ - lo_) / 2
        dphi_lo, dphi_hi = J_c - J_r, J_c + J_r  # (M, nu, nx)
        # d sigma / d x = 6 s (1 - s) / (gate_ratio - 1) / c * 2 P dx, zero where s is clipped
        s_lo, s_hi = s
        ds_lo = np.minimum(6 * s_lo * (1 - s_lo), 6 * s_hi * (1 - s_hi))
        ds_hi = np.where((s_lo <= 0.5) & (s_hi >= 0.5), 1.5, np.maximum(6 * s_lo * (1 - s_lo), 6 * s_hi * (1 - s_hi)))
        scale = 2.0 / ((law.gate_ratio - 1.0) * law.c)
        Pdx_c, Pdx_r = box_c @ law.P.T, radius @ np.abs(law.P).T
        dsig_lo, dsig_hi = _interval_mul(ds_lo[:, None] * scale, ds_hi[:, None] * scale, Pdx_c - Pdx_r, Pdx_c + Pdx_r)
        # r = sigma * u_scale * phi  ->  dr = u_scale (phi dsigma + sigma dphi)
        phi_lo, phi_hi = phi
        gate_lo, gate_hi = gate
        t1 = _interval_mul(phi_lo[:, :, None], phi_hi[:, :, None], dsig_lo[:, None, :], dsig_hi[:, None, :])
        t2 = _interval_mul(gate_lo[:, None, None], gate_hi[:, None, None], dphi_lo, dphi_hi)
        us = law.u_scale[None, :, None]
        return us * (t1[0] + t2[0]), us * (t1[1] + t2[1])

    def _extreme(self, lam, lin_lo, lin_hi, g, pick):
        """min or max over lin in [lin_lo, lin_hi] of clip(lin + g) - lam lin (g fixed per entry)."""
        law = self.law
        candidates = [lin_lo, lin_hi]
        for limit in (law.u_min, law.u_max):
            kink = np.clip(limit - g, lin_lo, lin_hi)  # where lin + g hits a limit (clipped into the range)
            candidates.append(np.where(np.isfinite(kink), kink, lin_lo))
        values = [np.clip(v + g, law.u_min, law.u_max) - lam * v for v in candidates]
        result = values[0]
        for value in values[1:]:
            result = pick(result, value)
        return result

    def rows_violated(self, centre: np.ndarray, G: np.ndarray) -> tuple:
        """Which zonotopes (M) may violate a safety row; returns (mask, row name per zonotope)."""
        extent = np.abs(G).sum(axis=2)  # (M, nx)
        lo, hi = centre - extent, centre + extent
        bad = np.zeros(len(centre), dtype=bool)
        names = np.full(len(centre), "", dtype=object)
        for i, name in enumerate(self.model.spec.state_names):
            over = (hi[:, i] > self.x_max[i]) | (lo[:, i] < self.x_min[i])
            names[over & ~bad] = f"{name} limits"
            bad |= over
        if self.extra:
            boxes = {name: Interval(lo[:, i], hi[:, i]) for i, name in enumerate(self.model.spec.state_names)}
            for (name, expression), affine in zip(self.extra, self.extra_affine):
                if affine is None:
                    upper = evaluate_interval(expression, boxes).hi
                else:  # a x + b over the zonotope: its support function, exact
                    a, b = affine
                    upper = _widened(centre @ a + b + np.abs(np.matmul(a, G)).sum(axis=1))
                over = ~(upper <= 0.0)
                names[over & ~bad] = name
                bad |= over
        return bad, names

    def inside_target(self, centre: np.ndarray, G: np.ndarray) -> np.ndarray:
        """Sufficient test of zonotope in T: sqrt(V(c)) + sum_j ||L g_j|| <= sqrt(c_T)."""
        law = self.law
        d = centre - law.x_eq
        root = np.sqrt(np.maximum(np.einsum("mi,ij,mj->m", d, law.P, d), 0.0))
        spread = np.linalg.norm(np.einsum("ij,mjk->mik", self.L, G), axis=1).sum(axis=1)
        return (root + spread) * (1 + ROUND_OFF_WIDENING) <= math.sqrt(self.target_level)

    def target_facts(self) -> tuple:
        """Fix ``c_T`` and return (T robustly invariant and safe?, contraction, float32 deviation over T's box,
        the argument in words).

        Affine plant: ``V(x+) <= c_T`` because ``A - B K`` contracts the P-norm by more than the float32
        deviation can push (``sqrt(c_T) (1 - kappa) >= ||L B|| sqrt(nu) delta``), exactly; ``c_T = c`` unless
        T touches a safety row (the backup's c is the exact level of its binding row, so at c the row's
        support is zero up to round-off), then the next of ``c * TARGET_LEVEL_FACTORS``.

        Nonlinear plant: the first-order model of the discrete map at the equilibrium over T's bounding box
        (:meth:`target_remainder`) gives ``x+ - x_eq = (A - B K) dx + B d + rho``, so
        ``sqrt(V(x+)) <= kappa sqrt(c_T) + ||L B|| sqrt(nu) delta + sum_i rho_i ||L e_i||``; ``c_T`` is the
        largest of ``c * TARGET_LEVEL_FACTORS`` where that is ``<= sqrt(c_T)``.

        Either way T must also lie inside every safety row with the backup unsaturated in it
        (:meth:`_target_safe`), and ``kappa < 1``.
        """
        law = self.law
        contraction = float(np.linalg.norm(self.L @ self.A_cl @ np.linalg.inv(self.L), 2))
        gain = float(np.linalg.norm(self.L @ self.B, 2)) * math.sqrt(law.nu)
        levels = law.c * TARGET_LEVEL_FACTORS
        delta = self._deviation_in(levels)
        pushed = gain * delta * (1 + 1e-9)
        if self.map is not None:
            column_norms = np.linalg.norm(self.L, axis=0)
            pushed = pushed + self.target_remainder(levels, delta) @ column_norms
        holds = np.sqrt(levels) * (1 - contraction) >= pushed * (1 + ROUND_OFF_WIDENING)
        holds &= np.array([self._target_safe(level) for level in levels]) & (contraction < 1.0)
        if self.map is None:
            argument = "contraction of A - B K in the P-norm beats the float32 deviation (exact for affine dynamics)"
        else:
            argument = ("first-order model of the discrete map at the equilibrium over T's bounding box, the "
                        "remainder from the interval Jacobian: contraction of A - B K in the P-norm beats the "
                        "remainder plus the float32 deviation")
        k = int(np.argmax(holds)) if holds.any() else len(levels) - 1
        self.target_level = float(levels[k])
        if not holds.any():
            argument += f"; NOT proven at any level down to c_T = {levels[-1]:.3g}"
        elif self.map is not None or k > 0:
            argument += f" at c_T = {self.target_level:.6g} = {self.target_level / law.c:.3g} c"
        return bool(holds[k]), contraction, float(delta[k]), argument

    def _target_box(self, levels: np.ndarray) -> tuple:
        """Bounding boxes (lo, hi), each (K, nx), of the sets ``V <= level`` for levels (K,)."""
        law = self.law
        half = np.sqrt(levels[:, None] * np.diag(np.linalg.inv(law.P))[None])
        return law.x_eq - half, law.x_eq + half

    def _deviation_in(self, levels: np.ndarray) -> np.ndarray:
        """Largest float32 deviation bound over each target set's box: (K,)."""
        lo, hi = self._target_box(levels)
        return np.max(float_error_bound_box(self.law, lo, hi, self.settings.precision), axis=1)

    def target_remainder(self, levels: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Half-widths ``rho (K, nx)`` of ``f(x, u) - x_eq - A dx - B (u - u_eq)`` over ``V <= level`` with
        ``u = u_eq - K dx + d``, ``|d| <= delta`` (K,): the mean-value remainder around the equilibrium
        from the interval Jacobian over T's box, plus ``|f(x_eq, u_eq) - x_eq|``."""
        law = self.law
        P_inv = np.linalg.inv(law.P)
        x_lo, x_hi = self._target_box(levels)
        u_spread = np.sqrt(levels[:, None] * np.einsum("ki,ij,kj->k", law.K, P_inv, law.K)[None]) + delta[:, None]
        z_eq = np.concatenate([law.x_eq, law.u_eq])
        z_radius = np.concatenate([(x_hi - x_lo) / 2, u_spread], axis=1)
        enclosure = self.map.jacobian_enclosure(z_eq - z_radius, z_eq + z_radius)
        J_eq = np.concatenate([self.A, self.B], axis=1)
        spread = np.maximum(np.abs(enclosure.lo - J_eq), np.abs(enclosure.hi - J_eq))
        with np.errstate(invalid="ignore"):
            rho = np.einsum("kij,kj->ki", spread, z_radius)
        f_eq, _ = self.map.at(z_eq[None])
        offset = np.abs(f_eq[0] - law.x_eq) + ROUND_OFF_WIDENING * (1 + np.abs(law.x_eq))
        rho = rho * (1 + ROUND_OFF_WIDENING) + offset
        return np.where(np.isfinite(rho), rho, np.inf)

    def _target_safe(self, level: float) -> bool:
        """T = {V <= level} inside every safety row (ellipsoid support for the state limits, its box for the
        rest), and the backup unsaturated in it (inside T the exact law is the backup: gate 0)."""
        law = self.law
        P_inv = np.linalg.inv(law.P)
        safe = True
        for i in range(law.nx):
            reach = law.x_eq[i] + math.sqrt(level * P_inv[i, i])
            lower = law.x_eq[i] - math.sqrt(level * P_inv[i, i])
            safe &= bool(reach <= self.x_max[i] and lower >= self.x_min[i])
        for k in range(law.nu):
            spread = math.sqrt(level * law.K[k] @ P_inv @ law.K[k])
            safe &= bool(law.u_eq[k] + spread <= law.u_max[k] and law.u_eq[k] - spread >= law.u_min[k])
        if self.extra:
            lo, hi = self._target_box(np.array([level]))
            boxes = {name: Interval(lo[:, i], hi[:, i]) for i, name in enumerate(self.model.spec.state_names)}
            for (_, expression), affine in zip(self.extra, self.extra_affine):
                if affine is None:
                    upper = float(evaluate_interval(expression, boxes).hi[0])
                else:  # a x + b over the ellipsoid: a x_eq + b + sqrt(level a' P^-1 a), exact
                    a, b = affine
                    upper = float(_widened(float(a @ law.x_eq + b) + math.sqrt(level * float(a @ P_inv @ a))))
                safe &= bool(upper <= 0.0)
        return safe

    # -- propagation -----------------------------------------------------------------
    def propagate(self, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """Run every cell (M) to its verdict (one zonotope piece per cell).

        (Splitting pieces into the halves of their bounding boxes during propagation was tried and
        measured worse on the double integrator: the boxes lose the zonotopes' correlations.)

        Returns
        -------
        entered : ndarray (M,)
            The step by which every piece of the cell had entered T (-1 if not).
        failed : ndarray (M,)
            The step where a piece may violate a row or the horizon ended outside T (-1 if none).
        because : ndarray of object (M,)
        records : dict
            ``origin (R,), step (R,), lo (R, nx), hi (R, nx)``: the bounding box of every piece at
            every step (what the soundness test checks trajectories against).
        sensitivity : ndarray (M, nx)
            Of a failed cell: how much each of its initial axes contributes to the failing row's
            spread where it failed (see :meth:`sensitivity`); zero otherwise.
        """
        M, nx = lo.shape
        m_max = max(self.settings.max_generators, 2 * nx + self.law.nu)
        origin = np.arange(M)
        centre = (lo + hi) / 2
        G = np.zeros((M, nx, m_max))
        # the half-width widened so that centre +- G covers [lo, hi] despite the rounding of both (a corner
        # of a cell could fall an ulp outside its own starting set)
        G[:, np.arange(nx), np.arange(nx)] = (hi - lo) / 2 + ROUND_OFF_WIDENING * (np.abs(lo) + np.abs(hi))
        entered = np.full(M, -1)
        failed = np.full(M, -1)
        because = np.full(M, None, dtype=object)
        sensitivity = np.zeros((M, nx))
        records = {"origin": [], "step": [], "lo": [], "hi": []}
        for t in range(self.H + 1):
            if len(origin) == 0:
                break
            extent = np.abs(G).sum(axis=2)
            box_lo, box_hi = centre - extent, centre + extent
            for key, value in (("origin", origin), ("step", np.full(len(origin), t)), ("lo", box_lo),
                               ("hi", box_hi)):
                records[key].append(value)
            bad, names = self.rows_violated(centre, G)
            first = bad & (failed[origin] < 0)
            failed[origin[first]] = t
            because[origin[first]] = names[first]
            sensitivity[origin[first]] = self.sensitivity(G[first], names[first])
            inside = ~bad & self.inside_target(centre, G)
            entered[origin[inside]] = t  # the last piece to enter sets the cell's entry step
            keep = ~bad & ~inside & (failed[origin] < 0)
            if t == self.H:
                late = origin[keep]
                fresh = failed[late] < 0
                failed[late[fresh]] = t
                because[late[fresh]] = TARGET_MISSED
                sensitivity[late[fresh]] = self.sensitivity(G[keep][fresh], because[late[fresh]])
                break
            origin, centre, G, box_lo, box_hi = origin[keep], centre[keep], G[keep], box_lo[keep], box_hi[keep]
            if len(origin) == 0:
                break
            lam, v0, V, w_lo, w_hi = self.deviation_bounds(box_lo, box_hi, centre, G)
            centre, G = self.step(centre, G, lam * v0 + (w_lo + w_hi) / 2, lam[:, :, None] * V, (w_hi - w_lo) / 2)
            G = self._reduce(G, m_max)
        # a cell is done only when no piece is left outside T and none failed
        entered = np.where(failed >= 0, -1, entered)
        records = {key: np.concatenate(value) if value else np.zeros(0) for key, value in records.items()}
        return entered, failed, because, records, sensitivity

    def step(self, centre: np.ndarray, G: np.ndarray, u_centre: np.ndarray, U: np.ndarray,
             w_radius: np.ndarray) -> tuple:
        """One step of the plant from ``x = centre + G xi`` with ``u = u_centre + U xi + w``, ``|w| <= w_radius``:
        :func:`zonotope_step` with this analysis's ``A, B, e`` (affine plant) or discrete map (nonlinear)."""
        return zonotope_step(self.A, self.B, self.e, self.map, centre, G, u_centre, U, w_radius)

    def sensitivity(self, G: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Contribution of each initial axis to the spread of a failing row, per zonotope.

        The first nx generators are the images of the initial cell's axes (:meth:`_reduce` never moves
        them). A state limit's spread from axis j is ``|G[i, j]|``; the target set's (and any other
        row's) is the axis's P-norm ``||L G[:, j]||``.

        Parameters
        ----------
        G : ndarray, shape (M, nx, m)
        rows : ndarray of object, shape (M,)
            The failing row's name per zonotope (as :meth:`rows_violated` names them).

        Returns
        -------
        ndarray, shape (M, nx)
        """
        nx = self.law.nx
        axes = G[:, :, :nx]
        spread = np.linalg.norm(np.matmul(self.L, axes), axis=1)
        for i, name in enumerate(self.model.spec.state_names):
            limit = np.array([row == f"{name} limits" for row in rows], dtype=bool)
            spread[limit] = np.abs(axes[limit, i, :])
        return spread

    @staticmethod
    def _reduce(G: np.ndarray, m_max: int) -> np.ndarray:
        return reduce_order(G, m_max)


def zonotope_step(A: np.ndarray, B: np.ndarray, e: np.ndarray, dmap: DiscreteMap | None, centre: np.ndarray,
                  G: np.ndarray, u_centre: np.ndarray, U: np.ndarray, w_radius: np.ndarray) -> tuple:
    """One step of the plant from ``x = centre + G xi`` with ``u = u_centre + U xi + w``, ``|w| <= w_radius``.

    Affine plant (``dmap`` None): ``x+ = A x + B u + e``, ``w`` as new generators ``B diag(w_radius)``, and the
    float64 rounding of the product as ``nx`` axis-aligned generators (:data:`ROUND_OFF_WIDENING` times the
    magnitudes summed): the new zonotope holds the exact image.
    Nonlinear plant: the first-order model of the discrete map ``dmap`` around ``(centre, u_centre)`` over the
    box of ``(x, u)`` (:meth:`.discrete_map.DiscreteMap.first_order`): ``x+ = f(c) + (J_x G + J_u U) xi
    + J_u w + rho``, the remainder ``rho`` (widened for the rounding of the products) as new axis-aligned
    generators.

    Parameters
    ----------
    A : ndarray (nx, nx), B : ndarray (nx, nu), e : ndarray (nx,)
    centre : ndarray, shape (M, nx)
    G : ndarray, shape (M, nx, m)
    u_centre : ndarray, shape (M, nu)
    U : ndarray, shape (M, nu, m)
    w_radius : ndarray, shape (M, nu)

    Returns
    -------
    (centre (M, nx), G (M, nx, m + nu + nx)) of the next zonotope, before order reduction.
    """
    nx = centre.shape[1]
    if dmap is None:
        new_c = centre @ A.T + u_centre @ B.T + e
        new_g = np.matmul(A, G) + np.matmul(B, U)
        noise = B[None, :, :] * w_radius[:, None, :]  # (M, nx, nu)
        # the float64 rounding of the above, per row at most a few ulps of the sums of magnitudes involved
        size = ((np.abs(centre) + np.abs(G).sum(axis=2)) @ np.abs(A).T
                + (np.abs(u_centre) + np.abs(U).sum(axis=2) + w_radius) @ np.abs(B).T + np.abs(e))
        rounding = np.zeros((len(centre), nx, nx))
        rounding[:, np.arange(nx), np.arange(nx)] = ROUND_OFF_WIDENING * (1.0 + size + np.abs(new_c))
        return new_c, np.concatenate([new_g, noise, rounding], axis=2)
    x_radius = np.abs(G).sum(axis=2)
    u_radius = np.abs(U).sum(axis=2) + w_radius
    model = dmap.first_order(np.concatenate([centre, u_centre], axis=1),
                             np.concatenate([x_radius, u_radius], axis=1))
    J_x, J_u = model.jacobian[:, :, :nx], model.jacobian[:, :, nx:]
    new_g = np.matmul(J_x, G) + np.matmul(J_u, U)
    noise = J_u * w_radius[:, None, :]
    remainder = np.zeros((len(centre), nx, nx))
    # the remainder, and the float64 rounding of the products above (relative to the magnitudes summed)
    rounding = ROUND_OFF_WIDENING * (1.0 + np.einsum("kij,kj->ki", np.abs(J_x), x_radius)
                                     + np.einsum("kij,kj->ki", np.abs(J_u), u_radius))
    remainder[:, np.arange(nx), np.arange(nx)] = model.remainder * (1 + ROUND_OFF_WIDENING) + rounding
    return model.value, np.concatenate([new_g, noise, remainder], axis=2)


def reduce_order(G: np.ndarray, m_max: int) -> np.ndarray:
    """Girard's reduction of the generators after the first nx (the images of the initial cell's
    axes, kept in place for the sensitivity of a failing row): keep the largest so that m_max remain, box the
    rest into nx axis-aligned ones."""
    M, nx, m = G.shape
    if m <= m_max:
        return G
    pinned, free = G[:, :, :nx], G[:, :, nx:]
    keep = m_max - 2 * nx
    norms = np.abs(free).sum(axis=1) - np.abs(free).max(axis=1)  # the Girard ordering criterion
    order = np.argsort(-norms, axis=1)
    kept = np.take_along_axis(free, order[:, None, :keep], axis=2)
    rest = np.take_along_axis(free, order[:, None, keep:], axis=2)
    boxed = np.zeros((M, nx, nx))
    boxed[:, np.arange(nx), np.arange(nx)] = np.abs(rest).sum(axis=2)
    return np.concatenate([pinned, kept, boxed], axis=2)


def _widened(upper):
    """An upper bound computed in float64, pushed up by this analysis's round-off slack."""
    return upper + ROUND_OFF_WIDENING * (np.abs(upper) + 1.0)


def affine_in_state(spec, expression) -> tuple | None:
    """``(a (nx,), b)`` with ``expression = a x + b`` when the plant file's expression is affine in the
    state and free of the inputs (found symbolically, so exactly); None otherwise."""
    x = ca.SX.sym("x", spec.nx)
    u = ca.SX.sym("u", spec.nu)
    symbols = {name: x[i] for i, name in enumerate(spec.state_names)}
    symbols.update({name: u[j] for j, name in enumerate(spec.input_names)})
    h = expression.to_casadi(symbols)
    gradient = ca.jacobian(h, x)
    if ca.depends_on(h, u) or ca.depends_on(gradient, ca.vertcat(x, u)):
        return None
    values = ca.Function("affine", [x], [gradient, h])
    a, b = values(np.zeros(spec.nx))
    return np.array(a, dtype=float).ravel(), float(b)


def _interval_mul(a_lo, a_hi, b_lo, b_hi) -> tuple:
    """Element-wise interval product (broadcasting); 0 * inf counts as 0."""
    with np.errstate(invalid="ignore"):
        products = np.stack(np.broadcast_arrays(a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi))
    products = np.where(np.isnan(products), 0.0, products)
    return products.min(axis=0), products.max(axis=0)


def _residual_at(law: DeployedLaw, X: np.ndarray) -> np.ndarray:
    """The exact residual sigma(x) u_scale phi(z) at states X (M, nx) (no saturation, no monitor)."""
    from ..export.law import network

    d = X - law.x_eq
    level = np.einsum("mi,ij,mj->m", d, law.P, d) / law.c
    s = np.clip((level - 1.0) / (law.gate_ratio - 1.0), 0.0, 1.0)
    gate = s * s * (3 - 2 * s)
    return gate[:, None] * law.u_scale * network(law, d / law.x_scale)


def cell_propagation(law: DeployedLaw, model: PlantModel, horizon: int, settings: ReachSettings) -> Callable:
    """``propagate(lo, hi, target_level)``: what :func:`analyse` runs on each bisection pass's cells, for a process
    that rebuilt ``law`` and ``model`` from the run's files (a Ray worker, :mod:`.distributed`).

    ``target_level`` is the ``c_T`` the driver's analysis fixed (``ReachResult.target_level``); the returned
    arrays are those of the in-process pass over the same cells, ``records["origin"]`` indexing ``lo``.
    """
    analysis = _Analysis(law, model, horizon, settings)

    def propagate(lo: np.ndarray, hi: np.ndarray, target_level: float) -> tuple:
        analysis.target_level = target_level
        return analysis.propagate(lo, hi)

    return propagate


def cell_blocks(count: int) -> list:
    """``[(start, stop), ...]``: a pass of ``count`` cells in blocks of :data:`CELLS_PER_BLOCK` or more."""
    blocks = max(1, count // CELLS_PER_BLOCK)
    bounds = [k * count // blocks for k in range(blocks + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def merge_cell_blocks(parts: list, starts: list) -> tuple:
    """The propagation of a whole pass from its blocks' (in order, ``starts`` their first cells): per-cell arrays
    concatenated, the records' ``origin`` offset by their block's start and the records put in the order one call
    gives (step by step, each step's cells in order: the blocks' records sorted stably by step)."""
    if len(parts) == 1:
        return parts[0]
    entered, failed, because, records, sensitivity = (list(column) for column in zip(*parts))
    merged = {key: np.concatenate([part[key] + start if key == "origin" else part[key]
                                   for start, part in zip(starts, records)]) for key in ("origin", "step", "lo", "hi")}
    order = np.argsort(merged["step"], kind="stable")
    merged = {key: value[order] for key, value in merged.items()}
    return (np.concatenate(entered), np.concatenate(failed), np.concatenate(because), merged,
            np.concatenate(sensitivity))


def analyse(law: DeployedLaw, model: PlantModel, box_lo: np.ndarray, box_hi: np.ndarray, horizon: int,
            settings: ReachSettings = ReachSettings(), propagate: Callable | None = None) -> ReachResult:
    """Formal reachability of the closed loop from the whole box ``[box_lo, box_hi]``.

    Each bisection pass runs in the blocks of :func:`cell_blocks`. ``propagate(lo (M, nx), hi (M, nx),
    target_level)``, when given, runs a pass's blocks in place of this process (e.g. on Ray,
    :func:`.distributed.distributed_propagate`, workers built by :func:`cell_propagation`) and merges them with
    :func:`merge_cell_blocks`; it must return exactly what the in-process pass would.
    """
    start = time.perf_counter()
    try:
        analysis = _Analysis(law, model, horizon, settings)
    except UnsupportedOperation as exc:
        return ReachResult(False, f"the plant's discrete map cannot be bounded by interval arithmetic: {exc}",
                           "", (), {}, False, float("nan"), "", float("nan"), float("nan"),
                           time.perf_counter() - start)
    invariant, contraction, delta_target, target_argument = analysis.target_facts()
    n = settings.cells_per_axis
    edges = [np.linspace(box_lo[i], box_hi[i], n + 1) for i in range(law.nx)]
    grid = np.array(list(itertools.product(range(n), repeat=law.nx)))
    lo = np.array([[edges[i][k[i]] for i in range(law.nx)] for k in grid])
    hi = np.array([[edges[i][k[i] + 1] for i in range(law.nx)] for k in grid])
    scale = np.asarray(box_hi, float) - np.asarray(box_lo, float)
    outcomes, all_records = [], []
    analysed = 0
    for depth in range(settings.max_depth + 1):
        if propagate is None:
            blocks = cell_blocks(len(lo))
            entered, failed, because, records, sensitivity = merge_cell_blocks(
                [analysis.propagate(lo[i:j], hi[i:j]) for i, j in blocks], [i for i, _ in blocks])
        else:
            entered, failed, because, records, sensitivity = propagate(lo, hi, analysis.target_level)
        analysed += len(lo)
        ok = entered >= 0
        over_budget = settings.max_cells is not None and analysed + 2 * int(np.sum(~ok)) > settings.max_cells
        last = depth == settings.max_depth or over_budget
        final = np.flatnonzero(ok | last)
        renumber = np.full(len(lo), -1)
        renumber[final] = np.arange(len(outcomes), len(outcomes) + len(final))
        for j in final:
            outcomes.append(CellOutcome(lo[j].copy(), hi[j].copy(), bool(ok[j] and invariant),
                                        int(entered[j]) if ok[j] else None,
                                        None if ok[j] else int(failed[j]), None if ok[j] else str(because[j])))
        if len(records["origin"]):
            keep = renumber[records["origin"]] >= 0
            all_records.append({"origin": renumber[records["origin"][keep]], "step": records["step"][keep],
                                "lo": records["lo"][keep], "hi": records["hi"][keep]})
        failing = np.flatnonzero(~ok)
        if last or len(failing) == 0:
            break
        # bisect every failing cell along its widest side (relative to the initial box), or the axis
        # that contributes most to the failing row
        lo_f, hi_f = lo[failing], hi[failing]
        if settings.bisect == "sensitive":
            axis = np.argmax(sensitivity[failing], axis=1)
        else:
            axis = np.argmax((hi_f - lo_f) / scale, axis=1)
        middle = (lo_f[np.arange(len(failing)), axis] + hi_f[np.arange(len(failing)), axis]) / 2
        hi_left, lo_right = hi_f.copy(), lo_f.copy()
        hi_left[np.arange(len(failing)), axis] = middle
        lo_right[np.arange(len(failing)), axis] = middle
        lo, hi = np.concatenate([lo_f, lo_right]), np.concatenate([hi_left, hi_f])
    merged = {key: np.concatenate([r[key] for r in all_records]) if all_records else np.zeros(0)
              for key in ("origin", "step", "lo", "hi")}
    reason = "affine dynamics" if model.dynamics_affine else "nonlinear dynamics: the plant's discrete map"
    return ReachResult(True, reason, analysis.argument, tuple(outcomes), merged, invariant, analysis.target_level,
                       target_argument, contraction, delta_target, time.perf_counter() - start)
