"""Render a :class:`~scpo_ctrl.report.gather.RunData` as one self-contained HTML page (Jinja2, autoescaped)."""

from __future__ import annotations

import math
from pathlib import Path

import jinja2

from ..version import __version__
from .gather import RunData

TEMPLATES = Path(__file__).resolve().parent / "templates"


def fmt(value, digits: int = 4) -> str:
    """A number from a file as text: integers as they are, floats to ``digits`` significant digits.

    Formatting only; never arithmetic on the value."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            # the run files hold no NaN (they are written as null); the typed readers give NaN for null
            return "–"
        if math.isinf(value):
            return str(value)
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(item, digits) for item in value) + "]"
    return str(value)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = fmt
    return environment


def render_html(data: RunData) -> str:
    """The report page of ``data`` as a string."""
    template = _environment().get_template("report.html.j2")
    return template.render(run=data, version=__version__)
