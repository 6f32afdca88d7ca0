"""HIL under host load: a 100 Hz plant while busy loops saturate every core.

Simulated time (the default for sil) must not notice the load at all; real time must put the load down to a
late host, never to the target. The hog is bounded in time and killed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
import yaml

from scpo_ctrl.cli import main
from scpo_ctrl.hil.run import HilRequest, run_hil


#: a 3-state plant at dt = 10 ms (a cart with a first-order actuator lag), as a user measured it
LAGGED_CART = {
    "schema": "scpo-plant/1", "name": "lagged_cart",
    "description": "Cart with a first-order actuator lag, sampled at 100 Hz (HIL timing under load).",
    "dt": 0.01,
    "states": [{"name": "p", "unit": "m", "min": -5.0, "max": 5.0},
               {"name": "v", "unit": "m/s", "min": -2.0, "max": 2.0},
               {"name": "a", "unit": "m/s^2", "min": -2.0, "max": 2.0}],
    "inputs": [{"name": "u", "unit": "m/s^2", "min": -1.0, "max": 1.0}],
    "params": {"tau": 0.2},
    "dynamics": {"ode": {"p": "v", "v": "a", "a": "(u - a) / tau"}, "integrator": "rk4", "substeps": 1},
    "equilibrium": {"x": [0.0, 0.0, 0.0], "u": [0.0]},
    "constraints": [{"name": "stop_before_wall", "expr": "p + v*abs(v)/2 - 4.5"}],
    "backup": {"type": "lqr", "Q": [10.0, 1.0, 0.1], "R": [0.1]},
    "safety": {"horizon": 400, "initial_states": {"box": {"p": [-0.5, 0.5], "v": [-0.2, 0.2], "a": [-0.1, 0.1]},
                                                   "count": 8}},
    "task": {"type": "imitation", "expert": {"u": "-0.5*p - 0.8*v - 0.3*a"}},
    "policy": {"hidden": [8, 8], "activation": "tanh"},
    "scpo": {"iterations": 3, "step_size": 1.0, "trust_radius": 0.5, "seed": 0},
}
HOG_LIMIT_S = 150  # each busy loop ends by itself after this, whatever happens to the test
HOG_SCRIPT = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
RUNS = 20


@contextlib.contextmanager
def cpu_hog(processes: int | None = None):
    """Busy loops on every core plus one (each bounded by ``HOG_LIMIT_S``); killed on exit."""
    count = processes or (os.cpu_count() or 2) + 1
    hogs = [subprocess.Popen([sys.executable, "-c", HOG_SCRIPT, str(HOG_LIMIT_S)]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach the loop
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """The 100 Hz plant, adapted for a few iterations and exported for the host (before any hog starts).

    Without the verification loop: these tests are about the HIL link's timing, which does not depend on
    the policy's weights, and the loop's closing round was most of the time of a short adapt."""
    root = tmp_path_factory.mktemp("hil_load")
    plant = root / "lagged_cart.yaml"
    plant.write_text(yaml.safe_dump(LAGGED_CART, sort_keys=False))
    run = root / "run"
    assert main(["adapt", str(plant), "--out", str(run), "--quiet", "--no-verify-loop", "--no-plots"]) == 0
    assert main(["export", str(run)]) == 0
    return run


@pytest.mark.slow
def test_sil_under_a_cpu_hog_never_fails_spuriously(fast_run, capsys):
    """20 runs of `hil --target sil` while the cores are saturated (every other one with link faults):
    every run exits 0; none exits 2 (the old 'target answered frame k+1 while the harness is at k')."""
    codes = []
    with cpu_hog():
        for run in range(RUNS):
            faults = ["--faults", "drop=0.05,corrupt=0.05,delay=0.05"] if run % 2 else []
            codes.append(main(["hil", str(fast_run), "--target", "sil", "--episodes", "2", "--steps", "40",
                               "--seed", str(run), "--no-plots", *faults]))
    out = capsys.readouterr().out
    assert codes == [0] * RUNS, (codes, out[-3000:])
    assert "timing: simulated time" in out and "unexplained 0" in out


@pytest.mark.slow
def test_realtime_under_a_cpu_hog_reports_a_late_host_not_a_target_fault(fast_run):
    """Real time, same hog, a 2 ms watchdog: the loaded harness is late, the target's watchdog answers those
    steps, and the report puts every one of them down to the late host (the target saw each late STATE frame)."""
    reports = []
    with cpu_hog():
        for seed in range(3):  # the hog makes a late step all but certain; try a few runs rather than flake
            report = run_hil(HilRequest(run_dir=str(fast_run), target="sil", episodes=2, steps=60, seed=seed,
                                        plots=False, realtime=True, watchdog_ms=2.0)).report.to_json()
            reports.append(report)
            if report["frames"]["late_host_steps"] > 0:
                break
    report = reports[-1]
    frames, checks = report["frames"], report["summary"]["checks"]
    assert report["timing"] == "real time"
    assert frames["late_host_steps"] > 0, [r["frames"] for r in reports]
    assert frames["watchdog_replies"] == frames["late_host_steps"] == frames["late_state_frames_seen_by_the_target"]
    assert frames["watchdog_replies_unexplained"] == 0 and checks["no_watchdog_without_a_fault"]
    assert frames["target"]["sequence_errors"] == 0  # late frames are counted as such, not as sequence errors
    assert checks["equivalence_within_tolerance"] and checks["zero_constraint_violations"]
