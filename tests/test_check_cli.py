"""`scpo-ctrl check` on every shipped model, text and JSON; exit 1 for an unsafe backup."""

from __future__ import annotations

import json


from scpo_ctrl.cli import main

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
