"""Render the C99 bundle (``<name>_policy.h/.c``) of a deployed law from the templates in ``codegen/``.

Numbers are written as the shortest decimal that reads back to the same value
in the target type (float32 literals carry an ``f`` suffix), so the compiled
constants are exactly the float32 (or float64) roundings the error bound uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
import numpy as np

from .. import __version__
from ..resources import resource_dir
from . import activation
from .law import DeployedLaw, deployed_input_limits

PRECISIONS = ("float32", "float64")
#: inner-product loops are unrolled fully up to this length (``#pragma GCC unroll``; other compilers
#: ignore it). Measured on the Cortex-M4F for 2-32-32-1: 9030 instructions per step rolled, 7905
#: unrolled 8 times, 6068 unrolled fully (BENCHMARKS.md).
MAX_UNROLL = 64


@dataclass(frozen=True)
class CSource:
    """One generated file: its name and text."""

    name: str
    text: str


def literal(value: float, precision: str) -> str:
    """A C literal that reads back to ``value`` rounded to ``precision``."""
    value = float(value)
    if np.isinf(value):
        macro = "HUGE_VALF" if precision == "float32" else "HUGE_VAL"
        return macro if value > 0 else f"-{macro}"
    if np.isnan(value):
        raise ValueError("a NaN constant cannot be exported")
    text = str(np.float32(value)) if precision == "float32" else repr(value)
    if not any(mark in text for mark in ".en"):
        text += ".0"
    return text + ("f" if precision == "float32" else "")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("codegen"))), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=False, lstrip_blocks=False, autoescape=False,
    )


def _context(law: DeployedLaw, precision: str, input_hash: str) -> dict:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")

    def lits(values) -> list:
        return [literal(v, precision) for v in np.ravel(values)]

    def rows(matrix) -> list:
        return [lits(row) for row in np.atleast_2d(matrix)]

    limits = deployed_input_limits(law, precision)
    layers = [
        {"n_in": W.shape[1], "n_out": W.shape[0], "W": rows(W), "b": lits(b), "last": index == len(law.weights) - 1,
         "unroll": min(W.shape[1], MAX_UNROLL)}
        for index, (W, b) in enumerate(zip(law.weights, law.biases))
    ]
    return {
        "name": law.name, "NAME": law.name.upper(), "version": __version__, "precision": precision,
        "input_hash": input_hash, "real": "float" if precision == "float32" else "double",
        "clamp": literal(float(activation.CLAMP), precision), "tanh_units": activation.TANH32_RELATIVE_UNITS,
        "tanh_p": lits(activation.P), "tanh_q": lits(activation.Q),
        "zero": literal(0.0, precision), "one": literal(1.0, precision), "two": literal(2.0, precision),
        "three": literal(3.0, precision), "nx": law.nx, "nu": law.nu, "dt": repr(float(law.dt)),
        "states": [{"name": n, "unit": u} for n, u in zip(law.state_names, law.state_units)],
        "inputs": [{"name": n, "unit": u} for n, u in zip(law.input_names, law.input_units)],
        "sizes": list(law.sizes), "activation": law.activation, "macs": law.multiply_accumulates,
        "u_min": lits(limits[0]), "u_max": lits(limits[1]), "region_min": lits(law.region_min),
        "region_max": lits(law.region_max), "x_eq": lits(law.x_eq), "u_eq": lits(law.u_eq),
        "K": rows(law.K), "P": rows(law.P), "c": literal(law.c, precision),
        "gate_span": literal(law.gate_ratio - 1.0, precision), "x_scale": lits(law.x_scale),
        "u_scale": lits(law.u_scale), "layers": layers, "width": max(law.sizes),
        "output": "h_b" if (len(law.weights) - 1) % 2 == 0 else "h_a",
        "backup_input": law.backup_is_input, "backup_name": "MPC" if law.backup_is_input else "LQR",
    }


def render_bundle(law: DeployedLaw, precision: str, input_hash: str) -> tuple:
    """The deployable pair ``(<name>_policy.h, <name>_policy.c)`` as :class:`CSource`."""
    environment, context = _environment(), _context(law, precision, input_hash)
    return tuple(
        CSource(f"{law.name}_policy{suffix}", environment.get_template(f"policy{suffix}.j2").render(context))
        for suffix in (".h", ".c")
    )


def render_host_batch(law: DeployedLaw, precision: str, input_hash: str) -> CSource:
    """The host-only batch helper (``<name>_policy_batch``), for tests and verification; not deployed."""
    context = _context(law, precision, input_hash)
    return CSource(f"{law.name}_policy_batch.c", _environment().get_template("host_batch.c.j2").render(context))
