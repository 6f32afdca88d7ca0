"""Plots of an adaptation run: training curves, rollouts, phase portrait (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .policy.expert import expert_function  # noqa: E402

ROLLOUT_STATES = 3


def plot_run(run_dir: Path, problem, policy, theta: np.ndarray, records: list, group_names: tuple) -> list:
    """Write ``plots/training.png``, ``plots/rollouts.png``, ``plots/phase.png``; returns their paths."""
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = [_training(out / "training.png", records, group_names)]
    trajectories = _trajectories(problem, policy, theta)
    paths.append(_rollouts(out / "rollouts.png", problem, trajectories))
    paths.append(_phase(out / "phase.png", problem, trajectories))
    return paths


def _training(path: Path, records: list, group_names: tuple) -> Path:
    iterations = np.array([r["iteration"] for r in records])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(iterations, [r["loss"] for r in records], color="C0")
    ax.set(title="Loss", xlabel="iteration", ylabel="loss")
    ax = axes[0, 1]
    for name in group_names:
        ax.plot(iterations, [r["g_max_groups"].get(name, np.nan) or np.nan for r in records], label=name)
    ax.axhline(0.0, color="k", lw=0.8, ls="--")
    ax.set(title="Worst constraint value per constraint (<= 0 safe)", xlabel="iteration", ylabel="max g")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    accepted = np.array([r["accepted"] for r in records], dtype=bool)
    zero = np.array([str(r["reason"]).startswith("zero") for r in records], dtype=bool)
    ax.scatter(iterations[accepted], np.ones(accepted.sum()), marker="|", color="C2", label="accepted")
    ax.scatter(iterations[zero], np.zeros(zero.sum()), marker="|", color="C7", label="zero step")
    rejected = ~accepted & ~zero
    ax.scatter(iterations[rejected], -np.ones(rejected.sum()), marker="|", color="C3", label="rejected")
    ax.set(title="Step outcome", xlabel="iteration", yticks=[-1, 0, 1], yticklabels=["rejected", "zero", "accepted"])
    ax = axes[1, 1]
    for name in group_names:
        values = np.array([r["l"].get(name, np.nan) or np.nan for r in records], dtype=float)
        ax.plot(iterations, np.maximum(values, 1e-12), label=name)
    ax.set_yscale("log")
    ax.set(title="Curvature bound l per constraint", xlabel="iteration", ylabel="l")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _trajectories(problem, policy, theta) -> dict:
    out = {}
    runs = [("backup", problem.backup_law(), None), ("adapted", policy.law(), theta)]
    expert = expert_function(problem.spec)
    if expert is not None:
        runs.insert(1, ("expert", expert, None))
    for label, function, parameters in runs:
        out[label] = problem.closed_loop(function, parameters)[0]
    return out


def _rollouts(path: Path, problem, trajectories: dict) -> Path:
    spec = problem.spec
    rng = np.random.default_rng(0)
    picks = rng.choice(problem.x0.shape[0], size=min(ROLLOUT_STATES, problem.x0.shape[0]), replace=False)
    rows = spec.nx + spec.nu
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.0 * rows), sharex=True, constrained_layout=True)
    t = np.arange(spec.safety.horizon + 1) * spec.dt
    styles = {"backup": ("C0", "-"), "expert": ("C3", ":"), "adapted": ("C2", "--")}
    variables = list(spec.states) + list(spec.inputs)
    for row, variable in enumerate(variables):
        ax = axes[row]
        for label, rollouts in trajectories.items():
            color, style = styles[label]
            data = rollouts.x if row < spec.nx else rollouts.u
            index = row if row < spec.nx else row - spec.nx
            for n, pick in enumerate(picks):
                ax.plot(t, data[pick, :, index], color=color, ls=style, lw=1.2, label=label if n == 0 else None)
        for bound in (variable.min, variable.max):
            if bound is not None:
                ax.axhline(bound, color="k", lw=0.8, ls="--")
        unit = f" [{variable.unit}]" if variable.unit else ""
        ax.set_ylabel(variable.name + unit)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"{spec.name}: backup vs expert vs adapted from {len(picks)} validation states (dashed: limits)")
    axes[-1].set_xlabel("time [s]")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _phase(path: Path, problem, trajectories: dict) -> Path:
    spec, target = problem.spec, problem.target
    fig, ax = plt.subplots(figsize=(8, 6.5), constrained_layout=True)
    styles = {"backup": "C0", "expert": "C3", "adapted": "C2"}
    for label, rollouts in trajectories.items():
        for n in range(rollouts.x.shape[0]):
            ax.plot(rollouts.x[n, :, 0], rollouts.x[n, :, 1], color=styles[label], lw=0.6, alpha=0.5,
                    label=label if n == 0 else None)
    ax.scatter(problem.x0[:, 0], problem.x0[:, 1], s=8, color="k", zorder=3, label="validation initial states")
    limits = [spec.states[0], spec.states[1]]
    for variable, axis in zip(limits, ("x", "y")):
        for bound in (variable.min, variable.max):
            if bound is not None:
                (ax.axvline if axis == "x" else ax.axhline)(bound, color="k", lw=1.0, ls="--")
    x_lo, x_hi = ax.get_xlim()
    y_lo, y_hi = ax.get_ylim()
    grid_x, grid_y = np.meshgrid(np.linspace(x_lo, x_hi, 200), np.linspace(y_lo, y_hi, 200))
    points = np.tile(target.x_eq, (grid_x.size, 1))
    points[:, 0], points[:, 1] = grid_x.ravel(), grid_y.ravel()
    values = target.value(points).reshape(grid_x.shape)
    ax.contour(grid_x, grid_y, values, levels=[target.c], colors="purple", linewidths=1.5)
    if problem.model.rows:
        g = np.array(problem.model.g.map(points.shape[0])(points.T, np.tile(spec.u_eq, (points.shape[0], 1)).T)).T
        for i, row in enumerate(problem.model.rows):
            if row.kind == "extra":
                ax.contour(grid_x, grid_y, g[:, i].reshape(grid_x.shape), levels=[0.0], colors="orange", linewidths=1.5)
    ax.plot([], [], color="purple", label="target set V = c")
    ax.plot([], [], color="orange", label="extra constraints = 0")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    names = [f"{v.name} [{v.unit}]" if v.unit else v.name for v in limits]
    ax.set(xlabel=names[0], ylabel=names[1])
    suffix = "" if spec.nx == 2 else f" (slice at the other states' equilibrium; {spec.nx} states)"
    ax.set_title(f"{spec.name}: phase portrait{suffix}")
    ax.legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
