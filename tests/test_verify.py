"""`scpo-ctrl verify`: integrity, counterexamples that replay in C, sound reachable sets, the certificate."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scpo_ctrl.adapt import AdaptRequest, run_adapt
from scpo_ctrl.cli import main
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.export.host_library import HostLaw
from scpo_ctrl.export.law import evaluate, law_from_run
from scpo_ctrl.export.run import ExportRequest, run_export
from scpo_ctrl.plant.model import build_plant
from scpo_ctrl.verify import reach
from scpo_ctrl.sim.closed_loop import simulate
from scpo_ctrl.verify.run import VerifyRequest, run_verify

from .conftest import MODELS, CompiledDiscreteMap

FAST = dict(samples=1000, halton=256, cells_per_axis=4, max_depth=0, falsify_starts=1)


def _exported_copy(source: Path, destination: Path, precision: str = "float32", profile: str = "speed") -> Path:
    destination.mkdir(parents=True)
    for name in ("plant.yaml", "policy.npz"):
        shutil.copyfile(source / name, destination / name)
    run_export(ExportRequest(run_dir=str(destination), precision=precision, profile=profile))
    return destination


def _check(certificate, name: str) -> dict:
    """The check ``name`` of a certificate (a :class:`Certificate` or its JSON) as JSON."""
    checks = certificate.to_json()["checks"] if hasattr(certificate, "to_json") else certificate["checks"]
    return next(check for check in checks if check["name"] == name)


def _host(run: Path) -> HostLaw:
    law = law_from_run(run)
    return HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, "float32")


@pytest.mark.parametrize("victim", ["double_integrator_policy.c", "policy.onnx", "host/libdouble_integrator_policy.so"])
def test_one_flipped_byte_fails_integrity_naming_the_file(adapted_runs, tmp_path, capsys, victim):
    """DoD 3: flipping one byte of an exported file makes verify exit 1 and name the file."""
    run = _exported_copy(adapted_runs["double_integrator"], tmp_path / "run")
    path = run / "export" / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    # a new file replaces the old one: this process still has the exported library mapped (the export's
    # self-check loaded it), and rewriting a mapped file in place would corrupt the running process
    replacement = path.with_name(path.name + ".new")
    replacement.write_bytes(bytes(data))
    replacement.replace(path)
    result = run_verify(VerifyRequest(run_dir=str(run), **{k: v for k, v in FAST.items()}))
    assert result.exit_code == 1
    integrity = _check(result.certificate, "integrity")
    assert integrity["verdict"] == "FALSIFIED"
    assert any(victim in problem for problem in integrity["details"]["problems"])
    assert json.loads((run / "certificate.json").read_text())["exit_code"] == 1


def test_a_stale_export_fails_integrity(adapted_runs, tmp_path):
    """New weights after the export: the certificate must not vouch for artefacts of other weights."""
    run = _exported_copy(adapted_runs["double_integrator"], tmp_path / "run")
    shutil.copyfile(adapted_runs["pendulum"] / "policy.npz", run / "policy.npz")
    with pytest.raises(Exception):  # the pendulum's policy does not even fit the plant
        run_verify(VerifyRequest(run_dir=str(run), **FAST))
    from scpo_ctrl.policy.residual import ResidualPolicy

    policy, theta, metadata = ResidualPolicy.load(adapted_runs["double_integrator"] / "policy.npz")
    policy.save(run / "policy.npz", theta * 1.01, metadata)
    result = run_verify(VerifyRequest(run_dir=str(run), **FAST))
    assert result.exit_code == 1
    assert any("stale" in p for p in _check(result.certificate, "integrity")["details"]["problems"])


@pytest.mark.parametrize("profile", ["speed", "size", "unrolled"])
def test_intact_export_passes_integrity_and_equivalence(adapted_runs, tmp_path, profile):
    """In every code profile (the twin in the other precision is built in the export's profile)."""
    run = _exported_copy(adapted_runs["double_integrator"], tmp_path / "run", profile=profile)
    result = run_verify(VerifyRequest(run_dir=str(run), **FAST))
    certificate = result.certificate.to_json()
    assert _check(certificate, "integrity")["verdict"] == "VERIFIED"
    equivalence = _check(certificate, "equivalence")
    assert equivalence["verdict"] == "VERIFIED" and equivalence["details"]["states"] >= 10_000
    names = {i["implementation"].split(" ")[0] for i in equivalence["details"]["implementations"]}
    assert names == {"c-host-float32", "c-host-float64", "onnxruntime-float32"}
    assert certificate["artefacts"] and certificate["manifest_sha256"]
    assert (result.exit_code == 0) == (not certificate["summary"]["falsified"])


@pytest.mark.slow
def test_a_bad_policy_is_falsified_and_the_counterexample_replays_in_c(tmp_path):
    """DoD 2: the unconstrained baseline's policy, exported, is FALSIFIED with a concrete initial state,
    and that state violates a constraint in the compiled C closed loop."""
    run = tmp_path / "bad"
    run_adapt(AdaptRequest(plant=str(MODELS / "double_integrator.yaml"), out=str(run), iterations=30,
                           method="unconstrained", progress=False, plots=False))
    run_export(ExportRequest(run_dir=str(run)))
    result = run_verify(VerifyRequest(run_dir=str(run), samples=2000, halton=512, cells_per_axis=4, max_depth=0))
    assert result.exit_code == 1
    safety = _check(result.certificate, "closed_loop_safety")
    assert safety["verdict"] == "FALSIFIED"
    falsification = _check(result.certificate, "falsification")
    assert falsification["verdict"] == "FALSIFIED"
    spec = load_plant_spec(run / "plant.yaml")
    model, law, host = build_plant(spec), law_from_run(run), _host(run)
    for counterexample in (safety["counterexample"], falsification["counterexample"]):
        x0 = np.array(counterexample["x0"])
        box = np.asarray(spec.safety.initial_states.box)
        assert np.all(x0 >= box[:, 0]) and np.all(x0 <= box[:, 1])
        replay = simulate(model, lambda X: host.evaluate(X).u, x0[None], spec.safety.horizon, law.P, law.c, law.x_eq)
        if counterexample["row"] == "target.reach":
            assert replay.level[0, -1] > 1.0
        else:
            row = replay.row_names.index(counterexample["row"])
            assert replay.g[0, counterexample["step"], row] == pytest.approx(counterexample["value"], rel=1e-9)
            assert counterexample["value"] > 0
        # the certificate says whether the backup alone breaks the same row from the same state: here it
        # does not (the default plant's backup is safe on its box), so the network is to blame
        backup = simulate(model, lambda X: evaluate(_backup_only(law), X).u, x0[None], spec.safety.horizon, law.P,
                          law.c, law.x_eq)
        expected = (backup.level[0, -1] - 1.0 if counterexample["row"] == "target.reach"
                    else backup.g[0, :, backup.row_names.index(counterexample["row"])].max())
        assert counterexample["backup_alone"]["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert counterexample["backup_alone"]["breaks_the_row"] is False and expected <= 0
    assert _check(result.certificate, "reachability")["verdict"] != "VERIFIED"


def _backup_only(law):
    """The law with a zero network output: exactly the (saturated) LQR backup."""
    weights, biases = list(law.weights), list(law.biases)
    weights[-1], biases[-1] = np.zeros_like(weights[-1]), np.zeros_like(biases[-1])
    return replace(law, weights=tuple(weights), biases=tuple(biases))


def test_reachability_proves_the_backup_safe_on_the_whole_box(adapted_runs):
    """The method can prove something: the LQR backup alone (safe with margin on the DI box) is VERIFIED."""
    run = adapted_runs["double_integrator"]
    spec = load_plant_spec(run / "plant.yaml")
    box = np.asarray(spec.safety.initial_states.box)
    result = reach.analyse(_backup_only(law_from_run(run)), build_plant(spec), box[:, 0], box[:, 1],
                           spec.safety.horizon, reach.ReachSettings(cells_per_axis=8, max_depth=3))
    assert result.target_invariant and result.contraction < 1
    assert result.verified, [c for c in result.cells if not c.verified][:3]


def _proven_fraction(result, box: np.ndarray) -> float:
    return sum(np.prod(c.hi - c.lo) for c in result.cells if c.verified) / np.prod(box[:, 1] - box[:, 0])


def test_reachability_of_a_nonlinear_plant_is_first_order_and_proves_part_of_the_box(adapted_runs):
    """The pendulum (RK4, sin): a first-order model of the discrete map with interval remainder; the target
    set's robust invariance is proven at a level c_T <= c, and most of the box is verified."""
    run = adapted_runs["pendulum"]
    spec = load_plant_spec(run / "plant.yaml")
    box = np.asarray(spec.safety.initial_states.box)
    law = law_from_run(run)
    result = reach.analyse(law, build_plant(spec), box[:, 0], box[:, 1], spec.safety.horizon,
                           reach.ReachSettings(cells_per_axis=16, max_depth=0))
    assert result.applicable and result.argument == reach.FIRST_ORDER
    assert result.target_invariant and 0 < result.target_level <= law.c and "c_T" in result.target_argument
    assert _proven_fraction(result, box) > 0.5


def test_affine_constraints_are_checked_by_their_exact_support(adapted_runs):
    """The two-mass-spring's spring rows (x2 - x1 - 0.8, affine): a zonotope whose worst vertex is 1e-6 past
    the row is flagged and one 1e-6 inside is not (the support function, not the bounding box, which would
    flag both); the backup's target set, whose level the spring row binds exactly, is proven invariant and
    safe at c_T just below c, and the backup alone is proven on the whole box."""
    run = adapted_runs["two_mass_spring"]
    spec = load_plant_spec(run / "plant.yaml")
    model, law = build_plant(spec), law_from_run(run)
    analysis = reach._Analysis(law, model, spec.safety.horizon, reach.ReachSettings())
    stretch = [name for name, _ in analysis.extra].index("stretch")
    a, b = analysis.extra_affine[stretch]
    assert np.allclose(a, [-1.0, 0.0, 1.0, 0.0]) and b == pytest.approx(-0.8)
    rng = np.random.default_rng(5)
    G = 0.05 * rng.standard_normal((1, 4, 6))
    support = float(np.abs(a @ G[0]).sum())
    for gap, flagged in ((1e-6, True), (-1e-6, False)):
        centre = np.zeros((1, 4))
        centre[0, 2] = 0.8 - support + gap  # a x + b at the worst vertex = gap
        vertices = centre[0] + np.array(np.meshgrid(*[[-1.0, 1.0]] * 6)).reshape(6, -1).T @ G[0].T
        assert (vertices @ a + b).max() == pytest.approx(gap, abs=1e-12)
        bad, names = analysis.rows_violated(centre, G)
        assert bool(bad[0]) is flagged and (names[0] == "stretch") is flagged
    invariant, contraction, _, argument = analysis.target_facts()
    assert invariant and contraction < 1 and 0.9 * law.c <= analysis.target_level < law.c and "c_T" in argument
    box = np.asarray(spec.safety.initial_states.box)
    result = reach.analyse(_backup_only(law), model, box[:, 0], box[:, 1], spec.safety.horizon,
                           reach.ReachSettings(cells_per_axis=4, max_depth=2, max_generators=64))
    assert result.verified


def _assert_closed_loops_inside_sets(result, model, law, controller, box: np.ndarray, horizon: int, samples: int,
                                     directory: Path, seed: int = 42) -> None:
    """``samples`` random closed loops with ``controller`` from the whole box (plus every cell's corners and
    centre) lie in their cell's computed box at every step while the cell's set is tracked, and in T once
    a verified cell's set entered T. The loops run on the plant's discrete map compiled to C in
    ``directory`` (:class:`CompiledDiscreteMap`, checked against the model's own function)."""
    lo = np.array([c.lo for c in result.cells])
    hi = np.array([c.hi for c in result.cells])
    rng = np.random.default_rng(seed)
    X0 = rng.uniform(box[:, 0], box[:, 1], size=(samples, len(box)))
    X0 = np.concatenate([X0, lo, hi, (lo + hi) / 2])  # cell corners and centres too
    cell = np.full(len(X0), -1)
    for j in range(len(lo)):
        inside = np.all((X0 >= lo[j]) & (X0 <= hi[j]), axis=1) & (cell < 0)
        cell[inside] = j
    assert np.all(cell >= 0)
    loop_x, loop_level = CompiledDiscreteMap(model, directory).closed_loop(controller, X0, horizon, law.P, law.c,
                                                                          law.x_eq)
    pieces = result.pieces
    checked = 0
    for t in range(horizon + 1):
        at_t = pieces["step"] == t
        order = np.argsort(pieces["origin"][at_t], kind="stable")
        origins = pieces["origin"][at_t][order]
        p_lo, p_hi = pieces["lo"][at_t][order], pieces["hi"][at_t][order]
        first = np.searchsorted(origins, cell, side="left")
        last = np.searchsorted(origins, cell, side="right")
        x = loop_x[:, t]
        slack = 1e-9 * (1 + np.abs(x))
        covered = np.zeros(len(X0), dtype=bool)
        for k in range(int((last - first).max(initial=0))):
            j = np.minimum(first + k, len(origins) - 1)
            valid = first + k < last
            covered |= valid & np.all((x >= p_lo[j] - slack) & (x <= p_hi[j] + slack), axis=1)
        tracked = last > first
        # while its cell's set is tracked, a state lies in it; once a verified cell's set is inside T,
        # the state is in T (robust invariance); after a cell failed nothing is claimed
        assert np.all(covered[tracked]), (t, np.flatnonzero(tracked & ~covered)[:5])
        in_target = loop_level[:, t] <= 1.0 + 1e-9
        done = ~tracked & np.array([result.cells[j].entered_step is not None for j in cell])
        assert np.all(in_target[done]), t
        checked += int(tracked.sum())
    assert checked > samples


@pytest.mark.slow
@pytest.mark.parametrize("which", ["adapted", "backup"])
def test_reachable_sets_contain_100000_c_closed_loops(adapted_runs, tmp_path, which):
    """DoD 1 soundness: 100,000 random closed loops with the float32 C, from the whole box, lie in their
    cell's computed box at every step until the cell entered T, and in T ever after."""
    run = _exported_copy(adapted_runs["double_integrator"], tmp_path / "run")
    spec = load_plant_spec(run / "plant.yaml")
    model, law = build_plant(spec), law_from_run(run)
    if which == "backup":
        law = _backup_only(law)
        from scpo_ctrl.export.run import build_host_law

        host = build_host_law(law, "float32", tmp_path / "backup")
    else:
        host = _host(run)
    box = np.asarray(spec.safety.initial_states.box)
    H = spec.safety.horizon
    depth = 3 if which == "backup" else 1  # the backup is proven on the whole box at depth 3
    result = reach.analyse(law, model, box[:, 0], box[:, 1], H, reach.ReachSettings(cells_per_axis=8, max_depth=depth))
    _assert_closed_loops_inside_sets(result, model, law, lambda X: host.evaluate(X).u, box, H, 100_000,
                                     tmp_path / "map")
    if which == "backup":
        assert result.verified


@pytest.fixture(scope="module")
def default_run_reach(default_double_integrator_run) -> tuple:
    """``(run, model, law, box, horizon, result)``: the reachability analysis of the default double integrator
    run at verify's default grid, once for both precisions of the soundness test (it does not depend on
    which controller the closed loops are then simulated with)."""
    source, code = default_double_integrator_run
    assert code == 0
    spec = load_plant_spec(source / "plant.yaml")
    model, law = build_plant(spec), law_from_run(source)
    box = np.asarray(spec.safety.initial_states.box)
    H = spec.safety.horizon
    result = reach.analyse(law, model, box[:, 0], box[:, 1], H, reach.ReachSettings(cells_per_axis=16, max_depth=2))
    return source, model, law, box, H, result


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float64-law", "float32-c"])
def test_reachable_sets_of_the_default_run_contain_100000_closed_loops(default_run_reach, tmp_path, precision):
    """Soundness where the network acts: the default double integrator run (a full adapt), affine residual
    bounds at verify's default grid, 100,000 random closed loops with the float64 law (the exact maths) and
    with the exported float32 C (inside too: the sets include the float32 deviation bound)."""
    source, model, law, box, H, result = default_run_reach
    proven = sum(np.prod(c.hi - c.lo) for c in result.cells if c.verified) / np.prod(box[:, 1] - box[:, 0])
    assert proven > 0.5  # the affine bounds prove most of the box (interval ones: about a third)
    if precision == "float64-law":
        controller = lambda X: evaluate(law, X).u  # noqa: E731
    else:
        host = _host(_exported_copy(source, tmp_path / "run"))
        controller = lambda X: host.evaluate(X).u  # noqa: E731
    _assert_closed_loops_inside_sets(result, model, law, controller, box, H, 100_000, tmp_path / "map")


#: reachability settings of the soundness test per nonlinear plant (verify's default grid for the dimension)
NONLINEAR_SETTINGS = {"pendulum": reach.ReachSettings(cells_per_axis=16, max_depth=2),
                      "cartpole": reach.ReachSettings(cells_per_axis=4, max_depth=1, max_generators=64)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NONLINEAR_SETTINGS))
def test_reachable_sets_of_nonlinear_plants_contain_100000_c_closed_loops(adapted_runs, tmp_path, name):
    """Soundness of the first-order model with interval remainder: after a short adapt (the session's
    3-iteration runs, the ones export is tested on; a default adapt takes minutes on the cart-pole and was most
    of this test's time on the pendulum), where the network acts, 100,000 random closed loops of the discrete
    map with the exported float32 C lie in their cell's computed box at every step until the cell entered T,
    and in T ever after; and a non-zero fraction of the box is proven. (The soundness test where a fully
    trained network acts is the default double integrator run's, above.)"""
    run = _exported_copy(adapted_runs[name], tmp_path / name)
    spec = load_plant_spec(run / "plant.yaml")
    model, law, host = build_plant(spec), law_from_run(run), _host(run)
    box = np.asarray(spec.safety.initial_states.box)
    H = spec.safety.horizon
    # the network acts: somewhere in the box the law's input is more than 0.1 % of its range from the backup's
    # (the backup alone would make this a test of the LQR's sets only). Measured: pendulum 0.31 of 0.9 N m; the
    # cart-pole 0.069 of 20 N, after its closing round's retreat (without it, reachability proves nothing).
    X = np.random.default_rng(1).uniform(box[:, 0], box[:, 1], size=(10_000, len(box)))
    residual = np.abs(evaluate(law, X).u - evaluate(_backup_only(law), X).u)
    assert residual.max() > 1e-3 * np.max(law.u_max - law.u_min), residual.max()
    result = reach.analyse(law, model, box[:, 0], box[:, 1], H, NONLINEAR_SETTINGS[name])
    assert result.argument == reach.FIRST_ORDER and result.target_invariant
    assert _proven_fraction(result, box) > 0
    _assert_closed_loops_inside_sets(result, model, law, lambda X: host.evaluate(X).u, box, H, 100_000,
                                     tmp_path / "map")


@pytest.mark.slow
def test_default_double_integrator_certificate_is_verified_or_explained(default_double_integrator_run, tmp_path):
    """DoD 1: the default DI run is formally VERIFIED over the whole box, or the certificate says UNKNOWN with
    the failing cells, and this test shows why. Either a check found a real counterexample (then no proof
    can exist), or the over-approximation is too coarse where it fails: the same analysis proves the backup
    alone on the whole box, and the failing cells are where the gate's S-shaped ramp (1 < V/c <= gate_ratio,
    where the network is switched on) cannot be bounded by one linear function over the set: by volume, far
    more of them than of the verified cells meet the gate band, and their closed loops spend at least as long
    in it."""
    source, code = default_double_integrator_run
    assert code == 0
    run = _exported_copy(source, tmp_path / "di")
    result = run_verify(VerifyRequest(run_dir=str(run), samples=4000, halton=1024))
    certificate = result.certificate.to_json()
    reachability = _check(certificate, "reachability")
    if reachability["verdict"] == "VERIFIED":
        assert certificate["summary"]["safe_for_every_initial_state_of_the_box"]
        assert not certificate["summary"]["falsified"] and result.exit_code == 0
        return
    assert reachability["verdict"] == "UNKNOWN"
    details = reachability["details"]
    assert details["failing_cells_total"] > 0 and details["failing_cells"]
    for cell in details["failing_cells"]:
        assert cell["because"] and cell["step"] is not None
    if certificate["summary"]["falsified"]:
        assert result.exit_code == 1  # a real counterexample: no proof can exist
        return
    # no counterexample anywhere: the sampled checks pass and the proof is out of reach of the method
    assert _check(certificate, "closed_loop_safety")["verdict"] == "VERIFIED"
    assert result.exit_code == 0 and not certificate["summary"]["safe_for_every_initial_state_of_the_box"]
    spec = load_plant_spec(run / "plant.yaml")
    model, law = build_plant(spec), law_from_run(run)
    box = np.asarray(spec.safety.initial_states.box)
    settings = reach.ReachSettings(cells_per_axis=details["cells_per_axis"], max_depth=details["max_depth"])
    assert reach.analyse(_backup_only(law), model, box[:, 0], box[:, 1], spec.safety.horizon, settings).verified
    sets = np.load(run / "verify" / "reach_sets.npz")
    lo, hi, verified = sets["lo"], sets["hi"], sets["verified"]
    assert verified.any() and (~verified).any()
    X0 = np.random.default_rng(3).uniform(box[:, 0], box[:, 1], size=(4000, law.nx))
    cell = np.argmax(np.all((X0[:, None, :] >= lo[None]) & (X0[:, None, :] <= hi[None]), axis=2), axis=1)
    loop = simulate(model, lambda X: evaluate(law, X).u, X0, spec.safety.horizon, law.P, law.c, law.x_eq, rows=False)
    in_band = ((loop.level > 1.0) & (loop.level <= law.gate_ratio)).sum(axis=1)
    good = verified[cell]
    assert np.median(in_band[~good]) >= np.median(in_band[good])
    # V/c on a 9 x 9 grid of every cell: does the cell meet the gate band?
    grid = np.linspace(0.0, 1.0, 9)
    offsets = np.array(np.meshgrid(*[grid] * law.nx, indexing="ij")).reshape(law.nx, -1).T
    points = lo[:, None, :] + offsets[None] * (hi - lo)[:, None, :] - law.x_eq
    level = np.einsum("cki,ij,ckj->ck", points, law.P, points) / law.c
    meets_band = np.any((level > 1.0) & (level < law.gate_ratio), axis=1)
    # by volume, not by cell count: bisection leaves many small proven cells right beside the band
    volume = np.prod(hi - lo, axis=1)
    assert (np.average(meets_band[~verified], weights=volume[~verified])
            >= 2 * np.average(meets_band[verified], weights=volume[verified]))


@pytest.mark.slow
def test_reachability_stops_bisecting_at_its_cell_budget(default_double_integrator_run):
    """max_cells bounds the work by a count: no pass starts whose halves would exceed it, the cells it
    leaves are UNKNOWN (never guessed), and a budget that is never reached changes nothing."""
    run, _ = default_double_integrator_run
    spec = load_plant_spec(run / "plant.yaml")
    model, law = build_plant(spec), law_from_run(run)
    box = np.asarray(spec.safety.initial_states.box)

    def fraction(result):
        return sum(np.prod(c.hi - c.lo) for c in result.cells if c.verified) / np.prod(box[:, 1] - box[:, 0])

    def analyse(max_cells):
        settings = reach.ReachSettings(cells_per_axis=8, max_depth=4, max_cells=max_cells)
        return reach.analyse(law, model, box[:, 0], box[:, 1], spec.safety.horizon, settings)

    free, tight, roomy = analyse(None), analyse(100), analyse(10**6)
    assert not all(c.verified for c in free.cells)  # the default run has cells to bisect at 8 per axis
    assert 64 <= len(tight.cells) <= 100 < len(free.cells)
    assert fraction(tight) < fraction(free)
    assert all(c.failed_because for c in tight.cells if not c.verified)
    assert len(roomy.cells) == len(free.cells) and fraction(roomy) == fraction(free)


def test_verify_cli_bad_input(tmp_path, adapted_runs, capsys):
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    for name in ("plant.yaml", "policy.npz"):
        shutil.copyfile(adapted_runs["double_integrator"] / name, run / name)
    assert main(["verify", str(run)]) == 2
    assert "scpo-ctrl export" in capsys.readouterr().err
    run_export(ExportRequest(run_dir=str(run)))
    assert main(["verify", str(run), "--samples", "0"]) == 2
    (run / "export" / "manifest.json").write_text("{not json")
    assert main(["verify", str(run)]) == 2
    error = capsys.readouterr().err
    assert "manifest.json" in error and "Traceback" not in error


def test_reference_closed_loop_matches_the_c_closed_loop(adapted_runs, tmp_path):
    """The Monte Carlo's two loops (C float32, Python float64) agree to the float32 budget over the horizon."""
    run = _exported_copy(adapted_runs["double_integrator"], tmp_path / "run")
    spec = load_plant_spec(run / "plant.yaml")
    model, law, host = build_plant(spec), law_from_run(run), _host(run)
    X0 = np.random.default_rng(0).uniform(*np.asarray(spec.safety.initial_states.box).T, size=(200, 2))
    c_loop = simulate(model, lambda X: host.evaluate(X).u, X0, 40, law.P, law.c, law.x_eq)
    ref = simulate(model, lambda X: evaluate(law, X).u, X0, 40, law.P, law.c, law.x_eq)
    assert np.max(np.abs(c_loop.x - ref.x)) < 1e-3
    assert np.max(np.abs(c_loop.x - ref.x)) > 0  # float32 is in the loop, not the reference twice


def test_counterexamples_are_replayed_under_the_backup_alone(adapted_runs):
    """A closed-loop counterexample gets the same row under the saturated LQR alone; a reach counterexample
    (no row) gets V(x_H)/c - 1; an equivalence counterexample (a law input, not an initial state) is left
    as it is."""
    from scpo_ctrl.verify.certificate import FALSIFIED, Check
    from scpo_ctrl.verify.run import with_backup_alone

    run = adapted_runs["double_integrator"]
    spec = load_plant_spec(run / "plant.yaml")
    model, law = build_plant(spec), law_from_run(run)
    horizon = spec.safety.horizon
    # far beyond the wall at full speed: the backup breaks stop_before_wall and misses T
    x0 = [4.4, 2.0]
    backup = simulate(model, lambda X: evaluate(_backup_only(law), X).u, np.array([x0]), horizon, law.P, law.c,
                      law.x_eq)
    wall = backup.g[0, :, backup.row_names.index("stop_before_wall")].max()
    assert wall > 0

    def falsified(name, example):
        return Check(name=name, claim="", verdict=FALSIFIED, evidence="", seconds=0.0, details={},
                     counterexample=example)

    safety = with_backup_alone(falsified("closed_loop_safety", {"x0": x0, "row": "stop_before_wall"}), law, model,
                               horizon)
    assert safety.counterexample["backup_alone"] == {"value": pytest.approx(wall, rel=1e-12), "breaks_the_row": True}
    reach_example = with_backup_alone(falsified("closed_loop_reach", {"x0": x0, "level_at_horizon": 9.0}), law,
                                      model, horizon)
    assert reach_example.counterexample["backup_alone"]["value"] == pytest.approx(backup.level[0, -1] - 1.0)
    equivalence = falsified("equivalence", {"state": x0, "implementation": "c-host-float32"})
    assert with_backup_alone(equivalence, law, model, horizon) is equivalence
