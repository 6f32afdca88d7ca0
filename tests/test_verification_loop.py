"""The decay envelope, the row margins and the verification loop that grows SCPO's validation set."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from scpo_ctrl.adapt import AdaptRequest, run_adapt
from scpo_ctrl.backup.envelope import contraction_rate, derive_envelope
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.export.run import ExportRequest, run_export
from scpo_ctrl.policy.residual import ResidualPolicy
from scpo_ctrl.problem import build_problem
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy
from scpo_ctrl.verification_loop import LoopSettings, retreat, run_round, scale_residual
from scpo_ctrl.verify.run import VerifyRequest, run_verify

from .conftest import MODELS

DI = MODELS / "double_integrator.yaml"


def test_envelope_covers_the_backup_and_decays_at_the_derived_rate():
    problem = build_problem(load_plant_spec(DI))
    policy = residual_policy(problem, (8,))
    adaptation = ControlAdaptation(problem, policy)
    envelope = adaptation.envelope
    assert envelope is not None and envelope.derived
    assert 0.0 < envelope.backup_rate < envelope.rate < 1.0
    assert envelope.rate == pytest.approx(envelope.backup_rate ** 0.1)
    # theta = 0 is the backup: every row, the envelope's included, holds with its margin
    rows = adaptation.constraints(np.zeros((1, policy.n_theta)))[0]
    assert np.all(rows + adaptation.margins <= 0.0)
    assert np.all(adaptation.margins >= 0.0) and adaptation.margins.max() > 0.0
    # a hand-set envelope the backup cannot meet is refused, naming what to change
    V = problem.target.value(adaptation.engine.simulate(problem.x0).x)
    with pytest.raises(ValueError, match="raise the gain or the rate"):
        derive_envelope(V, envelope.backup_rate, envelope.floor, rate=0.5, gain=1.0)


def test_contraction_rate_is_the_worst_one_step_decay_of_V():
    rng = np.random.default_rng(0)
    A = np.array([[0.9, 0.2], [-0.1, 0.8]])
    P = np.array([[2.0, 0.3], [0.3, 1.0]])
    rate = contraction_rate(A, P)
    X = rng.standard_normal((20000, 2))
    ratio = np.einsum("bi,ij,bj->b", X @ A.T, P, X @ A.T) / np.einsum("bi,ij,bj->b", X, P, X)
    assert ratio.max() <= rate * (1 + 1e-12)
    assert ratio.max() >= 0.999 * rate


def test_retreat_scales_the_residual_toward_the_backup():
    problem = build_problem(load_plant_spec(DI))
    policy = residual_policy(problem, (8,))
    adaptation = ControlAdaptation(problem, policy)
    rng = np.random.default_rng(1)
    theta = policy.initial_theta(0)
    theta[-9:] = rng.normal(scale=20.0, size=9)  # a last layer far too strong: unsafe
    rows = adaptation.constraints(theta[None, :])[0]
    assert np.any(rows + adaptation.margins > 0.0)
    safe_theta, s = retreat(adaptation, theta)
    assert 0.0 <= s < 1.0
    assert np.all(adaptation.constraints(safe_theta[None, :])[0] + adaptation.margins <= 0.0)
    assert np.array_equal(safe_theta, scale_residual(adaptation, theta, np.array([s]))[0])
    zero = scale_residual(adaptation, theta, np.array([0.0]))[0]
    backup = adaptation.constraints(np.zeros((1, policy.n_theta)))[0]
    assert np.allclose(adaptation.constraints(zero[None, :])[0], backup, atol=1e-12)


def _strong_residual(adaptation: ControlAdaptation) -> np.ndarray:
    """Parameters whose last layer is far too strong: unsafe from much of the box."""
    theta = adaptation.policy.initial_theta(0)
    theta[-9:] = np.random.default_rng(1).normal(scale=20.0, size=9)
    return theta


def test_a_closing_round_searches_again_after_its_retreat():
    """The run's last round does not stop at its first retreat: it adds every violating state a fresh search
    finds and retreats again, until a search finds nothing or its passes are spent; an ordinary round adds
    at most its budget, once."""
    settings = LoopSettings(samples=256, add_per_round=4, falsify_starts=1, reach_depth=0, closing_passes=3)
    problem = build_problem(load_plant_spec(DI))
    closing = ControlAdaptation(problem, residual_policy(problem, (8,)))
    before = closing.n_states
    theta = _strong_residual(closing)
    record, theta_after = run_round(closing, theta, 7, 0, settings, seed=0, closing=True)
    assert record.violating > 0 and record.passes >= 2
    assert record.passes == settings.closing_passes or record.violating_last_pass == 0
    assert record.added.shape[0] == closing.n_states - before == record.validation_states - before
    assert record.added.shape[0] > settings.add_per_round  # later passes add all they find
    assert sum(record.added_by_group.values()) == record.added.shape[0]
    assert 0.0 <= record.residual_scale < 1.0
    assert np.all(closing.constraints(theta_after[None, :])[0] + closing.margins <= 0.0)
    assert record.to_dict()["passes"] == record.passes

    ordinary = ControlAdaptation(problem, closing.policy)
    single, _ = run_round(ordinary, theta, 7, 0, settings, seed=0)
    assert single.passes == 1 and 0 < single.added.shape[0] <= settings.add_per_round
    assert single.violating == record.violating  # the same first search


def _sparse_plant(tmp_path: Path) -> Path:
    """The double integrator with 6 validation states and no corners: SCPO's guarantee misses the box's corners."""
    data = yaml.safe_load(DI.read_text())
    data["name"] = "di_sparse"
    data["safety"]["initial_states"]["count"] = 6
    data["safety"]["initial_states"]["corners"] = False
    path = tmp_path / "di_sparse.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _verify(run: Path) -> dict:
    """Export and verify ``run``. Reachability on a coarse grid (4 cells per axis, no bisection): what the
    tests read is whether a check is FALSIFIED, and reachability's verdict is VERIFIED or UNKNOWN, never
    FALSIFIED; the Monte Carlo and the falsifier, which find counterexamples, keep their sizes."""
    run_export(ExportRequest(run_dir=str(run)))
    return run_verify(VerifyRequest(run_dir=str(run), samples=2000, halton=500, cells_per_axis=4,
                                    max_depth=0)).certificate.to_json()


@pytest.mark.slow
def test_the_loop_turns_a_falsified_run_into_one_without_counterexamples(tmp_path):
    plant = _sparse_plant(tmp_path)
    plain = tmp_path / "plain"
    run_adapt(AdaptRequest(plant=str(plant), out=str(plain), iterations=40, progress=False, verify_loop=False,
                           plots=False))
    certificate = _verify(plain)
    assert certificate["summary"]["falsified"], "the sparse validation set should miss a violation"

    looped = tmp_path / "looped"
    summary = run_adapt(AdaptRequest(plant=str(plant), out=str(looped), iterations=40, progress=False,
                                     plots=False)).summary
    loop = summary.verification_loop
    assert loop.enabled and loop.rounds >= 1 and loop.validation_states_added > 0
    # the file records every budget the loop used, the reachability grid by the plant's state count included
    assert dict(loop.settings) == {**asdict(LoopSettings()), "reach_cells_per_axis": 16}
    assert summary.violating_iterations == 0 and summary.final_safe
    lines = [json.loads(line) for line in (looped / "training.jsonl").read_text().splitlines()]
    rounds = [line["verification_round"] for line in lines if "verification_round" in line]
    assert rounds and rounds[0]["falsified"] and rounds[0]["added"] > 0
    # the final iterate is safe on the enlarged set, margins included
    policy, theta, _ = ResidualPolicy.load(looped / "policy.npz")
    adaptation = ControlAdaptation(build_problem(load_plant_spec(plant)), policy)
    with np.load(looped / "checkpoint.npz") as checkpoint:
        adaptation.set_states(checkpoint["validation_states"])
    assert adaptation.n_states == 6 + loop.validation_states_added
    assert np.all(adaptation.constraints(theta[None, :])[0] + adaptation.margins <= 0.0)
    certificate = _verify(looped)
    assert not certificate["summary"]["falsified"], [c for c in certificate["checks"] if c["verdict"] == "FALSIFIED"]


def test_a_round_searches_the_corners_and_counts_where_the_backup_itself_fails(tmp_path):
    """The box's corners are always searched; states from which the backup itself breaks a plant row
    (here a corner of a box wider than the backup's safe region) are counted, never added."""
    data = yaml.safe_load(DI.read_text())
    data["safety"]["initial_states"] = {"box": {"p": [-3.5, 3.0], "v": [-1.0, 1.3]}, "count": 16}
    path = tmp_path / "di_wide.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    problem = build_problem(load_plant_spec(path))
    adaptation = ControlAdaptation(problem, residual_policy(problem, (8,)))
    settings = LoopSettings(samples=32, add_per_round=8, falsify_starts=1, reach_depth=0)
    record, _ = run_round(adaptation, np.zeros(adaptation.dimension), 1, 0, settings, seed=0)
    assert record.findings["monte_carlo"]["examined"] == 32 + 4
    corner = np.array([-3.5, 1.3])
    backup_rows = adaptation.violations(corner[None], np.zeros(adaptation.dimension), backup_rows_only=True)[0]
    assert backup_rows.max() > 0  # the backup breaks a row from this corner
    assert record.backup_unsafe >= 1
    assert not np.any(np.all(np.isclose(record.added, corner), axis=1))
    # the backup is safe wherever SCPO keeps rows: nothing it can fix was found, so a closing round does not
    # search again and a stalled run is not restarted by these states
    closing, _ = run_round(adaptation, np.zeros(adaptation.dimension), 1, 1, settings, seed=0, closing=True)
    assert closing.violating >= 1 and closing.added_violators == 0 and closing.passes == 1
