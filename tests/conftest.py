"""Shared fixtures: the shipped models, built once per test session."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import yaml

from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.problem import build_problem

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MODEL_FILES = sorted(MODELS.glob("*.yaml"))
MODEL_NAMES = [path.stem for path in MODEL_FILES]
#: the models whose backup is the LQR (export, verify and hil handle these) and those with an MPC backup
LQR_MODEL_NAMES = [path.stem for path in MODEL_FILES if yaml.safe_load(path.read_text())["backup"]["type"] == "lqr"]
MPC_MODEL_NAMES = [name for name in MODEL_NAMES if name not in LQR_MODEL_NAMES]


@functools.lru_cache(maxsize=None)
def problem_for(name: str):
    """The ControlProblem of ``models/<name>.yaml`` (built once)."""
    return build_problem(load_plant_spec(MODELS / f"{name}.yaml"))


@pytest.fixture(params=MODEL_NAMES)
def model_name(request) -> str:
    return request.param


@pytest.fixture(params=LQR_MODEL_NAMES)
def lqr_model_name(request) -> str:
    return request.param


def model_dict(name: str) -> dict:
    """The YAML of a shipped model as a dict, to mutate in tests."""
    return yaml.safe_load((MODELS / f"{name}.yaml").read_text())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


ADAPT_ITERATIONS_FOR_EXPORT = 3


@pytest.fixture(scope="session")
def adapted_runs(tmp_path_factory) -> dict:
    """``{plant name: run directory}`` after a short ``adapt`` of every shipped model (built lazily, once)."""
    from scpo_ctrl.adapt import AdaptRequest, run_adapt

    root = tmp_path_factory.mktemp("adapted")
    cache = {}

    class Runs(dict):
        def __missing__(self, name):
            run = root / name
            run_adapt(AdaptRequest(plant=str(MODELS / f"{name}.yaml"), out=str(run),
                                   iterations=ADAPT_ITERATIONS_FOR_EXPORT, progress=False))
            self[name] = run
            return run

    return Runs(cache)


@pytest.fixture(scope="session")
def default_runs(tmp_path_factory) -> dict:
    """``{plant name: (run directory, exit code)}`` after ``scpo-ctrl adapt models/<name>.yaml`` with every
    default (built lazily, once per session)."""
    from scpo_ctrl.cli import main

    root = tmp_path_factory.mktemp("default")

    class Runs(dict):
        def __missing__(self, name):
            run = root / name
            code = main(["adapt", str(MODELS / f"{name}.yaml"), "--out", str(run), "--quiet"])
            self[name] = (run, code)
            return self[name]

    return Runs()


@pytest.fixture(scope="session")
def default_double_integrator_run(default_runs) -> tuple:
    """``scpo-ctrl adapt models/double_integrator.yaml`` with every default, once per session:
    ``(run directory, exit code)``."""
    return default_runs["double_integrator"]


#: the HIL of :func:`complete_run`
HIL_STEPS, HIL_EPISODES = 20, 2


@pytest.fixture(scope="session")
def complete_run(adapted_runs, tmp_path_factory) -> Path:
    """A small run directory with every stage: adapt (3 iterations), export (cortex-m4), verify, SIL HIL (once per
    session; copy it before changing it)."""
    from scpo_ctrl.cli import main
    from scpo_ctrl.export.run import ExportRequest, run_export
    from scpo_ctrl.verify.run import VerifyRequest, run_verify

    run = tmp_path_factory.mktemp("report") / "double_integrator"
    shutil.copytree(adapted_runs["double_integrator"], run)
    run_export(ExportRequest(run_dir=str(run), target="cortex-m4"))
    run_verify(VerifyRequest(run_dir=str(run), samples=500, halton=128, cells_per_axis=4, max_depth=0,
                             falsify_starts=1))
    code = main(["hil", str(run), "--target", "sil", "--steps", str(HIL_STEPS), "--episodes", str(HIL_EPISODES)])
    assert code == 0
    return run
