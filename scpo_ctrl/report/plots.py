"""The report's own plots (matplotlib Agg, PNG bytes): the certificate's worst value per safety row, and
the verification loop's rounds.

They draw the values as read from certificate.json and training.jsonl (no arithmetic on them)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def margins_png(rows: dict, title: str) -> bytes:
    """A horizontal bar per row at its worst value g (<= 0 safe), the boundary g = 0 in red."""
    names = list(rows)
    values = [float(rows[name]) for name in names]
    figure, axes = plt.subplots(figsize=(7.0, 0.45 * len(names) + 1.3), dpi=100)
    colours = ["#2e7d32" if value <= 0 else "#c62828" for value in values]
    axes.barh(names, values, color=colours)
    axes.axvline(0.0, color="#c62828", linewidth=1.5)
    for index, value in enumerate(values):
        axes.annotate(f"{value:.4g}", (value, index), xytext=(-4 if value <= 0 else 4, 0),
                      textcoords="offset points", va="center", ha="right" if value <= 0 else "left", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("worst g over the sampled closed loops (red: the boundary g = 0)")
    axes.set_title(title, fontsize=10)
    low, high = min(values + [0.0]), max(values + [0.0])
    pad = 0.12 * ((high - low) or 1.0)  # axis limits only: keeps the boundary g = 0 off the frame
    axes.set_xlim(low - pad, high + pad)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


ROUND_COLOUR = "#8a6d00"


def _number(value) -> float:
    """A value from a file as a float for plotting (NaN when it is not a number)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _round_lines(axes, rounds: tuple) -> None:
    """A dotted vertical line at the iteration of each round (labelled once, for the legend)."""
    for index, entry in enumerate(rounds):
        axes.axvline(entry.iteration, color=ROUND_COLOUR, linestyle=":", linewidth=1.2,
                     label="verification round" if index == 0 else None)


def _loss_panel(axes, lines: list, rounds: tuple) -> None:
    """Loss per iteration and the loss after each round as a marker."""
    iterations = [_number(line.get("iteration")) for line in lines]
    axes.plot(iterations, [_number(line.get("loss")) for line in lines], color="C0", label="loss (training.jsonl)")
    axes.plot([r.iteration for r in rounds], [_number(r.loss_after) for r in rounds], linestyle="none",
              marker="v", color=ROUND_COLOUR, label="loss after the round (validation set grown, retreat)")
    axes.set_ylabel("loss (task cost)")


def _size_panel(axes, rounds: tuple, initial: int | None) -> None:
    """Validation-set size after each round, each point labelled with it and the states the round added;
    the plant file's set at iteration 0 when ``initial`` is known (runs before it was recorded: None)."""
    x = [r.iteration for r in rounds]
    y = [_number(r.round.get("validation_states")) for r in rounds]
    added = [_number(r.round.get("added")) for r in rounds]
    if initial is not None:
        axes.plot([0, x[0]], [initial, initial], marker="o", drawstyle="steps-post", color="C2")
        axes.annotate(f"{initial} (plant file)", (0, initial), xytext=(4, 4), textcoords="offset points", fontsize=8)
    axes.plot(x, y, marker="o", drawstyle="steps-post", color="C2", label="size after the round (+ states it added)")
    for xi, yi, ai in zip(x, y, added):
        axes.annotate(f"{yi:.0f} (+{ai:.0f})", (xi, yi), xytext=(4, -12), textcoords="offset points", fontsize=8)
    axes.legend(fontsize=8, loc="upper left")
    axes.set_ylabel("validation initial\nstates after the round")
    axes.margins(y=0.25)


def _proven_panel(axes, rounds: tuple) -> None:
    """Fraction of the initial box reachability proved at each round, in percent (a note when it never ran)."""
    x = [r.iteration for r in rounds]
    y = [_number(r.round.get("proven_fraction")) * 100.0 for r in rounds]  # display unit only: fraction as %
    axes.set_ylim(0.0, 105.0)
    axes.set_ylabel("box proven by\nreachability [%]")
    if all(value != value for value in y):
        axes.text(0.5, 0.5, "reachability did not run (plant not affine, or an MPC backup)",
                  transform=axes.transAxes, ha="center", va="center", fontsize=9, color="#57606a")
        return
    axes.plot(x, y, marker="s", color="C4")
    axes.axhline(100.0, color="#2e7d32", linewidth=1.0, linestyle="--", label="whole box proven")
    for xi, yi in zip(x, y):
        if yi == yi:
            axes.annotate(f"{yi:.1f}%", (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
    axes.legend(fontsize=8, loc="lower right")


def loop_png(lines: list, rounds: tuple, title: str, initial_states: int | None = None) -> bytes:
    """Three panels over the iterations: loss with the rounds marked, validation-set size, proven fraction.

    Parameters
    ----------
    lines : list of dict
        Every line of ``training.jsonl``.
    rounds : tuple of LoopRound
        The rounds found on those lines (at least one).
    title : str
    initial_states : int, optional
        The validation set's size before the first round.
    """
    figure, axes = plt.subplots(3, 1, figsize=(9.0, 7.5), dpi=100, sharex=True,
                                gridspec_kw={"height_ratios": [1.4, 1.0, 1.0]})
    _loss_panel(axes[0], lines, rounds)
    _size_panel(axes[1], rounds, initial_states)
    _proven_panel(axes[2], rounds)
    for panel in axes:
        panel.grid(True, alpha=0.3)
        _round_lines(panel, rounds)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("iteration")
    axes[-1].set_xlim(left=0)
    axes[0].set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
