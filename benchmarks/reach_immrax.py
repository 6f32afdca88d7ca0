"""Our reachability side by side with immrax's embedding-system reachability, on the same closed loops.

Install (a separate venv: JAX must not touch the project venv's numpy/scipy)::

    python3.11 -m venv /work/venv-immrax
    /work/venv-immrax/bin/pip install immrax==0.3.8
    /work/venv-immrax/bin/pip install -e .      # this checkout; resolves to the project venv's versions

Run (one command; adapts both plants with every default unless runs are given)::

    /work/venv-immrax/bin/python benchmarks/reach_immrax.py [--double-integrator RUN] [--pendulum RUN]
        [--widest] [--plants double_integrator,pendulum] [--out benchmarks/results/reach_immrax.md]

The closed loop is the same map on both sides: the deployed law (:class:`~scpo_ctrl.export.law.DeployedLaw`:
LQR backup, smoothstep gate on ``V/c``, residual tanh MLP, saturation; written in JAX from the law's own
numbers, ``tanh`` as ``2 sigmoid(2 z) - 1`` where immrax's CROWN needs it) composed with the plant's
**discrete** map, translated instruction by instruction from the SX graph of the model's CasADi ``f`` (the
plant file's integrator with its substeps: RK4 with 1 substep for the double integrator, 2 for the
pendulum). Both translations are checked against ``scpo_ctrl`` at random states before anything runs.

Sides:

* ``ours``: :func:`scpo_ctrl.verify.reach.analyse` with `verify`'s settings (16 cells per axis, bisection
  to depth 8 within 4,096 cells, 16 generators, the float32 C's deviation bound included), with its
  default 'sensitive' bisection (``--widest``: also with 'widest', immrax's rule here), and on the grid alone
  (depth 0).
* immrax 0.3.8, discrete-time embedding systems ``x+ = E(x_lo, x_hi)`` of the closed-loop map:
  ``natural`` (``immrax.natemb``: the natural inclusion function, interval arithmetic through plant and law),
  ``mixed-jacobian`` (``immrax.mjacemb``: the mixed Jacobian-based inclusion function of the closed-loop map,
  centred at the box's middle) and ``crown+mjac`` (``immrax.ifemb`` with an inclusion function built from
  immrax's parts the way its closed-loop examples do: ``immrax.crown`` linear bounds ``u in [C_l x + d_l,
  C_u x + d_u]`` of the law over the box, ``immrax.mjacM`` mixed Jacobians ``Mx, Mu`` of the plant map,
  ``x+ in f(xc, uc) + (Mx + Mu C)(x - xc) + Mu (C xc + e - uc)`` with ``C`` the mean of ``C_l, C_u``).
  No float32 deviation is added on this side (it analyses the float64 law), and its arithmetic is not
  rounded outward.

What "proven" means, for both: a cell is proven when its reachable sets (ours: zonotopes; immrax: boxes)
satisfy every safety row at every step (state limits, and the plant file's extra rows by interval
evaluation over the set's box, :func:`scpo_ctrl.plant.interval.evaluate_interval`) until a set lies inside
the target set ``T = {V <= c_T}`` (immrax: every vertex of the box), at step H at the latest. ``c_T`` and the
robust invariance of T (after which the loop stays in T forever) come from our analysis and are common to
both columns. Cells are the same grid and the same bisection passes (every failing cell halved, up to
depth 8, no pass started that would exceed 4,096 cells analysed); immrax halves the widest side (relative to
the box).

Set width: on the 16 x 16 grid without bisection, per cell the width of each state's bounding interval at
the last step both sides still carry the cell (the earlier of the two sides' entry into T or failure), as
the median over cells of immrax's width over ours. Sampled containment: random closed loops of the
float64 law from each grid cell, checked inside immrax's boxes at every step the cell is carried (a check
of the immrax side's soundness on these loops, not a proof).

Times are wall seconds on a shared 2-core machine; immrax's JIT compilation is reported apart.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import casadi as ca
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import immrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export.law import evaluate, law_from_run  # noqa: E402
from scpo_ctrl.plant.interval import Interval, evaluate_interval  # noqa: E402
from scpo_ctrl.plant.model import build_plant  # noqa: E402
from scpo_ctrl.verify import reach  # noqa: E402
from scpo_ctrl.sim.closed_loop import simulate  # noqa: E402
from scpo_ctrl.config.campaign import load_campaign  # noqa: E402

PLANTS = ("double_integrator", "pendulum")
_CAMPAIGN = load_campaign().reachability  # verify's reachability settings (verification/campaign.yaml)
_BUDGET = _CAMPAIGN.budget(2)  # both plants have two states
CELLS_PER_AXIS, MAX_CELLS, MAX_GENERATORS = _BUDGET.cells_per_axis, _BUDGET.max_cells, _BUDGET.max_generators
MAX_DEPTH = _CAMPAIGN.max_depth
CHUNK = 256  # cells per compiled immrax batch (fixed, so one compilation per method)
SAMPLES_PER_CELL = 16
VARIANTS = ("natural", "mixed-jacobian", "crown+mjac")
#: immrax's bisection depth and whether its cells run batched (jax.vmap), per plant. The pendulum's sine goes
#: through immrax's interval rule for sin (nested lax.switch): one cell's 100 steps take 0.03-0.05 s jitted
#: alone, but a vmapped batch of 8 cells had not finished after 10 minutes (measured, 2-core machine under
#: load), so the pendulum's cells run one by one.
IMMRAX_BUDGET = {"double_integrator": (MAX_DEPTH, True), "pendulum": (MAX_DEPTH, False)}
TARGET_SLACK = 1e-9  # relative: a box is inside T when its vertices' V <= c_T (1 - slack)


# -- the plant's discrete map and the law in JAX ------------------------------------------------------------
_UNARY = {
    ca.OP_ASSIGN: lambda a: a, ca.OP_NEG: lambda a: -a, ca.OP_TWICE: lambda a: 2.0 * a, ca.OP_SQ: jnp.square,
    ca.OP_INV: lambda a: 1.0 / a, ca.OP_SQRT: jnp.sqrt, ca.OP_SIN: jnp.sin, ca.OP_COS: jnp.cos,
    ca.OP_EXP: jnp.exp, ca.OP_TANH: jnp.tanh,
}
_BINARY = {
    ca.OP_ADD: lambda a, b: a + b, ca.OP_SUB: lambda a, b: a - b, ca.OP_MUL: lambda a, b: a * b,
    ca.OP_DIV: lambda a, b: a / b, ca.OP_POW: jnp.power, ca.OP_CONSTPOW: jnp.power,
}


def jax_discrete_map(model):
    """``f(x (nx,), u (nu,)) -> x+ (nx,)`` in JAX: the SX instructions of the model's CasADi ``f``, one by one."""
    nx, nu = model.nx, model.nu
    z = ca.SX.sym("z", nx + nu)
    function = ca.Function("f_z", [z], [model.f(z[:nx], z[nx:])])
    if function.sparsity_out(0).nnz() != nx:
        raise ValueError("the discrete map has structurally zero outputs; not handled here")
    program = []
    for k in range(function.n_instructions()):
        op = function.instruction_id(k)
        if op not in _UNARY and op not in _BINARY and op not in (ca.OP_CONST, ca.OP_INPUT, ca.OP_OUTPUT):
            raise ValueError(f"CasADi operation {op} has no JAX translation here")
        program.append((op, tuple(function.instruction_input(k)), tuple(function.instruction_output(k)),
                        float(function.instruction_constant(k)) if op == ca.OP_CONST else 0.0))

    def f(x, u):
        zz = jnp.concatenate([jnp.atleast_1d(x), jnp.atleast_1d(u)])
        work, out = {}, [None] * nx
        for op, inputs, outputs, constant in program:
            if op == ca.OP_CONST:
                work[outputs[0]] = jnp.asarray(constant)
            elif op == ca.OP_INPUT:
                work[outputs[0]] = zz[inputs[1]]
            elif op == ca.OP_OUTPUT:
                out[outputs[1]] = work[inputs[0]]
            elif op in _UNARY:
                work[outputs[0]] = _UNARY[op](work[inputs[0]])
            else:
                work[outputs[0]] = _BINARY[op](work[inputs[0]], work[inputs[1]])
        return jnp.concatenate([jnp.reshape(o, (1,)) for o in out])  # (jnp.stack has no immrax rule)

    return f


def jax_law(law, for_crown: bool):
    """The deployed law ``x (nx,) -> u (nu,)`` in JAX (float64, exact maths, no monitor: a set that leaves the
    state limits fails its cell before the monitor would matter).

    Two spellings of the same function, for what immrax's transforms accept: ``tanh`` and ``V = sum(dx * P dx)``
    for its natural and mixed-Jacobian inclusions; for its CROWN (linear bounds, no rule for ``tanh`` or sums)
    ``tanh(z) = 2 sigmoid(2 z) - 1`` and ``V = 1 . (dx * P dx)``. Not ``dx . (P dx)``: immrax 0.3.8's linear-bound
    fallback for a dot product of two bounded vectors takes the extremes over four corner sums, which is not
    an enclosure, while the elementwise product is bounded soundly.
    """
    x_eq, u_eq, K, P = (jnp.asarray(a) for a in (law.x_eq, law.u_eq, law.K, law.P))
    u_scale = jnp.asarray(law.u_scale)
    u_min, u_max = jnp.asarray(law.u_min), jnp.asarray(law.u_max)
    layers = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(law.weights, law.biases)]
    ones = jnp.ones(law.nx)
    inv_c, inv_band = 1.0 / float(law.c), 1.0 / (float(law.gate_ratio) - 1.0)  # products: CROWN has no division
    inv_x_scale = 1.0 / jnp.asarray(law.x_scale)
    act = (lambda a: 2.0 * jax.nn.sigmoid(2.0 * a) - 1.0) if for_crown else jnp.tanh
    total = (lambda v: ones @ v) if for_crown else jnp.sum

    def u(x):
        d = x - x_eq
        backup = u_eq - K @ d
        level = total(d * (P @ d)) * inv_c
        s = jnp.clip((level - 1.0) * inv_band, 0.0, 1.0)
        gate = s * s * (3.0 - 2.0 * s)
        h = d * inv_x_scale
        for W, b in layers[:-1]:
            h = act(W @ h + b)
        W, b = layers[-1]
        return jnp.clip(backup + gate * (u_scale * (W @ h + b)), u_min, u_max)

    return u


def check_translation(model, law, f_jax, laws_jax, box, rng) -> float:
    """Largest difference between the JAX map and law and scpo_ctrl's at random states of the box (and inputs)."""
    X = rng.uniform(box[:, 0], box[:, 1], size=(200, law.nx))
    U = rng.uniform(np.where(np.isfinite(law.u_min), law.u_min, -1.0), np.where(np.isfinite(law.u_max), law.u_max, 1.0),
                    size=(200, law.nu))
    ours = np.array(model.f.map(len(X))(X.T, U.T)).T
    theirs = np.array(jax.vmap(f_jax)(jnp.asarray(X), jnp.asarray(U)))
    worst = float(np.max(np.abs(ours - theirs)))
    reference = evaluate(law, X).u
    for law_jax in laws_jax:
        worst = max(worst, float(np.max(np.abs(np.array(jax.vmap(law_jax)(jnp.asarray(X))) - reference))))
    return worst


# -- immrax's reachable boxes --------------------------------------------------------------------------------
class _ClosedLoopSystem(immrax.System):
    """``x+ = f(x, law(x))`` as an immrax discrete-time system."""

    def __init__(self, step, nx: int):
        super().__init__("discrete", nx)
        self._step = step

    def f(self, t, x):
        return self._step(x)


def immrax_step(variant: str, f_jax, law_tanh, law_logistic, nx: int):
    """One step of immrax's embedding system on one box: ``(lo (nx,), hi (nx,)) -> (lo, hi)``."""
    system = _ClosedLoopSystem(lambda x: f_jax(x, law_tanh(x)), nx)
    if variant in ("natural", "mixed-jacobian"):
        embedding = immrax.natemb(system) if variant == "natural" else immrax.mjacemb(system)

        def step(lo, hi):
            out = embedding.E(0, jnp.concatenate([lo, hi]))
            return out[:nx], out[nx:]

        return step
    bounds = immrax.crown(law_logistic)
    plant_m = immrax.mjacM(f_jax)

    def inclusion(t, ix):
        linear = bounds(ix)
        iu = linear(ix)  # the law's range over the box (saturation included)
        xc, uc = ix.center, iu.center
        Mx, Mu = (immrax.interval(M) for M in plant_m(ix, iu, centers=((xc, uc),))[0])  # constant ones come as arrays
        C = (linear.lC + linear.uC) / 2
        e = immrax.CROWNResult(lC=linear.lC - C, uC=linear.uC - C, ld=linear.ld, ud=linear.ud)(ix)  # u - C x
        return (immrax.interval(f_jax(xc, uc)) + (Mx + Mu @ immrax.interval(C)) @ (ix - immrax.interval(xc))
                + Mu @ (immrax.interval(C @ xc) + e - immrax.interval(uc)))

    embedding = immrax.ifemb(system, inclusion)

    def step(lo, hi):
        out = embedding.E(0, jnp.concatenate([lo, hi]))
        return out[:nx], out[nx:]

    return step


@dataclass(frozen=True)
class ImmraxRunner:
    """Compiled immrax propagation of batches of boxes over the horizon."""

    nx: int
    horizon: int
    batch: object  # jitted (lo (CHUNK, nx), hi) -> (lo (H+1, CHUNK, nx), hi), or one cell's (H+1, nx) if not batched
    batched: bool

    @classmethod
    def build(cls, step, nx: int, horizon: int, batched: bool) -> "ImmraxRunner":
        def trajectory(lo, hi):
            def body(carry, _):
                new = step(*carry)
                return new, new

            _, (los, his) = jax.lax.scan(body, (lo, hi), None, length=horizon)
            return jnp.concatenate([lo[None], los]), jnp.concatenate([hi[None], his])

        return cls(nx, horizon, jax.jit(jax.vmap(trajectory, out_axes=1) if batched else trajectory), batched)

    def boxes(self, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """Boxes of every cell (M) at every step: ``lo, hi (M, H+1, nx)``."""
        M = len(lo)
        out_lo, out_hi = [], []
        if not self.batched:
            for k in range(M):
                a, b = self.batch(jnp.asarray(lo[k]), jnp.asarray(hi[k]))
                out_lo.append(np.asarray(a))
                out_hi.append(np.asarray(b))
            return np.array(out_lo), np.array(out_hi)
        for start in range(0, M, CHUNK):
            part_lo, part_hi = lo[start:start + CHUNK], hi[start:start + CHUNK]
            pad = CHUNK - len(part_lo)
            if pad:
                part_lo = np.concatenate([part_lo, np.repeat(part_lo[:1], pad, axis=0)])
                part_hi = np.concatenate([part_hi, np.repeat(part_hi[:1], pad, axis=0)])
            a, b = self.batch(jnp.asarray(part_lo), jnp.asarray(part_hi))
            out_lo.append(np.asarray(a).transpose(1, 0, 2)[:CHUNK - pad])
            out_hi.append(np.asarray(b).transpose(1, 0, 2)[:CHUNK - pad])
        return np.concatenate(out_lo), np.concatenate(out_hi)


# -- the property on boxes, and the bisection passes ------------------------------------------------------------
@dataclass(frozen=True)
class BoxJudge:
    """Safety rows and target set over boxes, the rules our analysis applies."""

    spec: object
    law: object
    target_level: float

    def safe(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Every safety row holds over the boxes ``(..., nx)``: shape (...)."""
        ok = np.all(np.isfinite(lo) & np.isfinite(hi), axis=-1)
        for i, variable in enumerate(self.spec.states):
            if variable.min is not None:
                ok &= lo[..., i] >= variable.min
            if variable.max is not None:
                ok &= hi[..., i] <= variable.max
        if self.spec.constraints:
            boxes = {name: Interval(lo[..., i], hi[..., i]) for i, name in enumerate(self.spec.state_names)}
            for constraint in self.spec.constraints:
                with np.errstate(invalid="ignore"):
                    ok &= evaluate_interval(constraint.expression, boxes).hi <= 0.0
        return ok

    def inside_target(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Every vertex of the boxes ``(..., nx)`` has ``V <= c_T`` (V is convex: the box is inside T)."""
        law = self.law
        worst = np.zeros(lo.shape[:-1])
        for corner in itertools.product((0, 1), repeat=law.nx):
            vertex = np.where(np.array(corner, dtype=bool), hi, lo) - law.x_eq
            with np.errstate(invalid="ignore"):
                worst = np.maximum(worst, np.einsum("...i,ij,...j->...", vertex, law.P, vertex))
        return np.where(np.isfinite(worst), worst <= self.target_level * (1 - TARGET_SLACK), False)

    def verdicts(self, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """Per cell, from boxes ``(M, H+1, nx)``: (proven (M,), last step carried (M,))."""
        safe, inside = self.safe(lo, hi), self.inside_target(lo, hi)
        H = lo.shape[1] - 1
        safe_so_far = np.cumprod(safe, axis=1).astype(bool)
        done = inside & safe_so_far
        proven = done.any(axis=1)
        entry = np.where(proven, np.argmax(done, axis=1), H + 1)
        first_unsafe = np.where(safe_so_far.all(axis=1), H + 1, np.argmin(safe_so_far, axis=1))
        return proven, np.minimum(np.minimum(entry, first_unsafe), H)


def grid(box: np.ndarray, n: int) -> tuple:
    """The initial cells in our analysis's order: ``lo, hi (n^nx, nx)``."""
    nx = len(box)
    edges = [np.linspace(box[i, 0], box[i, 1], n + 1) for i in range(nx)]
    index = np.array(list(itertools.product(range(n), repeat=nx)))
    lo = np.array([[edges[i][k[i]] for i in range(nx)] for k in index])
    hi = np.array([[edges[i][k[i] + 1] for i in range(nx)] for k in index])
    return lo, hi


def immrax_bisection(runner: ImmraxRunner, judge: BoxJudge, box: np.ndarray, max_depth: int) -> tuple:
    """Our bisection passes with immrax's boxes: (proven fraction, final cells, the grid's boxes (M, H+1, nx) x 2)."""
    lo, hi = grid(box, CELLS_PER_AXIS)
    scale = box[:, 1] - box[:, 0]
    proven_volume, final_cells, analysed, first = 0.0, 0, 0, None
    for depth in range(max_depth + 1):
        boxes = runner.boxes(lo, hi)
        if first is None:
            first = boxes
        proven, _ = judge.verdicts(*boxes)
        analysed += len(lo)
        proven_volume += float(np.sum(np.prod(hi[proven] - lo[proven], axis=1)))
        failing = np.flatnonzero(~proven)
        last = depth == max_depth or analysed + 2 * len(failing) > MAX_CELLS or len(failing) == 0
        final_cells += int(proven.sum()) + (len(failing) if last else 0)
        if last:
            break
        lo_f, hi_f = lo[failing], hi[failing]
        axis = np.argmax((hi_f - lo_f) / scale, axis=1)
        rows = np.arange(len(failing))
        middle = (lo_f[rows, axis] + hi_f[rows, axis]) / 2
        hi_left, lo_right = hi_f.copy(), lo_f.copy()
        hi_left[rows, axis] = middle
        lo_right[rows, axis] = middle
        lo, hi = np.concatenate([lo_f, lo_right]), np.concatenate([hi_left, hi_f])
    return proven_volume / float(np.prod(scale)), final_cells, first


def sampled_escapes(model, law, lo_t, hi_t, carried, cell_lo, cell_hi, horizon, rng) -> tuple:
    """Random float64-law closed loops from each cell outside that cell's immrax box at a carried step:
    (escapes, loops)."""
    M, nx = cell_lo.shape
    owner = np.repeat(np.arange(M), SAMPLES_PER_CELL)
    x0 = rng.uniform(cell_lo[owner], cell_hi[owner])
    X = simulate(model, lambda X: evaluate(law, X).u, x0, horizon, law.P, law.c, law.x_eq, rows=False).x
    steps = np.arange(horizon + 1)[None, :]
    tracked = steps <= carried[owner][:, None]
    tol = 1e-9 * (1 + np.abs(X))
    outside = np.any((X < lo_t[owner] - tol) | (X > hi_t[owner] + tol), axis=2) & tracked
    return int(np.any(outside, axis=1).sum()), len(x0)


# -- one plant -----------------------------------------------------------------------------------------------
def ours(law, model, box, horizon, bisect: str, depth: int) -> reach.ReachResult:
    settings = reach.ReachSettings(cells_per_axis=CELLS_PER_AXIS, max_depth=depth, precision="float32",
                                   max_generators=MAX_GENERATORS, max_cells=MAX_CELLS, bisect=bisect)
    return reach.analyse(law, model, box[:, 0], box[:, 1], horizon, settings)


def proven_fraction(result: reach.ReachResult, box: np.ndarray) -> float:
    volume = sum(float(np.prod(c.hi - c.lo)) for c in result.cells if c.verified)
    return volume / float(np.prod(box[:, 1] - box[:, 0]))


def our_depth0_boxes(result: reach.ReachResult, M: int, horizon: int, nx: int) -> tuple:
    """Our sets' bounding boxes per grid cell and step (NaN where not carried), and the last step carried."""
    lo = np.full((M, horizon + 1, nx), np.nan)
    hi = np.full((M, horizon + 1, nx), np.nan)
    pieces = result.pieces
    lo[pieces["origin"], pieces["step"]] = pieces["lo"]
    hi[pieces["origin"], pieces["step"]] = pieces["hi"]
    last = np.zeros(M, dtype=int)
    np.maximum.at(last, pieces["origin"], pieces["step"])
    return lo, hi, last


def compare_plant(name: str, run: Path, rng, bisections: tuple) -> list:
    """Rows of the table for one plant's adapted run."""
    spec = load_plant_spec(run / "plant.yaml")
    law, model = law_from_run(run), build_plant(spec)
    box = np.asarray(spec.safety.initial_states.box, dtype=float)
    H = spec.safety.horizon
    f_jax = jax_discrete_map(model)
    law_tanh, law_logistic = jax_law(law, for_crown=False), jax_law(law, for_crown=True)
    mismatch = check_translation(model, law, f_jax, (law_tanh, law_logistic), box, rng)
    if mismatch > 1e-9:
        raise SystemExit(f"{name}: the JAX closed loop differs from scpo_ctrl's by {mismatch:.3g}")
    print(f"{name}: run {run}, box {box.tolist()}, horizon {H}, JAX translation within {mismatch:.1e}", flush=True)

    rows = []
    for bisect in bisections:
        start = time.perf_counter()
        result = ours(law, model, box, H, bisect, MAX_DEPTH)
        seconds = time.perf_counter() - start
        rows.append(dict(plant=name, method=f"ours ({bisect}{', verify default' if bisect == 'sensitive' else ''})",
                         fraction=proven_fraction(result, box), cells=len(result.cells), seconds=seconds,
                         compile=None, width=None, escapes=None))
        print(f"  {rows[-1]['method']}: {rows[-1]['fraction']:.4f} in {seconds:.1f} s", flush=True)
    c_T = result.target_level
    judge = BoxJudge(spec, law, c_T)
    start = time.perf_counter()
    depth0 = ours(law, model, box, H, "widest", 0)
    rows.append(dict(plant=name, method="ours, depth 0", fraction=proven_fraction(depth0, box), cells=len(depth0.cells),
                     seconds=time.perf_counter() - start, compile=None, width=None, escapes=None))
    immrax_depth, batched = IMMRAX_BUDGET[name]
    cell_lo, cell_hi = grid(box, CELLS_PER_AXIS)
    our_lo, our_hi, our_last = our_depth0_boxes(depth0, len(cell_lo), H, law.nx)
    for variant in VARIANTS:
        runner = ImmraxRunner.build(immrax_step(variant, f_jax, law_tanh, law_logistic, law.nx), law.nx, H, batched)
        start = time.perf_counter()
        runner.boxes(cell_lo[:1], cell_hi[:1])
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        fraction, cells, (lo_t, hi_t) = immrax_bisection(runner, judge, box, immrax_depth)
        seconds = time.perf_counter() - start
        _, carried = judge.verdicts(lo_t, hi_t)
        common = np.minimum(carried, our_last)
        at = np.arange(len(cell_lo))
        ratio = (hi_t[at, common] - lo_t[at, common]) / (our_hi[at, common] - our_lo[at, common])
        width = ", ".join(f"{state} {np.nanmedian(ratio[:, i]):.3g}x" for i, state in enumerate(spec.state_names))
        escapes, loops = sampled_escapes(model, law, lo_t, hi_t, carried, cell_lo, cell_hi, H, rng)
        rows.append(dict(plant=name, method=f"immrax {variant}, depth {immrax_depth}", fraction=fraction, cells=cells, seconds=seconds,
                         compile=compile_seconds, width=width, escapes=f"{escapes} / {loops}"))
        print(f"  immrax {variant}, depth {immrax_depth}: {fraction:.4f} in {seconds:.1f} s (+{compile_seconds:.1f} s compile), "
              f"width ratio {width}, escapes {escapes}/{loops}", flush=True)
    return rows


def adapted_run(plant: str, given: str | None, scratch: Path) -> Path:
    if given:
        return Path(given)
    from scpo_ctrl.adapt import AdaptRequest, run_adapt

    out = scratch / plant
    start = time.perf_counter()
    run_adapt(AdaptRequest(plant=str(ROOT / "models" / f"{plant}.yaml"), out=str(out), progress=False))
    print(f"{plant}: adapted (every default) in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def table(rows: list) -> str:
    lines = ["| plant | method | proven fraction of the box | final cells | wall s | JIT compile s "
             "| set width vs ours (median, same cells and step) | sampled loops outside the sets |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        compile_seconds = "" if r["compile"] is None else f"{r['compile']:.1f}"
        lines.append(f"| {r['plant']} | {r['method']} | {r['fraction']:.4f} | {r['cells']} | {r['seconds']:.1f} "
                     f"| {compile_seconds} | {r['width'] or ''} | {r['escapes'] or ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--double-integrator", help="adapted run of models/double_integrator.yaml (default: adapt)")
    parser.add_argument("--pendulum", help="adapted run of models/pendulum.yaml (default: adapt)")
    parser.add_argument("--widest", action="store_true", help="also run ours with immrax's bisection rule")
    parser.add_argument("--plants", default=",".join(PLANTS), help="comma-separated subset of " + ",".join(PLANTS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reach_immrax.md"))
    args = parser.parse_args(argv)
    plants = [p for p in args.plants.split(",") if p]
    unknown = sorted(set(plants) - set(PLANTS))
    if unknown:
        print(f"--plants: unknown plant(s) {', '.join(unknown)} (choose from {', '.join(PLANTS)})", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for plant in plants:
            run = adapted_run(plant, getattr(args, plant), Path(scratch))
            if not (run / "plant.yaml").is_file() or not (run / "policy.npz").is_file():
                print(f"--{plant.replace('_', '-')}: {run} is not an adapted run (plant.yaml or policy.npz missing)",
                      file=sys.stderr)
                return 2
            if load_plant_spec(run / "plant.yaml").name != plant:
                print(f"--{plant.replace('_', '-')}: {run} is a run of another plant", file=sys.stderr)
                return 2
            rows += compare_plant(plant, run, rng, ("sensitive", "widest") if args.widest else ("sensitive",))
    text = (f"`{' '.join(['python', *sys.argv])}` (immrax {metadata.version('immrax')}, jax {jax.__version__}, "
            f"{os.cpu_count()} cores)\n\n" + table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    partial.write_text(text)
    os.replace(partial, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
