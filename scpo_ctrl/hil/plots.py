"""HIL plots: state and input traces against the Python closed loop; round-trip latency histogram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..run_files import HilReport  # noqa: E402

MAX_EPISODES_PLOTTED = 4


def plot_hil(out_dir: Path, law, traces: list, python, report: HilReport) -> list:
    """Write ``traces.png`` and ``latency.png`` into ``out_dir``; return their paths."""
    return [_traces(out_dir / "traces.png", law, traces, python, report),
            _latency(out_dir / "latency.png", traces, report)]


def _traces(path: Path, law, traces: list, python, report: HilReport) -> Path:
    rows = law.nx + law.nu
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.2 * rows), sharex=True)
    axes = np.atleast_1d(axes)
    t = np.arange(traces[0].x.shape[0]) * law.dt
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for e, trace in enumerate(traces[:MAX_EPISODES_PLOTTED]):
        colour = colours[e % len(colours)]
        for i in range(law.nx):
            axes[i].plot(t, trace.x[:, i], color=colour, lw=1.6, label="HIL (C on target)" if e == 0 else None)
            axes[i].plot(t, python.x[e, :, i], color="k", lw=0.9, ls="--", label="Python (float64)" if e == 0 else None)
        for j in range(law.nu):
            ax = axes[law.nx + j]
            ax.step(t[:-1], trace.u[:, j], where="post", color=colour, lw=1.6)
            ax.step(t[:-1], python.u[e, :-1, j], where="post", color="k", lw=0.9, ls="--")
            wd = np.flatnonzero(trace.status != 0)
            if wd.size:
                ax.plot(t[wd], trace.u[wd, j], "x", color="red", ms=6,
                        label="watchdog (backup held)" if e == 0 else None)
    for i in range(law.nx):
        axes[i].set_ylabel(f"{law.state_names[i]} [{law.state_units[i]}]")
    for j in range(law.nu):
        axes[law.nx + j].set_ylabel(f"{law.input_names[j]} [{law.input_units[j]}]")
    axes[-1].set_xlabel("time [s]")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[0].legend(handles, labels, loc="best", fontsize=8)
    faults = ", ".join(f"{k}={v}" for k, v in report.faults.items() if v) or "no faults"
    backup = "" if law.backup_kind.in_closed_form else f"; {law.backup_kind.type.upper()} backup"
    fig.suptitle(f"{law.name}: HIL ({report.target}; {faults}{backup}) vs Python closed loop\n"
                 f"first {min(len(traces), MAX_EPISODES_PLOTTED)} episodes; colours = episodes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(path: Path, traces: list, report: HilReport) -> Path:
    round_trip = np.concatenate([t.round_trip for t in traces]) * 1e3
    status = np.concatenate([t.status for t in traces])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    positive = round_trip[round_trip > 0]
    bins = np.logspace(np.log10(max(positive.min(), 1e-4)), np.log10(positive.max() * 1.05), 50)
    ax.hist(round_trip[status == 0], bins=bins, label="policy replies")
    if np.any(status != 0):
        ax.hist(round_trip[status != 0], bins=bins, color="red", alpha=0.7, label="watchdog replies")
    ax.set_xscale("log")
    latency = report.latency_seconds
    for key, style in (("p50", "--"), ("p99", ":")):
        ax.axvline(getattr(latency, key) * 1e3, color="k", ls=style, lw=1, label=f"{key} {getattr(latency, key) * 1e3:.3g} ms")
    ax.axvline(report.dt_seconds * 1e3, color="red", lw=1.2, label=f"dt {report.dt_seconds * 1e3:g} ms")
    ax.set_xlabel("round trip [ms] (log)")
    ax.set_ylabel("steps")
    ax.set_title(f"{report.plant}: round-trip latency, target {report.target}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
