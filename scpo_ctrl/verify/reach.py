"""Formal closed-loop reachability for plants with affine dynamics (sound over-approximation).

For ``x+ = A x + B u + e`` and the deployed law, write each input as
``u = lam (u_eq - K dx) + w`` with ``lam`` 1 (the backup plus a deviation:
tight while the input is unsaturated), 0 (a bounded input: tight while it
saturates) or the saturation's chord slope (partly saturated), chosen per
cell, input and step. Then

    x+ = (A - B diag(lam) K) x + (...) + B w,

exact in the linear part, so each cell of the initial box is carried as a
zonotope ``c + G xi`` (``|xi| <= 1``) through that linear map, and only ``w``
is bounded per step, over the zonotope's bounding box:

* the network by interval bound propagation (``W`` in centre/radius form,
  ``tanh`` monotone), the gate from bounds on ``V/c`` (its maximum over a box is
  at a vertex; its minimum bounded through the smallest eigenvalue of P), the
  saturation through monotonicity (``clip(lin + g) - lin`` is non-decreasing
  in ``g`` and non-increasing in ``lin``; ``clip(lin + g)`` non-decreasing in both);
* the float32 C's deviation from the exact law, bounded over the box
  (:func:`~scpo_ctrl.export.error_bound.float_error_bound_box`), is added to
  ``w``: the verdict is for the deployed float32 artefact, not only the maths.

At each step 0..H every safety row must hold on the zonotope (state limits by
its support function, exact; other rows by interval evaluation over its box).
A cell is VERIFIED once its zonotope lies inside the target set T and T is
robustly invariant (contraction of ``A - B K`` in the P-norm beats the float32
deviation) and inside the safety rows; from then on the law is the backup
(gate 0) up to the float32 deviation, forever. Cells that fail are bisected
along their widest side, up to ``max_depth`` times; what still fails is
reported (UNKNOWN), never guessed.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from ..export.error_bound import float_error_bound_box
from ..export.law import DeployedLaw
from ..plant.interval import Interval, evaluate_interval
from ..plant.model import PlantModel

ROUND_OFF_WIDENING = 1e-12  # relative and absolute slack for this analysis's own float64 arithmetic


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
    """

    cells_per_axis: int = 8
    max_depth: int = 4
    max_generators: int = 16
    precision: str = "float32"


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
        False for non-affine dynamics (then nothing else is set).
    reason : str
    cells : tuple of CellOutcome
    boxes : ndarray, shape (n_cells, H+1, 2, nx)
        Bounding boxes of each cell's reachable set at each step (NaN after the cell entered T
        or failed).
    target_invariant : bool
    contraction : float
        P-norm contraction factor of A - B K.
    float32_deviation_in_target : float
        Largest float32 deviation bound over T's bounding box [input units].
    seconds : float
    """

    applicable: bool
    reason: str
    cells: tuple
    boxes: np.ndarray
    target_invariant: bool
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
        """The control over zonotopes as ``u = lam * lin + w`` per input, ``lin = u_eq - K dx``.

        ``lin`` is bounded exactly over the zonotope ``centre + G xi``; the network and the gate over its
        bounding box ``[lo, hi]``. ``lam`` is chosen per input among 1 (tight while unsaturated), 0 (tight
        while saturated) and the chord slope of the saturation over the range of ``lin`` (partly
        saturated), whichever bounds ``w`` most narrowly; for each, ``w``'s range is exact given the
        ranges of ``lin`` and of the network's contribution ``g``, because ``clip(lin + g) - lam lin`` is
        non-decreasing in ``g`` and piecewise linear in ``lin`` (extremes at the ends or the kinks).

        Returns (lam, w_lo, w_hi), each of shape (M, nu).
        """
        law = self.law
        lin_c = law.u_eq - (centre - law.x_eq) @ law.K.T
        lin_r = np.abs(np.einsum("kj,mjg->mkg", law.K, G)).sum(axis=2)
        lin_lo, lin_hi = lin_c - lin_r, lin_c + lin_r
        box_c, radius = (lo + hi) / 2 - law.x_eq, (hi - lo) / 2
        level_lo, level_hi = self.level_range(lo, hi)
        s_lo = np.clip((level_lo - 1.0) / (law.gate_ratio - 1.0), 0.0, 1.0)
        s_hi = np.clip((level_hi - 1.0) / (law.gate_ratio - 1.0), 0.0, 1.0)
        gate_lo, gate_hi = s_lo * s_lo * (3 - 2 * s_lo), s_hi * s_hi * (3 - 2 * s_hi)
        # network by interval bound propagation
        c, r = box_c / law.x_scale, radius / law.x_scale
        for index, (W, b) in enumerate(zip(law.weights, law.biases)):
            c, r = c @ W.T + b, r @ np.abs(W).T
            if index < len(law.weights) - 1:
                low, high = np.tanh(c - r), np.tanh(c + r)
                c, r = (low + high) / 2, (high - low) / 2
        y_lo, y_hi = (c - r) * law.u_scale, (c + r) * law.u_scale
        products = np.stack([gate_lo[:, None] * y_lo, gate_lo[:, None] * y_hi,
                             gate_hi[:, None] * y_lo, gate_hi[:, None] * y_hi])
        g_lo, g_hi = products.min(axis=0), products.max(axis=0)

        width = np.maximum(lin_hi - lin_lo, 1e-300)
        chord = (np.clip(lin_hi, law.u_min, law.u_max) - np.clip(lin_lo, law.u_min, law.u_max)) / width
        best = None
        for lam in (np.ones_like(lin_lo), np.zeros_like(lin_lo), chord):
            w_lo = self._extreme(lam, lin_lo, lin_hi, g_lo, np.minimum)
            w_hi = self._extreme(lam, lin_lo, lin_hi, g_hi, np.maximum)
            if best is None:
                best = [lam, w_lo, w_hi]
            else:
                better = (w_hi - w_lo) < (best[2] - best[1])
                for k, value in enumerate((lam, w_lo, w_hi)):
                    best[k] = np.where(better, value, best[k])
        lam, w_lo, w_hi = best
        delta = float_error_bound_box(law, lo, hi, self.settings.precision, level_range=(level_lo, level_hi))
        slack = ROUND_OFF_WIDENING * (1.0 + np.abs(w_lo) + np.abs(w_hi))
        return lam, w_lo - delta - slack, w_hi + delta + slack

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
            for name, expression in self.extra:
                upper = evaluate_interval(expression, boxes).hi
                over = ~(upper <= 0.0)
                names[over & ~bad] = name
                bad |= over
        return bad, names

    def inside_target(self, centre: np.ndarray, G: np.ndarray) -> np.ndarray:
        """Sufficient test of zonotope in T: sqrt(V(c)) + sum_j ||L g_j|| <= sqrt(c)."""
        law = self.law
        d = centre - law.x_eq
        root = np.sqrt(np.maximum(np.einsum("mi,ij,mj->m", d, law.P, d), 0.0))
        spread = np.linalg.norm(np.einsum("ij,mjk->mik", self.L, G), axis=1).sum(axis=1)
        return (root + spread) * (1 + ROUND_OFF_WIDENING) <= math.sqrt(law.c)

    def target_facts(self) -> tuple:
        """(T robustly invariant and safe?, contraction, float32 deviation over T's box)."""
        law = self.law
        Linv = np.linalg.inv(self.L)
        M = self.L @ self.A_cl @ Linv
        contraction = float(np.linalg.norm(M, 2))
        half = np.sqrt(law.c * np.diag(np.linalg.inv(law.P)))
        lo, hi = law.x_eq - half, law.x_eq + half
        delta = float(np.max(float_error_bound_box(law, lo[None], hi[None], self.settings.precision)))
        gain = float(np.linalg.norm(self.L @ self.B, 2)) * math.sqrt(law.nu)
        invariant = math.sqrt(law.c) * (1 - contraction) >= gain * delta * (1 + 1e-9)
        # T inside every safety row (ellipsoid support for the state limits, its box for the rest)
        P_inv = np.linalg.inv(law.P)
        for i in range(law.nx):
            reach = law.x_eq[i] + math.sqrt(law.c * P_inv[i, i])
            lower = law.x_eq[i] - math.sqrt(law.c * P_inv[i, i])
            invariant &= bool(reach <= self.x_max[i] and lower >= self.x_min[i])
        # inside T the exact law is the unsaturated backup (gate 0): check the backup stays in limits
        for k in range(law.nu):
            spread = math.sqrt(law.c * law.K[k] @ P_inv @ law.K[k])
            invariant &= bool(law.u_eq[k] + spread <= law.u_max[k] and law.u_eq[k] - spread >= law.u_min[k])
        if self.extra:
            boxes = {name: Interval(lo[i:i + 1], hi[i:i + 1]) for i, name in enumerate(self.model.spec.state_names)}
            for _, expression in self.extra:
                invariant &= bool(evaluate_interval(expression, boxes).hi[0] <= 0.0)
        return bool(invariant) and contraction < 1.0, contraction, delta

    # -- propagation -----------------------------------------------------------------
    def propagate(self, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """Run every cell (M) to its verdict; returns (entered, failed_step, failed_because, boxes)."""
        law = self.law
        M, nx = lo.shape
        m_max = max(self.settings.max_generators, nx + self.law.nu)
        centre = (lo + hi) / 2
        G = np.zeros((M, nx, m_max))
        G[:, np.arange(nx), np.arange(nx)] = (hi - lo) / 2
        entered = np.full(M, -1)
        failed = np.full(M, -1)
        because = np.full(M, None, dtype=object)
        boxes = np.full((M, self.H + 1, 2, nx), np.nan)
        active = np.ones(M, dtype=bool)
        for t in range(self.H + 1):
            idx = np.flatnonzero(active)
            if len(idx) == 0:
                break
            c, g = centre[idx], G[idx]
            extent = np.abs(g).sum(axis=2)
            box_lo, box_hi = c - extent, c + extent
            boxes[idx, t, 0], boxes[idx, t, 1] = box_lo, box_hi
            bad, names = self.rows_violated(c, g)
            failed[idx[bad]] = t
            because[idx[bad]] = names[bad]
            inside = ~bad & self.inside_target(c, g)
            entered[idx[inside]] = t
            active[idx[bad | inside]] = False
            if t == self.H:
                late = active.copy()
                failed[late] = t
                because[late] = "target set not reached within the horizon"
                active[late] = False
                break
            idx = np.flatnonzero(active)
            if len(idx) == 0:
                break
            c, g = centre[idx], G[idx]
            lam, w_lo, w_hi = self.deviation_bounds(box_lo[~(bad | inside)], box_hi[~(bad | inside)], c, g)
            # x+ = A x + B (lam * (u_eq - K (x - x_eq)) + w) + e, with lam per cell and input
            BL = self.B[None, :, :] * lam[:, None, :]  # (m, nx, nu)
            A_cells = self.A[None] - np.einsum("mij,jk->mik", BL, law.K)
            lin_c = law.u_eq - (c - law.x_eq) @ law.K.T
            new_c = (c @ self.A.T + np.einsum("mij,mj->mi", BL, lin_c) + self.e
                     + ((w_lo + w_hi) / 2) @ self.B.T)
            new_g = np.einsum("mij,mjk->mik", A_cells, g)
            noise = self.B[None, :, :] * ((w_hi - w_lo) / 2)[:, None, :]  # (m, nx, nu)
            new_g = self._reduce(np.concatenate([new_g, noise], axis=2), m_max)
            centre[idx], G[idx] = new_c, new_g
        return entered, failed, because, boxes

    @staticmethod
    def _reduce(G: np.ndarray, m_max: int) -> np.ndarray:
        """Girard's reduction: keep the m_max - nx largest generators, box the rest into nx axis ones."""
        M, nx, m = G.shape
        if m <= m_max:
            return G
        keep = m_max - nx
        norms = np.abs(G).sum(axis=1) - np.abs(G).max(axis=1)  # the Girard ordering criterion
        order = np.argsort(-norms, axis=1)
        kept = np.take_along_axis(G, order[:, None, :keep], axis=2)
        rest = np.take_along_axis(G, order[:, None, keep:], axis=2)
        boxed = np.zeros((M, nx, nx))
        boxed[:, np.arange(nx), np.arange(nx)] = np.abs(rest).sum(axis=2)
        return np.concatenate([kept, boxed], axis=2)


def analyse(law: DeployedLaw, model: PlantModel, box_lo: np.ndarray, box_hi: np.ndarray, horizon: int,
            settings: ReachSettings = ReachSettings()) -> ReachResult:
    """Formal reachability of the closed loop from the whole box ``[box_lo, box_hi]``."""
    start = time.perf_counter()
    if not model.dynamics_affine:
        return ReachResult(False, "formal reachability is implemented for affine dynamics only; this plant is "
                           "nonlinear", (), np.zeros((0, horizon + 1, 2, law.nx)), False, float("nan"),
                           float("nan"), time.perf_counter() - start)
    analysis = _Analysis(law, model, horizon, settings)
    invariant, contraction, delta_target = analysis.target_facts()
    n = settings.cells_per_axis
    edges = [np.linspace(box_lo[i], box_hi[i], n + 1) for i in range(law.nx)]
    grid = np.array(list(itertools.product(range(n), repeat=law.nx)))
    lo = np.array([[edges[i][k[i]] for i in range(law.nx)] for k in grid])
    hi = np.array([[edges[i][k[i] + 1] for i in range(law.nx)] for k in grid])
    scale = np.asarray(box_hi, float) - np.asarray(box_lo, float)
    outcomes, all_boxes = [], []
    for depth in range(settings.max_depth + 1):
        entered, failed, because, boxes = analysis.propagate(lo, hi)
        ok = entered >= 0
        last = depth == settings.max_depth
        for j in np.flatnonzero(ok | last):
            outcomes.append(CellOutcome(lo[j].copy(), hi[j].copy(), bool(ok[j] and invariant),
                                        int(entered[j]) if ok[j] else None,
                                        None if ok[j] else int(failed[j]), None if ok[j] else str(because[j])))
            all_boxes.append(boxes[j])
        failing = np.flatnonzero(~ok)
        if last or len(failing) == 0:
            break
        # bisect every failing cell along its widest side (relative to the initial box)
        lo_f, hi_f = lo[failing], hi[failing]
        axis = np.argmax((hi_f - lo_f) / scale, axis=1)
        middle = (lo_f[np.arange(len(failing)), axis] + hi_f[np.arange(len(failing)), axis]) / 2
        hi_left, lo_right = hi_f.copy(), lo_f.copy()
        hi_left[np.arange(len(failing)), axis] = middle
        lo_right[np.arange(len(failing)), axis] = middle
        lo, hi = np.concatenate([lo_f, lo_right]), np.concatenate([hi_left, hi_f])
    boxes = np.array(all_boxes) if all_boxes else np.zeros((0, horizon + 1, 2, law.nx))
    return ReachResult(True, "affine dynamics", tuple(outcomes), boxes, invariant, contraction, delta_target,
                       time.perf_counter() - start)
