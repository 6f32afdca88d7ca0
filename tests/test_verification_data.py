"""``verification/``: the campaign file the verbs run on, the run files' JSON schemas, the generated C's goldens."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from scpo_ctrl.cli import main
from scpo_ctrl.config.campaign import ENVIRONMENT_VARIABLE, campaign_path, load_campaign
from scpo_ctrl.config.run_schemas import run_file_schemas, schema_for, validate_document, validate_run_dir
from scpo_ctrl.errors import SpecError, UsageError
from scpo_ctrl.export import golden
from scpo_ctrl.hil.faults import parse_faults
from scpo_ctrl.resources import resource_dir, shipped_plants
from scpo_ctrl.verify.run import VerifyRequest, with_campaign

VERIFICATION = resource_dir("verification")
CAMPAIGN = VERIFICATION / "campaign.yaml"


def _campaign_copy(directory: Path, change) -> Path:
    """A copy of the shipped campaign file with ``change(data)`` applied."""
    data = yaml.safe_load(CAMPAIGN.read_text())
    change(data)
    path = directory / "campaign.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- the campaign file -------------------------------------------------------------------------------------
def test_the_shipped_campaign_is_found_through_the_resolver_and_fills_every_default(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    assert campaign_path() == CAMPAIGN
    campaign = load_campaign()
    raw = yaml.safe_load(CAMPAIGN.read_text())
    assert dict(campaign.equivalence.mix) == raw["equivalence"]["mix"]
    assert campaign.equivalence.states == sum(raw["equivalence"]["mix"].values())
    request = with_campaign(VerifyRequest(run_dir="run"), campaign)
    assert (request.samples, request.halton, request.beta) == (raw["monte_carlo"]["samples"],
                                                              raw["monte_carlo"]["halton"], raw["monte_carlo"]["beta"])
    assert request.max_depth == raw["reachability"]["max_depth"]
    assert request.falsify_starts == raw["falsification"]["random_starts"]
    # a flag given on the command line wins over the file
    assert with_campaign(VerifyRequest(run_dir="run", samples=7), campaign).samples == 7
    # the budget table: the first row covering nx, the open last row beyond
    rows = raw["reachability"]["by_state_count"]
    assert campaign.reachability.budget(1).cells_per_axis == rows[0]["cells_per_axis"]
    assert campaign.reachability.budget(100).max_generators == rows[-1]["max_generators"]


def test_the_environment_variable_names_another_campaign(tmp_path, monkeypatch):
    path = _campaign_copy(tmp_path, lambda data: data["monte_carlo"].update(samples=123))
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(path))
    assert load_campaign().monte_carlo.samples == 123
    assert load_campaign(CAMPAIGN).monte_carlo.samples != 123  # an explicit file wins


@pytest.mark.parametrize("change, where, message", [
    (lambda d: d["monte_carlo"].update(samples=-3), "monte_carlo.samples", "expected an integer >= 1"),
    (lambda d: d["monte_carlo"].update(beta=1.5), "monte_carlo.beta", "in (0, 1)"),
    (lambda d: d["equivalence"]["mix"].update(insde=3), "equivalence.mix.insde", "did you mean 'inside'"),
    (lambda d: d["reachability"]["by_state_count"][-1].update(up_to=9), "reachability.by_state_count[4].up_to",
     "leave out up_to"),
    (lambda d: d["hil"]["faults"]["presets"].update(wild={"drop": 0.9}), "hil.faults.presets.wild.drop",
     "at most max_rate"),
])
def test_a_bad_campaign_value_is_one_line_with_file_line_and_key(tmp_path, change, where, message):
    path = _campaign_copy(tmp_path, change)
    with pytest.raises(SpecError) as caught:
        load_campaign(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:") and f": {where}: " in text and message in text, text
    assert caught.value.line is not None and caught.value.line > 1


def test_a_bad_campaign_file_stops_verify_with_exit_2(tmp_path, capsys):
    path = _campaign_copy(tmp_path, lambda data: data["monte_carlo"].update(halton="many"))
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "export" / "manifest.json").write_text("{}")
    assert main(["verify", str(run), "--campaign", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "monte_carlo.halton" in err[0] and str(path) in err[0]


def test_hil_fault_presets_come_from_the_campaign(tmp_path):
    presets = load_campaign().hil_faults.presets
    for name, values in presets.items():
        spec = parse_faults(name)
        assert all(getattr(spec, key) == value for key, value in values.items())
        assert spec.any
    first = next(iter(presets))
    assert parse_faults(f"{first},drop=0.01").drop == 0.01  # a preset's value changed on the command line
    with pytest.raises(UsageError, match="preset"):
        parse_faults("no_such_preset")
    strict = load_campaign(_campaign_copy(tmp_path, lambda d: d["hil"]["faults"].update(max_rate=0.1))).hil_faults
    with pytest.raises(UsageError, match="0.1"):
        parse_faults("drop=0.2", strict)


@pytest.mark.slow
def test_changing_the_campaign_changes_what_verify_runs(complete_run, tmp_path, capsys):
    """Sizes from a campaign file end up in the certificate: every Monte Carlo, equivalence, reachability and
    falsification count is the file's (kept tiny so the test is cheap)."""
    run = tmp_path / "run"
    shutil.copytree(complete_run, run)
    mix = {"inside": 7, "beyond": 3, "boundary": 2, "target_surface": 2, "gate_surface": 1, "equilibrium": 1}

    def tiny(data):
        data["equivalence"]["mix"] = mix
        data["monte_carlo"].update(samples=37, halton=5, beta=0.05)
        data["reachability"]["max_depth"] = 0
        for row in data["reachability"]["by_state_count"]:
            row["cells_per_axis"] = 3
        data["falsification"].update(random_starts=1, worst_starts=2, max_iterations=3)

    path = _campaign_copy(tmp_path, tiny)
    assert main(["verify", str(run), "--campaign", str(path), "--json"]) in (0, 1)
    certificate = json.loads(capsys.readouterr().out)
    checks = {check["name"]: check["details"] for check in certificate["checks"]}
    assert checks["equivalence"]["states"] == sum(mix.values())
    assert all(item["states"] == sum(mix.values()) for item in checks["equivalence"]["implementations"])
    safety = checks["closed_loop_safety"]
    assert (safety["uniform_iid"], safety["low_discrepancy"], safety["initial_states"]) == (37, 5, 42)
    assert checks["closed_loop_reach"]["beta"] == 0.05
    assert safety["scenario_bound"] is None or safety["scenario_bound"]["samples"] == 37
    assert checks["reachability"]["cells_per_axis"] == 3 and checks["reachability"]["max_depth"] == 0
    assert checks["reachability"]["cells"] == 3 ** len(certificate["initial_box"])
    rows = checks["falsification"]["rows"]
    assert rows and len({row["row"] for row in rows}) == len(rows)
    # the run's other files still validate after this verify
    assert {name: problems for name, problems in validate_run_dir(run).items() if problems} == {}


# -- the run files' schemas ---------------------------------------------------------------------------------
def test_every_schema_is_a_valid_draft_2020_12_schema():
    from jsonschema import Draft202012Validator

    schemas = run_file_schemas()
    assert {schema.name for schema in schemas} >= {"manifest.schema.json", "certificate.schema.json",
                                                   "hil-report.schema.json", "hil-summary.schema.json",
                                                   "adaptation.schema.json", "training-record.schema.json"}
    for schema in schemas:
        Draft202012Validator.check_schema(schema.schema)
    assert schema_for("hil/qemu/report.json").name == "hil-report.schema.json"
    assert schema_for("hil/report.json").name == "hil-summary.schema.json"
    assert schema_for("export/manifest.json").name == "manifest.schema.json"


@pytest.mark.slow
def test_every_json_file_a_run_writes_validates_against_its_schema(complete_run):
    results = validate_run_dir(complete_run)
    assert {"adaptation.json", "training.jsonl", "export/manifest.json", "certificate.json", "hil/report.json",
            "hil/sil/report.json"} <= set(results)
    assert {name: problems for name, problems in results.items() if problems} == {}


@pytest.mark.slow
@pytest.mark.parametrize("relative, break_it", [
    ("export/manifest.json", lambda d: d.pop("artefacts")),
    ("export/manifest.json", lambda d: d["self_check"][0].update(passed="yes")),
    ("certificate.json", lambda d: d["checks"][0].update(verdict="PROBABLY")),
    ("certificate.json", lambda d: d["checks"][1]["details"].pop("states")),
    ("certificate.json", lambda d: d.update(extra=1)),
    ("hil/sil/report.json", lambda d: d["frames"]["injected"].pop("uplink_dropped")),
    ("hil/report.json", lambda d: d["targets"]["sil"].update(report="/etc/passwd")),
    ("adaptation.json", lambda d: d.update(policy_sha256="not a digest")),
])
def test_the_schemas_reject_a_changed_file(complete_run, relative, break_it):
    """The schemas are not vacuous: a file missing a key, with a wrong type or value, or an unknown key fails."""
    schemas = run_file_schemas()
    document = json.loads((complete_run / relative).read_text())
    assert validate_document(document, schema_for(relative, schemas), schemas) == []
    broken = copy.deepcopy(document)
    break_it(broken)
    assert validate_document(broken, schema_for(relative, schemas), schemas) != []


# -- golden vectors of the generated C ----------------------------------------------------------------------
def test_every_shipped_plant_has_golden_vectors():
    files = {path.stem for path in (VERIFICATION / "golden").glob("*.json")}
    assert files == set(shipped_plants())


@pytest.mark.parametrize("plant", shipped_plants())
def test_the_generated_c_reproduces_the_golden_vectors_bit_for_bit(plant):
    """Render and compile the stored law's host C (float32) again; every input bit, branch and reason must be
    the recorded one. No adapt, no backup design, no acados: the file holds the whole law."""
    recorded = golden.read_golden(VERIFICATION / "golden" / f"{plant}.json")
    assert len({int(b) for b in recorded.vectors.branch}) >= 3  # the vectors reach several branches
    with tempfile.TemporaryDirectory(prefix="scpo-golden-test-") as directory:
        computed = golden.compute(recorded.law, recorded.vectors.X, recorded.vectors.U_backup, Path(directory),
                                  recorded.profile)
    assert golden.mismatches(recorded.vectors, computed) == []


def test_a_changed_bit_is_a_golden_mismatch():
    recorded = golden.read_golden(VERIFICATION / "golden" / "double_integrator.json")
    vectors = recorded.vectors
    bits = vectors.u_bits.copy()
    bits[3, 0] ^= 1  # one unit in the last place
    changed = golden.GoldenVectors(X=vectors.X, U_backup=vectors.U_backup, u_bits=bits, branch=vectors.branch,
                                   reason=vectors.reason)
    lines = golden.mismatches(vectors, changed)
    assert len(lines) == 1 and lines[0].startswith("state 3 ")


def test_the_golden_file_round_trips_and_guards_its_law():
    data = json.loads((VERIFICATION / "golden" / "pendulum_mpc.json").read_text())
    recorded = golden.from_json(data)
    assert not recorded.law.backup_kind.in_closed_form and recorded.vectors.U_backup is not None
    assert golden.to_json(recorded) == data
    tampered = copy.deepcopy(data)
    tampered["law"]["c"] = tampered["law"]["c"] * 1.5
    with pytest.raises(ValueError, match="law_sha256"):
        golden.from_json(tampered)
