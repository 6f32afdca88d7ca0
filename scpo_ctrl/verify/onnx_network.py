"""A feed-forward ONNX controller read into a frozen list of affine layers and elementwise activations.

Only graphs that are a chain (every node consumes the previous node's output, plus constants) are read.
Supported operations, as PyTorch, Keras/tf2onnx and MATLAB's converter write them:

* ``Gemm`` (``transA = 0``; a bias C of shape (), (1,), (n_out,) or (1, n_out)), ``MatMul`` with a constant
  right operand, ``Conv`` whose kernel covers the whole spatial extent of its input (MATLAB's fully connected
  layers: a ``1 x n`` kernel on a ``1 x n`` input, then ``1 x 1`` kernels; no padding, ``auto_pad`` NOTSET or
  VALID, group 1), ``Add``/``Sub`` with a constant (either side), ``Mul`` by a constant and ``Div`` by a
  constant: all folded into affine layers ``y = W x + b`` (consecutive ones multiplied out);
* ``Relu``, ``Tanh``, ``Sigmoid``: elementwise activations;
* ``Identity``, ``Dropout`` (inference: no mask output, ``training_mode`` absent or a constant false),
  ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``: no change of the values (tensors are carried flattened
  in C order, the batch dimension apart).

Anything else raises :class:`OnnxReadError` naming the operation and the node. So do NaN or infinite weights
and a graph with more than one input or output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ScpoError

ACTIVATIONS = ("relu", "tanh", "sigmoid")
_ACTIVATION_OPS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
_SHAPE_OPS = ("Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


class OnnxReadError(ScpoError):
    """The ONNX file cannot be read as a feed-forward network (names the file and, where known, the node)."""


@dataclass(frozen=True)
class AffineLayer:
    """``y = W x + b``: W (n_out, n_in), b (n_out,), read-only float64."""

    W: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class ActivationLayer:
    """An elementwise activation: one of :data:`ACTIVATIONS`."""

    kind: str


@dataclass(frozen=True)
class Network:
    """A feed-forward network: affine layers and activations, in order.

    Attributes
    ----------
    layers : tuple of AffineLayer or ActivationLayer
    n_in, n_out : int
    source : str
        The file it was read from.
    sha256 : str
        Of the file's bytes.
    ops : tuple of str
        The ONNX operations read, in order (for the certificate).
    """

    layers: tuple
    n_in: int
    n_out: int
    source: str
    sha256: str
    ops: tuple

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        """The network in float64 on a batch ``X (M, n_in)``: ``(M, n_out)``."""
        h = np.asarray(X, dtype=float)
        for layer in self.layers:
            if isinstance(layer, AffineLayer):
                h = h @ layer.W.T + layer.b
            else:
                h = activation_value(layer.kind, h)
        return h

    def describe(self) -> str:
        """``4 -> 256 tanh -> 256 tanh -> 2`` style summary."""
        parts = [str(self.n_in)]
        for layer in self.layers:
            if isinstance(layer, AffineLayer):
                parts.append(str(layer.W.shape[0]))
            else:
                parts[-1] += f" {layer.kind}"
        return " -> ".join(parts)


def activation_value(kind: str, h: np.ndarray) -> np.ndarray:
    """Apply an activation of :data:`ACTIVATIONS` elementwise."""
    if kind == "relu":
        return np.maximum(h, 0.0)
    if kind == "tanh":
        return np.tanh(h)
    return 0.5 * (1.0 + np.tanh(0.5 * h))  # the logistic sigmoid, overflow-free


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=float)
    array.setflags(write=False)
    return array


class _Builder:
    """Accumulates the chain: a pending affine map (W, b) on the flattened tensor, then layers."""

    def __init__(self, n_in: int, shape: tuple, source: str):
        self.source = source
        self.shape = shape  # the current tensor's shape without the batch dimension
        self.layers: list = []
        self.W = np.eye(n_in)
        self.b = np.zeros(n_in)
        self.n = n_in

    def error(self, node, message: str) -> OnnxReadError:
        return OnnxReadError(f"{self.source}: node {node.name or '(unnamed)'!r} ({node.op_type}): {message}")

    def affine(self, W: np.ndarray, b: np.ndarray, shape: tuple) -> None:
        self.W, self.b = W @ self.W, W @ self.b + b
        self.n, self.shape = W.shape[0], shape

    def activation(self, kind: str) -> None:
        self.flush()
        self.layers.append(ActivationLayer(kind))

    def flush(self) -> None:
        if not (self.W.shape[0] == self.W.shape[1] and np.array_equal(self.W, np.eye(self.n))
                and not self.b.any()):
            self.layers.append(AffineLayer(_frozen(self.W), _frozen(self.b)))
        self.W, self.b = np.eye(self.n), np.zeros(self.n)


def _constant_vector(builder: _Builder, node, value: np.ndarray) -> np.ndarray:
    """A constant operand broadcast to the current tensor (shape ``(1,) + shape`` or ``shape``), flattened."""
    value = np.asarray(value, dtype=float)
    full = (1,) + tuple(builder.shape)
    try:
        if value.ndim > len(full):
            raise ValueError
        return np.broadcast_to(value, full).reshape(-1).copy()
    except ValueError:
        raise builder.error(node, f"constant of shape {value.shape} does not broadcast to the tensor "
                                  f"{tuple(builder.shape)}") from None


def read_onnx(path: str | Path) -> Network:
    """Read a feed-forward ONNX controller (see the module docstring for what is supported).

    Raises
    ------
    OnnxReadError
        Unreadable file, unsupported operation (named with its node), a non-chain graph, NaN/inf weights.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnnxReadError(f"{source}: cannot read the ONNX file: {exc.strerror or exc}") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and others; any of them means "not an ONNX model"
        raise OnnxReadError(f"{source}: not an ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # Constant nodes are constants too
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attribute.t)
    for name, value in constants.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise OnnxReadError(f"{source}: weight {name!r} holds NaN or infinite values")
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxReadError(f"{source}: expected one input and one output, got {len(inputs)} input(s) and "
                            f"{len(graph.output)} output(s)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
        raise OnnxReadError(f"{source}: input {inputs[0].name!r} needs a known shape (batch, features...), "
                            f"got {dims}")
    shape = tuple(dims[1:])
    builder = _Builder(int(np.prod(shape)), shape, source)
    current = inputs[0].name
    ops = []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        variable = [name for name in node.input if name and name not in constants]
        if variable != [current]:
            if current not in node.input:
                raise builder.error(node, "the graph is not a chain (this node does not take the previous "
                                          "node's output); only feed-forward networks are supported")
            raise builder.error(node, "more than one non-constant operand is not supported")
        _read_node(builder, node, constants, current)
        ops.append(node.op_type)
        current = node.output[0]
    if current != graph.output[0].name:
        raise OnnxReadError(f"{source}: the graph's output {graph.output[0].name!r} is not the end of the chain")
    builder.flush()
    layers = tuple(builder.layers)
    n_in = int(np.prod(shape))
    n_out = builder.n
    return Network(layers, n_in, n_out, source, hashlib.sha256(data).hexdigest(), tuple(ops))


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _read_node(builder: _Builder, node, constants: dict, current: str) -> None:
    op = node.op_type
    attributes = _attributes(node)
    n = builder.n
    if op in _ACTIVATION_OPS:
        builder.activation(_ACTIVATION_OPS[op])
    elif op in _SHAPE_OPS:
        if op == "Dropout" and len(node.output) > 1 and node.output[1]:
            raise builder.error(node, "a Dropout with a mask output is not supported")
        if op == "Dropout" and len(node.input) > 2 and node.input[2]:
            training = constants.get(node.input[2])
            if training is None or np.asarray(training).any():
                raise builder.error(node, "training_mode other than a constant false is not supported "
                                          "(a training Dropout is random)")
        builder.shape = (n,) if op != "Identity" and op != "Dropout" else builder.shape
    elif op in ("Add", "Sub"):
        position = list(node.input).index(current)
        constant = _constant_vector(builder, node, constants[node.input[1 - position]])
        sign = -1.0 if (op == "Sub" and position == 0) else 1.0
        factor = -1.0 if (op == "Sub" and position == 1) else 1.0  # c - x
        builder.affine(factor * np.eye(n), sign * constant, builder.shape)
    elif op in ("Mul", "Div"):
        position = list(node.input).index(current)
        if op == "Div" and position != 0:
            raise builder.error(node, "division by the tensor (constant / x) is not affine")
        constant = _constant_vector(builder, node, constants[node.input[1 - position]])
        if op == "Div":
            if np.any(constant == 0.0):
                raise builder.error(node, "division by zero")
            constant = 1.0 / constant
        builder.affine(np.diag(constant), np.zeros(n), builder.shape)
    elif op == "MatMul":
        if list(node.input).index(current) != 0:
            raise builder.error(node, "the tensor must be the left operand of MatMul")
        W = np.asarray(constants[node.input[1]], dtype=float)
        if W.ndim != 2 or W.shape[0] != builder.shape[-1] or int(np.prod(builder.shape[:-1])) != 1:
            raise builder.error(node, f"weight of shape {W.shape} does not fit the tensor {tuple(builder.shape)}")
        builder.affine(W.T, np.zeros(W.shape[1]), (W.shape[1],))
    elif op == "Gemm":
        if attributes.get("transA", 0):
            raise builder.error(node, "transA = 1 is not supported")
        if list(node.input).index(current) != 0:
            raise builder.error(node, "the tensor must be the first operand of Gemm")
        W = np.asarray(constants[node.input[1]], dtype=float)
        W = W if attributes.get("transB", 0) else W.T  # now (n_out, n_in)
        if W.ndim != 2 or W.shape[1] != n:
            raise builder.error(node, f"weight of shape {W.shape} does not fit {n} features")
        alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
        b = np.zeros(W.shape[0])
        if len(node.input) > 2 and node.input[2]:
            C = np.asarray(constants[node.input[2]], dtype=float)
            if C.shape not in ((), (1,), (W.shape[0],), (1, W.shape[0])):
                raise builder.error(node, f"bias C of shape {C.shape} is not supported (supported: (), (1,), "
                                          f"({W.shape[0]},), (1, {W.shape[0]}))")
            b = beta * np.broadcast_to(C.reshape(-1), (W.shape[0],))
        builder.affine(alpha * W, b, (W.shape[0],))
    elif op == "Conv":
        _conv(builder, node, constants, attributes)
    else:
        raise builder.error(node, f"unsupported operation {op} (supported: Gemm, MatMul, Conv as a fully connected "
                                  "layer, Add, Sub, Mul, Div by constants, Relu, Tanh, Sigmoid, Identity, "
                                  "Dropout, Reshape, Flatten, Squeeze, Unsqueeze)")


def _conv(builder: _Builder, node, constants: dict, attributes: dict) -> None:
    """A Conv whose kernel covers the input's whole spatial extent: a fully connected layer."""
    kernel = np.asarray(constants.get(node.input[1]), dtype=float)
    shape = tuple(builder.shape)
    if kernel.ndim < 3 or len(shape) != kernel.ndim - 1:
        raise builder.error(node, f"kernel {kernel.shape} on tensor {shape}: only fully connected Conv is supported")
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "VALID"):
        raise builder.error(node, f"auto_pad {auto_pad} is not supported (only NOTSET or VALID: no padding)")
    if (attributes.get("group", 1) != 1 or any(attributes.get("pads", [0]))
            or any(d != 1 for d in attributes.get("dilations", [1]))):
        raise builder.error(node, "groups, padding and dilation are not supported")
    if kernel.shape[1:] != shape:
        raise builder.error(node, f"kernel {kernel.shape} does not cover the input {shape}: only fully connected "
                                  "(1x1 on 1x1, or whole-extent) Conv is supported")
    W = kernel.reshape(kernel.shape[0], -1)
    b = np.zeros(kernel.shape[0])
    if len(node.input) > 2 and node.input[2]:
        b = np.asarray(constants[node.input[2]], dtype=float).reshape(-1)
    builder.affine(W, b, (kernel.shape[0],) + (1,) * (kernel.ndim - 2))
