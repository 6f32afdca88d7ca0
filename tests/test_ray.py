"""Issue 18: SCPO's closed-loop bank on Ray, on a local cluster of two nodes (``ray.cluster_utils.Cluster``).

What is checked: a short SCPO run with an MPC backup gives bit-identical results on the cluster and in-process;
a worker killed mid-batch is restarted and its task retried, with nothing lost or counted twice; when the whole
cluster goes away the run finishes its iteration here, stops, and ``--resume`` continues locally to the same
result as a run that never left this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from .conftest import model_dict, write_yaml
from scpo_ctrl.adapt import AdaptRequest, run_adapt
from scpo_ctrl.errors import UsageError
from scpo_ctrl.execution import LocalExecutor, RayExecutor, Recipe
from scpo_ctrl.problem import build_problem
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.scpo.bank import DistributedBank, DistributedCostLoops, cost_recipe, rollout_recipe
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy
from scpo_ctrl.verify.run import VerifyRequest, run_verify

ray = pytest.importorskip("ray", reason="Ray is the optional extra scpo-ctrl[ray] (scripts/setup.sh installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
#: keys of a training.jsonl line that are wall-clock measurements, not results
TIMING_KEYS = ("seconds", "timing", "steps_per_second_c_in_the_loop", "closed_loops_ran")


def _two_nodes() -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine, this process its driver."""
    nodes = _two_nodes()
    ray.init(address=nodes.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def _small_pendulum(tmp_path: Path, name: str = "pendulum_empc", closed_loop_cost: bool = False,
                   horizon: int = 40) -> Path:
    """The embedded-MPC pendulum with 12 validation states and a 40-step horizon (the bank stays small); with
    ``closed_loop_cost`` its task is a closed-loop cost the backup does not minimise (the loss, its gradient
    and the line search then run MPC closed loops too, and SCPO's steps are accepted) and its policy one layer of
    8 (the cost's gradient compiles in seconds)."""
    data = model_dict(name)
    data["safety"]["initial_states"]["count"] = 12
    data["safety"]["horizon"] = horizon
    if closed_loop_cost:
        data["task"] = {"type": "closed_loop_cost", "closed_loop_cost": {"Q": [10.0, 0.1], "R": [0.1]}}
        data["policy"]["hidden"] = [8]
    return write_yaml(tmp_path / f"{name}.yaml", data)


def _results(run: Path) -> tuple:
    lines = [_without_timing(json.loads(line)) for line in (run / "training.jsonl").read_text().splitlines()]
    with np.load(run / "policy.npz") as policy, np.load(run / "checkpoint.npz") as checkpoint:
        arrays = {name: policy[name] for name in policy.files if policy[name].dtype != object}
        arrays.update({f"checkpoint.{name}": checkpoint[name] for name in ("theta", "g", "l", "validation_states")})
    return lines, arrays


def _without_timing(value):
    if isinstance(value, dict):
        return {key: _without_timing(item) for key, item in value.items() if key not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(item) for item in value]
    return value


def _assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        assert np.array_equal(a[1][name], b[1][name]), name


def test_adapt_with_an_mpc_backup_on_two_nodes_is_bit_identical_to_the_local_run(cluster, tmp_path, monkeypatch):
    """The closed-loop cost task: the bank, the validation, the loss gradient and the line search all run MPC
    closed loops, and all of them go to the workers (counted by the batches the executor was given)."""
    plant = _small_pendulum(tmp_path, closed_loop_cost=True)
    batches = []
    ray_map = RayExecutor.map

    def counted(executor, recipe, tasks, progress=None):
        kinds = {getattr(task, "gradient", None) for task in tasks}
        batches.append((recipe.builder.rpartition(":")[2], len(tasks), kinds))
        return ray_map(executor, recipe, tasks, progress)

    monkeypatch.setattr(RayExecutor, "map", counted)
    runs = {}
    for where in (None, "auto"):
        run = tmp_path / f"run-{where}"
        result = run_adapt(AdaptRequest(plant=str(plant), out=str(run), iterations=3, progress=False, ray=where))
        assert not result.interrupted and result.summary.violating_iterations == 0
        runs[where] = _results(run)
    _assert_same(runs[None], runs["auto"])
    assert runs[None][0][-1]["accepted"]  # the line search and the validation ran
    # 64 cost starts in blocks of 16 over the two workers: one gradient batch per iteration, and the loss at the
    # start and in every line search
    gradients = [b for b in batches if b[0] == "cost_worker" and b[2] == {True}]
    losses = [b for b in batches if b[0] == "cost_worker" and b[2] == {False}]
    assert len(gradients) == 3 and {b[1] for b in gradients} == {4}
    assert len(losses) >= 1 + 3 and {b[1] for b in losses} == {4}
    assert sum(b[0] == "rollout_worker" for b in batches) >= 1 + 3 + 3  # the backup, the bank, the validation
    config = (tmp_path / "run-auto" / "config.resolved.yaml").read_text()
    assert "execution: Ray at " in config and "(2 workers)" in config
    assert "execution: in-process" in (tmp_path / "run-None" / "config.resolved.yaml").read_text()


def _bank_parts(tmp_path: Path):
    """The acados MPC pendulum's bank (warm-started SQP in every closed loop): 8 probes from 12 states."""
    spec = load_plant_spec(_small_pendulum(tmp_path, "pendulum_mpc"))
    problem = build_problem(spec)
    policy = residual_policy(problem, spec.policy.hidden, spec.policy.activation)
    adaptation = ControlAdaptation(problem, policy)
    thetas = np.random.default_rng(1).normal(scale=0.05, size=(8, adaptation.dimension))
    recipe = rollout_recipe(spec, spec.policy.hidden, spec.policy.activation, adaptation.jit)
    return adaptation, thetas, recipe


def test_a_worker_killed_mid_batch_is_restarted_and_its_task_retried(cluster, tmp_path):
    adaptation, thetas, recipe = _bank_parts(tmp_path)
    G, X = adaptation.engine.metrics_batch(adaptation.x0, thetas)
    executor = RayExecutor("auto")
    try:
        before = executor.worker_pids()
        assert executor.workers == 2 and len(set(before)) == 2
        reports = []

        def progress(done: int, total: int) -> None:
            reports.append((done, total))
            if done == 1:  # one worker has just finished a block, the other is in the middle of one: kill both
                for pid in before:
                    os.kill(pid, signal.SIGKILL)

        G_ray, X_ray = DistributedBank(executor, recipe, progress).metrics_batch(adaptation.x0, thetas)
        after = executor.worker_pids()
        assert not executor.lost
    finally:
        executor.close()
    assert not set(after) & set(before)  # both were restarted (they rebuilt the engine from the recipe)
    assert reports[0][1] > 2 and reports[-1][0] == reports[0][1]
    assert np.array_equal(G, G_ray) and np.array_equal(X, X_ray)


def test_a_node_lost_mid_batch_moves_its_worker_to_the_node_left(cluster, tmp_path):
    """Its actor restarts on the surviving node (actors reserve no CPU) and the block is retried there."""
    adaptation, thetas, recipe = _bank_parts(tmp_path)
    G, X = adaptation.engine.metrics_batch(adaptation.x0, thetas)
    executor = RayExecutor("auto")
    worker_node = cluster.worker_nodes and next(iter(cluster.worker_nodes))
    assert worker_node
    try:
        def progress(done: int, total: int) -> None:
            if done == 1:
                cluster.remove_node(worker_node, allow_graceful=False)

        G_ray, X_ray = DistributedBank(executor, recipe, progress).metrics_batch(adaptation.x0, thetas)
        assert not executor.lost
    finally:
        executor.close()
        cluster.add_node(num_cpus=1)  # the cluster as the other tests expect it
        cluster.wait_for_nodes()
    assert np.array_equal(G, G_ray) and np.array_equal(X, X_ray)


def test_a_spec_that_is_not_its_text_is_refused_on_ray(cluster, tmp_path):
    """Workers rebuild from the plant file's text: a spec changed after reading would be simulated as the text
    says, so adapt compares a few closed loops first and refuses."""
    spec = load_plant_spec(_small_pendulum(tmp_path))
    changed = replace(spec, dt=1.5 * spec.dt)
    with pytest.raises(UsageError, match="--ray: the workers' closed loops differ"):
        run_adapt(AdaptRequest(plant=changed, out=str(tmp_path / "run"), iterations=1, progress=False, ray="auto"))


def test_the_in_process_executor_gives_the_engines_rows_and_recipes_name_package_functions(tmp_path):
    adaptation, thetas, recipe = _bank_parts(tmp_path)
    G, X = adaptation.engine.metrics_batch(adaptation.x0, thetas)
    reports = []
    G_local, X_local = DistributedBank(LocalExecutor(), recipe, lambda *done: reports.append(done)).metrics_batch(
        adaptation.x0, thetas)
    assert np.array_equal(G, G_local) and np.array_equal(X, X_local)
    assert reports[-1][0] == reports[-1][1] == len(reports)
    assert recipe.key == Recipe(recipe.builder, recipe.content).key != Recipe(recipe.builder, b"{}").key
    with pytest.raises(ValueError, match="is not one of"):
        Recipe("os:system", b"true").build()


class _Workers(LocalExecutor):
    """In this process, but splitting batches as for :attr:`workers` workers."""


def test_the_cost_loops_in_blocks_of_starts_are_the_full_batch_bit_for_bit(tmp_path):
    """The acados pendulum's closed-loop cost (a warm-started SQP solve at every step, its Jacobian from warm
    re-solves): gradient pieces and loss through the distributed loops, split into blocks as for 1 and 3 workers
    (blocks of 32 and of 10 starts), equal the in-process evaluation of all 64 starts at once."""
    spec = load_plant_spec(_small_pendulum(tmp_path, "pendulum_mpc", closed_loop_cost=True, horizon=20))
    problem = build_problem(spec)
    policy = residual_policy(problem, spec.policy.hidden, spec.policy.activation)
    here = ControlAdaptation(problem, policy)
    theta = np.random.default_rng(2).normal(scale=0.05, size=here.dimension)
    pieces, value = here.gradient_pieces(theta, 4), here.loss(theta)
    executor, reports = _Workers(), []
    loops = DistributedCostLoops(executor, cost_recipe(spec, spec.policy.hidden, spec.policy.activation, here.jit),
                                 lambda *done: reports.append(done))
    there = ControlAdaptation(problem, policy, cost_loops=loops)
    for workers, blocks in ((1, 2), (3, 7)):
        executor.workers = workers
        assert np.array_equal(there.gradient_pieces(theta, 4), pieces)
        assert reports[-1] == (blocks, blocks)
        assert there.loss(theta) == value
        assert reports[-1] == (blocks, blocks)


def test_verify_with_its_monte_carlo_on_two_nodes_writes_the_local_certificate(cluster, complete_run, tmp_path):
    """3,064 closed loops of the exported C in two blocks on the workers, which load the exported library only
    after checking its sha256 against the manifest: the same verdicts, counts, worst rows and counterexample
    starts as in this process."""
    run = tmp_path / "run"
    shutil.copytree(complete_run, run)
    settings = dict(samples=3000, halton=64, cells_per_axis=4, max_depth=0, falsify_starts=1)
    local = run_verify(VerifyRequest(run_dir=str(run), **settings)).certificate.to_json()
    remote = run_verify(VerifyRequest(run_dir=str(run), ray="auto", **settings)).certificate.to_json()
    ran = {c["name"]: c["details"].get("closed_loops_ran") for c in remote["checks"]}
    assert ran["closed_loop_safety"].startswith("Ray at ") and ran["closed_loop_safety"].endswith("(2 workers)")
    assert {c["name"]: c["details"].get("closed_loops_ran") for c in local["checks"]}["closed_loop_safety"] == \
        "in-process"
    assert _without_timing(local["checks"]) == _without_timing(remote["checks"])


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "scpo_ctrl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_when_the_cluster_goes_away_the_run_stops_cleanly_and_resumes_here(tmp_path):
    plant = _small_pendulum(tmp_path)
    local = tmp_path / "local"
    assert _cli("adapt", str(plant), "--out", str(local), "--iterations", "5", "--quiet",
                "--no-verify-loop").returncode == 0
    nodes = _two_nodes()
    run = tmp_path / "run"
    killed = threading.Event()

    def kill_the_cluster_after_the_first_iteration() -> None:
        jsonl = run / "training.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (jsonl.exists() and jsonl.read_text().strip()):
            time.sleep(0.2)
        for node in [*nodes.worker_nodes, nodes.head_node]:
            node.kill_all_processes(check_alive=False, allow_graceful=False)
        killed.set()

    killer = threading.Thread(target=kill_the_cluster_after_the_first_iteration, daemon=True)
    killer.start()
    try:
        stopped = _cli("adapt", str(plant), "--out", str(run), "--iterations", "5", "--quiet", "--no-verify-loop",
                       "--ray", nodes.address)
    finally:
        killer.join(timeout=60)
    assert killed.is_set()
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "the Ray cluster went away" in stopped.stderr
    done = len((run / "training.jsonl").read_text().splitlines())
    assert 1 <= done < 5
    resumed = _cli("adapt", str(plant), "--out", str(run), "--iterations", "5", "--quiet", "--no-verify-loop",
                   "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same(_results(local), _results(run))


def _reach_sets(run: Path) -> dict:
    with np.load(run / "verify" / "reach_sets.npz") as sets:
        return {name: sets[name] for name in sets.files}


def test_verify_with_its_reachability_cells_on_two_nodes_writes_the_local_certificate_and_sets(
        cluster, complete_run, tmp_path, monkeypatch, caplog):
    """Every bisection pass's cells in blocks of 2 or 3 (more blocks than workers) on the workers, which rebuild
    the law from the run's plant file and policy: the reachability check and its sets npz are the in-process
    ones, bit for bit (and so are the blocks' counts, sizes and merged order: the pass's bisections are the
    in-process ones)."""
    import logging
    import re

    from scpo_ctrl.verify import reach

    run = tmp_path / "run"
    shutil.copytree(complete_run, run)
    settings = dict(samples=1, halton=0, cells_per_axis=2, max_depth=2, falsify_starts=1)
    monkeypatch.setattr(reach, "CELLS_PER_BLOCK", 2)  # in this process as on Ray
    local = run_verify(VerifyRequest(run_dir=str(run), **settings)).certificate.to_json()
    local_sets = _reach_sets(run)
    (run / "verify" / "reach_sets.npz").unlink()
    with caplog.at_level(logging.INFO, logger="scpo_ctrl.verify.run"):
        remote = run_verify(VerifyRequest(run_dir=str(run), ray="auto", **settings)).certificate.to_json()
    remote_sets = _reach_sets(run)
    local_reach, remote_reach = ({c["name"]: c for c in certificate["checks"]}["reachability"]
                                 for certificate in (local, remote))
    widths = np.unique(np.round(local_sets["hi"] - local_sets["lo"], 12), axis=0)
    assert len(widths) > 1 and local_reach["details"]["cells"] > 3  # cells from more than one depth
    assert _without_timing(local_reach) == _without_timing(remote_reach)
    assert local_sets.keys() == remote_sets.keys() and len(local_sets["piece_origin"]) > 0
    for name in local_sets:
        assert local_sets[name].dtype == remote_sets[name].dtype, name
        assert np.array_equal(local_sets[name], remote_sets[name]), name
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reachability cells on Ray at ")]
    passes = [report for report in reports if re.search(r" (\d+)/\1 tasks$", report)]  # each pass's last
    assert reports[0].endswith(" 1/2 tasks") and passes[0].endswith(" 2/2 tasks") and len(passes) > 1  # 4 cells


def test_a_worker_that_cannot_build_its_recipe_ends_verify_with_one_line(cluster, complete_run, tmp_path,
                                                                         monkeypatch, capsys):
    """A host library whose sha256 is not the one the worker was told: the worker refuses to load it, and the
    command line says so in one line naming the worker and its node (exit 2, no Ray traceback)."""
    from scpo_ctrl.cli import main
    from scpo_ctrl.verify import run as verify_run

    run = tmp_path / "run"
    shutil.copytree(complete_run, run)
    real = verify_run.monte_carlo_recipe

    def wrong_sha256(run_dir, library, library_sha256, *rest):
        return real(run_dir, library, "0" * 64, *rest)

    monkeypatch.setattr(verify_run, "monte_carlo_recipe", wrong_sha256)
    code = main(["verify", str(run), "--samples", "1", "--halton", "0", "--cells", "2", "--depth", "0", "--ray"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: the Ray worker (pid ") and " on node " in err
    assert "could not build scpo_ctrl.verify.distributed:closed_loop_worker: ValueError: the host library" in err
    assert "sha256 differs" in err


def test_a_law_a_worker_rebuilds_differently_is_refused_in_one_line(complete_run):
    """The reachability worker checks that the law it rebuilt from the run's files is the driver's (by digest)."""
    from scpo_ctrl.execution import ExecutionError
    from scpo_ctrl.export.law import law_from_run
    from scpo_ctrl.verify.distributed import reach_recipe
    from scpo_ctrl.verify.reach import ReachSettings

    recipe = reach_recipe(complete_run, law_from_run(complete_run), 10, ReachSettings())
    content = {**json.loads(recipe.content), "law_sha256": "0" * 64}
    with pytest.raises(ExecutionError, match=r"^this process could not build scpo_ctrl\.verify\.distributed:"
                                            r"reach_worker: ValueError: the law rebuilt from the run's plant\.yaml "
                                            r"and policy\.npz is not the driver's \(digest differs\)$"):
        LocalExecutor().map(Recipe(recipe.builder, json.dumps(content).encode()), [None])
