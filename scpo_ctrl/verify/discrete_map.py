"""A first-order model of a plant's discrete map with a sound remainder (for nonlinear reachability).

The map is the plant model's CasADi function ``f(x, u)``: the plant file's integrator with its substeps,
exactly as simulated (a verdict built on it is about this discrete map, not the ODE). Over a box
``z = (x, u) in [z_c - r, z_c + r]`` the mean-value theorem gives, row by row,

    f(z) = f(z_c) + J(zeta_i) (z - z_c)      for some zeta_i on the segment [z_c, z],

so with ``[J]`` an interval enclosure of the Jacobian over the box and ``J_c`` the Jacobian at the centre,

    f(z) in f(z_c) + J_c (z - z_c) + rho,    |rho_i| <= sum_j max(|[J]_ij - J_c,ij|) r_j.

``[J]`` comes from interval arithmetic (:mod:`scpo_ctrl.plant.interval`, outward rounded) run op by op over
the SX graph of CasADi's Jacobian of ``f`` (:class:`IntervalProgram`). ``f(z_c)`` and ``J_c`` are float64
evaluations; any ``J_c`` keeps the form valid, and ``f(z_c)``'s own rounding is covered by a relative widening
of ``ROUND_OFF_WIDENING``.
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..plant import interval as iv
from ..plant.interval import Interval
from ..plant.model import PlantModel

ROUND_OFF_WIDENING = 1e-12  # relative and absolute slack for this module's float64 arithmetic


class UnsupportedOperation(ValueError):
    """The map uses a CasADi operation that has no interval rule here."""


def _square(a: Interval) -> Interval:
    crosses = (a.lo <= 0.0) & (a.hi >= 0.0)
    low = np.where(crosses, 0.0, np.minimum(a.lo * a.lo, a.hi * a.hi))
    result = iv._outward(low, np.maximum(a.lo * a.lo, a.hi * a.hi))
    return Interval(np.maximum(result.lo, 0.0), result.hi)


def _reciprocal(a: Interval) -> Interval:
    return iv.div(Interval(np.ones_like(a.lo), np.ones_like(a.hi)), a)


def _atan2(a: Interval, b: Interval) -> Interval:
    return Interval(np.full_like(a.lo, -np.pi), np.full_like(a.lo, np.pi))


_UNARY = {
    ca.OP_ASSIGN: lambda a: a,
    ca.OP_NEG: lambda a: Interval(-a.hi, -a.lo),
    ca.OP_TWICE: lambda a: Interval(2.0 * a.lo, 2.0 * a.hi),  # exact in binary floating point
    ca.OP_SQ: _square,
    ca.OP_INV: _reciprocal,
    ca.OP_SQRT: iv.sqrt_, ca.OP_SIN: iv.sin_, ca.OP_COS: iv.cos_, ca.OP_TAN: iv.tan_, ca.OP_EXP: iv.exp_,
    ca.OP_LOG: iv.log_, ca.OP_FABS: iv.abs_, ca.OP_TANH: iv.FUNCTIONS["tanh"], ca.OP_ATAN: iv.FUNCTIONS["atan"],
    ca.OP_ASIN: iv.FUNCTIONS["asin"], ca.OP_ACOS: iv.FUNCTIONS["acos"],
}
_BINARY = {
    ca.OP_ADD: iv.add, ca.OP_SUB: iv.sub, ca.OP_MUL: iv.mul, ca.OP_DIV: iv.div, ca.OP_POW: iv.power,
    ca.OP_CONSTPOW: iv.power, ca.OP_ATAN2: _atan2,
    ca.OP_FMIN: lambda a, b: Interval(np.minimum(a.lo, b.lo), np.minimum(a.hi, b.hi)),
    ca.OP_FMAX: lambda a, b: Interval(np.maximum(a.lo, b.lo), np.maximum(a.hi, b.hi)),
}
_OPERATION_NAMES = {getattr(ca, name): name for name in dir(ca) if name.startswith("OP_")}


@dataclass(frozen=True)
class IntervalProgram:
    """A CasADi SX function of one vector input, evaluated by interval arithmetic op by op.

    Attributes
    ----------
    instructions : tuple
        ``(op, inputs, outputs, constant)`` per instruction of the SX algorithm.
    n_in : int
        Length of the input vector.
    outputs : tuple
        Per output, ``(rows, cols, row indices, col indices)`` of its structural non-zeros.
    work : int
        Size of the work vector.
    """

    instructions: tuple
    n_in: int
    outputs: tuple
    work: int

    @classmethod
    def of(cls, function: ca.Function) -> "IntervalProgram":
        """Compile an SX function with one input; raise :class:`UnsupportedOperation` for an unknown op."""
        instructions = []
        for k in range(function.n_instructions()):
            op = function.instruction_id(k)
            known = op in _UNARY or op in _BINARY or op in (ca.OP_CONST, ca.OP_INPUT, ca.OP_OUTPUT)
            if not known:
                raise UnsupportedOperation(f"no interval rule for CasADi {_OPERATION_NAMES.get(op, op)}")
            instructions.append((op, tuple(function.instruction_input(k)), tuple(function.instruction_output(k)),
                                 float(function.instruction_constant(k)) if op == ca.OP_CONST else 0.0))
        outputs = []
        for i in range(function.n_out()):
            sparsity = function.sparsity_out(i)
            rows, cols = sparsity.get_triplet()
            outputs.append((sparsity.size1(), sparsity.size2(), np.array(rows, dtype=int), np.array(cols, dtype=int)))
        return cls(tuple(instructions), function.size1_in(0), tuple(outputs), function.sz_w())

    def evaluate(self, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """Enclosures of every output over the boxes ``[lo, hi]``, each ``(M, n_in)``.

        Returns
        -------
        tuple of Interval
            Per output, dense ``(M, rows, cols)`` bounds (structural zeros exactly 0).
        """
        M = len(lo)
        work = [None] * self.work
        result = [(np.zeros((M, r, c)), np.zeros((M, r, c))) for r, c, _, _ in self.outputs]
        for op, inputs, outputs, constant in self.instructions:
            if op == ca.OP_CONST:
                work[outputs[0]] = Interval(np.full(M, constant), np.full(M, constant))
            elif op == ca.OP_INPUT:
                work[outputs[0]] = Interval(lo[:, inputs[1]], hi[:, inputs[1]])
            elif op == ca.OP_OUTPUT:
                out, nz = outputs
                _, _, rows, cols = self.outputs[out]
                value = work[inputs[0]]
                result[out][0][:, rows[nz], cols[nz]] = value.lo
                result[out][1][:, rows[nz], cols[nz]] = value.hi
            elif op in _UNARY:
                work[outputs[0]] = _UNARY[op](work[inputs[0]])
            else:
                work[outputs[0]] = _BINARY[op](work[inputs[0]], work[inputs[1]])
        return tuple(Interval(a, b) for a, b in result)


@dataclass(frozen=True)
class FirstOrderModel:
    """``f(z) in value + jacobian (z - z_c) + [-remainder, remainder]`` over a box around ``z_c``.

    Attributes
    ----------
    value : ndarray, shape (M, nx)
        ``f(z_c)`` (float64).
    jacobian : ndarray, shape (M, nx, nx + nu)
        ``[J_x, J_u]`` at the centre.
    remainder : ndarray, shape (M, nx)
        Half-width of the remainder interval (>= 0; ``inf`` where the enclosure is not finite).
    """

    value: np.ndarray
    jacobian: np.ndarray
    remainder: np.ndarray


@dataclass(frozen=True)
class DiscreteMap:
    """The plant's discrete map ``x+ = f(x, u)`` with what its first-order model needs.

    Attributes
    ----------
    nx, nu : int
    numeric : casadi.Function
        ``z (nx + nu,) -> (f (nx,), J (nx, nx + nu))`` in float64, mapped over batches.
    jacobian_program : IntervalProgram
        ``z -> J`` by interval arithmetic.
    """

    nx: int
    nu: int
    numeric: ca.Function
    jacobian_program: IntervalProgram

    @classmethod
    def of(cls, model: PlantModel) -> "DiscreteMap":
        """Build from the model's ``f`` (raises :class:`UnsupportedOperation` if its graph has an op
        without an interval rule)."""
        z = ca.SX.sym("z", model.nx + model.nu)
        x_next = model.f(z[:model.nx], z[model.nx:])
        jacobian = ca.jacobian(x_next, z)
        numeric = ca.Function("f_and_jacobian", [z], [x_next, jacobian])
        program = IntervalProgram.of(ca.Function("jacobian", [z], [jacobian]))
        return cls(model.nx, model.nu, numeric, program)

    def jacobian_enclosure(self, z_lo: np.ndarray, z_hi: np.ndarray) -> Interval:
        """``[J]`` over boxes ``(M, nx + nu)``: ``(M, nx, nx + nu)`` bounds."""
        return self.jacobian_program.evaluate(z_lo, z_hi)[0]

    def at(self, z: np.ndarray) -> tuple:
        """``f(z)`` (M, nx) and ``J(z)`` (M, nx, nx + nu) in float64 at points ``z`` (M, nx + nu)."""
        M, n = z.shape
        value, jacobian = self.numeric.map(M)(z.T)
        value = np.array(value, dtype=float).reshape(self.nx, M).T
        jacobian = np.array(jacobian, dtype=float).reshape(self.nx, M, n).transpose(1, 0, 2)  # [J_1 J_2 ...]
        return value, jacobian

    def first_order(self, z_centre: np.ndarray, z_radius: np.ndarray) -> FirstOrderModel:
        """The first-order model with mean-value remainder over the boxes ``z_centre +- z_radius``.

        Parameters
        ----------
        z_centre, z_radius : ndarray, shape (M, nx + nu)

        Returns
        -------
        FirstOrderModel
        """
        value, J_c = self.at(z_centre)
        enclosure = self.jacobian_enclosure(z_centre - z_radius, z_centre + z_radius)
        spread = np.maximum(np.abs(enclosure.lo - J_c), np.abs(enclosure.hi - J_c))  # (M, nx, nz)
        with np.errstate(invalid="ignore"):
            remainder = np.einsum("mij,mj->mi", spread, z_radius)
        slack = ROUND_OFF_WIDENING * (1.0 + np.abs(value) + remainder
                                      + np.einsum("mij,mj->mi", np.abs(J_c), np.abs(z_centre) + z_radius))
        remainder = remainder + slack
        finite = np.isfinite(remainder) & np.all(np.isfinite(J_c), axis=2) & np.isfinite(value)
        return FirstOrderModel(np.where(finite, value, 0.0), np.where(finite[:, :, None], J_c, 0.0),
                               np.where(finite, remainder, np.inf))
