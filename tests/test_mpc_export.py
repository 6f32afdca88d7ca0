"""Export, verify and HIL of a policy adapted on the acados MPC backup (host SIL; no Cortex-M4 build)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scpo_ctrl.backup.acados_env import AcadosUnavailable, find_acados
from scpo_ctrl.cli import main
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.config.run_schemas import validate_run_dir
from scpo_ctrl.export.equivalence import compare
from scpo_ctrl.export.host_library import HostLaw
from scpo_ctrl.export.law import REASON_NONFINITE_OUTPUT, evaluate, law_from_run
from scpo_ctrl.export.mpc_bundle import MpcController, campaign_backup_inputs
from scpo_ctrl.export.campaign import equivalence_campaign
from scpo_ctrl.export.run import ExportRequest, run_export, run_onnx
from scpo_ctrl.hil.run import HilRequest, mpc_backup_reference, run_hil
from scpo_ctrl.policy.residual import ResidualPolicy
from scpo_ctrl.problem import build_problem
from scpo_ctrl.verify.certificate import FALSIFIED, UNKNOWN, VERIFIED
from scpo_ctrl.verify.run import VerifyRequest, run_verify

try:
    find_acados()
except AcadosUnavailable as exc:  # pragma: no cover - a checkout without scripts/install-acados.sh
    pytest.skip(str(exc), allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mpc_run(mpc_pendulum_run):
    """The pendulum on its MPC backup (16 validation states, 60 steps), adapted 2 iterations, exported
    (conftest's session run, shared with test_mpc_adapt.py)."""
    return mpc_pendulum_run


def _controller(run) -> MpcController:
    law = law_from_run(run)
    return MpcController(run / "export" / "host" / f"lib{law.name}_mpc.so", law.nx, law.nu, law.u_eq)


def test_export_carries_the_mpc_and_a_law_on_its_input(mpc_run):
    manifest = json.loads((mpc_run / "export" / "manifest.json").read_text())
    backup = manifest["backup"]
    assert backup["type"] == "mpc" and backup["controller_library"] == "host/libpendulum_mpc_mpc.so"
    assert "x86-64" in backup["cortex_m4"] and "LQR" in backup["cortex_m4"]
    solver = backup["solver"]
    artefacts = manifest["artefacts"]
    # the acados solver SCPO used (library and its generated sources) and the controller's C, all hashed
    for relative in (f"mpc/{solver}/libacados_ocp_solver_{solver}.so", f"mpc/{solver}/acados_solver_{solver}.h",
                     "mpc/mpc_controller.c", "mpc/mpc_plan.h", "host/libpendulum_mpc_mpc.so", "policy.onnx"):
        assert relative in artefacts
    assert all(check["passed"] for check in manifest["self_check"])
    source = (mpc_run / "export" / "pendulum_mpc_policy.c").read_text()
    assert "const real_t u_backup[NU]" in source and "static const real_t K[" not in source
    # the ONNX graph takes the MPC's input as its second input
    import onnx

    model = onnx.load(mpc_run / "export" / "policy.onnx")
    assert [i.name for i in model.graph.input] == ["x", "u_backup"]


def test_the_exported_controller_reproduces_scpos_mpc_inputs_bit_for_bit(mpc_run):
    """Along SCPO's own closed loop (cache solver, rollout driver), the exported controller fed the same
    states (cold first step, then warm) returns exactly the MPC inputs the rollout used."""
    spec = load_plant_spec(mpc_run / "plant.yaml")
    problem = build_problem(spec)
    policy, theta, _ = ResidualPolicy.load(mpc_run / "policy.npz")
    engine = problem.engine(policy.law(), horizon=40, threads=1)
    rollout = engine.rollout(problem.x0[:3], theta[None, :])
    controller = _controller(mpc_run)
    for i in range(3):
        sequence = controller.sequence(rollout.rollouts.x[i])
        assert np.array_equal(sequence.u, rollout.u_backup[i])
        assert np.array_equal(sequence.status, rollout.stats.status[i])
    # and a wrong warm start is visible: solving the same states cold gives different inputs somewhere
    cold = controller.cold(rollout.rollouts.x[0])
    assert not np.array_equal(cold.u, rollout.u_backup[0])


def test_the_law_uses_the_backup_input_it_is_given(mpc_run):
    """The C and ONNX laws match the reference on the MPC's inputs, and a wrong backup input fails the check."""
    law = law_from_run(mpc_run)
    X = equivalence_campaign(law, seed=3, scale=0.05).X
    U = campaign_backup_inputs(law, X, _controller(mpc_run), seed=3)
    host = HostLaw(mpc_run / "export" / "host" / "libpendulum_mpc_policy.so", law.name, law.nx, law.nu, "float32",
                   backup_input=True)
    assert compare(law, "c", "float32", X, host.evaluate(X, U), U_backup=U).passed
    onnx_output = run_onnx(mpc_run / "export" / "policy.onnx", X, "float32", U)
    assert compare(law, "onnx", "float32", X, onnx_output, any_order=True, U_backup=U).passed
    # failed solves (NaN) inside the monitor region are in the campaign: the law falls back on u_eq
    output = host.evaluate(X, U)
    failed = np.isnan(U).any(axis=1) & (evaluate(law, X, U).reason == REASON_NONFINITE_OUTPUT)
    assert failed.sum() > 0
    assert np.all(output.reason[failed] == REASON_NONFINITE_OUTPUT)
    assert np.allclose(output.u[failed], np.clip(law.u_eq, law.u_min, law.u_max))
    u, tolerance = mpc_backup_reference(law, np.full(law.nu, np.nan))
    assert np.array_equal(u, np.clip(law.u_eq, law.u_min, law.u_max)) and np.all(np.isfinite(tolerance))
    shifted = np.where(np.isfinite(U), U + 1e-4, U)
    assert not compare(law, "c", "float32", X, host.evaluate(X, shifted), U_backup=U).passed
    # inside the target set the law is the saturated MPC input itself
    inside = (evaluate(law, X, U).gate == 0) & np.all(np.isfinite(U), axis=1)
    assert inside.sum() > 10
    lo, hi = law.u_min, law.u_max
    assert np.allclose(host.evaluate(X[inside], U[inside]).u, np.clip(U[inside], lo, hi), atol=1e-6)
    with pytest.raises(ValueError, match="U_backup"):
        evaluate(law, X)


def test_cortex_m4_build_of_an_mpc_run_is_the_lqr_fallback_and_says_so(mpc_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mpc_run, run)
    # without the Cortex-M4 build, the qemu target is refused with the reason
    assert main(["hil", str(run), "--target", "qemu"]) == 2
    assert "x86-64" in capsys.readouterr().err
    export = run_export(ExportRequest(run_dir=str(run), target="cortex-m4"))
    assert export.equivalent
    manifest = export.manifest.to_json()
    assert "NOT the law SCPO certified" in manifest["backup"]["cortex_m4"]
    assert manifest["builds"]["cortex-m4"]["backup"] == "lqr"
    fallback_checks = [c for c in manifest["self_check"] if "LQR fallback" in c["implementation"]]
    assert len(fallback_checks) == 1 and fallback_checks[0]["passed"]
    arm_source = (run / "export" / "cortex-m4" / "pendulum_mpc_policy.c").read_text()
    host_source = (run / "export" / "pendulum_mpc_policy.c").read_text()
    assert "static const real_t K[" in arm_source and "u_backup" not in arm_source
    assert "u_backup" in host_source
    # the emulated Cortex-M4 runs the fallback law, and the report names it
    result = run_hil(HilRequest(run_dir=str(run), target="qemu", episodes=1, steps=20, plots=False))
    assert "NOT the law SCPO certified" in result.report.law
    assert result.report.equivalence.worst_bound_ratio <= 1.0
    assert result.report.compute["instructions_per_step_p50"] < 20000  # no MPC on the target
    # verify judges the fallback's closed loop separately
    certificate = run_verify(VerifyRequest(run_dir=str(run), samples=8, halton=0)).certificate.to_json()
    checks = {check["name"]: check for check in certificate["checks"]}
    assert checks["cortex_m4_lqr_fallback"]["verdict"] in (VERIFIED, FALSIFIED)
    assert "NOT the law SCPO certified" in checks["cortex_m4_lqr_fallback"]["claim"]


def test_sil_runs_the_exported_mpc_and_law_in_lockstep(mpc_run):
    result = run_hil(HilRequest(run_dir=str(mpc_run), target="sil", episodes=3, steps=40, plots=True))
    report = result.report.to_json()
    assert result.passed, report["summary"]
    assert report["equivalence"]["worst_bound_ratio"] <= 1.0 and report["equivalence"]["branch_mismatches"] == 0
    # the MPC's solve is inside the timed step: far more than the LQR's microsecond
    assert report["compute"]["seconds_p50"] > 2e-5
    # the firmware and the Python closed loop of the same law and MPC follow the same trajectory
    assert max(report["trajectory_vs_python"]["max_abs_state_deviation"]) < 1e-4
    assert "not computed" in report["trajectory_vs_python"]["propagated_bound"]
    assert (mpc_run / "hil" / "sil" / "traces.png").is_file()


def test_sil_with_dropped_frames_answers_with_the_mpc_on_the_last_state(mpc_run):
    # simulated time (the default): a lost frame's step ends with the harness's DEADLINE frame, so host load
    # cannot fire the watchdog (with a wall-clock watchdog of 25 ms this failed once in ten runs)
    result = run_hil(HilRequest(run_dir=str(mpc_run), target="sil", episodes=2, steps=40, seed=2, plots=False,
                                faults="drop=0.1,corrupt=0.05"))
    report = result.report.to_json()
    frames = report["frames"]
    assert frames["watchdog_replies"] > 0 and frames["lost_state_frames_answered_ok"] == 0
    # watchdog replies are checked against the MPC solved at the last accepted state, in sequence
    assert report["equivalence"]["worst_bound_ratio"] <= 1.0
    assert report["summary"]["checks"]["no_corrupted_command_applied"]


def test_verify_runs_the_mpc_checks_and_says_what_it_does_not(mpc_run):
    result = run_verify(VerifyRequest(run_dir=str(mpc_run), samples=24, halton=8))
    checks = {check["name"]: check for check in result.certificate.to_json()["checks"]}
    assert checks["integrity"]["verdict"] == VERIFIED
    assert checks["mpc_solver"]["verdict"] == VERIFIED
    assert checks["mpc_solver"]["details"]["max_difference"] <= 1e-5
    assert checks["equivalence"]["verdict"] == VERIFIED
    safety = checks["closed_loop_safety"]
    assert safety["verdict"] in (VERIFIED, FALSIFIED)
    assert safety["details"]["closed_loop_steps"] == 32 * 60
    assert "acados MPC" in safety["details"]["in_the_loop"]
    for name in ("falsification", "reachability"):
        assert checks[name]["verdict"] == UNKNOWN and checks[name]["details"]["reason"]
    assert not result.certificate.summary.safe_for_every_initial_state_of_the_box


def test_the_mpc_run_files_validate_against_their_schemas(mpc_run):
    """After the tests above (export, hil sil, verify on this run), every JSON file of an MPC-backed run has the
    shape verification/schemas describes (the MPC variants: backup block, mpc_solver check, no propagated bound)."""
    results = validate_run_dir(mpc_run)
    assert {"adaptation.json", "training.jsonl", "export/manifest.json"} <= set(results)
    assert {name: problems for name, problems in results.items() if problems} == {}


def test_verify_refuses_to_run_a_tampered_solver(mpc_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(mpc_run, copy)
    manifest = json.loads((copy / "export" / "manifest.json").read_text())
    solver = manifest["backup"]["solver"]
    library = copy / "export" / "mpc" / solver / f"libacados_ocp_solver_{solver}.so"
    data = bytearray(library.read_bytes())
    data[-1] ^= 0xFF
    library.write_bytes(bytes(data))
    result = run_verify(VerifyRequest(run_dir=str(copy), samples=4, halton=0))
    checks = {check["name"]: check for check in result.certificate.to_json()["checks"]}
    assert checks["integrity"]["verdict"] == FALSIFIED
    assert any("libacados_ocp_solver" in p for p in checks["integrity"]["details"]["problems"])
    assert checks["mpc_solver"]["verdict"] == UNKNOWN and result.exit_code == 1

    # the acados runtime libraries live outside the export; the manifest records their hashes
    library.write_bytes(bytes(data[:-1] + bytearray([data[-1] ^ 0xFF])))  # restore the solver
    manifest_path = copy / "export" / "manifest.json"
    runtime = manifest["backup"]["acados_runtime_sha256"]
    assert set(runtime) >= {"libacados.so", "libhpipm.so", "libblasfeo.so"}
    manifest["backup"]["acados_runtime_sha256"]["libhpipm.so"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    result = run_verify(VerifyRequest(run_dir=str(copy), samples=4, halton=0))
    problems = result.certificate.checks[0].details["problems"]
    assert problems == ["acados runtime libhpipm.so: differs from the one the export was built against (the MPC "
                        "that would run is not the exported one: export again)"]


def test_export_refuses_a_policy_adapted_on_another_mpc(mpc_run, tmp_path, capsys):
    """adapt records the MPC's solver name (a hash of its formulation); a run whose plant file now gives
    another MPC is refused instead of exporting a law on a backup SCPO never saw."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mpc_run, run)
    policy, theta, metadata = ResidualPolicy.load(run / "policy.npz")
    assert metadata["mpc_solver"].startswith("scpo_pendulum_mpc_")
    policy.save(run / "policy.npz", theta, {**metadata, "mpc_solver": "scpo_pendulum_mpc_0000000000"})
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert "adapt again" in err and "Traceback" not in err
