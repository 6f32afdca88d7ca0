"""The sdist and wheel carry what every verb needs: build them, install the wheel into a fresh virtualenv
outside the checkout, and run the whole pipeline there from an empty directory.

The virtualenv gets the wheel's dependencies from the configured pip registry (pip's cache makes repeat
runs fast); it does not see the checkout's environment, so the checkout's code cannot leak in, which the
test also asserts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from scpo_ctrl.resources import RESOURCE_DIRECTORIES

ROOT = Path(__file__).resolve().parent.parent
#: what the sdist is built from (MANIFEST.in adds the resource folders)
SOURCE_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[co]", "_resources", "*.egg-info", ".*")
PLANT = "double_integrator"
INSTALL_TIMEOUT = 1200
STEP_TIMEOUT = 600

pytestmark = pytest.mark.slow


def _run(command: list, cwd: Path, env: dict | None = None, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (f"{' '.join(map(str, command))} exited {result.returncode}\n"
                                    f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}")
    return result


def _copy_source(destination: Path) -> Path:
    """The files an sdist is made of, copied out of the checkout so that building writes nothing into it."""
    destination.mkdir()
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, destination / name)
    for name in ("scpo_ctrl",) + RESOURCE_DIRECTORIES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, destination / name, ignore=IGNORED)
    return destination


def _resource_files() -> set:
    """Every file of the checkout's resource folders, as ``<folder>/<path>``."""
    files = set()
    for name in RESOURCE_DIRECTORIES:
        for path in (ROOT / name).rglob("*") if (ROOT / name).is_dir() else ():
            if path.is_file() and "__pycache__" not in path.parts:
                files.add(path.relative_to(ROOT).as_posix())
    return files


def _build(tmp_path: Path) -> tuple:
    """``(sdist, wheel)``: the sdist with setuptools' PEP 517 hook, the wheel from the sdist with pip."""
    source, dist = _copy_source(tmp_path / "source"), tmp_path / "dist"
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    sdist = dist / _run([sys.executable, "-c", code], cwd=source).stdout.strip().splitlines()[-1]
    # build isolation: pip takes setuptools and wheel from the registry (the checkout's venv has no `wheel`)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, sdist], cwd=tmp_path)
    (wheel,) = dist.glob("scpo_ctrl-*.whl")
    return sdist, wheel


def _clean_environment(tmp_path: Path, venv: Path) -> dict:
    """The environment of a user of the installed package: no PYTHONPATH, no acados, caches in tmp_path."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "SCPO_CTRL_ACADOS_DIR", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", SCPO_CTRL_CACHE=str(tmp_path / "cache"),
               XDG_DATA_HOME=str(tmp_path / "data"), MPLBACKEND="Agg")
    return env


def _installed_locations(python: Path, cwd: Path, env: dict) -> dict:
    code = ("import json, scpo_ctrl; from scpo_ctrl.resources import resource_dir, source_checkout; "
            "print(json.dumps({'package': scpo_ctrl.__file__, 'checkout': str(source_checkout()), "
            "'resources': {n: str(resource_dir(n)) for n in ('codegen', 'hil', 'models')}}))")
    return json.loads(_run([python, "-c", code], cwd=cwd, env=env).stdout)


def test_installed_wheel_runs_every_verb(tmp_path):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("arm-none-eabi-gcc is not on PATH (export --target cortex-m4 needs it): "
                    "run scripts/install-debian-packages.sh")
    timings = {}
    start = time.perf_counter()
    sdist, wheel = _build(tmp_path)
    timings["build"] = time.perf_counter() - start

    expected = _resource_files()
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name.removeprefix("scpo_ctrl/_resources/") for name in archive.namelist()}
    assert expected <= in_wheel, f"missing from the wheel: {sorted(expected - in_wheel)}"
    assert "scpo_ctrl/report/templates/report.html.j2" in in_wheel
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert expected <= in_sdist, f"missing from the sdist: {sorted(expected - in_sdist)}"

    venv, work = tmp_path / "venv", tmp_path / "empty"
    work.mkdir()
    try:
        start = time.perf_counter()
        _run([sys.executable, "-m", "venv", venv], cwd=work)
        env = _clean_environment(tmp_path, venv)
        python = venv / "bin" / "python"
        # --no-compile: no byte-compiling of every installed dependency up front (scipy, matplotlib, onnx, ...);
        # the verbs compile what they import on first use, as any user's first run does
        _run([python, "-m", "pip", "install", "--quiet", "--no-compile", wheel], cwd=work, env=env,
             timeout=INSTALL_TIMEOUT)
        timings["venv and install"] = time.perf_counter() - start

        locations = _installed_locations(python, work, env)
        assert Path(locations["package"]).resolve().is_relative_to(venv.resolve()), locations
        assert locations["checkout"] == "None", locations
        for name, directory in locations["resources"].items():
            assert Path(directory).is_relative_to(venv.resolve() / "lib") and Path(directory).name == name, locations

        scpo = venv / "bin" / "scpo-ctrl"
        steps = {
            "check": ["check", PLANT],
            # without the verification loop (its closing round, a Monte Carlo, falsification and reachability
            # search after the last iteration, is the bulk of a short adapt); verify below runs that code
            "adapt": ["adapt", PLANT, "--out", "run", "--iterations", "3", "--quiet", "--no-verify-loop"],
            "export": ["export", "run", "--target", "cortex-m4"],
            "verify": ["verify", "run", "--samples", "200", "--halton", "64", "--cells", "8", "--depth", "1"],
            "hil": ["hil", "run", "--target", "sil", "--episodes", "2", "--steps", "40"],
            "report": ["report", "run"],
        }
        for name, arguments in steps.items():
            start = time.perf_counter()
            _run([scpo, *arguments], cwd=work, env=env)
            timings[name] = time.perf_counter() - start
        assert (work / "run" / "export" / "manifest.json").is_file() and (work / "run" / "report.html").is_file()

        missing = subprocess.run([scpo, "check", "pendulum_mpc"], cwd=work, env=env, capture_output=True, text=True,
                                 timeout=STEP_TIMEOUT)
        assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
        assert "scpo-ctrl setup-acados" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~750 MB; pytest keeps the last few tmp_path trees
        print("packaging test seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items()))
