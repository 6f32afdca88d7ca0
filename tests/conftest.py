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
#: The short runs with the verification loop on and with plots. The report, HIL and API tests read the double
#: integrator's rounds (adaptation.json, training.jsonl) and plots. The cart-pole's closing round retreats its
#: residual to one that reachability proves on part of the box (test_verify.py's soundness test needs that; the
#: run without the loop is proven nowhere). The other runs are read only for their plant.yaml and policy.npz (the
#: law that export and verify are tested on), and the closing round (a Monte Carlo, falsification and
#: reachability search after the last iteration) and the plots were most of their adapt's time. The loop has
#: its own tests (test_verification_loop.py) and runs in every ``default_runs`` run.
ADAPTED_WITH_VERIFICATION_LOOP = ("double_integrator", "cartpole")
#: Tests and fixtures that never read a run's plots pass ``plots=False`` (``--no-plots``): matplotlib costs
#: seconds per adapt and the suite runs some thirty. The plots are tested where they are read: the default
#: double integrator run (test_adapt.py) and the report on the ``adapted_runs`` double integrator (test_report.py).
ADAPTED_WITH_PLOTS = ("double_integrator",)


@pytest.fixture(scope="session")
def adapted_runs(tmp_path_factory) -> dict:
    """``{plant name: run directory}`` after a short ``adapt`` (3 iterations) of every shipped model (built
    lazily, once); with the verification loop for the plants in :data:`ADAPTED_WITH_VERIFICATION_LOOP`, with plots
    for those in :data:`ADAPTED_WITH_PLOTS`."""
    from scpo_ctrl.adapt import AdaptRequest, run_adapt

    root = tmp_path_factory.mktemp("adapted")
    cache = {}

    class Runs(dict):
        def __missing__(self, name):
            run = root / name
            run_adapt(AdaptRequest(plant=str(MODELS / f"{name}.yaml"), out=str(run),
                                   iterations=ADAPT_ITERATIONS_FOR_EXPORT, progress=False,
                                   verify_loop=name in ADAPTED_WITH_VERIFICATION_LOOP,
                                   plots=name in ADAPTED_WITH_PLOTS))
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


@pytest.fixture(scope="session")
def mpc_pendulum_run(tmp_path_factory) -> Path:
    """The pendulum on its acados MPC backup (16 validation states, 60 steps), adapted 2 iterations (the
    verification loop on, as by default) and exported for the host: one run for the MPC adapt test and the
    MPC export, verify and HIL tests (once per session; copy it before changing it)."""
    from scpo_ctrl.adapt import AdaptRequest, run_adapt
    from scpo_ctrl.export.run import ExportRequest, run_export

    directory = tmp_path_factory.mktemp("mpc_pendulum")
    data = model_dict("pendulum_mpc")
    data["safety"]["initial_states"]["count"] = 16
    data["safety"]["horizon"] = 60
    plant = write_yaml(directory / "pendulum_mpc.yaml", data)
    run = directory / "run"
    # no test reads its plots (the rollouts plot runs three MPC closed loops)
    result = run_adapt(AdaptRequest(plant=str(plant), out=str(run), iterations=2, progress=False, plots=False))
    assert result.summary.feasible_every_iteration
    export = run_export(ExportRequest(run_dir=str(run)))
    assert export.equivalent
    return run


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


class CompiledDiscreteMap:
    """A plant's discrete map ``x+ = f(x, u)`` for a batch of states, compiled once to C with a loop over
    the batch (CasADi's own C of ``model.f``, built with ``gcc -O2 -ffp-contract=off``).

    The soundness tests simulate 100,000 closed loops; CasADi's virtual machine spends about 7 us per state
    and step on them (``model.f.map(N)``), which made those simulations most of the tests' time. The
    generated C performs the same double operations in the same order, and :meth:`__init__` checks it
    against ``model.f`` on random states before anything uses it.
    """

    def __init__(self, model, directory: Path):
        import ctypes
        import subprocess

        import casadi as ca
        import numpy as np

        self.nx, self.nu = model.nx, model.nu
        directory.mkdir(parents=True, exist_ok=True)
        f = model.f
        generator = ca.CodeGenerator("plant_map.c", {"with_header": False, "casadi_int": "long long int"})
        generator.add(f)
        generator.generate(str(directory) + "/")
        batch = f"""
#include <stddef.h>
int {f.name()}(const double** arg, double** res, long long int* iw, double* w, int mem);
void plant_map_batch(const double* x, const double* u, double* x_next, long n) {{
    const double* arg[{max(f.sz_arg(), 2)}] = {{0}};
    double* res[{max(f.sz_res(), 1)}] = {{0}};
    long long int iw[{max(f.sz_iw(), 1)}];
    double w[{max(f.sz_w(), 1)}];
    for (long i = 0; i < n; ++i) {{
        arg[0] = x + i * {self.nx}; arg[1] = u + i * {self.nu}; res[0] = x_next + i * {self.nx};
        {f.name()}(arg, res, iw, w, 0);
    }}
}}
"""
        (directory / "plant_map_batch.c").write_text(batch)
        library = directory / "libplant_map.so"
        subprocess.run(["gcc", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-o", str(library),
                        str(directory / "plant_map.c"), str(directory / "plant_map_batch.c"), "-lm"],
                       check=True, capture_output=True)
        self._library = ctypes.CDLL(str(library))
        pointer = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
        self._library.plant_map_batch.argtypes = [pointer, pointer, pointer, ctypes.c_long]
        self._library.plant_map_batch.restype = None
        # the same numbers as CasADi's own evaluation, on states spread well beyond any initial box
        rng = np.random.default_rng(0)
        X = rng.uniform(-3.0, 3.0, size=(500, self.nx))
        U = rng.uniform(-3.0, 3.0, size=(500, self.nu))
        reference = np.array(f.map(len(X))(X.T, U.T)).T
        np.testing.assert_allclose(self(X, U), reference, rtol=1e-13, atol=1e-13)

    def __call__(self, X, U):
        """``x+`` of every row: ``X (N, nx)``, ``U (N, nu)`` -> ``(N, nx)``."""
        import numpy as np

        X = np.ascontiguousarray(X, dtype=np.float64)
        U = np.ascontiguousarray(U, dtype=np.float64)
        out = np.empty_like(X)
        self._library.plant_map_batch(X, U, out, len(X))
        return out

    def closed_loop(self, controller, X0, horizon: int, P, c: float, x_eq):
        """``(x (N, H+1, nx), level (N, H+1))`` of ``x+ = f(x, controller(x))`` from every row of ``X0``, with
        ``level = (x - x_eq)' P (x - x_eq) / c`` (inf where not finite), as the verifier's own simulation."""
        import numpy as np

        X = np.empty((horizon + 1, len(X0), self.nx))  # time-major: each step writes one contiguous block
        X[0] = X0
        for t in range(horizon):
            X[t + 1] = self(X[t], controller(X[t]))
        d = X - x_eq
        level = ((d @ P) * d).sum(axis=2) / c
        return X.transpose(1, 0, 2), np.where(np.isfinite(level), level, np.inf).T
