"""The ARCH-COMP AINNCS peer suite: someone else's networks and benchmarks, our verdicts against theirs.

The data (networks, specifications, READMEs) live beside the project in ``../shared/archcomp`` and are never
copied into the repository; every test here skips with that reason when the folder is absent. The plant files
in ``tests/archcomp/`` are written from the READMEs' equations.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.verify.foreign_loop import foreign_loop
from scpo_ctrl.verify.onnx_network import read_onnx

ROOT = Path(__file__).resolve().parents[1]
ARCHCOMP = ROOT.parent / "shared" / "archcomp"
HERE = ROOT / "tests" / "archcomp"
INSTANCES = json.loads((HERE / "instances.json").read_text())["instances"]

pytestmark = pytest.mark.skipif(not ARCHCOMP.is_dir(), reason=f"{ARCHCOMP} (the ARCH-COMP data) is absent")


def _onnxruntime(path: Path, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[-1]
    shape = [d if isinstance(d, int) else 1 for d in feed.shape]
    dtype = np.float64 if "double" in feed.type else np.float32
    return np.array([np.asarray(session.run(None, {feed.name: x.reshape(shape).astype(dtype)})[0]).ravel()
                     for x in X])


@pytest.mark.parametrize("network", ["Docking/model.onnx", "Single_Pendulum/controller_single_pendulum.onnx",
                                     "TORA/Benchmark9-Tora/controllerTora.onnx",
                                     "TORA/CROWN-Reach/nn_tora_relu_tanh.onnx"])
def test_reader_matches_onnxruntime_on_the_published_networks(network):
    path = ARCHCOMP / network
    reader = read_onnx(path)
    X = np.random.default_rng(0).uniform(-2, 2, size=(100, reader.n_in))
    expected = _onnxruntime(path, X)
    # onnxruntime evaluates these files in float32 (the CROWN-Reach one in float64)
    assert np.max(np.abs(reader.evaluate(X) - expected)) <= 1e-5 * (1 + np.abs(expected).max())


def _mat_network(path: Path, X: np.ndarray) -> np.ndarray:
    """The MAT network (W, b, act_fcns as JuliaReach's read_MAT reads them), evaluated with numpy."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    h = X
    for W, b, act in zip(mat["W"][0], mat["b"][0], mat["act_fcns"]):
        h = h @ np.asarray(W, float).T + np.asarray(b, float).ravel()
        h = np.maximum(h, 0.0) if str(act).strip() == "relu" else h
    return h


def test_acc_input_map_makes_the_onnx_compute_the_mat_network():
    """controller_5_20.onnx subtracts 1 from every input (README); acc_relu.yaml's input map adds it back, so
    the loop's network is the MAT network the published verifiers use (not onnxruntime: it refuses the file's
    rank-4 Gemm)."""
    spec = load_plant_spec(HERE / "acc_relu.yaml")
    loop = foreign_loop(spec, read_onnx(ARCHCOMP / "ACC" / "controller_5_20.onnx"))
    rng = np.random.default_rng(1)
    low = np.array([90, 32, -1, 10, 30, -1.0])
    X = low + rng.uniform(0, 1, (200, 6)) * np.array([20, 0.2, 2, 1, 0.2, 2])
    inputs = np.stack([np.full(200, 30.0), np.full(200, 1.4), X[:, 4], X[:, 0] - X[:, 3], X[:, 1] - X[:, 4]], axis=1)
    expected = _mat_network(ARCHCOMP / "ACC" / "controller_5_20.mat", inputs)
    np.testing.assert_allclose(loop.control(X), expected, rtol=1e-5, atol=1e-5)
    # the README's own numbers: the MAT network gives -0.3511 at (30, 1.4, 30.1, 90, 2.0)
    point = np.array([[90 + 10.0, 30.1 + 2.0, 0.0, 10.0, 30.1, 0.0]])
    assert loop.control(point)[0, 0] == pytest.approx(-0.3511, abs=1e-4)


# (time horizon s, control period s) as each benchmark's README states them (Docking: the 40 s JuliaReach and CORA
# use, the spec files giving none; its period the spec's 1 s)
README_TIMING = {"single_pendulum_2024": (1.0, 0.05), "single_pendulum_2023": (1.0, 0.05),
                 "tora_reach_tanh": (5.0, 0.5), "tora_remain": (20.0, 1.0), "docking": (40.0, 1.0),
                 "acc_relu": (5.0, 0.1)}


@pytest.mark.parametrize("instance", INSTANCES, ids=[i["name"] for i in INSTANCES])
def test_every_plant_file_reads_and_fits_its_network(instance):
    """Each plant file reads with its network, and its period and horizon (steps) are the README's."""
    spec = load_plant_spec(HERE / instance["plant"])
    loop = foreign_loop(spec, read_onnx(ARCHCOMP / instance["network"]))
    seconds, period = README_TIMING[instance["name"]]
    assert spec.schema_version == 2 and spec.dt == pytest.approx(period)
    assert loop.horizon == round(seconds / period), (loop.horizon, seconds, period)


@pytest.mark.slow
def test_peer_suite_agrees_with_the_published_verdicts(tmp_path):
    """Every instance, modest budgets (the whole test is meant to take under ~3 minutes on 2 cores).

    Never VERIFIED where the published verdict is falsified; never FALSIFIED where it is verified. The
    pendulum's 2023 box is FALSIFIED with a counterexample that replays with onnxruntime; the pendulum's 2024
    box, TORA reach-tanh and Docking (reduced box) are VERIFIED by reachability.
    """
    import scpo_ctrl

    start = time.perf_counter()
    outcomes = {}
    for instance in INSTANCES:
        result = scpo_ctrl.verify(HERE / instance["plant"], controller=ARCHCOMP / instance["network"],
                                  out=tmp_path / f"{instance['name']}.json", samples=200, halton=0,
                                  falsify_iterations=3, max_depth=12, max_cells=instance["test_cells"])
        verdicts = {check.name: check.verdict for check in result.certificate.checks}
        outcomes[instance["name"]] = (result, verdicts)
        if instance["published"].startswith("falsified"):
            assert "VERIFIED" not in (verdicts["reachability"], verdicts["falsification"]), instance["name"]
        else:
            assert "FALSIFIED" not in verdicts.values(), (instance["name"], verdicts)
    result, verdicts = outcomes["single_pendulum_2023"]
    assert verdicts["falsification"] == "FALSIFIED" and result.exit_code == 1
    counterexample = result.certificate.check("falsification").counterexample
    assert counterexample["replayed"]["onnxruntime"] > 0 and counterexample["row"] == "theta_at_most_1"
    assert 10 <= counterexample["step"] <= 20
    for name in ("single_pendulum_2024", "tora_reach_tanh", "docking"):
        assert outcomes[name][1]["reachability"] == "VERIFIED", (name, outcomes[name][1])
    assert time.perf_counter() - start < 400  # the budget is ~3 minutes; this catches a runaway, not noise


@pytest.mark.parametrize("name", ["single_pendulum_2024", "tora_reach_tanh"])
def test_reachable_sets_contain_sampled_closed_loops(name):
    """Soundness on the nonlinear peer instances: 2,000 random closed loops (plus the box's corners) stay inside
    the computed boxes at every step (the sets of the one-cell analysis both instances are proven with)."""
    from scpo_ctrl.sim.initial_states import initial_box
    from scpo_ctrl.verify.foreign_reach import reachable_boxes

    instance = next(i for i in INSTANCES if i["name"] == name)
    spec = load_plant_spec(HERE / instance["plant"])
    loop = foreign_loop(spec, read_onnx(ARCHCOMP / instance["network"]))
    box = initial_box(spec.safety.initial_states)
    records = reachable_boxes(loop, box[None, :, 0], box[None, :, 1])
    assert [r[0] for r in records] == list(range(spec.safety.horizon + 1))
    rng = np.random.default_rng(5)
    corners = np.array(np.meshgrid(*box)).reshape(spec.nx, -1).T
    X0 = np.concatenate([corners, rng.uniform(box[:, 0], box[:, 1], (2000, spec.nx))])
    X, _ = loop.rollout(X0)
    for step, _, lo, hi in records:
        assert np.all(X[:, step] >= lo[0]) and np.all(X[:, step] <= hi[0]), step
