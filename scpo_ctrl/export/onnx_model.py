"""The deployed law as an ONNX graph (opset 17, IR version 8; a small operator set).

Input ``x`` of shape ``(N, nx)``; outputs ``u (N, nu)``, ``branch (N,)`` and
``reason (N,)`` (int32, codes of :mod:`.law`), ``gate (N,)`` and
``level (N,)`` (V/c). The graph uses only: Sub Add Mul Div MatMul ReduceSum Tanh Max Min IsNaN
IsInf Or Less Greater LessOrEqual GreaterOrEqual Cast Where Reshape.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..version import __version__
from .law import (BRANCH_BACKUP, BRANCH_BLEND, BRANCH_FALLBACK, BRANCH_NETWORK, REASON_NONFINITE_OUTPUT,
                  REASON_NONFINITE_STATE, REASON_OK, REASON_OUTSIDE_REGION, DeployedLaw,
                  deployed_input_limits)

OPSET = 17
IR_VERSION = 8
ELEMENT = {"float32": (TensorProto.FLOAT, np.float32), "float64": (TensorProto.DOUBLE, np.float64)}


class _Graph:
    """Accumulates nodes and constants with unique names."""

    def __init__(self, dtype):
        self.nodes, self.initializers, self.dtype, self.count = [], [], dtype, 0
        self.names = set()

    def const(self, name: str, value, dtype=None) -> str:
        """A named constant (created once; later calls with the same name reuse it)."""
        if name not in self.names:
            array = np.asarray(value, dtype=dtype or self.dtype)
            self.initializers.append(numpy_helper.from_array(array, name))
            self.names.add(name)
        return name

    def op(self, kind: str, inputs: list, output: str | None = None, **attributes) -> str:
        self.count += 1
        output = output or f"t{self.count}_{kind.lower()}"
        self.nodes.append(helper.make_node(kind, inputs, [output], name=f"n{self.count}_{kind}", **attributes))
        return output

    def any_row(self, flags: str, columns: int) -> str:
        """``(N, columns)`` bool -> ``(N, 1)`` bool: any element of the row set."""
        as_number = self.op("Cast", [flags], to=TensorProto.FLOAT)
        ones = self.const(f"ones_{columns}_f", np.ones((columns, 1)), np.float32)
        return self.op("Greater", [self.op("MatMul", [as_number, ones]), self.const("zero_f", 0.0, np.float32)])

    def nonfinite(self, value: str) -> str:
        return self.op("Or", [self.op("IsNaN", [value]), self.op("IsInf", [value])])


def build_model(law: DeployedLaw, precision: str, metadata: dict) -> onnx.ModelProto:
    """The ONNX model of ``law`` in ``precision``; ``metadata`` (str -> str) goes to ``metadata_props``."""
    element, dtype = ELEMENT[precision]
    g = _Graph(dtype)
    x = "x"
    x_eq, u_eq = g.const("x_eq", law.x_eq[None, :]), g.const("u_eq", law.u_eq[None, :])
    dx = g.op("Sub", [x, x_eq], "dx")

    # monitor
    state_bad = g.any_row(g.nonfinite(x), law.nx)
    outside_elements = g.op("Or", [g.op("Less", [x, g.const("region_min", law.region_min[None, :])]),
                                   g.op("Greater", [x, g.const("region_max", law.region_max[None, :])])])
    outside = g.any_row(outside_elements, law.nx)

    # backup, level and gate
    given = not law.backup_kind.in_closed_form  # an MPC backup: its input is an input of the graph
    if given:
        u_backup = "u_backup"
    else:
        u_backup = g.op("Sub", [u_eq, g.op("MatMul", [dx, g.const("K_T", law.K.T)])], "u_backup")
    quadratic = g.op("Mul", [dx, g.op("MatMul", [dx, g.const("P_T", law.P.T)])])
    # ReduceSum, not a MatMul with ones: onnxruntime fuses MatMul + Div-by-scalar into FusedMatMul
    # with a float32 alpha, which would cost a float64 graph 7 digits.
    V = g.op("ReduceSum", [quadratic, g.const("axis_1", np.array([1]), np.int64)], keepdims=1)
    level = g.op("Div", [V, g.const("c", law.c)], "level_column")
    one, zero = g.const("one", 1.0), g.const("zero", 0.0)
    s = g.op("Div", [g.op("Sub", [level, one]), g.const("gate_span", law.gate_ratio - 1.0)])
    s = g.op("Min", [g.op("Max", [s, zero]), one])
    cubic = g.op("Sub", [g.const("three", 3.0), g.op("Mul", [g.const("two", 2.0), s])])
    gate = g.op("Mul", [g.op("Mul", [s, s]), cubic], "gate_column")

    # network
    h = g.op("Div", [dx, g.const("x_scale", law.x_scale[None, :])], "z")
    for index, (W, b) in enumerate(zip(law.weights, law.biases)):
        h = g.op("Add", [g.op("MatMul", [h, g.const(f"W{index}_T", W.T)]), g.const(f"b{index}", b[None, :])])
        if index < len(law.weights) - 1:
            h = g.op("Tanh", [h], f"h{index + 1}")
    # gate first: a constant scale right after the last MatMul/Add would be fused by onnxruntime into a
    # Gemm whose alpha is a float32 attribute, costing a float64 graph about 1e-8.
    residual = g.op("Mul", [g.op("Mul", [gate, h]), g.const("u_scale", law.u_scale[None, :])])
    u_raw = g.op("Add", [u_backup, residual], "u_unsaturated")
    output_bad = g.any_row(g.nonfinite(u_raw), law.nu)

    # reason and branch
    def code(value: int) -> str:
        return g.const(f"code_{value}", np.array([[value]]), np.int32)

    reason = g.op("Where", [output_bad, code(REASON_NONFINITE_OUTPUT), code(REASON_OK)])
    reason = g.op("Where", [outside, code(REASON_OUTSIDE_REGION), reason])
    reason = g.op("Where", [state_bad, code(REASON_NONFINITE_STATE), reason], "reason_column")
    tripped = g.op("Greater", [reason, code(REASON_OK)])
    branch = g.op("Where", [g.op("GreaterOrEqual", [gate, one]), code(BRANCH_NETWORK), code(BRANCH_BLEND)])
    branch = g.op("Where", [g.op("LessOrEqual", [gate, zero]), code(BRANCH_BACKUP), branch])
    branch = g.op("Where", [tripped, code(BRANCH_FALLBACK), branch], "branch_column")

    # fallback and saturation
    backup_nan = g.op("IsNaN", [u_backup])
    fallback = g.op("Where", [g.op("Or", [state_bad, backup_nan]), u_eq, u_backup])
    chosen = g.op("Where", [tripped, fallback, u_raw])
    u_min, u_max = deployed_input_limits(law, precision)  # float32: rounded inward
    saturated = g.op("Min", [g.op("Max", [chosen, g.const("u_min", u_min[None, :])]),
                             g.const("u_max", u_max[None, :])], "u")
    flat = g.const("flat", np.array([-1]), np.int64)
    outputs = {"u": saturated}
    for name, column in (("branch", branch), ("reason", reason), ("gate", gate), ("level", level)):
        outputs[name] = g.op("Reshape", [column, flat], name)

    graph = helper.make_graph(
        g.nodes, f"{law.name}_policy",
        [helper.make_tensor_value_info("x", element, ["N", law.nx])]
        + ([helper.make_tensor_value_info("u_backup", element, ["N", law.nu])] if given else []),
        [helper.make_tensor_value_info("u", element, ["N", law.nu]),
         helper.make_tensor_value_info("branch", TensorProto.INT32, ["N"]),
         helper.make_tensor_value_info("reason", TensorProto.INT32, ["N"]),
         helper.make_tensor_value_info("gate", element, ["N"]),
         helper.make_tensor_value_info("level", element, ["N"])],
        g.initializers,
    )
    model = helper.make_model(graph, producer_name="scpo-ctrl", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    backup = ("the MPC backup's input u_backup (solved outside this graph by the exported acados solver)"
              if given else "LQR backup")
    model.doc_string = (f"Certified control law of plant {law.name}: residual {'-'.join(map(str, law.sizes))} "
                        f"{law.activation} network, gate, {backup}, saturation, runtime monitor ({precision}).")
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model, full_check=True)
    return model
