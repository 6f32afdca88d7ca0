"""The paper's regression task with harmful supervision, as a plant-free :class:`ConstrainedProblem`.

Fit ``y = 2 sin x + 0.3 x`` on [-3, 3] with an MLP 1-32-32-1 while keeping
``|f(x)| <= 1.4`` on a 64-point grid; the target exceeds the bound on part
of the range, so the best safe fit is the clipped target (MSE about 0.417).
Each bound is its own smooth row (f - 1.4 and -f - 1.4), one per grid point.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ..jit import compile_function, compiler_available
from ..policy.mlp import MlpLayout

BOUND = 1.4


class RegressionProblem:
    """MSE fit under pointwise output bounds.

    Parameters
    ----------
    hidden : tuple of int
    train_points : int
        Training inputs, evenly spaced on [-3, 3].
    grid_points : int
        Constraint grid on [-3, 3].
    jit : bool or None
        Compile the network and its gradient to C (None: when gcc is available).
    """

    group_names = ("f <= 1.4", "f >= -1.4")

    def __init__(self, hidden=(32, 32), train_points: int = 200, grid_points: int = 64, jit: bool | None = None):
        self.layout = MlpLayout((1, *hidden, 1))
        jit = compiler_available() if jit is None else jit
        self.dimension = self.layout.n_theta
        self.x_train = np.linspace(-3.0, 3.0, train_points)
        self.y_train = 2.0 * np.sin(self.x_train) + 0.3 * self.x_train
        self.x_grid = np.linspace(-3.0, 3.0, grid_points)
        self.row_groups = np.repeat([0, 1], grid_points)
        x = ca.SX.sym("x")
        theta = ca.SX.sym("theta", self.dimension)
        f = self.layout.forward(x, theta)
        self._f, _ = compile_function("f", [x, theta], [f], ["x", "theta"], ["f"], jit)
        f_gradient, _ = compile_function("f_gradient", [x, theta], [f, ca.gradient(f, theta)], ["x", "theta"], ["f", "g"], jit)
        # Per sample: weighted squared residual for P weight columns, and its gradient (d, P),
        # mapped over the samples with theta broadcast and the outputs summed, so only (P,)
        # and (d, P) cross into Python. The outer product is one MX node, not d * P SX nodes.
        self.pieces_max = 16
        xm, ym = ca.MX.sym("x"), ca.MX.sym("y")
        wm, thetam = ca.MX.sym("w", self.pieces_max), ca.MX.sym("theta", self.dimension)
        fm, gm = f_gradient(xm, thetam)
        rm = fm - ym
        sample = ca.Function("sample", [xm, ym, wm, thetam], [wm * rm**2, ca.mtimes(gm, (2.0 * rm * wm).T)])
        self._weighted = sample.map("weighted", "serial", train_points, [3], [0, 1])
        self._train = self._f.map("train", "serial", train_points, [1], [])
        self._grid = self._f.map("grid", "serial", grid_points, [1], [])
        self._grid_gradient = f_gradient.map(grid_points)
        self._candidates: dict[int, ca.Function] = {}

    def initial_theta(self, seed: int = 0) -> np.ndarray:
        """Glorot weights with a zero last layer: f = 0, feasible."""
        return self.layout.initial_theta(np.random.default_rng(seed), zero_last_layer=True)

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return np.array(self._f.map(x.size)(x[None, :], theta)).ravel()

    def _weighted_losses(self, theta: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For weight columns ``W (N, P)``: ``sum_i W_ip r_i^2 / N`` ``(P,)`` and gradients ``(P, d)``."""
        P = W.shape[1]
        padded = np.zeros((self.x_train.size, self.pieces_max))
        padded[:, :P] = W / self.x_train.size
        value, gradient = self._weighted(self.x_train[None, :], self.y_train[None, :], padded.T, theta)
        return np.array(value).ravel()[:P], np.array(gradient).T[:P]

    def loss(self, theta: np.ndarray) -> float:
        f = np.array(self._train(self.x_train[None, :], theta)).ravel()
        return float(np.mean((f - self.y_train) ** 2))

    def loss_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = self._weighted_losses(theta, np.ones((self.x_train.size, 1)))
        return float(value[0]), gradient[0]

    def gradient_pieces(self, theta: np.ndarray, count: int) -> np.ndarray:
        """Gradients of the loss restricted to ``count`` contiguous input intervals (they sum to the gradient)."""
        W = np.zeros((self.x_train.size, count))
        for p, index in enumerate(np.array_split(np.arange(self.x_train.size), count)):
            W[index, p] = 1.0
        return self._weighted_losses(theta, W)[1]

    def _outputs(self, thetas: np.ndarray) -> np.ndarray:
        """f on the grid for each parameter vector, shape ``(n, grid_points)``."""
        n = thetas.shape[0]
        if n not in self._candidates:
            self._candidates[n] = self._grid.map("candidates", "thread", n, [0], [])
        out = np.array(self._candidates[n](self.x_grid[None, :], thetas.T))
        return out.reshape(n, self.x_grid.size) if n > 1 else out.reshape(1, -1)

    def constraints(self, thetas: np.ndarray) -> np.ndarray:
        """Rows f - 1.4 then -f - 1.4 at the grid points, shape ``(n, 2 * grid_points)``."""
        f = self._outputs(np.atleast_2d(thetas))
        return np.hstack([f - BOUND, -f - BOUND])

    def weighted_constraint_gradient(self, theta: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """``sum_i w_i g_i`` and its gradient (for the penalty and Lagrangian baselines)."""
        points = self.x_grid.size
        f, grad = self._grid_gradient(self.x_grid[None, :], theta)
        f, J = np.array(f).ravel(), np.array(grad).T
        g = np.concatenate([f - BOUND, -f - BOUND])
        w_upper, w_lower = weights[:points], weights[points:]
        return float(weights @ g), J.T @ (w_upper - w_lower)
