"""The plant as CasADi functions: discrete dynamics, safety rows, linearisation."""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..config.plant_spec import PlantSpec, require_backup
from ..errors import SpecError
from .linear import LinearModel, discretise_zoh

EQUILIBRIUM_TOLERANCE = 1e-8


@dataclass(frozen=True)
class ConstraintRow:
    """One safety row ``g(x, u) <= 0``.

    Attributes
    ----------
    name : str
        ``<state>.max``, ``<state>.min``, ``<input>.max``, ``<input>.min`` or the
        name of an extra constraint from the file.
    kind : {'state', 'input', 'extra'}
    description : str
        Human-readable form, e.g. ``p <= 5 m``.
    """

    name: str
    kind: str
    description: str


@dataclass(frozen=True)
class PlantModel:
    """A plant built from its spec.

    Attributes
    ----------
    spec : PlantSpec
    f : casadi.Function
        ``(x (nx,), u (nu,)) -> x_next (nx,)``: one control period ``dt``.
    rows : tuple of ConstraintRow
        The safety rows of ``g`` (state bounds, then extra constraints).
    g : casadi.Function
        ``(x, u) -> g (len(rows),)``; safe where every entry is <= 0.
    input_rows : tuple of ConstraintRow
    g_input : casadi.Function
        ``(x, u) -> (len(input_rows),)``: the input limits as rows.
    dynamics_affine : bool
        True when ``f`` is affine in (x, u) (exact target-set formulas apply).
    """

    spec: PlantSpec
    f: ca.Function
    rows: tuple
    g: ca.Function
    input_rows: tuple
    g_input: ca.Function
    dynamics_affine: bool

    @property
    def nx(self) -> int:
        return self.spec.nx

    @property
    def nu(self) -> int:
        return self.spec.nu

    def row_affine(self) -> tuple:
        """For each row of ``g``: is it affine in (x, u)?"""
        x, u = ca.SX.sym("x", self.nx), ca.SX.sym("u", self.nu)
        z = ca.vertcat(x, u)
        J = ca.jacobian(self.g(x, u), z)
        return tuple(not ca.depends_on(J[i, :], z) for i in range(J.shape[0]))

    def linearise(self) -> LinearModel:
        """Jacobians of ``f`` at the equilibrium (CasADi AD), a discrete-time model."""
        x, u = ca.SX.sym("x", self.nx), ca.SX.sym("u", self.nu)
        x_next = self.f(x, u)
        jac = ca.Function("jacobians", [x, u], [ca.jacobian(x_next, x), ca.jacobian(x_next, u)])
        A, B = (np.array(M, dtype=float) for M in jac(self.spec.x_eq, self.spec.u_eq))
        return LinearModel(A=A, B=B, x_eq=np.array(self.spec.x_eq), u_eq=np.array(self.spec.u_eq), dt=self.spec.dt)


def build_plant(spec: PlantSpec, open_loop: bool = False) -> PlantModel:
    """Build the CasADi model and check the equilibrium.

    ``open_loop`` (``verify --controller``): the file needs no equilibrium or backup (checked when given); the
    rows of ``g`` are then every constraint, windowed ones included (their windows apply where they are used).

    Raises
    ------
    SpecError
        If the equilibrium is not one, or lies on or outside a safety row; without ``open_loop``, a schema
        version 2 file without an equilibrium or backup, or with windowed rows, a goal set or unsafe boxes.
    """
    if not open_loop:
        require_backup(spec)
    x = ca.SX.sym("x", spec.nx)
    u = ca.SX.sym("u", spec.nu)
    symbols = {name: x[i] for i, name in enumerate(spec.state_names)}
    symbols.update({name: u[j] for j, name in enumerate(spec.input_names)})

    x_next, residual = _dynamics(spec, x, u, symbols)
    f = ca.Function("f", [x, u], [x_next], ["x", "u"], ["x_next"])
    if spec.x_eq is not None:
        _check_equilibrium(spec, ca.Function("residual", [x, u], [residual]))

    rows, expressions = _bound_rows(spec.states, x, "state")
    for constraint in spec.constraints:
        rows.append(ConstraintRow(constraint.name, "extra", f"{constraint.expression.text} <= 0"))
        expressions.append(constraint.expression.to_casadi(symbols))
    g = ca.Function("g", [x, u], [ca.vertcat(*expressions) if expressions else ca.SX(0, 1)], ["x", "u"], ["g"])

    input_rows, input_expressions = _bound_rows(spec.inputs, u, "input")
    g_input = ca.Function("g_input", [x, u], [ca.vertcat(*input_expressions)], ["x", "u"], ["g"])

    z = ca.vertcat(x, u)
    affine = not ca.depends_on(ca.jacobian(x_next, z), z)
    model = PlantModel(spec, f, tuple(rows), g, tuple(input_rows), g_input, affine)
    if spec.x_eq is not None and not open_loop:
        _check_equilibrium_inside(model)
    return model


def _dynamics(spec: PlantSpec, x, u, symbols):
    """Return ``(x_next, residual)``; the residual is zero at an equilibrium."""
    dynamics = spec.dynamics
    if dynamics.kind == "next":
        x_next = ca.vertcat(*(e.to_casadi(symbols) for e in dynamics.expressions))
        return x_next, x_next - x
    if dynamics.kind == "linear":
        A, B = np.array(dynamics.A), np.array(dynamics.B)
        if dynamics.continuous:
            Ad, Bd = discretise_zoh(A, B, spec.dt)
            return ca.mtimes(Ad, x) + ca.mtimes(Bd, u), ca.mtimes(A, x) + ca.mtimes(B, u)
        x_next = ca.mtimes(A, x) + ca.mtimes(B, u)
        return x_next, x_next - x
    xdot = ca.vertcat(*(e.to_casadi(symbols) for e in dynamics.expressions))
    ode = ca.Function("ode", [x, u], [xdot])
    h = spec.dt / dynamics.substeps
    x_next = x
    for _ in range(dynamics.substeps):
        if dynamics.integrator == "euler":
            x_next = x_next + h * ode(x_next, u)
        else:
            k1 = ode(x_next, u)
            k2 = ode(x_next + h / 2 * k1, u)
            k3 = ode(x_next + h / 2 * k2, u)
            k4 = ode(x_next + h * k3, u)
            x_next = x_next + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x_next, xdot


def _bound_rows(variables: tuple, symbols, kind: str):
    """Rows ``v - max <= 0`` and ``min - v <= 0`` for each bounded state or input."""
    rows, expressions = [], []
    for i, variable in enumerate(variables):
        unit = f" {variable.unit}" if variable.unit else ""
        if variable.max is not None:
            rows.append(ConstraintRow(f"{variable.name}.max", kind, f"{variable.name} <= {variable.max:g}{unit}"))
            expressions.append(symbols[i] - variable.max)
        if variable.min is not None:
            rows.append(ConstraintRow(f"{variable.name}.min", kind, f"{variable.name} >= {variable.min:g}{unit}"))
            expressions.append(variable.min - symbols[i])
    return rows, expressions


def _check_equilibrium(spec: PlantSpec, residual_fn: ca.Function) -> None:
    residual = np.array(residual_fn(spec.x_eq, spec.u_eq), dtype=float).ravel()
    scale = 1.0 + float(np.abs(spec.x_eq).max(initial=0.0))
    worst = int(np.argmax(np.abs(residual))) if residual.size else 0
    if not np.all(np.isfinite(residual)) or abs(residual[worst]) > EQUILIBRIUM_TOLERANCE * scale:
        what = "dx/dt" if spec.dynamics.kind == "ode" or spec.dynamics.continuous else "x_next - x"
        shown = ", ".join(f"{r:.3g}" for r in residual)
        raise SpecError(
            spec.source, "equilibrium",
            f"x={list(spec.x_eq)}, u={list(spec.u_eq)} is not an equilibrium: {what} = [{shown}] "
            f"(largest in state {spec.state_names[worst]!r}; tolerance {EQUILIBRIUM_TOLERANCE:g})",
        )


def _check_equilibrium_inside(model: PlantModel) -> None:
    spec = model.spec
    for rows, function in ((model.rows, model.g), (model.input_rows, model.g_input)):
        values = np.array(function(spec.x_eq, spec.u_eq), dtype=float).ravel()
        for row, value in zip(rows, values):
            if not np.isfinite(value) or value >= 0.0:
                raise SpecError(
                    spec.source, "equilibrium",
                    f"the equilibrium is not strictly inside constraint {row.name!r} ({row.description}): "
                    f"value {value:.3g}, needs < 0",
                )


def evaluate_rows(function: ca.Function, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A row function such as ``PlantModel.g`` on a batch: ``x (N, nx)``, ``u (N, nu)`` -> ``(N, n_rows)``."""
    n = function.size1_out(0)
    if n == 0:
        return np.zeros((len(x), 0))
    return np.array(function.map(len(x))(x.T, u.T), dtype=float).reshape(n, len(x)).T
