"""The report's one plot of its own: the certificate's worst value per safety row (matplotlib Agg, PNG bytes).

It draws the values as read from certificate.json (no arithmetic on them)."""

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
