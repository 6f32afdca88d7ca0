"""The embedded MPC backup: a linear MPC solved by a fixed number of Riccati-factored ADMM iterations.

The quadratic programme, in deviations ``dx = x - x_eq``, ``du = u - u_eq`` from the state ``x``::

    minimise   sum_{k<N} 1/2 (dx_k' Q dx_k + du_k' R du_k) + 1/2 dx_N' P dx_N
               + mu sum_{0<k<N} dist_1(x_k, [x_min', x_max'])  + mu dist_2(L' dx_N, ball(sqrt(c)))
    subject to dx_0 = x - x_eq,  dx_{k+1} = A dx_k + B du_k     (the linearisation of the plant's
                                                                  discrete map, substeps included)
               u_min <= u_k <= u_max                            (hard)

with ``P = L L'`` the LQR's Riccati matrix, so that ``|L' dx_N| <= sqrt(c)`` is the target set
``V(x_N) <= c``, and ``x_min', x_max'`` the state limits tightened by ``backup.tighten``. The state
limits and the terminal set are exact (L1) penalties: the problem is feasible from every state, the
solver always returns an input, and where the hard problem is feasible and ``mu`` exceeds its
multipliers both have the same solution. Whether a closed loop is safe is judged by simulation.

ADMM splitting (scaled form, relaxation ``alpha``): the dynamics stay in the primal step, an
equality-constrained LQR with the ADMM penalties added to its weights, solved by a backward and a
forward pass with Riccati gains computed here, offline, in float64; the consensus copies of the
inputs (clamped onto their box), of the states x_1..x_{N-1} (prox of the box penalty, closed form)
and of ``w = L' dx_N`` (prox of the ball penalty, closed form: one square root) carry the
constraints. The iteration count is fixed, so the work per step is fixed; cold start (every copy
and multiplier zero) at every step, so the backup is a function of the state alone. The input
applied is the clamped copy of ``u_0``: always within the input limits.

The float32 C of :mod:`.embedded_mpc_codegen` performs exactly these operations;
:func:`admm_solve` here is their numpy reference (float64 by default, for checks and the
penalty-parameter choice), :mod:`.embedded_qp` the exact solution of the same QP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..plant.model import PlantModel
from .lqr import LqrBackup

#: L1 penalty on state-limit and terminal-set violation [cost per state unit] (as the acados MPC's)
PENALTY = 1e3
#: ADMM over-relaxation
RELAXATION = 1.6
#: candidate penalty scales sigma (rho_i = sigma / s_i^2, s_i a constraint's half-width), chosen offline
SIGMA_GRID = tuple(float(v) for v in np.logspace(-2, 3, 16))
#: states the penalty scale is chosen on: this many seeded draws over the validation box (not its points)
TUNING_STATES = 64
TUNING_SEED = 12345
#: a bound standing for "none" in float32 C (finite, so no infinities reach the arithmetic)
NO_BOUND = 1e30
FORMULATION_VERSION = "scpo-empc/1"


@dataclass(frozen=True)
class EmbeddedMpcFormulation:
    """The linear MPC's numbers (see the module docstring).

    Attributes
    ----------
    name : str
        Plant name (C identifiers and file names are derived from it).
    N : int
        Horizon [steps].
    iterations : int
        ADMM iterations per step (fixed work).
    A, B : ndarray, shapes (nx, nx), (nx, nu)
        Linearisation of the plant's discrete map at the equilibrium.
    Q, R, P : ndarray
        Stage and terminal weights (P: the LQR's Riccati matrix).
    c : float
        Target-set level: V(x_N) = dx_N' P dx_N <= c.
    x_eq, u_eq : ndarray, shapes (nx,), (nu,)
    u_min, u_max : ndarray, shape (nu,)
        Input bounds (+-inf where none).
    x_min, x_max : ndarray, shape (nx,)
        Tightened state limits (+-inf where none), soft on x_1 .. x_{N-1}.
    tuning_box : ndarray, shape (nx, 2)
        Where the penalty scale is chosen (:func:`choose_gains`): the validation set's box.
    """

    name: str
    N: int
    iterations: int
    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    P: np.ndarray
    c: float
    x_eq: np.ndarray
    u_eq: np.ndarray
    u_min: np.ndarray
    u_max: np.ndarray
    x_min: np.ndarray
    x_max: np.ndarray
    tuning_box: np.ndarray

    @property
    def nx(self) -> int:
        return self.A.shape[0]

    @property
    def nu(self) -> int:
        return self.B.shape[1]

    # the acados MPC's interface, as far as the law and the export use it
    @property
    def solver(self) -> str:
        return "admm"


def embedded_formulation_for(model: PlantModel, lqr: LqrBackup, level: float) -> EmbeddedMpcFormulation:
    """The embedded MPC of a plant whose spec asks for ``backup: {type: mpc, solver: admm}``."""
    spec = model.spec
    x_min = np.array([-np.inf if v.min is None else v.min for v in spec.states])
    x_max = np.array([np.inf if v.max is None else v.max for v in spec.states])
    tighten = spec.backup.tighten
    with np.errstate(invalid="ignore"):
        x_min_t = np.where(np.isfinite(x_min), x_min + tighten * (lqr.x_eq - x_min), -np.inf)
        x_max_t = np.where(np.isfinite(x_max), x_max - tighten * (x_max - lqr.x_eq), np.inf)
    return EmbeddedMpcFormulation(
        name=spec.name, N=int(spec.backup.horizon), iterations=int(spec.backup.iterations),
        A=np.array(lqr.linear.A, dtype=float), B=np.array(lqr.linear.B, dtype=float),
        Q=np.array(spec.backup.Q, dtype=float), R=np.array(spec.backup.R, dtype=float), P=np.array(lqr.P, dtype=float),
        c=float(level), x_eq=np.array(lqr.x_eq, dtype=float), u_eq=np.array(lqr.u_eq, dtype=float),
        u_min=np.array(lqr.u_min, dtype=float), u_max=np.array(lqr.u_max, dtype=float), x_min=x_min_t, x_max=x_max_t,
        tuning_box=_validation_box(spec),
    )


def _validation_box(spec) -> np.ndarray:
    """The validation set's box ``(nx, 2)``: the file's ``box``, or the bounding box of its ``points``."""
    initial = spec.safety.initial_states
    if initial.box is not None:
        return np.array(initial.box, dtype=float)
    points = np.asarray(initial.points, dtype=float)
    return np.stack([points.min(axis=0), points.max(axis=0)], axis=1)


@dataclass(frozen=True)
class AdmmGains:
    """Everything the ADMM iteration needs, computed offline (float64; the C stores them as float32).

    Attributes
    ----------
    sigma : float
        Penalty scale: ``rho_u = sigma / s_u^2`` etc.
    rho_u : ndarray, shape (nu,)
    rho_x : ndarray, shape (nx,)
        Zero for a state with no limit.
    rho_T : float
        Of the terminal copy ``w = L' dx_N``.
    K : ndarray, shape (N, nu, nx)
        Feedback gains of the penalised LQR, stage by stage.
    G : ndarray, shape (N, nu, nx)
        ``(R~ + B' P_{k+1} B)^{-1} B'``.
    Hinv : ndarray, shape (N, nu, nu)
        ``(R~ + B' P_{k+1} B)^{-1}``.
    AclT : ndarray, shape (N, nx, nx)
        ``(A - B K_k)'``.
    L : ndarray, shape (nx, nx)
        Lower Cholesky factor of P.
    du_min, du_max : ndarray, shape (nu,)
        Input bounds in deviations (+-NO_BOUND where none).
    dx_min, dx_max : ndarray, shape (nx,)
        Tightened state limits in deviations (+-NO_BOUND where none).
    tau_x : ndarray, shape (nx,)
        ``PENALTY / rho_x`` (0 where no limit).
    radius : float
        ``sqrt(c)``.
    tau_T : float
        ``PENALTY / rho_T``.
    """

    sigma: float
    rho_u: np.ndarray
    rho_x: np.ndarray
    rho_T: float
    K: np.ndarray
    G: np.ndarray
    Hinv: np.ndarray
    AclT: np.ndarray
    L: np.ndarray
    du_min: np.ndarray
    du_max: np.ndarray
    dx_min: np.ndarray
    dx_max: np.ndarray
    tau_x: np.ndarray
    radius: float
    tau_T: float

    def as_float32(self) -> "AdmmGains":
        """The gains rounded to float32 and back (what the C stores)."""
        values = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            values[name] = np.asarray(value, dtype=np.float32).astype(float) if np.ndim(value) else \
                float(np.float32(value))
        return AdmmGains(**values)


def _half_width(low: np.ndarray, high: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """A scale per variable: the distance from ``centre`` to its nearer finite bound (inf when none)."""
    with np.errstate(invalid="ignore"):
        return np.minimum(np.where(np.isfinite(high), high - centre, np.inf),
                          np.where(np.isfinite(low), centre - low, np.inf))


def admm_gains(F: EmbeddedMpcFormulation, sigma: float) -> AdmmGains:
    """Riccati recursion of the penalised LQR for penalty scale ``sigma`` (float64)."""
    nx, nu, N = F.nx, F.nu, F.N
    s_u = _half_width(F.u_min, F.u_max, F.u_eq)
    s_x = _half_width(F.x_min, F.x_max, F.x_eq)
    rho_u = np.where(np.isfinite(s_u), sigma / np.where(np.isfinite(s_u), s_u, 1.0) ** 2, 0.0)
    rho_x = np.where(np.isfinite(s_x), sigma / np.where(np.isfinite(s_x), s_x, 1.0) ** 2, 0.0)
    rho_T = sigma / F.c
    Qt, Rt = F.Q + np.diag(rho_x), F.R + np.diag(rho_u)
    Pk = (1.0 + rho_T) * F.P
    K, G, Hinv, AclT = (np.zeros((N, nu, nx)), np.zeros((N, nu, nx)), np.zeros((N, nu, nu)), np.zeros((N, nx, nx)))
    for k in range(N - 1, -1, -1):
        H = Rt + F.B.T @ Pk @ F.B
        Hi = np.linalg.inv(0.5 * (H + H.T))
        K[k] = Hi @ F.B.T @ Pk @ F.A
        G[k] = Hi @ F.B.T
        Hinv[k] = Hi
        Acl = F.A - F.B @ K[k]
        AclT[k] = Acl.T
        Pk = Qt + F.A.T @ Pk @ Acl
        Pk = 0.5 * (Pk + Pk.T)
    with np.errstate(invalid="ignore"):
        du_min = np.where(np.isfinite(F.u_min), F.u_min - F.u_eq, -NO_BOUND)
        du_max = np.where(np.isfinite(F.u_max), F.u_max - F.u_eq, NO_BOUND)
        dx_min = np.where(np.isfinite(F.x_min), F.x_min - F.x_eq, -NO_BOUND)
        dx_max = np.where(np.isfinite(F.x_max), F.x_max - F.x_eq, NO_BOUND)
    tau_x = np.where(rho_x > 0, PENALTY / np.where(rho_x > 0, rho_x, 1.0), 0.0)
    return AdmmGains(sigma=float(sigma), rho_u=rho_u, rho_x=rho_x, rho_T=float(rho_T), K=K, G=G, Hinv=Hinv, AclT=AclT,
                     L=np.linalg.cholesky(F.P), du_min=du_min, du_max=du_max, dx_min=dx_min, dx_max=dx_max,
                     tau_x=tau_x, radius=float(np.sqrt(F.c)), tau_T=float(PENALTY / rho_T))


@dataclass(frozen=True)
class AdmmSolution:
    """The ADMM iterate after the fixed iteration count, for a batch of B states.

    Attributes
    ----------
    u : ndarray, shape (B, nu)
        The input applied: the clamped copy of u_0, plus u_eq.
    du : ndarray, shape (B, N, nu)
        The primal inputs (deviations) of the last iteration.
    dx : ndarray, shape (B, N + 1, nx)
        The primal states (deviations) of the last iteration.
    """

    u: np.ndarray
    du: np.ndarray
    dx: np.ndarray


def admm_solve(F: EmbeddedMpcFormulation, gains: AdmmGains, X: np.ndarray, iterations: int | None = None,
               relaxation: float = RELAXATION) -> AdmmSolution:
    """The ADMM of the module docstring on the rows of ``X (B, nx)``, in float64 (numpy reference)."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    iterations = F.iterations if iterations is None else int(iterations)
    g = gains
    B_, nx, nu, N = X.shape[0], F.nx, F.nu, F.N
    zu, yu = np.zeros((B_, N, nu)), np.zeros((B_, N, nu))
    zx, yx = np.zeros((B_, N, nx)), np.zeros((B_, N, nx))  # index 0 unused (x_0 is given)
    zw, yw = np.zeros((B_, nx)), np.zeros((B_, nx))
    du, dx = np.zeros((B_, N, nu)), np.zeros((B_, N + 1, nx))
    dx0 = X - F.x_eq
    for _ in range(iterations):
        # backward pass: linear terms of the penalised LQR
        p = -g.rho_T * (zw - yw) @ g.L.T
        d = np.zeros((B_, N, nu))
        for k in range(N - 1, -1, -1):
            r = -g.rho_u * (zu[:, k] - yu[:, k])
            d[:, k] = r @ g.Hinv[k].T + p @ g.G[k].T
            if k > 0:
                q = -g.rho_x * (zx[:, k] - yx[:, k])
                p = q - r @ g.K[k] + p @ g.AclT[k].T
        # forward pass
        dx[:, 0] = dx0
        for k in range(N):
            du[:, k] = -dx[:, k] @ g.K[k].T - d[:, k]
            dx[:, k + 1] = dx[:, k] @ F.A.T + du[:, k] @ F.B.T
        # consensus copies (relaxed) and multipliers
        hu = relaxation * du + (1.0 - relaxation) * zu
        vu = hu + yu
        zu = np.clip(vu, g.du_min, g.du_max)
        yu = vu - zu
        hx = relaxation * dx[:, 1:N] + (1.0 - relaxation) * zx[:, 1:]
        vx = hx + yx[:, 1:]
        zx_new = _soft_box(vx, g.dx_min, g.dx_max, g.tau_x)
        yx[:, 1:] = vx - zx_new
        zx[:, 1:] = zx_new
        hw = relaxation * (dx[:, N] @ g.L) + (1.0 - relaxation) * zw
        vw = hw + yw
        zw = _soft_ball(vw, g.radius, g.tau_T)
        yw = vw - zw
    return AdmmSolution(u=zu[:, 0] + F.u_eq, du=du, dx=dx)


def _soft_box(v: np.ndarray, low: np.ndarray, high: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Prox of ``rho dist_1(., [low, high])``: values outside move toward the box by ``tau`` at most."""
    return np.where(v > high, np.maximum(high, v - tau), np.where(v < low, np.minimum(low, v + tau), v))


def _soft_ball(v: np.ndarray, radius: float, tau: float) -> np.ndarray:
    """Prox of ``rho dist_2(., ball(radius))``: outside, the radius shrinks by ``tau``, not below ``radius``."""
    norm = np.sqrt(np.sum(v * v, axis=-1, keepdims=True))
    scale = np.where(norm > radius, np.maximum(radius, norm - tau) / np.where(norm > 0, norm, 1.0), 1.0)
    return v * scale


def tuning_states(F: EmbeddedMpcFormulation) -> np.ndarray:
    """Seeded uniform draws ``(TUNING_STATES, nx)`` over the validation box (other points than the validation
    set's low-discrepancy ones)."""
    rng = np.random.default_rng(TUNING_SEED)
    return rng.uniform(F.tuning_box[:, 0], F.tuning_box[:, 1], size=(TUNING_STATES, F.nx))


def input_scale(F: EmbeddedMpcFormulation) -> np.ndarray:
    """Per input, the unit its solver errors are measured in ``(nu,)``: half the input range, or 1 (in the
    input's own unit) for an input with a missing bound."""
    width = F.u_max - F.u_min
    return np.where(np.isfinite(width), 0.5 * np.where(np.isfinite(width), width, 2.0), 1.0)


def choose_gains(F: EmbeddedMpcFormulation, exact_inputs) -> AdmmGains:
    """The gains whose penalty scale (from :data:`SIGMA_GRID`) gives the smallest worst error, after
    ``F.iterations`` iterations, against ``exact_inputs(X) -> U (B, nu)`` on :func:`tuning_states`
    (errors in units of each input's half-range). Deterministic: same formulation, same gains."""
    X = tuning_states(F)
    exact = exact_inputs(X)
    scale = input_scale(F)
    best, best_error = None, np.inf
    for sigma in SIGMA_GRID:
        gains = admm_gains(F, sigma)
        error = float(np.max(np.abs(admm_solve(F, gains.as_float32(), X).u - exact) / scale))
        if error < best_error:
            best, best_error = gains, error
    return best
