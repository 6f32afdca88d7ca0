"""``scpo-ctrl report``: the evidence page, rendered in headless Chromium; every number from a file."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scpo_ctrl.cli import main
from scpo_ctrl.report import ReportRequest, run_report
from scpo_ctrl.report.gather import LoopRound
from scpo_ctrl.report.plots import loop_png
from scpo_ctrl.report.render import fmt

CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("plant", "backup", "training", "verification", "rollouts", "export", "equivalence", "certificate", "hil",
            "artefacts")


def _copy(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    (destination / "report.html").unlink(missing_ok=True)
    return destination


def _chromium(*arguments: str, profile: Path) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def _cell(html: str, cell_id: str) -> str:
    match = re.search(rf'id="{cell_id}">([^<]*)<', html)
    assert match, cell_id
    return match.group(1)


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_every_image_and_section(complete_run, tmp_path, capsys):
    run = _copy(complete_run, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    page = run / "report.html"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report {page}"
    assert Path(CHROMIUM).is_file(), "chromium is missing: bash scripts/install-debian-packages.sh"
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri(), profile=tmp_path / "p1")
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load script did not run"
    # training, verification loop, rollouts, phase portrait, certificate margins, HIL traces and latency (SIL)
    assert int(loaded.group(2)) == 7 and loaded.group(1) == loaded.group(2), loaded.group(0)
    assert 'id="summary"' in dom
    for section in SECTIONS:
        assert f'<section id="{section}"' in dom, section
    assert 'data-present="no"' not in dom
    assert "<img" in dom and 'src="http' not in dom and "<link" not in dom  # self-contained: nothing to fetch
    screenshot = tmp_path / "report.png"
    _chromium(f"--screenshot={screenshot}", "--window-size=1280,4000", page.resolve().as_uri(),
              profile=tmp_path / "p2")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


@pytest.mark.slow
def test_the_page_follows_the_files(complete_run, tmp_path):
    run = _copy(complete_run, tmp_path / "run")
    before = run_report(ReportRequest(str(run))).path.read_text()
    summary = json.loads((run / "adaptation.json").read_text())
    assert _cell(before, "final-loss") != "0.1235"
    summary["final_loss"], summary["rejected"] = 0.123456789, 4242
    (run / "adaptation.json").write_text(json.dumps(summary))
    certificate = json.loads((run / "certificate.json").read_text())
    check = next(c for c in certificate["checks"] if c["name"] == "integrity")
    assert check["verdict"] == "VERIFIED"
    check["verdict"] = "FALSIFIED"
    (run / "certificate.json").write_text(json.dumps(certificate))
    after = run_report(ReportRequest(str(run))).path.read_text()
    assert _cell(after, "final-loss") == "0.1235" and _cell(after, "rejected") == "4242"
    integrity = re.search(r'<tr id="check-integrity">.*?</tr>', after, re.S).group(0)
    assert "FALSIFIED" in integrity and "VERIFIED" not in integrity
    new_hash = hashlib.sha256((run / "adaptation.json").read_bytes()).hexdigest()
    assert new_hash in after and new_hash not in before


@pytest.mark.slow
def test_every_hash_on_the_page_is_the_hash_of_its_file(complete_run, tmp_path, capsys):
    run = _copy(complete_run, tmp_path / "run")
    assert main(["report", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(state == "present" for state in result["sections"].values()), result["sections"]
    page = Path(result["path"]).read_text()
    for relative in ("plant.yaml", "policy.npz", "adaptation.json", "training.jsonl", "plots/training.png",
                     "export/manifest.json", "certificate.json", "hil/report.json", "hil/sil/report.json"):
        digest = hashlib.sha256((run / relative).read_bytes()).hexdigest()
        assert result["sources"][relative] == digest, relative
        assert f'title="sha256 {digest}"' in page, relative


@pytest.mark.slow
def test_missing_stages_are_one_line_notes(complete_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("plant.yaml", "policy.npz", "adaptation.json", "training.jsonl"):
        shutil.copy(complete_run / name, run / name)
    html = run_report(ReportRequest(str(run))).path.read_text()
    assert "not run yet: scpo-ctrl export RUN_DIR" in html
    assert "not run yet: scpo-ctrl verify RUN_DIR" in html
    assert "not run yet: scpo-ctrl hil RUN_DIR" in html
    assert 'id="final-loss"' in html


@pytest.mark.slow
def test_text_from_files_is_escaped(complete_run, tmp_path):
    run = _copy(complete_run, tmp_path / "run")
    plant = (run / "plant.yaml").read_text()
    plant = re.sub(r"^description: .*$", "description: '<script>alert(1)</script> & co'", plant, flags=re.M)
    (run / "plant.yaml").write_text(plant)
    html = run_report(ReportRequest(str(run))).path.read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "adaptation.json").write_text("{ not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "adaptation.json: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def _lines(run: Path) -> list:
    return [json.loads(line) for line in (run / "training.jsonl").read_text().splitlines() if line.strip()]


def _write_lines(run: Path, lines: list) -> None:
    (run / "training.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _loop_section(html: str) -> str:
    match = re.search(r'<section id="verification".*?</section>', html, re.S)
    assert match, "no verification-loop section"
    return match.group(0)


@pytest.mark.slow
def test_verification_loop_section_shows_every_round_of_training_jsonl(adapted_runs, tmp_path):
    run = _copy(adapted_runs["double_integrator"], tmp_path / "run")
    lines = _lines(run)
    rounded = [line for line in lines if "verification_round" in line]
    summary = json.loads((run / "adaptation.json").read_text())
    assert rounded and summary["verification_loop"]["rounds"] == len(rounded)  # 3 iterations: one round, after the last
    loop = summary["verification_loop"]
    added = sum(line["verification_round"]["added"] for line in rounded)
    assert loop["initial_validation_states"] + added == loop["validation_states"] == rounded[-1]["verification_round"][
        "validation_states"]
    # a second round with values no real run would produce, so the page can only show them by reading the file
    extra = json.loads(json.dumps(rounded[-1]))
    extra["iteration"] = 77
    extra["loss"], extra["loss_after_round"] = 0.31415926, 0.27182818
    extra["verification_round"].update({
        "iteration": 77, "examined": 9191, "violating": 13, "added": 17, "validation_states": 4242,
        "proven_fraction": 0.123456789, "residual_scale": 0.5, "falsified": True, "unproven_cells": 555,
        "findings": {"monte_carlo": {"examined": 9000, "violating": 11},
                     "falsification": {"examined": 7, "violating": 2},
                     "reachability": {"examined": 184, "violating": 0}},
        "added_by_group": {"v.max": 12, "target.reach": 0, "unproven cell": 5},
        "passes": 3, "violating_last_pass": 1,
    })
    _write_lines(run, lines + [extra])
    section = _loop_section(run_report(ReportRequest(str(run))).path.read_text())
    rows = re.findall(r'<tr class="loop-round">(.*?)</tr>', section, re.S)
    assert len(rows) == len(rounded) + 1
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", rows[-1], re.S)]
    assert cells == ["77", "13 / 9191", "11 / 9000", "2 / 7; yes", "0.1235; 555", "17v.max 12, unproven cell 5",
                     "0", "4242", "retreated to s = 0.5; 3 searches, last found 1", "0.3142 → 0.2718",
                     fmt(rounded[-1]["verification_round"]["seconds"], 3)]
    first = rounded[0]["verification_round"]
    first_cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)]
    assert first_cells[0] == str(rounded[0]["iteration"]) and first_cells[7] == str(first["validation_states"])
    assert first_cells[9] == f"{fmt(rounded[0]['loss'])} → {fmt(rounded[0]['loss_after_round'])}"
    assert f'id="loop-validation-states">{summary["verification_loop"]["validation_states"]}<' in section
    assert section.count("<img") == 1 and "data:image/png;base64," in section
    digest = hashlib.sha256((run / "training.jsonl").read_bytes()).hexdigest()
    assert f'title="sha256 {digest}"' in section


@pytest.mark.slow
@pytest.mark.parametrize("change, note", [
    ("off", "off for this run (scpo-ctrl adapt --no-verify-loop)"),
    ("predates", "adaptation.json predates the verification loop"),
    ("no rounds", "on, but no round ran before the run ended"),
])
def test_a_run_without_rounds_gets_a_one_line_note(adapted_runs, tmp_path, change, note):
    run = _copy(adapted_runs["double_integrator"], tmp_path / "run")
    summary = json.loads((run / "adaptation.json").read_text())
    if change == "off":
        summary["verification_loop"] = {"enabled": False}
    elif change == "predates":
        del summary["verification_loop"]
    else:
        _write_lines(run, [{k: v for k, v in line.items() if k not in ("verification_round", "loss_after_round")}
                           for line in _lines(run)])
    (run / "adaptation.json").write_text(json.dumps(summary))
    html = run_report(ReportRequest(str(run))).path.read_text()
    section = _loop_section(html)
    assert 'data-present="no"' in section and note in section
    assert "loop-round" not in section and "<img" not in section
    assert 'id="final-loss"' in html  # the rest of the page is unaffected


def test_loop_plot_without_reachability_is_still_a_png():
    rounds = tuple(LoopRound(i, {"validation_states": 6 + i, "added": i, "proven_fraction": None}, 1.0, 1.1)
                   for i in (25, 50))
    lines = [{"iteration": i, "loss": 1.0 / i} for i in range(1, 51)]
    png = loop_png(lines, rounds, "MPC backup: no reachability")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_numbers_a_file_does_not_hold_show_as_a_dash():
    """The run files write non-finite numbers as null and the typed readers give NaN for it: the page shows
    a dash for both, never 'nan'; an infinite value (a diverged row) stays visible."""
    assert fmt(None) == fmt(float("nan")) == "–"
    assert fmt(float("inf")) == "inf" and fmt(0.123456) == "0.1235" and fmt(3) == "3"


def test_a_run_file_from_another_version_leaves_its_section_out_with_the_reason(complete_run, tmp_path, capsys):
    """A HIL report without a field this version records (written before it existed) does not stop the page:
    the HIL section says which field is missing; the other sections are as before."""
    run = _copy(complete_run, tmp_path / "run")
    index = json.loads((run / "hil" / "report.json").read_text())
    target = next(iter(index["targets"]))
    del index["targets"][target]["law"]
    (run / "hil" / "report.json").write_text(json.dumps(index))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert f"targets.{target}.law: missing" in html and "written by another version of scpo-ctrl" in html
    assert 'id="loop-rounds"' in html  # the training sections are still there
