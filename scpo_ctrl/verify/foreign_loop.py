"""The closed loop of a foreign network alone (no backup, no gate): ``u = A_out N(A_in x + b_in) + b_out``.

Also the specification rows of a plant file evaluated along trajectories, as margins (> 0: violated):

* every state limit and constraint row at every step, or only in its ``steps`` window;
* the input limits (when the file declares them) at steps 0..H-1: the network's command must stay within them
  (nothing saturates it);
* the goal set at the final step H: ``max_i max(lo_i - x_i, x_i - hi_i)``;
* each unsafe box (in its window): ``min_i min(x_i - lo_i, hi_i - x_i)`` (> 0: strictly inside).

Rows are checked at the sampling instants 0..H only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.plant_spec import PlantSpec
from ..errors import SpecError
from ..plant.model import PlantModel, build_plant, evaluate_rows
from .onnx_network import Network

GOAL = "goal"


@dataclass(frozen=True)
class Row:
    """One row of the specification: its name, kind and the steps it is checked at (inclusive)."""

    name: str
    kind: str  # 'state', 'extra', 'input', 'goal', 'avoid'
    first: int
    last: int
    description: str


@dataclass(frozen=True)
class ForeignLoop:
    """A plant (schema version 2 or 1) with a foreign network in the loop.

    Attributes
    ----------
    spec : PlantSpec
    model : PlantModel
        Built with ``open_loop=True``.
    network : Network
    A_in (n_in, nx), b_in (n_in,), A_out (nu, n_out), b_out (nu,) : ndarray
        The affine maps (identity where the file has none).
    rows : tuple of Row
    """

    spec: PlantSpec
    model: PlantModel
    network: Network
    A_in: np.ndarray
    b_in: np.ndarray
    A_out: np.ndarray
    b_out: np.ndarray
    rows: tuple

    @property
    def horizon(self) -> int:
        return self.spec.safety.horizon

    def control(self, X: np.ndarray) -> np.ndarray:
        """The command at states ``X (M, nx)``: ``(M, nu)``, float64."""
        return self.network.evaluate(X @ self.A_in.T + self.b_in) @ self.A_out.T + self.b_out

    def rollout(self, X0: np.ndarray, control=None) -> tuple:
        """Trajectories from ``X0 (M, nx)``: states ``(M, H+1, nx)`` and commands ``(M, H+1, nu)`` (the last one
        is the command at x_H, used by rows that name an input). ``control`` replaces :meth:`control`."""
        control = control or self.control
        M, H = len(X0), self.horizon
        X = np.zeros((M, H + 1, self.spec.nx))
        U = np.zeros((M, H + 1, self.spec.nu))
        X[:, 0] = X0
        f = self.model.f.map(M)
        with np.errstate(all="ignore"):
            for t in range(H + 1):
                U[:, t] = control(X[:, t])
                if t < H:
                    X[:, t + 1] = np.array(f(X[:, t].T, U[:, t].T), dtype=float).reshape(self.spec.nx, M).T
        return X, U

    def margins(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """Every row's margin ``(M, H+1, n_rows)`` (> 0: violated; ``-inf`` where a row is not checked; NaN
        states count as violations, ``+inf``)."""
        M, H1, nx = X.shape
        flat_x, flat_u = X.reshape(-1, nx), U.reshape(-1, U.shape[2])
        g = evaluate_rows(self.model.g, flat_x, flat_u).reshape(M, H1, -1)
        g_in = evaluate_rows(self.model.g_input, flat_x, flat_u).reshape(M, H1, -1)
        out = np.full((M, H1, len(self.rows)), -np.inf)
        n_g, n_in = g.shape[2], g_in.shape[2]
        avoid = {a.name: a for a in self.spec.safety.avoid}
        for k, row in enumerate(self.rows):
            if k < n_g:
                value = g[:, :, k]
            elif k < n_g + n_in:
                value = g_in[:, :, k - n_g]
            elif row.kind == "goal":
                goal = self.spec.safety.goal
                value = np.max(np.maximum(goal[:, 0] - X, X - goal[:, 1]), axis=2)
            else:
                box = avoid[row.name].box
                value = np.min(np.minimum(X - box[:, 0], box[:, 1] - X), axis=2)
            value = np.where(np.isnan(value), np.inf, value)
            out[:, row.first:row.last + 1, k] = value[:, row.first:row.last + 1]
        return out


def _rows(spec: PlantSpec, model: PlantModel) -> tuple:
    H = spec.safety.horizon
    windows = {c.name: c.steps for c in spec.constraints}
    rows = []
    for row in model.rows:
        first, last = windows.get(row.name) or (0, H)
        rows.append(Row(row.name, row.kind, first, last, row.description))
    for row in model.input_rows:
        rows.append(Row(row.name, "input", 0, H - 1, row.description))
    if spec.safety.goal is not None:
        rows.append(Row(GOAL, "goal", H, H, "x in the goal set at the final step"))
    for box in spec.safety.avoid:
        first, last = box.steps or (0, H)
        rows.append(Row(box.name, "avoid", first, last, f"x outside the unsafe box {box.name}"))
    return tuple(rows)


def foreign_loop(spec: PlantSpec, network: Network) -> ForeignLoop:
    """Put ``network`` in the loop of ``spec``'s plant.

    Raises
    ------
    SpecError
        The network's input or output count does not match the plant (or the file's maps).
    """
    model = build_plant(spec, open_loop=True)
    maps = spec.controller
    nx, nu = spec.nx, spec.nu
    if maps is not None and maps.A_in is not None:
        A_in, b_in, expected_in, what_in = maps.A_in, maps.b_in, len(maps.b_in), "controller.inputs has"
    else:
        A_in, b_in, expected_in, what_in = np.eye(nx), np.zeros(nx), nx, "the plant has (states)"
    if maps is not None and maps.A_out is not None:
        A_out, b_out, expected_out, what_out = maps.A_out, maps.b_out, maps.network_outputs, \
            "controller.outputs needs (network_outputs)"
    else:
        A_out, b_out, expected_out, what_out = np.eye(nu), np.zeros(nu), nu, "the plant has (inputs)"
    if network.n_in != expected_in:
        raise SpecError(spec.source, "controller", f"the network {network.source} takes {network.n_in} input(s) "
                                                   f"but {what_in} {expected_in}")
    if network.n_out != expected_out:
        raise SpecError(spec.source, "controller", f"the network {network.source} gives {network.n_out} "
                                                   f"output(s) but {what_out} {expected_out}")
    return ForeignLoop(spec, model, network, np.asarray(A_in, float), np.asarray(b_in, float),
                       np.asarray(A_out, float), np.asarray(b_out, float), _rows(spec, model))
