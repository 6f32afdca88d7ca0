"""The backups' safe regions on a slice of the cart-pole (scpo_ctrl.backup.region, benchmarks/mpc_region.py)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from scpo_ctrl.backup.acados_env import AcadosUnavailable, find_acados
from scpo_ctrl.backup.region import SafeRegion, backup_region, compare_regions, state_slice

from .conftest import ROOT, problem_for

COARSE_GRID = 9


def _acados_or_skip() -> None:
    try:
        find_acados()
    except AcadosUnavailable as error:
        pytest.skip(str(error))


def test_state_slice_tiles_the_limits_with_cell_centres():
    spec = problem_for("cartpole").spec
    states = state_slice(spec, ("x", "th"), 4)
    assert states.index == (0, 2) and states.shape == (4, 4) and states.x0.shape == (16, 4)
    np.testing.assert_allclose(states.a, [-1.8, -0.6, 0.6, 1.8])
    np.testing.assert_allclose(states.b, [-0.1575, -0.0525, 0.0525, 0.1575])
    np.testing.assert_allclose(states.grid(states.x0)[1, 3], [-0.6, 0.0, 0.1575, 0.0])
    assert np.all(states.x0[:, [1, 3]] == 0.0)
    fixed = state_slice(spec, ("x", "xd"), 2, fixed=np.array([9.0, 9.0, 0.1, -0.2]))
    np.testing.assert_allclose(fixed.x0[:, 2:], [[0.1, -0.2]] * 4)
    for names in (("x", "x"), ("x", "nope"), ("x",)):
        with pytest.raises(ValueError):
            state_slice(spec, names, 3)


def test_compare_regions_counts_both_ways():
    def region(safe, worst):
        g = np.array(worst, dtype=float)[:, None]
        return SafeRegion("test", ("row",), g, np.array(safe), np.zeros(len(safe), int), {}, 0.0)

    first, second = region([True, True, False, False], [-1, -1, 1, 1]), region([True, False, True, False], [0, 1, -1, 1])
    comparison = compare_regions(first, second)
    assert (comparison.states, comparison.saved_first, comparison.saved_second) == (4, 2, 2)
    assert comparison.only_first.tolist() == [1] and comparison.only_second.tolist() == [2]
    assert second.saved_with_margin(0.0).tolist() == [True, False, True, False]
    assert second.saved_with_margin(1e-6).tolist() == [False, False, True, False]


@pytest.mark.slow
def test_mpc_backup_saves_more_cartpole_states_than_the_lqr():
    """On a 9 x 9 grid over (x, th) with xd = thd = 0, judged by the same rows and the LQR's target set.

    What holds there (measured): the LQR saves 77 states, the MPC 80 (4 that only it saves); the MPC's region
    does not contain the LQR's: from (x, th) = (2.133, 0.0933) the MPC tips the pole 1.9e-4 rad past its
    limit (17 of its solves did not converge) while the LQR saves it, and the mirror state (-2.133, -0.0933)
    is saved by both. So the assertions are about the counts; the states only the LQR saves are named in
    the messages. The 4 states only the MPC saves are saved by trajectories that touch a limit (margin
    below 1e-12, see benchmarks/results/mpc_region.md): their verdict is decided at the rounding level.
    """
    _acados_or_skip()
    lqr, mpc = problem_for("cartpole"), problem_for("cartpole_mpc")
    assert np.isclose(lqr.target.c, mpc.target.c) and np.allclose(lqr.target.P, mpc.target.P)
    states = state_slice(lqr.spec, ("x", "th"), COARSE_GRID)
    target = lqr.target
    regions = [backup_region(problem, states.x0, target.c, target.P, target.x_eq) for problem in (lqr, mpc)]
    assert [region.backup for region in regions] == ["lqr", "mpc"]
    comparison = compare_regions(*regions)
    only_lqr = np.round(states.x0[comparison.only_first], 4).tolist()
    assert 0 < comparison.saved_first < comparison.states, "the slice must cut through the LQR's region"
    assert comparison.saved_second > comparison.saved_first, (
        f"LQR saves {comparison.saved_first}, MPC {comparison.saved_second} of {comparison.states}; "
        f"only the LQR saves {only_lqr}")
    assert comparison.only_second.size > comparison.only_first.size, f"only the LQR saves {only_lqr}"


@pytest.mark.slow
def test_mpc_region_benchmark_writes_its_plot_and_numbers(tmp_path):
    _acados_or_skip()
    path = ROOT / "benchmarks" / "mpc_region.py"
    spec = importlib.util.spec_from_file_location("mpc_region_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    report = benchmark.main(["--grid", "3", "--out", str(tmp_path)])
    assert (tmp_path / "mpc_region.png").stat().st_size > 10_000
    written = json.loads((tmp_path / "mpc_region.json").read_text())
    assert written["slices"][0]["states"] == 9 and written["slices"][0]["slice"] == ["x", "th"]
    record = report["slices"][0]
    assert record["lqr"]["saved"] + record["only_mpc"] - record["only_lqr"] == record["mpc"]["saved"]
    assert [row["margin"] for row in record["margins"]] == list(benchmark.MARGINS)
