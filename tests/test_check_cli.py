"""`scpo-ctrl check` on every shipped model, text and JSON; exit 1 for an unsafe backup."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scpo_ctrl.cli import main
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.problem import build_problem

from .conftest import MODELS, model_dict, write_yaml


def test_check_every_model_exits_0_and_prints_the_items(model_name, capsys):
    assert main(["check", str(MODELS / f"{model_name}.yaml")]) == 0
    out = capsys.readouterr().out
    for item in ("dimensions", "equilibrium", "LQR gain K", "closed-loop eigenvalues", "target set",
                 "validation", "target.reach", "backup: SAFE"):
        assert item in out, item


def test_check_json_is_one_object_with_the_same_content(capsys):
    path = str(MODELS / "double_integrator.yaml")
    assert main(["check", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plant"] == "double_integrator"
    assert report["nx"] == 2 and report["nu"] == 1
    assert len(report["K"]) == 1 and len(report["K"][0]) == 2
    assert report["backup_safe"] is True
    assert report["target_level"] > 0
    names = [m["name"] for m in report["backup_margins"]]
    assert names == ["p.max", "p.min", "v.max", "v.min", "stop_before_wall", "target.reach"]
    assert all(m["worst"] <= 0 for m in report["backup_margins"])
    assert report["expert_safe"] is False  # the malicious expert
    # text output shows the same numbers
    assert main(["check", path]) == 0
    text = capsys.readouterr().out
    assert f"{report['target_level']:.6g}" in text
    assert f"{report['backup_margins'][4]['worst']: .6g}" in text


def test_unsafe_backup_exits_1(tmp_path, capsys):
    data = model_dict("double_integrator")
    # fast starts close to the wall: the saturated backup cannot brake in time
    data["safety"]["initial_states"]["box"] = {"p": [3.5, 4.0], "v": [1.5, 1.9]}
    path = write_yaml(tmp_path / "fast.yaml", data)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "backup: UNSAFE" in out
    assert "VIOLATED" in out


def test_backup_unsafe_on_the_box_but_not_on_the_validation_set_is_reported(tmp_path, capsys):
    """A box wider than the backup's safe region, with a validation set (16 Halton points, no corners)
    that misses the unsafe part: check still exits 0 (SCPO can start) but names the box's problem."""
    data = model_dict("double_integrator")
    data["safety"]["initial_states"] = {"box": {"p": [-3.5, 3.0], "v": [-1.0, 1.3]}, "count": 16}
    path = write_yaml(tmp_path / "wide.yaml", data)
    assert main(["check", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backup_safe"] is True
    box = report["backup_box"]
    assert box["examined"] == 4 + 4096 and box["corners"] == 4
    assert box["violating"] > 0 and box["violating_corners"] >= 1
    broken = {m["name"] for m in box["rows"] if m["worst"] > 0}
    assert box["worst_row"] in broken
    # the worst state is inside the box, and the backup really breaks the named row from it, by that row's worst
    worst = box["worst_state"]
    assert -3.5 <= worst[0] <= 3.0 and -1.0 <= worst[1] <= 1.3
    problem = build_problem(load_plant_spec(path))
    _, replay = problem.engine(problem.backup_law(), jit=False).evaluate(
        np.array([worst]), problem.target.c, problem.target.P, problem.target.x_eq)
    margin = {m["name"]: m for m in box["rows"]}[box["worst_row"]]
    assert replay.g[0, replay.names.index(box["worst_row"])] == pytest.approx(margin["worst"], rel=1e-9)
    assert margin["worst"] > 0
    assert margin["violating_states"] == max(m["violating_states"] for m in box["rows"])
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "backup: SAFE from every validation state" in out
    assert f"backup on the box: WARNING: it breaks a row from {box['violating']} of 4100" in out


def test_shipped_default_plant_backup_is_safe_on_its_whole_box(capsys):
    assert main(["check", str(MODELS / "double_integrator.yaml"), "--json"]) == 0
    box = json.loads(capsys.readouterr().out)["backup_box"]
    assert box["violating"] == 0 and box["worst_state"] is None
