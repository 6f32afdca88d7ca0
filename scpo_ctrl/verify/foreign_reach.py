"""Formal reachability of a foreign network's closed loop, at the sampling instants, over a finite horizon.

Each cell of the initial box is a zonotope ``x = c + G xi``. Per step, the command is an affine form in the
same ``xi`` (:mod:`.affine_bounds`): the input map exactly, each affine layer exactly, each activation by its
per-neuron linear relaxation (tanh, sigmoid: min-slope or chord; ReLU: the chord over a crossing range, the
triangle relaxation, exact where a neuron's range does not cross 0), the output map exactly. The plant step is
:func:`.reach.zonotope_step`: the exact image for affine dynamics, else the first-order model of the discrete
map (the plant file's integrator with its substeps) with an interval-Jacobian remainder.

At every step each row active there must hold on the zonotope: state limits and affine rows by the support
function (exact up to the widened rounding), other rows by interval evaluation over the zonotope's box, input
limits on the command's range (a non-finite range fails), the goal set at step H by the box's inclusion, an
unsafe box by the box's disjointness. A cell for which all hold at every step 0..H is proven; a failing cell is
halved along its widest side (relative to the initial box) up to ``max_depth`` times and within ``max_cells``;
what still fails stays UNKNOWN (never guessed).

The verdict is about the network in real arithmetic on its stored weights (float64 of the file's values), not
about a float32 runtime's rounding. The analysis's own float64 rounding is covered: every affine map, the
plant's step, the sets' extents and the rows' bounds are widened by :data:`ROUND_OFF_WIDENING` times the
magnitudes involved.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..plant.interval import Interval, evaluate_interval
from . import affine_bounds as ab
from .discrete_map import DiscreteMap, UnsupportedOperation
from .foreign_loop import ForeignLoop
from .onnx_network import AffineLayer
from .reach import affine_in_state, reduce_order, zonotope_step

ROUND_OFF_WIDENING = 1e-12
_FUNCTIONS = {"relu": ab.RELU, "tanh": ab.TANH, "sigmoid": ab.SIGMOID}
_RANGES = {"relu": (0.0, np.inf), "tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


@dataclass(frozen=True)
class ForeignReachSettings:
    """Initial grid per state, bisections of failing cells, cell budget, zonotope order limit."""

    cells_per_axis: int = 1
    max_depth: int = 8
    max_cells: int = 2000
    max_generators: int = 24


@dataclass(frozen=True)
class ForeignReachResult:
    """Outcome of the analysis.

    Attributes
    ----------
    applicable : bool
        False when the plant's map has no interval rule (``reason`` says which operation).
    reason : str
    argument : str
    verified : bool
        Every cell proven.
    proven_fraction : float
        Volume fraction of the initial box in proven cells.
    cells_proven, cells_unknown, cells_analysed : int
    failures : dict
        Per failing row name, how many final cells failed there first.
    first_failure_step : int or None
        The earliest step where an unproven cell failed.
    seconds : float
    """

    applicable: bool
    reason: str
    argument: str
    verified: bool
    proven_fraction: float
    cells_proven: int
    cells_unknown: int
    cells_analysed: int
    failures: dict
    first_failure_step: int | None
    seconds: float


class _Analysis:
    def __init__(self, loop: ForeignLoop, settings: ForeignReachSettings):
        self.loop, self.settings = loop, settings
        model = loop.model
        self.map = None if model.dynamics_affine else DiscreteMap.of(model)
        nx, nu = model.nx, model.nu
        if self.map is None:
            x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
            jac = ca.Function("j", [x, u], [ca.jacobian(model.f(x, u), x), ca.jacobian(model.f(x, u), u)])
            A, B = jac(np.zeros(nx), np.zeros(nu))
            self.A, self.B = np.array(A, dtype=float), np.array(B, dtype=float)
            self.e = np.array(model.f(np.zeros(nx), np.zeros(nu)), dtype=float).ravel()
        else:
            self.A = self.B = self.e = None
        spec = model.spec
        self.names = spec.state_names
        self.input_names = spec.input_names
        self.constraint_rows = {c.name: c.expression for c in spec.constraints}
        self.affine_rows = {c.name: affine_in_state(spec, c.expression) for c in spec.constraints}
        self.x_min = np.array([-np.inf if v.min is None else v.min for v in spec.states])
        self.x_max = np.array([np.inf if v.max is None else v.max for v in spec.states])
        self.u_min = np.array([-np.inf if v.min is None else v.min for v in spec.inputs])
        self.u_max = np.array([np.inf if v.max is None else v.max for v in spec.inputs])
        self.avoid = {a.name: a.box for a in spec.safety.avoid}
        self.goal = spec.safety.goal

    def command(self, centre: np.ndarray, G: np.ndarray) -> tuple:
        """The command over the zonotopes as an affine form (M, nu) in their noise symbols, and its range
        ``(lo, hi)``: the form's bounds intersected with interval bounds carried alongside (per layer the
        tighter of the two, an activation's interval by its monotonicity, clamped to its range: tanh in
        [-1, 1], sigmoid in [0, 1], ReLU >= 0)."""
        loop = self.loop
        h = _affine_map(ab.state_form(centre, G), loop.A_in, loop.b_in)
        lo, hi = h.bounds()
        for layer in loop.network.layers:
            if isinstance(layer, AffineLayer):
                h = _affine_map(h, layer.W, layer.b)
                lo, hi = _interval_affine(lo, hi, layer.W, layer.b)
            else:
                function = _FUNCTIONS[layer.kind]
                h = ab.apply(function, h)
                low, high = function.value(lo), function.value(hi)
                slack = ROUND_OFF_WIDENING * (1.0 + np.abs(low) + np.abs(high))
                floor, ceiling = _RANGES[layer.kind]
                lo, hi = np.maximum(low - slack, floor), np.minimum(high + slack, ceiling)
            form_lo, form_hi = h.bounds()
            lo, hi = np.maximum(lo, form_lo), np.minimum(hi, form_hi)
        u = _affine_map(h, loop.A_out, loop.b_out)
        lo, hi = _interval_affine(lo, hi, loop.A_out, loop.b_out)
        form_lo, form_hi = u.bounds()
        return u, np.maximum(lo, form_lo), np.minimum(hi, form_hi)

    def failing(self, t: int, centre: np.ndarray, G: np.ndarray, u_lo: np.ndarray, u_hi: np.ndarray) -> np.ndarray:
        """Per zonotope, the first row that may fail at step t ('' where all hold); the command's range
        ``[u_lo, u_hi] (M, nu)``."""
        extent = np.abs(G).sum(axis=2)
        extent = extent + ROUND_OFF_WIDENING * (1.0 + np.abs(centre) + extent)  # the rounding of the sums
        lo, hi = centre - extent, centre + extent
        names = np.full(len(centre), "", dtype=object)

        def mark(bad, name):
            bad = bad & (names == "")
            names[bad] = name

        boxes = None
        for row in self.loop.rows:
            if not row.first <= t <= row.last:
                continue
            if row.kind == "state":
                i = self.names.index(row.name.rsplit(".", 1)[0])
                mark(hi[:, i] > self.x_max[i] if row.name.endswith(".max") else lo[:, i] < self.x_min[i], row.name)
            elif row.kind == "input":
                j = self.input_names.index(row.name.rsplit(".", 1)[0])
                mark(u_hi[:, j] > self.u_max[j] if row.name.endswith(".max") else u_lo[:, j] < self.u_min[j],
                     row.name)
            elif row.kind == "extra":
                affine = self.affine_rows[row.name]
                if affine is not None:
                    a, b = affine
                    upper = centre @ a + b + np.abs(np.matmul(a, G)).sum(axis=1)
                    upper = upper + ROUND_OFF_WIDENING * (np.abs(upper) + 1.0)
                else:
                    if boxes is None:
                        boxes = {name: Interval(lo[:, i], hi[:, i]) for i, name in enumerate(self.names)}
                        boxes.update({name: Interval(u_lo[:, j], u_hi[:, j])
                                      for j, name in enumerate(self.input_names)})
                    upper = evaluate_interval(self.constraint_rows[row.name], boxes).hi
                mark(~(upper <= 0.0), row.name)
            elif row.kind == "goal":
                inside = np.all((lo >= self.goal[:, 0]) & (hi <= self.goal[:, 1]), axis=1)
                mark(~inside, row.name)
            else:
                box = self.avoid[row.name]
                disjoint = np.any((hi < box[:, 0]) | (lo > box[:, 1]), axis=1)
                mark(~disjoint, row.name)
        finite = np.all(np.isfinite(lo) & np.isfinite(hi), axis=1)
        mark(~finite, "non-finite set")
        finite = np.all(np.isfinite(u_lo) & np.isfinite(u_hi), axis=1)  # NaN > u_max is False: fail it here
        mark(~finite, "non-finite command")
        return names

    def propagate(self, lo: np.ndarray, hi: np.ndarray, records: list | None = None) -> tuple:
        """Cells (M) -> (failed step (M,), -1 where proven; failing row (M,)); ``records`` (a list) receives
        ``(step, cell indices, box lo, box hi)`` of the sets at every step."""
        M, nx = lo.shape
        nu = len(self.input_names)
        m_max = max(self.settings.max_generators, 2 * nx + nu)
        H = self.loop.horizon
        index = np.arange(M)
        centre = (lo + hi) / 2
        G = np.zeros((M, nx, nx))
        # the half-width widened so that c +- r covers [lo, hi] despite the rounding of c and r
        G[:, np.arange(nx), np.arange(nx)] = (hi - lo) / 2 + ROUND_OFF_WIDENING * (np.abs(lo) + np.abs(hi))
        failed = np.full(M, -1)
        because = np.full(M, "", dtype=object)
        for t in range(H + 1):
            if len(index) == 0:
                break
            if records is not None:
                extent = np.abs(G).sum(axis=2)
                records.append((t, index.copy(), centre - extent, centre + extent))
            with np.errstate(all="ignore"):
                u, u_lo, u_hi = self.command(centre, G)
                names = self.failing(t, centre, G, u_lo, u_hi)
            bad = names != ""
            failed[index[bad]] = t
            because[index[bad]] = names[bad]
            keep = ~bad
            if t == H or not keep.any():
                break
            index, centre, G = index[keep], centre[keep], G[keep]
            u = ab.AffineForm(u.centre[keep], u.linear[keep], u.radius[keep])
            with np.errstate(all="ignore"):
                centre, G = zonotope_step(self.A, self.B, self.e, self.map, centre, G, u.centre, u.linear,
                                          u.radius * (1 + ROUND_OFF_WIDENING))
            G = reduce_order(G, m_max)
        return failed, because


def _affine_map(form: ab.AffineForm, W: np.ndarray, b: np.ndarray) -> ab.AffineForm:
    """:func:`.affine_bounds.affine_map` (the same bounds) with the linear part as one matrix product:
    ``W @ linear`` over a batch of wide layers is many times faster as ``W (n, k) @ (k, M m)``."""
    M, k, m = form.linear.shape
    linear = (W @ form.linear.transpose(1, 0, 2).reshape(k, M * m)).reshape(W.shape[0], M, m).transpose(1, 0, 2)
    centre = form.centre @ W.T + b
    radius = form.radius @ np.abs(W).T
    size = np.abs(form.centre) @ np.abs(W).T + np.abs(linear).sum(axis=2) + radius
    return ab.AffineForm(centre, linear, radius + ROUND_OFF_WIDENING * (1.0 + size + np.abs(b)))


def _interval_affine(lo: np.ndarray, hi: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple:
    """``W x + b`` over the boxes ``[lo, hi] (M, k)``, widened for rounding."""
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    c, r = centre @ W.T + b, radius @ np.abs(W).T
    slack = ROUND_OFF_WIDENING * (1.0 + np.abs(centre) @ np.abs(W).T + r + np.abs(b))
    return c - r - slack, c + r + slack


def analyse_foreign(loop: ForeignLoop, box: np.ndarray,
                    settings: ForeignReachSettings = ForeignReachSettings()) -> ForeignReachResult:
    """Formal reachability of ``loop`` from every state of ``box (nx, 2)`` over its horizon."""
    start = time.perf_counter()
    try:
        analysis = _Analysis(loop, settings)
    except UnsupportedOperation as exc:
        return ForeignReachResult(False, f"the plant's discrete map cannot be bounded by interval arithmetic: {exc}",
                                  "", False, 0.0, 0, 0, 0, {}, None, time.perf_counter() - start)
    nx = loop.spec.nx
    n = settings.cells_per_axis
    edges = [np.linspace(box[i, 0], box[i, 1], n + 1) for i in range(nx)]
    grid = np.array(list(itertools.product(range(n), repeat=nx)))
    lo = np.array([[edges[i][k[i]] for i in range(nx)] for k in grid])
    hi = np.array([[edges[i][k[i] + 1] for i in range(nx)] for k in grid])
    width = np.where(box[:, 1] > box[:, 0], box[:, 1] - box[:, 0], 1.0)
    volume = float(np.prod(width))
    proven_volume, proven, analysed = 0.0, 0, 0
    failures: dict = {}
    first_step = None
    unknown = 0
    for depth in range(settings.max_depth + 1):
        failed, because = analysis.propagate(lo, hi)
        analysed += len(lo)
        ok = failed < 0
        proven += int(ok.sum())
        proven_volume += float(np.sum(np.prod(np.where(hi > lo, hi - lo, width), axis=1)[ok])) if nx else 0.0
        bad = np.flatnonzero(~ok)
        last = depth == settings.max_depth or analysed + 2 * len(bad) > settings.max_cells
        if last or len(bad) == 0:
            unknown = len(bad)
            for k in bad:
                failures[str(because[k])] = failures.get(str(because[k]), 0) + 1
            if len(bad):
                first_step = int(failed[bad].min())
            break
        lo_f, hi_f = lo[bad], hi[bad]
        axis = np.argmax((hi_f - lo_f) / width, axis=1)
        rows = np.arange(len(bad))
        middle = (lo_f[rows, axis] + hi_f[rows, axis]) / 2
        hi_left, lo_right = hi_f.copy(), lo_f.copy()
        hi_left[rows, axis] = middle
        lo_right[rows, axis] = middle
        lo, hi = np.concatenate([lo_f, lo_right]), np.concatenate([hi_left, hi_f])
    affine = analysis.map is None
    argument = ("zonotopes; the network as affine forms with per-neuron linear relaxations; the plant's map "
                + ("exactly up to float64 rounding, widened (affine dynamics)" if affine else
                   "by its first-order model with an interval-Jacobian remainder (the plant file's integrator "
                   "and substeps, not the ODE)"))
    reason = "affine dynamics" if affine else "nonlinear dynamics: the plant's discrete map"
    fraction = min(1.0, proven_volume / volume) if volume else 0.0
    return ForeignReachResult(True, reason, argument, unknown == 0, fraction, proven, unknown, analysed, failures,
                              first_step, time.perf_counter() - start)


def reachable_boxes(loop: ForeignLoop, lo: np.ndarray, hi: np.ndarray,
                    settings: ForeignReachSettings = ForeignReachSettings()) -> list:
    """The bounding boxes of the reachable sets from the cells ``[lo, hi] (M, nx)`` at steps 0..H, while no row
    fails: a list of ``(step, cell indices (K,), box lo (K, nx), box hi (K, nx))`` (what a soundness test
    checks sampled trajectories against)."""
    records: list = []
    _Analysis(loop, settings).propagate(lo, hi, records)
    return records
