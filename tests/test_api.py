"""The Python API: the README's notebook example, typed results equal to the files, the state-space plant."""

from __future__ import annotations

import json
import re
import runpy

import control
import numpy as np
import pytest

import scpo_ctrl
from scpo_ctrl.cli import main
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.errors import ScpoError, SpecError, UsageError
from scpo_ctrl.plant.model import build_plant
from scpo_ctrl.run_files import (AdaptationSummary, Certificate, ExportManifest, HilIndex, HilReport, RunFileError,
                                 from_json)

from .conftest import MODELS, ROOT


def _readme_example() -> str:
    """The python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple:
    """The README's example, run in an empty directory: ``(run directory, its globals)``."""
    directory = tmp_path_factory.mktemp("readme")
    (directory / "example.py").write_text(_readme_example())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        namespace = runpy.run_path(str(directory / "example.py"))
    return directory / "runs" / "cart", namespace


@pytest.mark.slow
def test_readme_example_runs_and_returns_the_run_files(readme_run):
    run, namespace = readme_run
    result, certificate = namespace["run"], namespace["certificate"]
    assert result.summary.final_safe and result.summary.feasible_every_iteration
    assert result.summary.final_loss < result.summary.initial_loss
    # what the functions returned is what the run directory holds, read back through the same dataclasses
    assert result.summary.to_json() == AdaptationSummary.read(run / "adaptation.json").to_json()
    assert certificate.to_json() == Certificate.read(run / "certificate.json").to_json()
    assert certificate.check("integrity").verdict == "VERIFIED"
    assert certificate.check("equivalence").verdict == "VERIFIED"
    assert (run / "plant.yaml").read_text() == namespace["plant"].text
    assert ExportManifest.read(run / "export" / "manifest.json").self_check_passed


@pytest.mark.slow
def test_hil_and_report_return_their_files(readme_run, tmp_path):
    run, _ = readme_run
    result = scpo_ctrl.hil(run, episodes=2, steps=20, plots=False)
    assert isinstance(result.report, HilReport) and result.passed
    assert result.report.episodes == 2 and result.report.steps_per_episode == 20
    assert result.report.to_json() == HilReport.read(result.path).to_json()
    index = HilIndex.read(run / "hil" / "report.json")
    assert index.targets["sil"].report == "sil/report.json"
    assert index.targets["sil"].summary == result.report.summary
    page = scpo_ctrl.report(run)
    assert page.path.is_file() and page.data.section("certificate").present
    # the HIL files read and write back byte for byte, as the other run files do (test below)
    for kind, relative in ((HilIndex, "hil/report.json"), (HilReport, "hil/sil/report.json")):
        kind.read(run / relative).write(tmp_path / "copy.json")
        assert (tmp_path / "copy.json").read_bytes() == (run / relative).read_bytes(), relative


@pytest.mark.slow
def test_every_run_file_reads_and_writes_back_byte_for_byte(readme_run, tmp_path):
    """No key added, none removed, none reordered: read + write reproduces the file the verb wrote (the HIL
    files: in the test above, which runs hil)."""
    run, _ = readme_run
    files = [(AdaptationSummary, "adaptation.json"), (ExportManifest, "export/manifest.json"),
             (Certificate, "certificate.json")]
    for kind, relative in files:
        kind.read(run / relative).write(tmp_path / "copy.json")
        assert (tmp_path / "copy.json").read_bytes() == (run / relative).read_bytes(), relative


def test_a_malformed_run_file_names_the_file_and_the_key(tmp_path):
    certificate = {"format": "scpo-certificate/1", "generator": "g", "plant": "p", "run_dir": "r",
                   "precision": "float32", "manifest_sha256": "0", "inputs_sha256": None, "artefacts": {},
                   "initial_box": {"p": [-1.0, 1.0]}, "horizon_steps": 10,
                   "summary": {"verified": [], "falsified": [], "unknown": [],
                               "safe_for_every_initial_state_of_the_box": False},
                   "checks": [{"name": "integrity", "claim": "c", "verdict": "VERIFIED", "evidence": "e",
                               "seconds": None, "details": {}, "counterexample": None}],
                   "exit_code": 0}
    parsed = from_json(Certificate, certificate, "certificate.json")
    assert np.isnan(parsed.checks[0].seconds)  # null: a non-finite number, written back as null
    assert parsed.to_json() == certificate
    certificate["checks"][0]["verdict"] = 1
    with pytest.raises(RunFileError, match=r"^certificate.json: checks\[0\].verdict: expected a string, got an integer"):
        from_json(Certificate, certificate, "certificate.json")
    del certificate["summary"]
    with pytest.raises(RunFileError, match=r"^certificate.json: summary: missing$"):
        from_json(Certificate, certificate, "certificate.json")
    path = tmp_path / "adaptation.json"
    path.write_text("{ not json")
    with pytest.raises(ScpoError, match="adaptation.json: not valid JSON"):
        AdaptationSummary.read(path)


def _discrete(spec):
    linear = build_plant(spec).linearise()
    return linear.A, linear.B


def test_state_space_plant_is_the_yaml_plant_after_discretisation():
    """A continuous python-control double integrator gives the discrete A, B of the shipped YAML plant (whose ODE
    the RK4 integrates exactly: the solution is quadratic in time) and of python-control's own ZOH."""
    yaml_spec = load_plant_spec(MODELS / "double_integrator.yaml")
    system = control.ss([[0, 1], [0, 0]], [[0], [1]], [[1, 0]], [[0]])
    limits = [(v.min, v.max) for v in yaml_spec.states]
    spec = scpo_ctrl.plant_from_state_space(
        system, name="double_integrator", dt=yaml_spec.dt, state_names=yaml_spec.state_names,
        input_names=yaml_spec.input_names, state_limits=limits, input_limits=[(-1.0, 1.0)],
        initial_box=yaml_spec.safety.initial_states.box.tolist(), horizon=yaml_spec.safety.horizon,
        Q=np.diag(yaml_spec.backup.Q), R=np.diag(yaml_spec.backup.R))
    assert spec.dynamics.kind == "linear" and spec.dynamics.continuous and spec.dt == yaml_spec.dt
    A, B = _discrete(spec)
    A_yaml, B_yaml = _discrete(yaml_spec)
    reference = control.c2d(system, yaml_spec.dt, method="zoh")
    np.testing.assert_allclose(A, A_yaml, atol=1e-12)
    np.testing.assert_allclose(B, B_yaml, atol=1e-12)
    np.testing.assert_allclose(A, reference.A, atol=1e-12)
    np.testing.assert_allclose(B, reference.B, atol=1e-12)
    np.testing.assert_array_equal(spec.backup.Q, yaml_spec.backup.Q)
    np.testing.assert_array_equal(spec.backup.R, yaml_spec.backup.R)
    assert [(v.name, v.min, v.max) for v in spec.states] == [(v.name, v.min, v.max) for v in yaml_spec.states]


def test_a_discrete_state_space_plant_keeps_its_matrices_and_period(tmp_path):
    Ad, Bd = np.array([[1.0, 0.05], [0.0, 0.98]]), np.array([[0.001], [0.05]])
    spec = scpo_ctrl.plant_from_state_space(
        control.ss(Ad, Bd, np.eye(2), np.zeros((2, 1)), 0.05), name="motor", state_limits=[(-1, 1), (None, 3)],
        input_limits=[(-2, 2)], initial_box=[(-0.5, 0.5), (-1, 1)], horizon=40, validation_states=8)
    assert spec.dt == 0.05 and not spec.dynamics.continuous
    assert spec.state_names == ("x0", "x1") and spec.states[1].min is None and spec.states[1].max == 3.0
    A, B = _discrete(spec)
    np.testing.assert_array_equal(A, Ad)
    np.testing.assert_array_equal(B, Bd)
    # the spec's text is a plant file: written out and loaded, it is the same plant
    path = tmp_path / "motor.yaml"
    path.write_text(spec.text)
    loaded = load_plant_spec(path)
    assert loaded.text_sha256 == spec.text_sha256 and loaded.states == spec.states
    np.testing.assert_array_equal(loaded.dynamics.A, Ad)


def test_state_space_mistakes_are_one_clear_error():
    system = control.ss([[0, 1], [0, 0]], [[0], [1]], [[1, 0]], [[0]])
    common = dict(name="cart", state_limits=[(-5, 5), (-2, 2)], input_limits=[(-1, 1)], horizon=10)
    with pytest.raises(UsageError, match="continuous-time system needs dt="):
        scpo_ctrl.plant_from_state_space(system, initial_box=[(-3, 3), (-1, 1)], **common)
    with pytest.raises(SpecError, match=r"safety.initial_states.box.x0: \[-6, 3\] is outside the state limits"):
        scpo_ctrl.plant_from_state_space(system, dt=0.1, initial_box=[(-6, 3), (-1, 1)], **common)
    with pytest.raises(UsageError, match="initial_box has 1 entries, expected 2"):
        scpo_ctrl.plant_from_state_space(system, dt=0.1, initial_box=[(-3, 3)], **common)
    discrete = control.ss([[1.0]], [[0.1]], [[1.0]], [[0.0]], 0.1)
    with pytest.raises(UsageError, match="differs from the system's dt"):
        scpo_ctrl.plant_from_state_space(discrete, dt=0.2, name="x", state_limits=[(-1, 1)],
                                         input_limits=[(-1, 1)], initial_box=[(0, 0.5)], horizon=5)


def test_load_plant_and_check_return_dataclasses():
    spec = scpo_ctrl.load_plant("double_integrator")
    assert spec.name == "double_integrator" and spec.text == (MODELS / "double_integrator.yaml").read_text()
    report = scpo_ctrl.check(spec)
    assert report.backup_safe and report.nx == 2 and np.asarray(report.K).shape == (1, 2)
    with pytest.raises(SpecError, match="file not found"):
        scpo_ctrl.load_plant("no_such_plant.yaml")


def test_verbs_keep_their_modules_reachable():
    """``scpo_ctrl.export`` is the verb; its attributes are those of the module scpo_ctrl/export/."""
    from scpo_ctrl.export.run import ExportRequest

    assert callable(scpo_ctrl.export) and scpo_ctrl.export.run.ExportRequest is ExportRequest
    assert "run_dir" in scpo_ctrl.verify.__doc__
    assert scpo_ctrl.verify.falsify.__name__ == "scpo_ctrl.verify.falsify"  # imported on first access, as mock does
    with pytest.raises(AttributeError):
        scpo_ctrl.verify.no_such_module


def test_cli_help_shows_the_request_defaults(capsys):
    from scpo_ctrl.hil.run import HilRequest

    with pytest.raises(SystemExit):
        main(["hil", "--help"])
    out = capsys.readouterr().out
    assert f"(default {HilRequest.episodes})" in out and f"(default {HilRequest.target})" in out


def test_verify_rejects_bad_counts_before_touching_the_run(tmp_path):
    with pytest.raises(UsageError, match="--samples, --cells, --max-cells must be >= 1"):
        scpo_ctrl.verify(tmp_path / "none", samples=0)


def test_the_adapt_summary_of_a_run_is_typed(adapted_runs):
    run = adapted_runs["double_integrator"]
    summary = AdaptationSummary.read(run / "adaptation.json")
    assert summary.plant == "double_integrator" and summary.iterations >= 1
    assert summary.verification_loop is not None and summary.verification_loop.enabled
    assert json.loads((run / "adaptation.json").read_text()) == summary.to_json()
