"""A multilayer perceptron as a CasADi function of (x, theta), theta one flat vector.

Layout of theta: for each layer in order, the weight matrix ``W (n_out, n_in)``
in column-major order (CasADi's) followed by the bias ``b (n_out,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

ACTIVATIONS = {"tanh": ca.tanh}


@dataclass(frozen=True)
class MlpLayout:
    """Sizes of an MLP ``n_in -> hidden... -> n_out``.

    Attributes
    ----------
    sizes : tuple of int
        ``(n_in, h_1, ..., h_L, n_out)``.
    activation : str
        Hidden-layer activation; the output layer is linear.
    """

    sizes: tuple
    activation: str = "tanh"

    @property
    def n_theta(self) -> int:
        return sum(n_out * n_in + n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def multiply_accumulates(self) -> int:
        """Multiply-accumulate operations per evaluation (weights only)."""
        return sum(n_out * n_in for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))

    def unpack(self, theta) -> list:
        """Split ``theta`` (CasADi or numpy, length ``n_theta``) into ``[(W, b), ...]``."""
        layers, offset = [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            W = ca.reshape(theta[offset:offset + n_out * n_in], n_out, n_in)
            offset += n_out * n_in
            b = theta[offset:offset + n_out]
            offset += n_out
            layers.append((W, b))
        return layers

    def forward(self, x, theta):
        """The network's output for a CasADi column ``x (n_in,)``."""
        activation = ACTIVATIONS[self.activation]
        layers = self.unpack(theta)
        h = x
        for index, (W, b) in enumerate(layers):
            h = ca.mtimes(W, h) + b
            if index < len(layers) - 1:
                h = activation(h)
        return h

    def forward_batch(self, X, theta):
        """The network on the columns of ``X (n_in, M)`` at once (matrix products, for MX)."""
        activation = ACTIVATIONS[self.activation]
        layers = self.unpack(theta)
        H = X
        columns = X.shape[1]
        for index, (W, b) in enumerate(layers):
            H = ca.mtimes(W, H) + ca.repmat(b, 1, columns)
            if index < len(layers) - 1:
                H = activation(H)
        return H

    def function(self) -> ca.Function:
        """``phi: (x (n_in,), theta (n_theta,)) -> y (n_out,)``."""
        x = ca.SX.sym("x", self.sizes[0])
        theta = ca.SX.sym("theta", self.n_theta)
        return ca.Function("mlp", [x, theta], [self.forward(x, theta)], ["x", "theta"], ["y"])

    def initial_theta(self, rng: np.random.Generator, zero_last_layer: bool = True) -> np.ndarray:
        """Glorot-uniform weights, zero biases; the last layer zero if asked (so phi = 0)."""
        parts = []
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        for index, (n_in, n_out) in enumerate(pairs):
            limit = np.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-limit, limit, size=(n_out, n_in))
            if zero_last_layer and index == len(pairs) - 1:
                W = np.zeros_like(W)
            parts.append(W.ravel(order="F"))
            parts.append(np.zeros(n_out))
        return np.concatenate(parts)
