"""Is the MPC backup safe from more states than the LQR backup? The cart-pole, on 2-D slices of its state space.

    .venv/bin/python benchmarks/mpc_region.py [--grid 25] [--slices x,th x,xd] [--backoff 0.005]
                                              [--out DIR] [--threads N]

Builds models/cartpole.yaml (LQR backup) and models/cartpole_mpc.yaml (the
same plant with the acados MPC backup), and rolls each backup alone out from
an N x N grid of initial states over each slice (cell centres tiling the two
states' limits; the other states at the equilibrium, 0) for the plant's
safety horizon. Both are judged by the same criterion
(:mod:`scpo_ctrl.backup.region`): every safety row of the plant along the
trajectory, and V(x_H) <= reach_level * c with the LQR's P and c (the MPC's
terminal set is that same T).

Prints, per slice, how many states each backup saves and how many only one
of them saves, then the same counts when a margin is demanded (every row
g <= -margin): the MPC plans up to its limits, so the trajectories it saves
beyond the LQR's region may touch a limit. ``--backoff F`` adds a third
backup: the MPC planning within limits tightened by F times each limit's
half-range (its terminal set unchanged), judged by the same untightened
criterion. Writes ``mpc_region.png`` (one panel per slice),
``mpc_region.json`` (the numbers) and ``mpc_region.npz`` (every state's rows,
``<slice>_x0`` and ``<slice>_<backup>_g``) to ``--out``.

Cost: one MPC step is one warm-started acados SQP solve, about 1-2 ms where
the MPC succeeds and much more from hopeless states (QP failures); the
default, 25 x 25 on (x, th), ran in about 2 minutes on 2 cores. The (x, xd)
slice costs two to three times as much per state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.backup.mpc import build_solver  # noqa: E402
from scpo_ctrl.backup.region import backup_region, compare_regions, engine_region, state_slice  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.sim.mpc_rollout import MpcRolloutEngine  # noqa: E402

LQR_PLANT = ROOT / "models" / "cartpole.yaml"
MPC_PLANT = ROOT / "models" / "cartpole_mpc.yaml"
DEFAULT_OUT = ROOT / "runs" / "benchmarks" / "mpc_region"
#: a trajectory closer than this to a limit (in the row's units) "touches" it
TOUCH = 1e-6
#: margins of the sensitivity table: a state counts as saved when every row keeps g <= -margin
#: (-1e-9: violations up to the MPC's solver tolerance allowed; 0: the project's criterion)
MARGINS = (-1e-9, 0.0, 1e-12, 1e-9, 1e-6, 1e-3)
#: cell categories of the plot: (label, colour)
CATEGORIES = (
    ("neither saves", "#d9d9d9"),
    ("both save", "#a6d96a"),
    (f"only the MPC saves, margin >= {TOUCH:g}", "#08519c"),
    (f"only the MPC saves, touching a limit (margin < {TOUCH:g})", "#6baed6"),
    ("only the LQR saves", "#d7191c"),
)
BACKOFF_COLOUR = "#e6550d"


def parse_slice(text: str) -> tuple:
    names = tuple(part.strip() for part in text.split(","))
    if len(names) != 2:
        raise argparse.ArgumentTypeError(f"a slice is two state names separated by a comma, got {text!r}")
    return names


def backoff_engine(mpc, fraction: float, threads: int | None) -> MpcRolloutEngine:
    """The MPC of ``mpc`` with its state limits tightened by ``fraction`` of each limit's half-range.

    It gets its own solver name: the rollout libraries link the solver by a file name made of it, and a
    second solver of the same name in one process would resolve to the first one loaded.
    """
    formulation = mpc.mpc.formulation
    half = 0.5 * (formulation.x_max - formulation.x_min)
    tightened = dataclasses.replace(formulation, name=f"{formulation.name}_backoff",
                                    x_min=formulation.x_min + fraction * half,
                                    x_max=formulation.x_max - fraction * half)
    files = build_solver(tightened, mpc.model)
    return MpcRolloutEngine(mpc.model, tightened, files, mpc.backup_law(), mpc.spec.safety.horizon, threads)


def evaluate_slice(lqr, mpc, names: tuple, grid: int, threads: int | None, backoff=None) -> dict:
    """Both backups (and the backed-off MPC, given its engine) on one slice."""
    states = state_slice(lqr.spec, names, grid)
    level = lqr.spec.safety.reach_level * lqr.target.c
    P, x_eq = lqr.target.P, lqr.target.x_eq
    regions = {"lqr": backup_region(lqr, states.x0, level, P, x_eq, threads),
               "mpc": backup_region(mpc, states.x0, level, P, x_eq, threads)}
    if backoff is not None:
        regions["mpc_backoff"] = engine_region(backoff, "mpc_backoff", states.x0, level, P, x_eq)
    fixed = {state.name: float(value) for state, value in zip(lqr.spec.states, states.x0[0])
             if state.name not in names}
    return {"slice": states, "fixed": fixed, "level": level, "regions": regions,
            "comparison": compare_regions(regions["lqr"], regions["mpc"])}


def margin_table(regions: dict) -> list:
    """Per margin: states each backup saves with it, and the states only the LQR or only the MPC saves."""
    rows = []
    for margin in MARGINS:
        saved = {name: region.saved_with_margin(margin) for name, region in regions.items()}
        row = {"margin": margin, **{name: int(value.sum()) for name, value in saved.items()}}
        row["only_lqr"] = int((saved["lqr"] & ~saved["mpc"]).sum())
        row["only_mpc"] = int((saved["mpc"] & ~saved["lqr"]).sum())
        if "mpc_backoff" in saved:
            row["only_lqr_not_backoff"] = int((saved["lqr"] & ~saved["mpc_backoff"]).sum())
            row["only_backoff_not_lqr"] = int((saved["mpc_backoff"] & ~saved["lqr"]).sum())
        rows.append(row)
    return rows


def summary(result: dict) -> dict:
    """The JSON record of one slice."""
    states, regions, comparison = result["slice"], result["regions"], result["comparison"]
    only_mpc = comparison.only_second
    record = {
        "slice": list(states.names), "grid": list(states.shape), "bounds": states.bounds.tolist(),
        "fixed": result["fixed"], "states": comparison.states, "reach_bound": result["level"],
        "only_lqr": int(comparison.only_first.size), "only_mpc": int(only_mpc.size),
        "only_mpc_touching_a_limit": int((regions["mpc"].margin[only_mpc] < TOUCH).sum()),
        "only_lqr_states": [
            {"x0": states.x0[i].tolist(), "mpc_worst_row": regions["mpc"].names[int(np.argmax(regions["mpc"].g[i]))],
             "mpc_worst_value": float(regions["mpc"].g[i].max()),
             "mpc_unconverged_steps": int(regions["mpc"].unconverged_steps[i])}
            for i in comparison.only_first
        ],
        "margins": margin_table(regions),
    }
    for name, region in regions.items():
        unconverged = region.unconverged_steps > 0
        record[name] = {
            "saved": int(region.safe.sum()), "fraction": region.fraction, "rollout_seconds": region.seconds,
            "violating_states_per_row": dict(zip(region.names, (region.g > 0).sum(axis=0).tolist())),
            "states_with_unconverged_steps": int(unconverged.sum()),
            "saved_states_with_unconverged_steps": int((unconverged & region.safe).sum()),
            "solver_statuses": {str(k): v for k, v in region.statuses.items()},
        }
    return record


def cell_edges(inside: np.ndarray, a_edges: np.ndarray, b_edges: np.ndarray) -> list:
    """The segments of cell edges between a cell of ``inside (n_a, n_b)`` and one outside (the border of the set)."""
    segments = []
    for i, j in zip(*np.nonzero(inside[1:, :] != inside[:-1, :])):
        segments.append([(a_edges[i + 1], b_edges[j]), (a_edges[i + 1], b_edges[j + 1])])
    for i, j in zip(*np.nonzero(inside[:, 1:] != inside[:, :-1])):
        segments.append([(a_edges[i], b_edges[j + 1]), (a_edges[i + 1], b_edges[j + 1])])
    return segments


def plot(results: list, lqr, path: Path, backoff: float | None = None) -> None:
    """One panel per slice: each grid cell coloured by which backup saves it; the target set T and the
    validation box drawn over it; a dot where the MPC's solver did not converge at some step."""
    spec = lqr.spec
    units = {state.name: state.unit for state in spec.states}
    box = np.asarray(spec.safety.initial_states.box, dtype=float)
    target = lqr.target
    fig, axes = plt.subplots(1, len(results), figsize=(max(8.5, 6.6 * len(results)), 7.4), squeeze=False,
                             constrained_layout=True)
    for ax, result in zip(axes[0], results):
        states, regions, comparison = result["slice"], result["regions"], result["comparison"]
        lqr_safe, mpc_safe = regions["lqr"].safe, regions["mpc"].safe
        touching = regions["mpc"].margin < TOUCH
        category = np.select([lqr_safe & mpc_safe, mpc_safe & ~touching, mpc_safe, lqr_safe], [1, 2, 3, 4], 0)
        (ia, ib), (a_lo, a_hi), (b_lo, b_hi) = states.index, *states.bounds
        a_edges = np.linspace(a_lo, a_hi, states.a.size + 1)
        b_edges = np.linspace(b_lo, b_hi, states.b.size + 1)
        cmap = ListedColormap([colour for _, colour in CATEGORIES])
        ax.pcolormesh(a_edges, b_edges, states.grid(category).T, cmap=cmap, vmin=-0.5, vmax=len(CATEGORIES) - 0.5,
                      edgecolors="white", linewidth=0.3)
        # T on the slice: V(x) = c with the other states at their fixed values
        fine_a, fine_b = np.linspace(a_lo, a_hi, 400), np.linspace(b_lo, b_hi, 400)
        A, B = np.meshgrid(fine_a, fine_b, indexing="ij")
        x = np.tile(states.x0[0], (A.size, 1))
        x[:, ia], x[:, ib] = A.ravel(), B.ravel()
        ax.contour(fine_a, fine_b, (target.value(x) / target.c).reshape(A.shape).T, levels=[1.0], colors="black",
                   linewidths=1.5)
        ax.add_patch(Rectangle((box[ia, 0], box[ib, 0]), box[ia, 1] - box[ia, 0], box[ib, 1] - box[ib, 0],
                               fill=False, edgecolor="black", linestyle="--", linewidth=1.5))
        if "mpc_backoff" in regions:
            robust = states.grid(regions["mpc_backoff"].saved_with_margin(TOUCH))
            ax.add_collection(LineCollection(cell_edges(robust, a_edges, b_edges), colors=BACKOFF_COLOUR,
                                             linewidths=2.0))
        unconverged = regions["mpc"].unconverged_steps > 0
        ax.plot(states.x0[unconverged, ia], states.x0[unconverged, ib], ".", color="black", markersize=3)
        ax.set_xlim(a_lo, a_hi)
        ax.set_ylim(b_lo, b_hi)
        a_name, b_name = states.names
        ax.set_xlabel(f"{a_name} [{units[a_name]}]")
        ax.set_ylabel(f"{b_name} [{units[b_name]}]")
        fixed = ", ".join(f"{name} = {value:g}" for name, value in result["fixed"].items())
        n = comparison.states
        ax.set_title(f"slice ({a_name}, {b_name}), {fixed}; {states.shape[0]} x {states.shape[1]} initial states\n"
                     f"LQR saves {comparison.saved_first}/{n} ({100 * regions['lqr'].fraction:.1f} %), "
                     f"MPC saves {comparison.saved_second}/{n} ({100 * regions['mpc'].fraction:.1f} %)\n"
                     f"only the MPC: {comparison.only_second.size} "
                     f"({int(touching[comparison.only_second].sum())} touching a limit), "
                     f"only the LQR: {comparison.only_first.size}", fontsize=10)
    handles = [Patch(facecolor=colour, edgecolor="grey", label=label) for label, colour in CATEGORIES]
    handles += [
        Line2D([], [], color="black", linewidth=1.5, label="target set T (V = c) on the slice"),
        Line2D([], [], color="black", linestyle="--", linewidth=1.5, label="validation box"),
        Line2D([], [], color="black", marker=".", linestyle="", markersize=6,
               label="MPC solver not converged at some step"),
    ]
    if "mpc_backoff" in results[0]["regions"]:
        handles.append(Line2D([], [], color=BACKOFF_COLOUR, linewidth=2.0,
                              label=f"edge of the region of the MPC with limits tightened by {100 * backoff:g} %\n"
                                    f"(states it saves with margin >= {TOUCH:g})"))
    fig.legend(handles=handles, loc="outside lower center", ncol=2 if len(results) == 1 else 3, fontsize=9,
               frameon=False)
    fig.suptitle(f"Cart-pole: initial states from which each backup alone is safe for {spec.safety.horizon} steps\n"
                 "(every state limit kept, and V(x_H) <= c at the end; axes span the state limits;\n"
                 "margin = distance of the trajectory to its closest limit)", fontsize=11)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def print_report(report: dict) -> None:
    records = report["slices"]
    print(f"cart-pole backups, {report['horizon']}-step rollouts, reach row V(x_H) <= {records[0]['reach_bound']:.4g}"
          f" (c = {report['c']:.4g}); MPC horizon {report['mpc_horizon']}")
    print("\n| slice | states | LQR saves | MPC saves | only LQR | only MPC (touching a limit) "
          "| MPC states with unconverged steps (of them saved) | LQR s | MPC s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for record in records:
        fixed = ", ".join(f"{k} = {v:g}" for k, v in record["fixed"].items())
        lqr_record, mpc_record = record["lqr"], record["mpc"]
        print(f"| ({', '.join(record['slice'])}), {fixed} | {record['states']} "
              f"| {lqr_record['saved']} ({100 * lqr_record['fraction']:.1f} %) "
              f"| {mpc_record['saved']} ({100 * mpc_record['fraction']:.1f} %) | {record['only_lqr']} "
              f"| {record['only_mpc']} ({record['only_mpc_touching_a_limit']}) "
              f"| {mpc_record['states_with_unconverged_steps']} ({mpc_record['saved_states_with_unconverged_steps']}) "
              f"| {lqr_record['rollout_seconds']:.2f} | {mpc_record['rollout_seconds']:.1f} |")
    for record in records:
        for state in record["only_lqr_states"]:
            print(f"  ({', '.join(record['slice'])}): only the LQR saves {np.round(state['x0'], 4).tolist()}; the MPC's "
                  f"{state['mpc_worst_row']} reaches {state['mpc_worst_value']:.3g} "
                  f"({state['mpc_unconverged_steps']} unconverged steps)")
    backoff = "mpc_backoff" in records[0]
    print(f"\nsaved with a margin (every row g <= -margin){'; MPC b.: the MPC with tightened limits' if backoff else ''}")
    print(f"| slice | margin | LQR | MPC | only LQR | only MPC |{' MPC b. | LQR not MPC b. | MPC b. not LQR |' if backoff else ''}")
    print(f"|---|---|---|---|---|---|{'---|---|---|' if backoff else ''}")
    for record in records:
        for row in record["margins"]:
            extra = (f" {row['mpc_backoff']} | {row['only_lqr_not_backoff']} | {row['only_backoff_not_lqr']} |"
                     if backoff else "")
            print(f"| ({', '.join(record['slice'])}) | {row['margin']:g} | {row['lqr']} | {row['mpc']} "
                  f"| {row['only_lqr']} | {row['only_mpc']} |{extra}")


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=25, help="grid points per axis (default 25)")
    parser.add_argument("--slices", type=parse_slice, nargs="+", default=[("x", "th")],
                        help="slices as state pairs, e.g. x,th x,xd (default x,th)")
    parser.add_argument("--backoff", type=float, default=None,
                        help="also run the MPC with limits tightened by this fraction of their half-range")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--threads", type=int, default=None, help="rollout threads (default: usable cores)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    lqr, mpc = build_problem(load_plant_spec(LQR_PLANT)), build_problem(load_plant_spec(MPC_PLANT))
    if not np.isclose(lqr.target.c, mpc.target.c) or not np.allclose(lqr.target.P, mpc.target.P):
        raise SystemExit("the two plant files give different target sets: they are not the same plant")
    backoff = None if args.backoff is None else backoff_engine(mpc, args.backoff, args.threads)
    build_seconds = time.perf_counter() - start
    results = [evaluate_slice(lqr, mpc, names, args.grid, args.threads, backoff) for names in args.slices]
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "mpc_region.png"
    plot(results, lqr, png, args.backoff)
    report = {
        "lqr_plant": str(LQR_PLANT.relative_to(ROOT)), "mpc_plant": str(MPC_PLANT.relative_to(ROOT)),
        "horizon": lqr.spec.safety.horizon, "mpc_horizon": mpc.mpc.formulation.N, "c": lqr.target.c,
        "backoff": args.backoff, "touch": TOUCH, "slices": [summary(result) for result in results],
        "build_seconds": build_seconds, "wall_seconds": time.perf_counter() - start,
    }
    (args.out / "mpc_region.json").write_text(json.dumps(report, indent=2) + "\n")
    arrays = {}
    for result in results:
        key = "_".join(result["slice"].names)
        arrays[f"{key}_x0"] = result["slice"].x0
        for name, region in result["regions"].items():
            arrays[f"{key}_{name}_g"] = region.g
            arrays[f"{key}_{name}_unconverged_steps"] = region.unconverged_steps
    np.savez_compressed(args.out / "mpc_region.npz", row_names=np.array(results[0]["regions"]["lqr"].names), **arrays)
    print_report(report)
    print(f"\nbuild {build_seconds:.1f} s, total {report['wall_seconds']:.1f} s; wrote {png}, "
          f"{args.out / 'mpc_region.json'} and {args.out / 'mpc_region.npz'}")
    return report


if __name__ == "__main__":
    main()
