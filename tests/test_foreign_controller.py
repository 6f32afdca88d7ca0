"""Foreign ONNX controllers: the reader against onnxruntime, bad networks and plant files refused with one line
(exit 2, nothing written), the plant schema's version 2 rows, the activations' relaxations, and
``verify PLANT --controller NET.onnx`` end to end on a small plant."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.errors import ScpoError, SpecError
from scpo_ctrl.verify import affine_bounds as ab
from scpo_ctrl.verify.onnx_network import OnnxReadError, read_onnx

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, nodes, initializers, n_in: int, n_out: int, input_shape=None, output_shape=None,
          opset: int = 13, typed=()) -> Path:
    """``initializers`` are stored as float32; ``typed`` holds (name, array) pairs stored with their own dtype.
    IR version 8: the venv's onnxruntime reads IR <= 13."""
    graph = helper.make_graph(
        nodes, "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape or [None, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape or [None, n_out])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name) for name, v in initializers.items()]
        + [numpy_helper.from_array(np.asarray(v), name) for name, v in typed])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _mlp(path: Path, rng, sizes=(2, 8, 8, 1), activations=("Relu", "Sigmoid"), scale_input=True) -> Path:
    """Div, Sub (constant on the left), Gemm, MatMul + Add, Mul, Relu/Sigmoid/Tanh, Identity, Flatten."""
    nodes, init = [], {}
    current = "x"
    if scale_input:
        init["d"] = rng.uniform(0.5, 2.0, sizes[0])
        init["c"] = rng.normal(size=sizes[0])
        nodes += [helper.make_node("Div", ["x", "d"], ["x1"], name="div"),
                  helper.make_node("Sub", ["c", "x1"], ["x2"], name="sub_left")]
        current = "x2"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        init[f"W{i}"], init[f"b{i}"] = rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.3
        if i % 2 == 0:
            nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [f"h{i}"], name=f"gemm{i}", transB=1))
        else:
            init[f"WT{i}"] = init.pop(f"W{i}").T
            nodes += [helper.make_node("MatMul", [current, f"WT{i}"], [f"m{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"m{i}", f"b{i}"], [f"h{i}"], name=f"add{i}")]
        current = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node(activations[i % len(activations)], [current], [f"a{i}"], name=f"act{i}"))
            current = f"a{i}"
    init["k"] = np.array([1.5])
    nodes += [helper.make_node("Mul", [current, "k"], ["scaled"], name="mul"),
              helper.make_node("Identity", ["scaled"], ["ident"], name="identity"),
              helper.make_node("Flatten", ["ident"], ["y"], name="flatten", axis=1)]
    return _save(path, nodes, init, sizes[0], sizes[-1])


def _onnxruntime(path: Path, X: np.ndarray, shape=None) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if shape is None:
        return np.asarray(session.run(None, {name: X.astype(np.float32)})[0], dtype=float)
    return np.array([np.asarray(session.run(None, {name: x.reshape(shape).astype(np.float32)})[0]).ravel()
                     for x in X])


# -- the reader --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activations", [("Relu", "Sigmoid"), ("Tanh", "Relu")])
def test_reader_matches_onnxruntime(tmp_path, activations):
    rng = np.random.default_rng(1)
    path = _mlp(tmp_path / "net.onnx", rng, activations=activations)
    network = read_onnx(path)
    X = rng.uniform(-3, 3, size=(200, 2))
    expected = _onnxruntime(path, X)
    assert network.n_in == 2 and network.n_out == 1
    assert np.max(np.abs(network.evaluate(X) - expected)) < 1e-5 * (1 + np.abs(expected).max())


def test_reader_reads_matlab_style_conv_layers(tmp_path):
    """MATLAB exports fully connected layers as Conv on (1, C, 1, W) tensors: a 1 x n kernel, then 1 x 1."""
    rng = np.random.default_rng(2)
    init = {"mean": rng.normal(size=(1, 1, 1, 3)), "K1": rng.normal(size=(5, 1, 1, 3)), "c1": rng.normal(size=5),
            "K2": rng.normal(size=(2, 5, 1, 1)), "c2": rng.normal(size=2)}
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"], name="input_Sub"),
             helper.make_node("Conv", ["s", "K1", "c1"], ["h"], name="fc1", kernel_shape=[1, 3]),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "K2", "c2"], ["o"], name="fc2", kernel_shape=[1, 1]),
             helper.make_node("Flatten", ["o"], ["y"], name="flat", axis=1)]
    path = _save(tmp_path / "conv.onnx", nodes, init, 3, 2, input_shape=[1, 1, 1, 3], output_shape=[1, 2])
    network = read_onnx(path)
    X = rng.uniform(-2, 2, size=(50, 3))
    assert network.describe() == "3 -> 5 relu -> 2"
    assert np.max(np.abs(network.evaluate(X) - _onnxruntime(path, X, shape=(1, 1, 1, 3)))) < 1e-5


_W32 = np.array([[0.3, -1.2], [0.8, 0.5], [-0.4, 1.7]])  # (3, 2)
_B3 = np.array([0.25, -0.6, 1.1])
# Constructs checked against onnxruntime by a reviewer; kept so that they stay right. Each: nodes, float32
# initializers, input shape, output shape (the batch dimension 1 first).
_AGREEING = {
    "gemm_transB0_alpha2": ([helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="g", alpha=2.0)],
                            {"W": _W32.T, "b": _B3}, [1, 2], [1, 3]),
    "gemm_transB1_alpha_beta": ([helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="g", transB=1, alpha=0.7,
                                                  beta=-1.3)], {"W": _W32, "b": _B3}, [1, 2], [1, 3]),
    "gemm_bias_row": ([helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="g", transB=1)],
                      {"W": _W32, "b": _B3.reshape(1, 3)}, [1, 2], [1, 3]),
    "sub_constant_first": ([helper.make_node("Sub", ["c", "x"], ["y"], name="s")], {"c": np.array([1.0, -2.0])},
                           [1, 2], [1, 2]),
    "div_by_constant": ([helper.make_node("Div", ["x", "c"], ["y"], name="d")], {"c": np.array([4.0, -0.5])},
                        [1, 2], [1, 2]),
    "matmul_weight_right": ([helper.make_node("MatMul", ["x", "W"], ["y"], name="m")], {"W": _W32.T},
                            [1, 2], [1, 3]),
    "flatten_axis0": ([helper.make_node("Flatten", ["x"], ["f"], name="f", axis=0),
                       helper.make_node("MatMul", ["f", "W"], ["y"], name="m")],
                      {"W": np.arange(12.0).reshape(4, 3) / 7 - 0.8}, [1, 2, 2], [1, 3]),
    "conv_valid": ([helper.make_node("Conv", ["x", "K", "b"], ["y"], name="c", auto_pad="VALID")],
                   {"K": np.linspace(-1, 1, 18).reshape(3, 2, 1, 3), "b": _B3}, [1, 2, 1, 3], [1, 3, 1, 1]),
}


@pytest.mark.parametrize("case", sorted(_AGREEING))
def test_reader_agrees_with_onnxruntime_on_single_constructs(tmp_path, case):
    nodes, init, in_shape, out_shape = _AGREEING[case]
    n_in, n_out = int(np.prod(in_shape[1:])), int(np.prod(out_shape[1:]))
    path = _save(tmp_path / f"{case}.onnx", nodes, init, n_in, n_out, input_shape=in_shape, output_shape=out_shape)
    network = read_onnx(path)
    X = np.random.default_rng(3).uniform(-3, 3, size=(40, n_in))
    expected = _onnxruntime(path, X, shape=tuple(in_shape))
    assert (network.n_in, network.n_out) == (n_in, n_out)
    assert np.max(np.abs(network.evaluate(X) - expected)) < 1e-5 * (1 + np.abs(expected).max())


def test_conv_with_padding_by_auto_pad_is_refused(tmp_path):
    """A SAME_UPPER conv of a whole-extent kernel gives 3 x 3 outputs in onnxruntime, not 3: refused."""
    K = np.linspace(-1, 1, 18).reshape(3, 2, 1, 3)
    nodes = [helper.make_node("Conv", ["x", "K", "b"], ["y"], name="padded", auto_pad="SAME_UPPER")]
    path = _save(tmp_path / "same.onnx", nodes, {"K": K, "b": _B3}, 6, 9, input_shape=[1, 2, 1, 3],
                 output_shape=[1, 3, 1, 3])
    assert _onnxruntime(path, np.ones((1, 6)), shape=(1, 2, 1, 3)).shape == (1, 9)
    with pytest.raises(OnnxReadError, match=r"node 'padded' \(Conv\): auto_pad SAME_UPPER is not supported"):
        read_onnx(path)


@pytest.mark.parametrize("training", [True, False])
def test_dropout_in_training_mode_is_refused(tmp_path, training):
    nodes = [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"], name="drop", seed=1)]
    path = _save(tmp_path / "drop.onnx", nodes, {"ratio": np.array(0.5)}, 4, 4,
                 typed=[("training", np.array(training))])
    if training:
        with pytest.raises(OnnxReadError, match=r"node 'drop' \(Dropout\): training_mode"):
            read_onnx(path)
    else:  # a constant false training_mode is inference: the identity
        X = np.random.default_rng(4).normal(size=(5, 4))
        np.testing.assert_allclose(read_onnx(path).evaluate(X), _onnxruntime(path, X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 1), (3, 3), (2,), (1, 1)])
def test_gemm_bias_of_another_shape_is_refused(tmp_path, shape):
    """C of shape (n_out, 1) is not a per-output bias (onnxruntime broadcasts it to n_out x n_out)."""
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="dense", transB=1)]
    path = _save(tmp_path / "gemm.onnx", nodes, {"W": _W32, "b": np.ones(shape)}, 2, 3)
    with pytest.raises(OnnxReadError, match=r"node 'dense' \(Gemm\): bias C of shape"):
        read_onnx(path)


def test_unsupported_op_is_named_with_its_node(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="dense", transB=1),
             helper.make_node("Softmax", ["h"], ["y"], name="the_softmax")]
    path = _save(tmp_path / "soft.onnx", nodes, {"W": np.ones((2, 2)), "b": np.zeros(2)}, 2, 2)
    with pytest.raises(OnnxReadError, match=r"node 'the_softmax' \(Softmax\): unsupported operation Softmax"):
        read_onnx(path)


def test_nan_weight_and_a_branching_graph_are_refused(tmp_path):
    W = np.ones((2, 2))
    W[0, 1] = np.nan
    path = _save(tmp_path / "nan.onnx", [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="g", transB=1)],
                 {"W": W, "b": np.zeros(2)}, 2, 2)
    with pytest.raises(OnnxReadError, match="weight 'W' holds NaN"):
        read_onnx(path)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Add", ["a", "x"], ["y"], name="skip")]
    with pytest.raises(OnnxReadError, match="'skip'.*more than one non-constant operand"):
        read_onnx(_save(tmp_path / "skip.onnx", nodes, {}, 2, 2))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxReadError, match="not an ONNX model"):
        read_onnx(tmp_path / "junk.onnx")


# -- relaxations -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("function", [ab.RELU, ab.SIGMOID, ab.TANH])
def test_relaxations_enclose_the_function(function):
    """f(y) in alpha y + beta +- delta for every y of the range, on random ranges (crossing 0 and not)."""
    rng = np.random.default_rng(3)
    lo = rng.uniform(-6, 4, 500)
    hi = lo + rng.uniform(0, 6, 500)
    alpha, beta, delta = ab.relax(function, lo, hi)
    y = lo[None] + rng.uniform(0, 1, (400, 1)) * (hi - lo)[None]
    y = np.concatenate([y, lo[None], hi[None], np.clip(np.zeros_like(lo), lo, hi)[None]])
    gap = np.abs(function.value(y) - alpha * y - beta)
    assert np.all(gap <= delta * (1 + 1e-12) + 1e-15)
    relu_crossing = (function is ab.RELU) & (lo < 0) & (hi > 0)
    if function is ab.RELU:  # the triangle relaxation: chord slope, band [0, -alpha lo]
        np.testing.assert_allclose(alpha[relu_crossing], (hi / (hi - lo))[relu_crossing])
        np.testing.assert_allclose(2 * delta[relu_crossing], (-alpha * lo)[relu_crossing], rtol=1e-9)
        assert np.all(delta[~relu_crossing] < 1e-9)


# -- plant files, version 2 --------------------------------------------------------------------------------
PLANT_V2 = """\
schema: scpo-plant/1
schema_version: 2
name: toy
dt: 0.1
states:
  - {name: p, min: -4.0, max: 4.0}
  - {name: v}
inputs:
  - {name: a, min: -3.0, max: 3.0}
dynamics:
  linear: {A: [[1, 0.1], [0, 1]], B: [[0.005], [0.1]]}
constraints:
  - {name: late_p, expr: "abs(p) - 1.5", steps: [25, 30]}
controller:
  inputs: ["p / 2", "v"]
  outputs: ["2*y0"]
  network_outputs: 1
safety:
  horizon: 30
  goal: {p: [-1.5, 1.5]}
  avoid:
    - {name: wall, box: {p: [3.5, 5.0]}}
  initial_states:
    box: {p: [-1.0, 1.0], v: [-0.3, 0.3]}
    count: 4
"""


def _stabilising_net(path: Path) -> Path:
    """u = 2 * (-(p/2) * 2 - 1.5 v) = -2 p - 3 v as two ReLU halves: relu(z) - relu(-z)."""
    W1 = np.array([[-2.0, -1.5], [2.0, 1.5]])
    W2 = np.array([[1.0, -1.0]])
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="l1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], name="l2", transB=1)]
    return _save(path, nodes, {"W1": W1, "b1": np.zeros(2), "W2": W2, "b2": np.zeros(1)}, 2, 1)


def test_version_2_rows_are_read(tmp_path):
    (tmp_path / "toy.yaml").write_text(PLANT_V2)
    spec = load_plant_spec(tmp_path / "toy.yaml")
    assert spec.schema_version == 2 and spec.x_eq is None and spec.backup is None
    np.testing.assert_array_equal(spec.controller.A_in, [[0.5, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(spec.controller.A_out, [[2.0]])
    assert spec.constraints[0].steps == (25, 30)
    assert spec.safety.goal[0].tolist() == [-1.5, 1.5] and np.isinf(spec.safety.goal[1]).all()
    assert spec.safety.avoid[0].name == "wall"


@pytest.mark.parametrize("old, new, message", [
    ("schema_version: 2\n", "", "missing required key 'equilibrium'"),
    ("schema_version: 2", "schema_version: 3", "unsupported schema_version 3"),
    ("steps: [25, 30]", "steps: [25, 31]", r"constraints\[0\]\.steps: expected 0 <= first <= last <= horizon"),
    ('["p / 2", "v"]', '["p * v", "v"]', r"controller\.inputs\[0\]: 'p \* v' is not affine"),
    ('{p: [3.5, 5.0]}', '{q: [3.5, 5.0]}', "unknown key 'q'"),
])
def test_version_2_errors_name_the_line(tmp_path, old, new, message):
    (tmp_path / "toy.yaml").write_text(PLANT_V2.replace(old, new, 1))
    with pytest.raises(SpecError, match=message) as error:
        load_plant_spec(tmp_path / "toy.yaml")
    assert error.value.line is not None


def test_a_version_2_file_is_refused_by_the_verbs_that_need_a_backup(tmp_path):
    from scpo_ctrl.plant.model import build_plant

    import scpo_ctrl

    (tmp_path / "toy.yaml").write_text(PLANT_V2)
    with pytest.raises(SpecError, match="only `scpo-ctrl verify PLANT --controller"):
        build_plant(load_plant_spec(tmp_path / "toy.yaml"))
    for verb in (scpo_ctrl.check, lambda plant: scpo_ctrl.adapt(plant, tmp_path / "run")):
        with pytest.raises(SpecError, match="only `scpo-ctrl verify PLANT --controller"):
            verb(tmp_path / "toy.yaml")
    assert not (tmp_path / "run").exists()


# -- reachability's own rounding -----------------------------------------------------------------------------
def test_affine_zonotope_step_covers_the_exact_image():
    """x+ = A x + B u + e in float64 rounds: the new zonotope must still hold the exact image of every vertex
    (checked in rational arithmetic)."""
    from fractions import Fraction

    from scpo_ctrl.verify.reach import zonotope_step

    rng = np.random.default_rng(11)
    nx, nu, m = 3, 2, 2
    A, B, e = rng.normal(size=(nx, nx)), rng.normal(size=(nx, nu)), rng.normal(size=nx)
    centre, u_centre = rng.normal(size=(1, nx)) * 7, rng.normal(size=(1, nu)) * 3
    G, U = rng.normal(size=(1, nx, m)) * 1e-3, rng.normal(size=(1, nu, m)) * 1e-3
    new_c, new_g = zonotope_step(A, B, e, None, centre, G, u_centre, U, np.zeros((1, nu)))
    extent = np.abs(new_g[0]).sum(axis=1)
    F = np.vectorize(Fraction)
    for xi in itertools.product((-1.0, 1.0), repeat=m):
        x, u = F(centre[0]) + F(G[0]) @ F(np.array(xi)), F(u_centre[0]) + F(U[0]) @ F(np.array(xi))
        exact = F(A) @ x + F(B) @ u + F(e)
        gap = np.array([abs(float(v)) for v in exact - F(new_c[0])])  # |exact - centre|, rounded to nearest
        assert np.all(gap <= extent * (1 - 1e-15)), (xi, gap - extent)


_SUM_ROUNDS_DOWN = [1.5 - 2.0 ** -52] + [2.0 ** -54] * 6  # float64 sums it to 1.5 - 2^-52; exactly 1.5 + 2^-53


@pytest.mark.parametrize("plant, step", [(PLANT_V2, 30), (PLANT_V2.replace("[3.5, 5.0]", "[1.5, 5.0]"), 0)],
                         ids=["goal_and_interval_row_at_H", "unsafe_box"])
def test_row_checks_are_widened_for_the_rounding_of_the_extent(tmp_path, plant, step):
    """A zonotope whose p-extent float64 sums to just under 1.5 while the exact extent exceeds 1.5 must not be
    proven inside the goal |p| <= 1.5 nor disjoint from an unsafe box starting at p = 1.5."""
    from scpo_ctrl.verify.foreign_loop import foreign_loop
    from scpo_ctrl.verify.foreign_reach import ForeignReachSettings, _Analysis

    (tmp_path / "toy.yaml").write_text(plant)
    loop = foreign_loop(load_plant_spec(tmp_path / "toy.yaml"), read_onnx(_stabilising_net(tmp_path / "n.onnx")))
    analysis = _Analysis(loop, ForeignReachSettings())
    m = len(_SUM_ROUNDS_DOWN)
    G = np.zeros((2, 2, m))
    G[0, 0] = _SUM_ROUNDS_DOWN
    G[1, 0, 0] = 1.0  # well inside the goal and away from the box: holds
    assert np.abs(G[0, 0]).sum() < 1.5
    u = np.zeros((2, 1))
    names = analysis.failing(step, np.zeros((2, 2)), G, u, u)
    assert names[0] != "" and names[1] == "", names


def test_a_nan_command_bound_fails_its_cell(toy):
    """NaN > u_max is False: a NaN command range must still fail the cell, like a non-finite state."""
    from scpo_ctrl.verify.foreign_loop import foreign_loop
    from scpo_ctrl.verify.foreign_reach import ForeignReachSettings, _Analysis

    directory, net = toy
    loop = foreign_loop(load_plant_spec(directory / "toy.yaml"), read_onnx(net))
    analysis = _Analysis(loop, ForeignReachSettings())
    G = np.broadcast_to(0.1 * np.eye(2), (3, 2, 2)).copy()
    u_lo = np.array([[np.nan], [-1.0], [-np.inf]])
    u_hi = np.array([[np.nan], [1.0], [1.0]])
    names = analysis.failing(0, np.zeros((3, 2)), G, u_lo, u_hi)
    assert names[0] != "" and names[1] == "" and names[2] != "", names


# -- verify --controller -----------------------------------------------------------------------------------
def _cli(*args, cwd):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "scpo_ctrl.cli", "verify", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy")
    (directory / "toy.yaml").write_text(PLANT_V2)
    return directory, _stabilising_net(directory / "net.onnx")


def test_verify_controller_proves_a_stable_linear_loop(toy):
    import scpo_ctrl

    directory, net = toy
    result = scpo_ctrl.verify(directory / "toy.yaml", controller=net, out=directory / "cert.json", samples=200,
                              halton=16, falsify_iterations=2)
    certificate = result.certificate
    assert result.exit_code == 0
    assert certificate.check("reachability").verdict == "VERIFIED"
    assert certificate.check("closed_loop_safety").verdict == "VERIFIED"
    assert certificate.summary.safe_for_every_initial_state_of_the_box
    assert certificate.controller_sha256 == __import__("hashlib").sha256(net.read_bytes()).hexdigest()
    assert "sampling instants" in certificate.sampling
    written = json.loads((directory / "cert.json").read_text())
    assert written["format"] == "scpo-foreign-certificate/1"
    from scpo_ctrl.config.run_schemas import run_file_schemas, validate_document

    schemas = run_file_schemas()
    schema = next(s for s in schemas if s.name == "foreign-certificate.schema.json")
    assert validate_document(written, schema, schemas) == []
    broken = dict(written, controller_sha256="abc")
    assert validate_document(broken, schema, schemas) != []


def test_the_command_line_qualifies_the_proof(toy, tmp_path, capsys):
    """"safe: yes (proof)" is a claim at the sampling instants, for the plant file's discrete map only."""
    from scpo_ctrl.cli import main

    directory, net = toy
    (tmp_path / "ode.yaml").write_text(PLANT_V2.replace(
        "  linear: {A: [[1, 0.1], [0, 1]], B: [[0.005], [0.1]]}",
        '  ode: {p: "v", v: "a"}\n  integrator: rk4\n  substeps: 2'))
    code = main(["verify", str(tmp_path / "ode.yaml"), "--controller", str(net), "--out", str(tmp_path / "c.json"),
                 "--samples", "50", "--halton", "0", "--falsify-iterations", "0"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "safe for every initial state" in x)
    assert code == 0 and "yes (proof" in line, line
    assert "at the sampling instants" in line and "rk4 integrator with 2 substep(s)" in line
    assert "(not the ODE)" in line and "not between samples" in line


def test_verify_controller_falsifies_a_loop_that_misses_its_goal(toy, tmp_path):
    """The same loop with the gain's sign flipped diverges: the goal and the wall are violated, the
    counterexample replays (float64 and onnxruntime), reachability does not claim VERIFIED."""
    import scpo_ctrl

    directory, _ = toy
    plant = tmp_path / "toy.yaml"
    plant.write_text(PLANT_V2.replace('["2*y0"]', '["-2*y0"]'))
    result = scpo_ctrl.verify(plant, controller=directory / "net.onnx", out=tmp_path / "c.json", samples=100,
                              halton=0, falsify_iterations=1, max_cells=20)
    falsification = result.certificate.check("falsification")
    assert result.exit_code == 1 and falsification.verdict == "FALSIFIED"
    replayed = falsification.counterexample["replayed"]
    assert replayed["float64_reader"] > 0 and replayed["onnxruntime"] > 0
    assert result.certificate.check("reachability").verdict == "UNKNOWN"
    sampled = result.certificate.check("closed_loop_safety")
    assert sampled.verdict == "FALSIFIED" and sampled.counterexample["replayed"]["onnxruntime"] > 0


def test_a_sampled_violation_that_onnxruntime_does_not_replay_is_not_falsified(toy, tmp_path, monkeypatch):
    """The Monte Carlo's violations come from the reader's float64 network: when onnxruntime on the file (here
    stood in for by the stabilising law) does not replay the worst one, the check is UNKNOWN, not FALSIFIED."""
    import scpo_ctrl
    from scpo_ctrl.verify import foreign

    directory, _ = toy
    plant = tmp_path / "toy.yaml"
    plant.write_text(PLANT_V2.replace('["2*y0"]', '["-2*y0"]'))
    monkeypatch.setattr(foreign, "_onnxruntime_controller",
                        lambda loop: ((lambda X: -(2 * X[:, :1] + 3 * X[:, 1:2])), ""))
    result = scpo_ctrl.verify(plant, controller=directory / "net.onnx", out=tmp_path / "c.json", samples=50,
                              halton=0, falsify_iterations=0, reach=False)
    sampled = result.certificate.check("closed_loop_safety")
    assert sampled.details["violating_trajectories"] > 0
    assert sampled.verdict == "UNKNOWN" and "does not replay with onnxruntime" in sampled.details["reason"]
    assert sampled.counterexample["replayed"]["onnxruntime"] <= 0 < sampled.counterexample["replayed"]["float64_reader"]
    assert result.exit_code == 0


@pytest.mark.parametrize("case, message", [
    ("op", "node 'the_softmax' (Softmax): unsupported operation Softmax"),
    ("nan", "holds NaN"),
    ("inputs", "takes 3 input(s) but controller.inputs has 2"),
    ("outputs", "gives 2 output(s) but controller.outputs needs (network_outputs) 1"),
])
def test_bad_networks_exit_2_with_one_line_and_write_nothing(toy, tmp_path, case, message, capsys, monkeypatch):
    directory, _ = toy
    W = np.ones((3 if case == "inputs" else 2, 2 if case != "inputs" else 3))
    if case == "nan":
        W[0, 0] = np.nan
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h" if case == "op" else "y"], name="g", transB=1)]
    if case == "op":
        nodes.append(helper.make_node("Softmax", ["h"], ["y"], name="the_softmax"))
    n_in = 3 if case == "inputs" else 2
    n_out = {"inputs": 3, "outputs": 2}.get(case, 2)
    W = np.ones((n_out, n_in))
    if case == "nan":
        W[0, 0] = np.nan
    net = _save(tmp_path / "bad.onnx", nodes, {"W": W, "b": np.zeros(n_out)}, n_in, n_out)
    from scpo_ctrl.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["verify", str(directory / "toy.yaml"), "--controller", str(net)])  # default --out: here
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and message in lines[0], stderr
    assert list(tmp_path.glob("*.json")) == []
    if case == "op":  # and as a real process: the same line, no traceback
        run = _cli(directory / "toy.yaml", "--controller", net, cwd=tmp_path)
        assert run.returncode == 2 and run.stderr.strip() == lines[0] and list(tmp_path.glob("*.json")) == []


def test_errors_from_python_are_scpo_errors(toy, tmp_path):
    import scpo_ctrl

    directory, net = toy
    with pytest.raises(ScpoError, match="apply with a controller only"):
        scpo_ctrl.verify(directory, out=tmp_path / "x.json")


@pytest.mark.parametrize("argv, message", [
    (["verify", "RUN", "--out", "x.json"], "--out applies with --controller only"),
    (["verify", "PLANT", "--controller", "NET", "--campaign", "c.yaml"],
     "--campaign and --ray do not apply with --controller"),
])
def test_controller_only_flags_are_checked(tmp_path, capsys, monkeypatch, argv, message):
    from scpo_ctrl.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err and list(tmp_path.iterdir()) == []
