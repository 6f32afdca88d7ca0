"""Malformed plant files: exit 2, one clear message naming file and key path, no traceback, no side effect."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scpo_ctrl.cli import main

from .conftest import ROOT, model_dict

BASE = model_dict("double_integrator")


def mutate(change):
    def build(tmp: Path) -> str:
        data = copy.deepcopy(BASE)
        change(data)
        return yaml.safe_dump(data, sort_keys=False)

    return build


def raw(text):
    return lambda tmp: text


def _set(path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _expert_csv(tmp: Path) -> str:
    (tmp / "expert.csv").write_text("p,v\n0.0,0.0\n")
    data = copy.deepcopy(BASE)
    data["task"]["expert"] = {"data": "expert.csv"}
    return yaml.safe_dump(data, sort_keys=False)


BILLION_LAUGHS = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
"""

# (id, file builder, expected key path in the message ('' = whole file), expected fragment)
CASES = [
    ("yaml-syntax", raw("schema: scpo-plant/1\nname: [unclosed\n"), "", "YAML syntax error"),
    ("empty-file", raw(""), "", "empty"),
    ("top-level-list", raw("- 1\n- 2\n"), "", "expected a mapping"),
    ("unknown-key-hint", mutate(lambda d: d.update(dynamcis=d["dynamics"])), "dynamcis", "did you mean 'dynamics'"),
    ("missing-dt", mutate(_delete(["dt"])), "", "missing required key 'dt'"),
    ("schema-version", mutate(_set(["schema"], "scpo-plant/9")), "schema", "unsupported schema"),
    ("plant-name", mutate(_set(["name"], "Double-Integrator")), "name", "not a valid plant name"),
    ("dt-negative", mutate(_set(["dt"], -0.1)), "dt", "expected a number > 0"),
    ("dt-text", mutate(_set(["dt"], "fast")), "dt", "expected a number, got text"),
    ("dt-nan", raw(yaml.safe_dump(BASE, sort_keys=False).replace("dt: 0.1", "dt: .nan")), "dt", "finite"),
    ("bound-inf", mutate(lambda d: d["states"][0].update(max=float("inf"))), "states[0].max", "finite"),
    ("min-above-max", mutate(lambda d: d["states"][1].update(min=3.0)), "states[1]", "must be below max"),
    ("duplicate-name", mutate(lambda d: d["states"][1].update(name="p")), "states[1]", "already used"),
    ("duplicate-yaml-key", raw(yaml.safe_dump(BASE, sort_keys=False) + "dt: 0.2\n"), "dt", "duplicate key"),
    ("two-dynamics", mutate(lambda d: d["dynamics"].update(next={"p": "p", "v": "v"})), "dynamics", "exactly one of"),
    ("ode-missing-state", mutate(lambda d: d["dynamics"]["ode"].pop("v")), "dynamics.ode", "missing required key 'v'"),
    ("injection-import", mutate(_set(["dynamics", "ode", "v"], "__import__('os').system('touch x')")),
     "dynamics.ode.v", "unknown function '__import__'"),
    ("injection-attribute", mutate(_set(["constraints", 0, "expr"], "p.__class__.__bases__")),
     "constraints[0].expr", "attribute access"),
    ("injection-lambda", mutate(_set(["dynamics", "ode", "p"], "(lambda: v)()")), "dynamics.ode.p", "'lambda' is not allowed"),
    ("injection-comprehension", mutate(_set(["dynamics", "ode", "p"], "[v for v in p]")), "dynamics.ode.p", "subscripts"),
    ("huge-exponent", mutate(_set(["constraints", 0, "expr"], "p**99999 - 1")), "constraints[0].expr", "too large"),
    ("undeclared-name", mutate(_set(["dynamics", "ode", "v"], "a / mass")), "dynamics.ode.v", "unknown name 'mass'"),
    ("unknown-function", mutate(_set(["dynamics", "ode", "v"], "exec(a)")), "dynamics.ode.v", "'exec' is not allowed"),
    ("linear-A-shape", mutate(lambda d: d.update(dynamics={"linear": {"A": [[1, 0.1]], "B": [[0], [0.1]]}})),
     "dynamics.linear.A", "expected 2 row(s)"),
    ("linear-B-shape", mutate(lambda d: d.update(dynamics={"linear": {"A": [[1, 0.1], [0, 1]], "B": [[0, 1], [0.1, 1]]}})),
     "dynamics.linear.B", "expected 1 column(s)"),
    ("not-equilibrium", mutate(_set(["equilibrium", "u"], [0.5])), "equilibrium", "is not an equilibrium"),
    ("equilibrium-length", mutate(_set(["equilibrium", "x"], [0.0])), "equilibrium.x", "expected 2 number(s)"),
    ("equilibrium-on-boundary", mutate(_set(["equilibrium", "x"], [5.0, 0.0])), "equilibrium", "not strictly inside"),
    ("uncontrollable", mutate(_set(["dynamics", "ode", "v"], "0*a")), "dynamics", "not stabilisable"),
    ("box-outside-limits", mutate(_set(["safety", "initial_states", "box", "v"], [-3.0, 1.0])),
     "safety.initial_states.box.v", "outside the state limits"),
    ("box-missing-state", mutate(lambda d: d["safety"]["initial_states"]["box"].pop("v")),
     "safety.initial_states.box", "missing required key 'v'"),
    ("R-not-definite", mutate(_set(["backup", "R"], [0.0])), "backup.R", "positive definite"),
    ("Q-not-symmetric", mutate(_set(["backup", "Q"], [[1.0, 0.5], [0.0, 1.0]])), "backup.Q", "symmetric"),
    ("input-unbounded", mutate(lambda d: d["inputs"][0].pop("min") and d["inputs"][0].pop("max")), "inputs[0]", "at least one bound"),
    ("expert-count", mutate(_set(["task", "expert"], {"u": ["p", "v"]})), "task.expert.u", "expected 1 expression"),
    ("expert-csv-columns", _expert_csv, "task.expert.data", "lacks column(s) a"),
    ("constraint-duplicate", mutate(lambda d: d["constraints"].append(dict(d["constraints"][0]))),
     "constraints[1].name", "used twice"),
    ("alias-bomb", raw(BILLION_LAUGHS), "", "alias bomb"),
    ("hidden-negative", mutate(_set(["policy", "hidden"], [32, -4])), "policy.hidden[1]", "expected an integer >= 1"),
    ("quoted-number", mutate(lambda d: d["inputs"][0].update(max="1.0")), "inputs[0].max", "expected a number, got text"),
    ("nan-in-matrix", mutate(lambda d: d.update(dynamics={"linear": {"A": [[1.0, float("nan")], [0, 1]], "B": [[0], [0.1]]}})),
     "dynamics.linear.A[0][1]", "finite"),
    ("horizon-on-lqr", mutate(lambda d: d["backup"].update(horizon=10)), "backup.horizon", "mpc backup only"),
    ("mpc-unknown-solver", mutate(lambda d: d["backup"].update(type="mpc", solver="ipopt")), "backup.solver",
     "expected one of sqp, sqp_rti"),
    ("mpc-tighten-too-large", mutate(lambda d: d["backup"].update(type="mpc", tighten=0.7)), "backup.tighten",
     "[0, 0.5)"),
    ("tighten-on-lqr", mutate(lambda d: d["backup"].update(tighten=0.1)), "backup.tighten", "mpc backup only"),
    ("admm-iterations-zero", mutate(lambda d: d["backup"].update(type="mpc", solver="admm", iterations=0)),
     "backup.iterations", ">= 1"),
    ("admm-with-extra-constraints", mutate(lambda d: d["backup"].update(type="mpc", solver="admm")), "backup.solver",
     "extra constraints"),
    ("iterations-on-sqp", mutate(lambda d: d["backup"].update(type="mpc", iterations=50)), "backup.iterations",
     "admm solver only"),
    ("mpc-horizon-zero", mutate(lambda d: d["backup"].update(type="mpc", horizon=0)), "backup.horizon", ">= 1"),
    ("reach-level-zero", mutate(_set(("safety", "reach_level"), 0.0)), "safety.reach_level", "(0, 1]"),
    ("reach-level-above-one", mutate(_set(("safety", "reach_level"), 1.5)), "safety.reach_level", "(0, 1]"),
    ("corners-not-bool", mutate(_set(("safety", "initial_states", "corners"), "yes please")),
     "safety.initial_states.corners", ""),
    ("corners-with-points", mutate(lambda d: d["safety"].update(initial_states={"points": [[0.0, 0.0]], "corners": True})),
     "safety.initial_states.corners", "box only"),
    ("imitation-without-expert", mutate(lambda d: d["task"].pop("expert")), "task", "needs an 'expert'"),
    ("not-a-file", lambda tmp: None, "", "file not found"),
]


@pytest.mark.parametrize("case_id, build, key_path, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_plant_file(tmp_path, monkeypatch, capsys, case_id, build, key_path, fragment):
    monkeypatch.chdir(tmp_path)
    text = build(tmp_path)
    plant = tmp_path / "plant.yaml"
    if text is not None:
        plant.write_text(text)
    before = sorted(os.listdir(tmp_path))

    code = main(["check", "plant.yaml"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    message = captured.err.strip()
    assert "\n" not in message, message
    assert "Traceback" not in message
    assert message.startswith("error: plant.yaml"), message
    if key_path:
        assert f": {key_path}: " in message, message
    assert fragment in message, message
    assert sorted(os.listdir(tmp_path)) == before  # no side effect: nothing created (e.g. no 'x')


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


def test_messages_carry_line_numbers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "models" / "double_integrator.yaml").read_text().replace("dt: 0.1", "dt: -0.1")
    Path("plant.yaml").write_text(text)
    assert main(["check", "plant.yaml"]) == 2
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("dt:"))
    assert capsys.readouterr().err.startswith(f"error: plant.yaml:{line}: dt: ")


def test_real_process_prints_no_traceback(tmp_path):
    plant = tmp_path / "plant.yaml"
    plant.write_text("schema: scpo-plant/1\nname: x\ndt: 0.1\nstates: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "scpo_ctrl.cli", "check", str(plant)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing required key 'inputs'" in result.stderr


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
