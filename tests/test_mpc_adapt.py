"""SCPO on top of the acados MPC backup: check, adapt, the cost gradient, and what is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scpo_ctrl.adapt import AdaptRequest, run_adapt
from scpo_ctrl.check import run_check
from scpo_ctrl.cli import main
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.policy.residual import ResidualPolicy
from scpo_ctrl.problem import build_problem
from scpo_ctrl.run_files import AdaptationSummary
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy

from .conftest import MODELS, MPC_MODEL_NAMES, model_dict, write_yaml


def test_both_mpc_plants_are_shipped():
    assert set(MPC_MODEL_NAMES) >= {"pendulum_mpc", "cartpole_mpc"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pendulum_mpc", "cartpole_mpc"])
def test_check_runs_the_mpc_backup_and_reports_its_solves(name):
    report = run_check(str(MODELS / f"{name}.yaml"))
    assert report.backup_type == "mpc"
    assert report.backup_safe, report.backup_margins
    mpc = report.mpc
    spec = load_plant_spec(MODELS / f"{name}.yaml")
    assert mpc["horizon"] == spec.backup.horizon
    assert mpc["solves"] == report.validation_states * (spec.safety.horizon + 1)
    assert mpc["not_converged"] == 0
    assert 0 < mpc["solve_us_median"] <= mpc["solve_us_p99"]


def _reduced(tmp_path, name: str, count: int, horizon: int, **changes):
    data = model_dict(name)
    data["safety"]["initial_states"]["count"] = count
    data["safety"]["horizon"] = horizon
    data.update(changes)
    return write_yaml(tmp_path / f"{name}.yaml", data)


@pytest.mark.slow
def test_adapt_on_the_pendulum_with_mpc_is_safe_and_improves(mpc_pendulum_run):
    """On the shipped pendulum_mpc (its validation set cut to 16 states and 60 steps, the session's MPC run
    that the export tests use too), 2 iterations: safe, better than the MPC alone."""
    run = mpc_pendulum_run
    summary = AdaptationSummary.read(run / "adaptation.json")
    assert summary.feasible_every_iteration and summary.final_safe
    assert summary.final_loss < summary.initial_loss
    lines = [json.loads(line) for line in (run / "training.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["g_max"] <= 0 for line in lines)

    # the saved policy knows it runs on top of the MPC, and an independent closed loop of it is safe
    policy, theta, _ = ResidualPolicy.load(run / "policy.npz")
    assert policy.backup == "mpc"
    with pytest.raises(ValueError, match="not a CasADi expression"):
        policy.function()
    problem = build_problem(load_plant_spec(run / "plant.yaml"))
    _, evaluation = problem.closed_loop(policy.law(), theta)
    assert evaluation.safe
    assert np.any(theta != policy.initial_theta(0))


@pytest.mark.slow
def test_adapt_on_the_cartpole_with_mpc_lowers_the_closed_loop_cost_safely(tmp_path):
    """One SCPO step on the MPC-backed cart-pole: safe and better. The verification loop is off here (its
    closing round adds a Monte Carlo of 2,048 MPC closed loops to the one step); the MPC run of the session
    fixture ``mpc_pendulum_run`` has it on."""
    plant = _reduced(tmp_path, "cartpole_mpc", count=8, horizon=60)
    result = run_adapt(AdaptRequest(plant=str(plant), out=str(tmp_path / "run"), iterations=1, progress=False,
                                    verify_loop=False, plots=False))
    summary = result.summary
    assert summary.feasible_every_iteration and summary.final_safe
    assert summary.final_loss < summary.initial_loss


@pytest.mark.slow
def test_closed_loop_cost_gradient_through_the_mpc_matches_finite_differences(tmp_path):
    """The gradient uses a first-order model of the MPC along the trajectory; it must be the true slope."""
    plant = _reduced(tmp_path, "pendulum_mpc", count=8, horizon=40,
                     task={"type": "closed_loop_cost", "closed_loop_cost": {"Q": [10.0, 0.1], "R": [0.1]}})
    problem = build_problem(load_plant_spec(plant))
    policy = residual_policy(problem, (8,))
    adaptation = ControlAdaptation(problem, policy)
    rng = np.random.default_rng(3)
    theta = 0.3 * rng.standard_normal(policy.n_theta)
    value, gradient = adaptation.loss_and_gradient(theta)
    assert value == pytest.approx(adaptation.loss(theta), rel=1e-9)
    direction = rng.standard_normal(policy.n_theta)
    direction /= np.linalg.norm(direction)
    h = 1e-4
    slope = (adaptation.loss(theta + h * direction) - adaptation.loss(theta - h * direction)) / (2 * h)
    # re-solve finite differences of the MPC: 0.1 % here (acados' parametric sensitivity was 5 % off)
    assert gradient @ direction == pytest.approx(slope, rel=2e-3, abs=1e-6)


def test_missing_acados_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCPO_CTRL_ACADOS_DIR", str(tmp_path / "nowhere"))
    assert main(["check", str(MODELS / "pendulum_mpc.yaml")]) == 2
    err = capsys.readouterr().err
    assert "acados is not installed" in err and "scpo-ctrl setup-acados" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("method", ["penalty", "lagrangian"])
def test_gradient_baselines_are_refused_with_an_mpc_backup(tmp_path, capsys, method):
    out = tmp_path / "run"
    assert main(["adapt", str(MODELS / "pendulum_mpc.yaml"), "--method", method, "--out", str(out), "--quiet"]) == 2
    assert "MPC backup" in capsys.readouterr().err
    assert not out.exists()
