"""`scpo-ctrl export`: ONNX and C compute the certified law, in float64 and float32, on host and Cortex-M4."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import casadi as ca
import numpy as np
import pytest

from scpo_ctrl.cli import main
from scpo_ctrl.config.campaign import load_campaign
from scpo_ctrl.export import build
from scpo_ctrl.export.activation import early_saturation, prove_bound, rational32, tanh32
from scpo_ctrl.export.c_bundle import PROFILES, clamp_free_layers, literal, render_bundle
from scpo_ctrl.export.campaign import equivalence_campaign
from scpo_ctrl.export.equivalence import compare
from scpo_ctrl.export.error_bound import ONNX_ACTIVATION_ULPS, float_error_bound
from scpo_ctrl.export.firmware import build_host_runner, build_vector_firmware, run_host_runner, run_vectors
from scpo_ctrl.export.host_library import HostLaw
from scpo_ctrl.export.law import (BRANCH_FALLBACK, REASON_NONFINITE_OUTPUT, REASON_NONFINITE_STATE, REASON_OK,
                                  REASON_OUTSIDE_REGION, evaluate, law_from_run)
from scpo_ctrl.export.run import ExportRequest, build_host_law, run_export, run_onnx, sha256_file
from scpo_ctrl.policy.mlp import MlpLayout
from scpo_ctrl.policy.residual import ResidualPolicy

from .conftest import LQR_MODEL_NAMES

# The ARM toolchain and QEMU are installed by scripts/setup.sh (part of the test command): these tests
# do not skip when they are missing, they fail.


def _copy_run(source: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for name in ("plant.yaml", "policy.npz"):
        shutil.copyfile(source / name, destination / name)
    return destination


def _full_strength_run(source: Path, destination: Path, seed: int = 1) -> Path:
    """A copy of a run whose network has random weights in every layer (last layer included), so the
    residual is large everywhere: the hardest case for float32."""
    run = _copy_run(source, destination)
    policy, theta, metadata = ResidualPolicy.load(run / "policy.npz")
    theta = MlpLayout(policy.layout.sizes).initial_theta(np.random.default_rng(seed), zero_last_layer=False)
    policy.save(run / "policy.npz", theta, metadata)
    return run


def _export(run: Path, precision: str, target: str = "host", profile: str = "speed") -> dict:
    result = run_export(ExportRequest(run_dir=str(run), precision=precision, target=target, profile=profile))
    assert result.equivalent, result.manifest.self_check
    return result.manifest.to_json()


def test_reference_is_the_trained_policy(adapted_runs, lqr_model_name):
    """The deployed law's float64 reference equals the CasADi policy SCPO certified (inside the region)."""
    run = adapted_runs[lqr_model_name]
    law = law_from_run(run)
    policy, theta, _ = ResidualPolicy.load(run / "policy.npz")
    X = equivalence_campaign(law, seed=3, scale=0.1).X
    reference = evaluate(law, X)
    inside = reference.reason == REASON_OK
    assert inside.sum() > 0.5 * len(X)
    casadi = np.array(policy.function(ca.SX).map(len(X))(X.T, theta)).T
    assert np.max(np.abs(casadi[inside] - reference.u[inside])) < 1e-12


def test_campaign_covers_what_the_issue_asks(adapted_runs):
    law = law_from_run(adapted_runs["double_integrator"])
    campaign = equivalence_campaign(law)
    assert len(campaign.X) >= 10_000
    mix = dict(load_campaign().equivalence.mix)
    assert {kind: int(np.sum(campaign.kinds == kind)) for kind in mix} == mix
    reference = evaluate(law, campaign.X)
    beyond = campaign.kinds == "beyond"
    assert np.any(reference.reason[beyond] == REASON_OUTSIDE_REGION) and np.any(reference.reason[beyond] == REASON_OK)
    near_target = np.abs(reference.level[campaign.kinds == "target_surface"] - 1.0)
    assert near_target.max() < 2e-3
    boundary = campaign.X[campaign.kinds == "boundary"]
    on_limit = np.isclose(boundary, law.region_min, rtol=0, atol=0) | np.isclose(boundary, law.region_max, rtol=0,
                                                                                  atol=0)
    assert np.all(on_limit.any(axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("name", LQR_MODEL_NAMES)
def test_onnx_and_host_c_match_the_reference(adapted_runs, tmp_path, name):
    """DoD 1: 10,000 states; ONNX float64 to 1e-6, C float64 to 1e-12, float32 within the derived bound."""
    law = law_from_run(adapted_runs[name])
    X = equivalence_campaign(law, seed=7).X
    results = {}
    for precision in ("float64", "float32"):
        run = _copy_run(adapted_runs[name], tmp_path / precision)
        _export(run, precision)
        host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, precision)
        results[f"c-{precision}"] = compare(law, f"c-{precision}", precision, X, host.evaluate(X))
        onnx = run_onnx(run / "export" / "policy.onnx", X, precision)
        results[f"onnx-{precision}"] = compare(law, f"onnx-{precision}", precision, X, onnx, any_order=True,
                                               activation_ulps=ONNX_ACTIVATION_ULPS)
    assert results["onnx-float64"].worst_error <= 1e-6
    assert results["c-float64"].worst_error <= 1e-12
    for result in results.values():
        assert result.passed, result
        assert result.branch_mismatches == 0 and result.reason_mismatches == 0
    # the float32 tolerance is "about 1e-5 relative" to the input range, not a blanket loose number
    span = float(np.max(np.where(np.isfinite(law.u_max - law.u_min), law.u_max - law.u_min, 1.0)))
    assert results["c-float32"].max_tolerance < 1e-4 * span
    print({key: (r.worst_error, r.worst_bound_ratio, r.max_tolerance) for key, r in results.items()})


@pytest.mark.slow
def test_float32_bound_holds_for_a_full_strength_network(adapted_runs, tmp_path):
    """Random weights in every layer (residual large everywhere): the float32 C and ONNX stay within
    the bound, and the bound is not vacuous (the worst error uses a sizeable part of it)."""
    run = _full_strength_run(adapted_runs["double_integrator"], tmp_path / "strong")
    _export(run, "float32")
    law = law_from_run(run)
    X = equivalence_campaign(law, seed=11).X
    host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, "float32")
    c_result = compare(law, "c", "float32", X, host.evaluate(X))
    onnx_result = compare(law, "onnx", "float32", X, run_onnx(run / "export" / "policy.onnx", X, "float32"),
                          any_order=True, activation_ulps=ONNX_ACTIVATION_ULPS)
    assert c_result.passed and onnx_result.passed
    assert c_result.worst_error > 0 and c_result.worst_bound_ratio > 0.01
    # float32 limits are stored rounded inward: no output ever exceeds a declared input limit
    for u in (host.evaluate(X).u, run_onnx(run / "export" / "policy.onnx", X, "float32").u):
        assert np.all(u <= law.u_max) and np.all(u >= law.u_min)
        assert np.any(u == np.float32(law.u_max).astype(float)) or np.any(u == np.float32(law.u_min).astype(float))


def test_float32_bound_is_a_bound_not_a_guess(adapted_runs):
    """The bound grows with the unit roundoff: float64's is ~2^29 times smaller than float32's."""
    law = law_from_run(adapted_runs["double_integrator"])
    X = equivalence_campaign(law, seed=5, scale=0.05).X
    inside = evaluate(law, X).reason == REASON_OK
    b32 = float_error_bound(law, X[inside], "float32")
    b64 = float_error_bound(law, X[inside], "float64")
    ratio = np.median(b32[b32 > 0] / b64[b32 > 0])
    assert 1e7 < ratio < 1e10


def test_onnxruntime_tanh_within_the_assumed_ulps():
    """The ONNX tolerance assumes onnxruntime's float32 Tanh within 8 ulp: measure it."""
    import onnxruntime
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    t = np.concatenate([rng.uniform(-10, 10, 200_000), rng.normal(0, 0.1, 100_000),
                        np.linspace(-20, 20, 100_001)]).astype(np.float32)
    exact = np.tanh(t.astype(float))
    graph = helper.make_graph([helper.make_node("Tanh", ["t"], ["y"])], "g",
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    units = np.abs(session.run(None, {"t": t})[0] - exact) / (2.0 ** -23 * np.maximum(np.abs(exact), 2.0 ** -126))
    assert units.max() <= ONNX_ACTIVATION_ULPS


def test_bundle_tanh_bound_on_a_sample():
    """The float32 tanh of the bundle on every 97th float32 of [2^-12, 9.02]: within the stated bound."""
    proof = prove_bound(stride=97)
    assert proof.holds and proof.inputs_checked > 1_000_000
    assert proof.worst_relative_units > 1.0  # the check sees real rounding error (not comparing a thing to itself)


@pytest.mark.slow
def test_bundle_tanh_bound_exhaustively():
    """The proof itself: every float32 of [2^-12, 9.02] (127 million inputs), plus the tiny and clamped ranges."""
    proof = prove_bound(stride=1)
    assert proof.exhaustive and proof.holds, proof
    assert proof.inputs_checked > 120_000_000


def _m4_bitwise_host(run: Path, law, X: np.ndarray, directory: Path) -> tuple:
    """Run ``X`` through the Cortex-M4F vector firmware under QEMU and the host float32 library; assert the
    inputs bit for bit and the branches and reasons equal; return (target, timing, host results)."""
    elf = build_vector_firmware(run / "export", law.name, directory)
    target, timing = run_vectors(elf, X, law.nu, "float32", directory)
    host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, "float32")
    expected = host.evaluate(X)
    assert np.array_equal(target.u.astype(np.float32).view(np.int32), expected.u.astype(np.float32).view(np.int32))
    assert np.array_equal(target.branch, expected.branch) and np.array_equal(target.reason, expected.reason)
    return target, timing, expected


@pytest.mark.slow
@pytest.mark.parametrize("name", LQR_MODEL_NAMES)
def test_cortex_m4_under_qemu_is_bitwise_the_host_float32(adapted_runs, tmp_path, name):
    """DoD 2: the same C cross-compiled for the Cortex-M4F, run under qemu-system-arm on mps2-an386 on the
    10,000-state vector file, gives the host float32 build's results bit for bit (stated bound: 0 ulp)."""
    run = _full_strength_run(adapted_runs[name], tmp_path / "run")
    _export(run, "float32", "cortex-m4")
    law = law_from_run(run)
    X = equivalence_campaign(law, seed=13).X
    target, timing, expected = _m4_bitwise_host(run, law, X, tmp_path / "firmware")
    assert np.array_equal(target.level, expected.level) and np.array_equal(target.gate, expected.gate)
    assert 50 * law.multiply_accumulates > timing.instructions_per_step > law.multiply_accumulates
    assert abs(timing.instructions_per_tick - 40.0) < 0.1  # 25 MHz SysTick at 1 instruction per ns


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_strict_flags_with_both_compilers_and_no_forbidden_symbols(adapted_runs, tmp_path, precision):
    """DoD 3: -std=c99 -pedantic -Wall -Wextra -Werror -Wdouble-promotion -Wconversion with gcc and
    arm-none-eabi-gcc (export fails otherwise); nm finds no heap, no stdio, and in float32 no maths library
    at all (the bundle's own tanh), in particular no double maths; the float64 build shows the check sees it."""
    for flag in ("-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wconversion"):
        assert flag in build.STRICT_FLAGS
    run = _full_strength_run(adapted_runs["cartpole"], tmp_path / "run")
    manifest = _export(run, precision, "cortex-m4")
    name = manifest["plant"]
    forbidden = {"malloc", "calloc", "realloc", "free", "printf", "fprintf", "sprintf", "snprintf", "puts", "putchar",
                 "fopen", "fwrite", "abort", "exit"}
    double_maths = {"tanh", "exp", "log", "sqrt", "pow", "sin", "cos", "fabs"}
    for directory, arm in (("host", False), ("cortex-m4", True)):
        symbols = set(build.undefined_symbols(run / "export" / directory / f"{name}_policy.o", arm))
        assert not symbols & forbidden, symbols
        if precision == "float32":
            assert not symbols & double_maths, symbols
            assert not any(s.startswith("__aeabi_d") for s in symbols), symbols  # soft-float double helpers
            assert symbols <= {"memcpy", "memset"}, symbols  # its own tanh: no libm at all
        else:
            assert "tanh" in symbols  # the check sees double maths when it is there
        assert manifest["builds"][directory]["sections_bytes"]["bss"] == 0  # no mutable state
        assert manifest["builds"][directory]["sections_bytes"]["data"] == 0


@pytest.mark.slow
def test_sanitizers_find_nothing(adapted_runs, tmp_path):
    """DoD 3: the bundle under ASan and UBSan on the campaign plus NaN, inf and huge states."""
    run = _full_strength_run(adapted_runs["pendulum"], tmp_path / "run")
    _export(run, "float32")
    law = law_from_run(run)
    X = equivalence_campaign(law, seed=17, scale=0.5).X
    X = np.concatenate([X, [[np.nan, 0.0], [0.0, np.inf], [-np.inf, np.nan], [3e38, -3e38], [1e-45, -1e-45]]])
    runner = build_host_runner(run / "export", law.name, tmp_path / "asan",
                               ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"))
    output, console = run_host_runner(runner, X, law.nu, "float32", tmp_path / "asan")
    assert "runtime error" not in console and "AddressSanitizer" not in console
    host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, "float32")
    assert np.array_equal(output.u, host.evaluate(X).u)


def _monitor_states(law) -> tuple:
    """States that must trip the monitor, with the expected reason codes."""
    states, reasons = [], []
    inside = (law.region_min + law.region_max) / 2
    inside = np.where(np.isfinite(inside), inside, law.x_eq)
    for i in range(law.nx):
        for bad in (np.nan, np.inf, -np.inf):
            x = inside.copy()
            x[i] = bad
            states.append(x)
            reasons.append(REASON_NONFINITE_STATE)
        for bound, direction in ((law.region_min[i], -1.0), (law.region_max[i], 1.0)):
            if np.isfinite(bound):
                x = inside.copy()
                x[i] = np.nextafter(np.float32(bound), np.float32(direction * np.inf))
                states.append(x)
                reasons.append(REASON_OUTSIDE_REGION)
    return np.array(states), np.array(reasons)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_monitor_falls_back_to_the_backup_with_the_right_reason(adapted_runs, tmp_path, precision):
    """DoD 4: NaN, inf and states just outside the region give the backup's output and the reason code,
    in the C, in ONNX and in the reference alike."""
    run = _full_strength_run(adapted_runs["double_integrator"], tmp_path / "run")
    _export(run, precision)
    law = law_from_run(run)
    X, expected_reason = _monitor_states(law)
    host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, precision)
    backup_c = host.backup(X)
    finite = np.all(np.isfinite(X), axis=1)
    with np.errstate(invalid="ignore"):
        backup_exact = np.clip(law.u_eq - (X - law.x_eq) @ law.K.T, law.u_min, law.u_max)
    backup_exact[~finite] = np.clip(law.u_eq, law.u_min, law.u_max)
    tolerance = 1e-6 if precision == "float32" else 1e-12
    for output in (host.evaluate(X), run_onnx(run / "export" / "policy.onnx", X, precision), evaluate(law, X)):
        assert np.array_equal(output.reason, expected_reason)
        assert np.all(output.branch == BRANCH_FALLBACK)
        assert np.all(np.isfinite(output.u))
        assert np.max(np.abs(output.u - backup_exact)) <= tolerance
    assert np.max(np.abs(backup_c - backup_exact)) <= tolerance
    # just inside every bound the law runs normally
    inner = X[expected_reason == REASON_OUTSIDE_REGION].copy()
    low_side = inner < law.region_min
    high_side = inner > law.region_max
    inner[low_side] = law.region_min[np.where(low_side)[1]]
    inner[high_side] = law.region_max[np.where(high_side)[1]]
    assert np.all(host.evaluate(inner).reason == REASON_OK)


def test_monitor_catches_a_non_finite_network_output(adapted_runs, tmp_path):
    """A network whose output is not finite (infinite output weights, as a corrupted file could give)
    -> NONFINITE_OUTPUT and the backup's output, in the C and the reference."""
    law = law_from_run(adapted_runs["double_integrator"])
    weights = list(law.weights)
    weights[-1] = np.full_like(weights[-1], np.inf)
    law = replace(law, weights=tuple(weights))
    directory = tmp_path / "bundle"
    directory.mkdir()
    for source in render_bundle(law, "float32", "test"):
        (directory / source.name).write_text(source.text)
    runner = build_host_runner(directory, law.name, tmp_path / "run")
    state = np.array([[2.0, 1.0]])  # far from the target set: gate = 1, hidden units saturated
    output, _ = run_host_runner(runner, state, law.nu, "float32", tmp_path / "run")
    reference = evaluate(law, state)
    assert output.reason[0] == reference.reason[0] == REASON_NONFINITE_OUTPUT
    expected = np.clip(law.u_eq - (state - law.x_eq) @ law.K.T, law.u_min, law.u_max)
    assert np.allclose(output.u, expected, atol=1e-6) and np.allclose(reference.u, expected)


def test_literals_read_back_exactly():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, 1000), [0.0, -0.0, 1.0, 3e38]])
    for value in values:
        text32 = literal(value, "float32")
        assert text32.endswith("f") and np.float32(text32[:-1]) == np.float32(value)
        assert float(literal(value, "float64")) == value
    assert literal(np.inf, "float32") == "HUGE_VALF" and literal(-np.inf, "float64") == "-HUGE_VAL"


@pytest.mark.slow
def test_same_inputs_give_byte_identical_exports(adapted_runs, tmp_path):
    source = adapted_runs["pendulum"]
    first = _export(_copy_run(source, tmp_path / "a" / "run"), "float32", "cortex-m4")
    second = _export(_copy_run(source, tmp_path / "b" / "elsewhere"), "float32",
                     "cortex-m4")
    assert first["artefacts"] == second["artefacts"]
    assert first == second
    # the manifest's hashes are the files' hashes, and different weights give a different inputs hash
    run = tmp_path / "a" / "run"
    for relative, digest in first["artefacts"].items():
        assert sha256_file(run / "export" / relative) == digest
    changed = _full_strength_run(source, tmp_path / "c")
    assert _export(changed, "float32")["inputs_sha256"] != first["inputs_sha256"]


def test_export_cli_and_bad_input(adapted_runs, tmp_path, capsys):
    run = _copy_run(adapted_runs["double_integrator"], tmp_path / "run")
    assert main(["export", str(run), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["format"] == "scpo-export/1" and (run / "export" / "policy.onnx").is_file()
    assert manifest["profile"] == "speed" and "-Os" in manifest["builds"]["host"]["flags"]
    assert (run / "export" / "double_integrator_policy.h").read_text().count("#define DOUBLE_INTEGRATOR_DT 0.1")
    import onnx

    model = onnx.load(str(run / "export" / "policy.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10 and {p.key for p in model.metadata_props} >= {"plant", "inputs_sha256", "states"}
    for argv, fragment in (
        (["export", str(tmp_path / "missing")], "no such run directory"),
        (["export", str(tmp_path)], "not a run directory"),
        (["export", str(run), "--precision", "float16"], "--precision"),
        (["export", str(run), "--target", "avr"], "--target"),
        (["export", str(run), "--profile", "tiny"], "--profile"),
    ):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert fragment in error and "Traceback" not in error
    # a failed export leaves the previous one in place
    before = (run / "export" / "manifest.json").read_bytes()
    (run / "policy.npz").write_bytes(b"not a policy")
    assert main(["export", str(run)]) == 2
    assert "cannot read the policy" in capsys.readouterr().err
    assert (run / "export" / "manifest.json").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".export")]


# ---- code profiles ---------------------------------------------------------------------------------

#: issue 19, build item 5: the targets of the two profiles for the default 2-32-32-1 network
SPEED_INSTRUCTIONS_PER_STEP = 4000  # QEMU -icount instructions (not cycles)
SIZE_CODE_BYTES = 1024  # object text + rodata + data minus the weights, at -Os


def _saturating(law):
    """The law with every weight scaled up: hidden units saturate, so no layer is clamp-free and the
    speed profile's tested activations (block test, early return beyond the clamp) all run."""
    return replace(law, weights=tuple(6.0 * W for W in law.weights), biases=tuple(6.0 * b for b in law.biases))


def test_early_saturation_is_the_clamped_tanh():
    """fl(x*x) > fl(CLAMP^2) returns exactly what the clamp gives; around the threshold, checked directly."""
    early = early_saturation()
    assert early.exact and early.upper == tanh32(np.float32(1e30)) and early.lower == tanh32(np.float32(-1e30))
    x = np.concatenate([np.linspace(8.9, 9.2, 20001), [1e3, 1e20, 3e38]]).astype(np.float32)
    x = np.concatenate([x, -x])
    with np.errstate(over="ignore"):
        beyond = (x * x) > early.threshold
    expected = tanh32(x)
    assert np.array_equal(expected[beyond], np.where(x[beyond] > 0, early.upper, early.lower))
    assert np.array_equal(expected[~beyond], rational32(x[~beyond]))


@pytest.mark.parametrize("strength", ["trained", "saturating"])
def test_profiles_compute_the_same_bits_within_the_bound(adapted_runs, tmp_path, strength):
    """Every code profile's host C gives the unrolled code's bits (float32 and float64), on the campaign and on
    non-finite states, and the float32 result is within the error bound the export uses."""
    law = law_from_run(adapted_runs["double_integrator"])
    if strength == "saturating":
        law = _saturating(law)
        assert not any(clamp_free_layers(law))
    else:
        assert all(clamp_free_layers(law)[:-1])  # the default network needs no clamp test at all
    campaign = equivalence_campaign(law, seed=19, scale=0.3).X
    X = np.concatenate([campaign, [[np.nan, 0.0], [0.0, np.inf], [-np.inf, np.nan], [3e38, -3e38]]])
    for precision in ("float32", "float64"):
        outputs = {profile: build_host_law(law, precision, tmp_path / f"{precision}-{profile}", profile=profile)
                   .evaluate(X) for profile in PROFILES}
        reference = outputs["unrolled"]
        for profile, output in outputs.items():
            assert np.array_equal(output.u.view(np.int64), reference.u.view(np.int64)), profile
            assert np.array_equal(output.branch, reference.branch) and np.array_equal(output.reason, reference.reason)
            assert np.array_equal(output.gate, reference.gate, equal_nan=True)
            assert np.array_equal(output.level, reference.level, equal_nan=True)
            if precision == "float32":  # the bound, on the campaign's states
                n = len(campaign)
                result = compare(law, profile, precision, campaign, replace(
                    output, u=output.u[:n], branch=output.branch[:n], reason=output.reason[:n], gate=output.gate[:n],
                    level=output.level[:n]))
                assert result.passed, result


def _object_code_bytes(manifest: dict, law) -> tuple:
    """(object bytes, object bytes minus the weights) of the Cortex-M4 object."""
    sections = manifest["builds"]["cortex-m4"]["sections_bytes"]
    total = sections["text"] + sections["rodata"] + sections["data"]
    weights = 4 * sum(W.size + b.size for W, b in zip(law.weights, law.biases))
    return total, total - weights


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["speed", "size"])
def test_profile_targets_and_bitwise_cortex_m4(adapted_runs, tmp_path, profile):
    """Each profile on the Cortex-M4F under QEMU: the host float32 build's bits, and its target: speed <= 4,000
    instructions per step (QEMU -icount: instructions, not cycles), size <= 1 kB of code besides the weights."""
    run = _copy_run(adapted_runs["double_integrator"], tmp_path / "run")
    manifest = _export(run, "float32", "cortex-m4", profile)
    law = law_from_run(run)
    assert manifest["profile"] == profile and law.sizes == (2, 32, 32, 1)
    X = equivalence_campaign(law, seed=13, scale=0.3).X
    inside = evaluate(law, X).reason == REASON_OK
    X = np.concatenate([X[inside], X[~inside]])  # the runner times the first 64 states: ordinary ones
    _, timing, _ = _m4_bitwise_host(run, law, X, tmp_path / "firmware")
    total, code = _object_code_bytes(manifest, law)
    print(f"{profile}: {timing.instructions_per_step:.0f} instructions/step, object {total} B, code {code} B")
    if profile == "speed":
        assert timing.instructions_per_step <= SPEED_INSTRUCTIONS_PER_STEP
    else:
        assert "-Os" in manifest["builds"]["cortex-m4"]["flags"]
        assert code <= SIZE_CODE_BYTES
