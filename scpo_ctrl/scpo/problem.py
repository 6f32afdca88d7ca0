"""What the SCPO optimizer needs from a problem: a loss with its gradient and black-box constraints.

Nothing here knows about plants: the regression experiment and the control
adaptation both implement :class:`ConstrainedProblem`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ConstrainedProblem(Protocol):
    """``min L(theta)  s.t.  g(theta) <= 0``, theta in R^d.

    Attributes
    ----------
    dimension : int
        d, the number of parameters.
    row_groups : ndarray of int, shape (k,)
        For each constraint row, the index of its group (rows of one group share
        one curvature bound l, e.g. one constraint over all initial states).
    group_names : tuple of str
        Names of the groups.
    """

    dimension: int
    row_groups: np.ndarray
    group_names: tuple

    def loss(self, theta: np.ndarray) -> float:
        """L(theta)."""

    def loss_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """L(theta) and its gradient, shape ``(d,)``."""

    def gradient_pieces(self, theta: np.ndarray, count: int) -> np.ndarray:
        """``count`` partial gradients (by groups of samples) that sum to the gradient, shape ``(count, d)``."""

    def constraints(self, thetas: np.ndarray) -> np.ndarray:
        """g at each row of ``thetas (n, d)`` in one batched call, shape ``(n, k)``. Black box."""


class DifferentiableConstraints(Protocol):
    """Constraint gradients, used only by the baselines (penalty, Lagrangian), never by SCPO."""

    def weighted_constraint_gradient(self, theta: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """``sum_i w_i g_i(theta)`` and its gradient, for ``weights (k,)``."""
