"""Render the C99 bundle (``<name>_policy.h/.c``) of a deployed law from the templates in ``codegen/``.

Numbers are written as the shortest decimal that reads back to the same value
in the target type (float32 literals carry an ``f`` suffix), so the compiled
constants are exactly the float32 (or float64) roundings the error bound uses.

Code profiles (:data:`PROFILES`) choose how the network is laid out, never what it computes:

* ``speed``: each layer's outputs in blocks of :data:`SPEED_BLOCK`, the inner product over the
  inputs unrolled, one load of each input per block (accumulators in registers), weights
  stored block by block in the order the loop reads them, the activation inlined;
* ``size``: one table of all weights and biases, one generic dense-and-activation routine
  looped over a table of layer sizes;
* ``unrolled``: the code before profiles existed (inner products fully unrolled one output at
  a time), kept for comparison.

Every profile computes each output ``acc = b_j; acc += W[j][i] * x_i`` for ``i = 0, 1, ...``,
one rounding per operation, in that order: the same operations as the reference order that
:mod:`.error_bound` analyses, so one bound covers all of them (and their results agree bit for
bit, which the tests check).
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
import numpy as np

from ..version import __version__
from ..resources import resource_dir
from . import activation
from .law import DeployedLaw, deployed_input_limits

PRECISIONS = ("float32", "float64")
#: inner-product loops are unrolled fully up to this length (``#pragma GCC unroll``; other compilers
#: ignore it). Measured on the Cortex-M4F for 2-32-32-1: 9030 instructions per step rolled, 7905
#: unrolled 8 times, 6068 unrolled fully (BENCHMARKS.md).
MAX_UNROLL = 64
#: the code profiles (``scpo-ctrl export --profile``); the default measured fewest instructions per step
PROFILES = ("speed", "size", "unrolled")
DEFAULT_PROFILE = "speed"
#: outputs per block in the speed profile (each input is loaded once per block)
SPEED_BLOCK = 8


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


def output_blocks(n_out: int, block: int = SPEED_BLOCK) -> list:
    """The speed profile's groups of output blocks: full blocks of ``block``, then one shorter block.

    Returns
    -------
    list of dict
        ``{"start", "stop", "size"}``: outputs ``start..stop-1`` in blocks of ``size``.
    """
    full = n_out - n_out % block
    groups = [{"start": 0, "stop": full, "size": block}] if full else []
    if full < n_out:
        groups.append({"start": full, "stop": n_out, "size": n_out - full})
    return groups


def blocked_weights(W: np.ndarray, block: int = SPEED_BLOCK) -> list:
    """``W (n_out, n_in)`` in the speed profile's order: block by block (:func:`output_blocks`), input-major
    within a block (``W[j + r, i]`` at ``j * n_in + i * s + r`` for the block at ``j`` of size ``s``).

    Returns
    -------
    list of ndarray
        One row per block and input: the block's ``s`` weights of that input.
    """
    rows = []
    for group in output_blocks(W.shape[0], block):
        for j in range(group["start"], group["stop"], group["size"]):
            rows += list(W[j:j + group["size"], :].T)
    return rows


def clamp_free_layers(law: DeployedLaw, margin: float = 1e-3) -> list:
    """Per hidden layer: can its computed pre-activations never exceed the tanh's clamp where it matters?

    A bound ``|b_j| + sum_i |W_ji| m_i`` on every output, with ``m_i`` bounding the layer's inputs: for
    the first layer the normalised deviation over the monitor region (only states inside it use the
    network's output: outside it, or for a non-finite state, the monitor returns the backup), for the
    next ones ``|tanh32| <= 1 + TANH32_RELATIVE_UNITS 2^-23`` (any input; NaN takes the same path either
    way). The float32 weights are used and the bound is widened by ``margin`` (relative), far more than
    the rounding of the float32 sums. Where it is at most the clamp, ``fl(a^2) <= fl(CLAMP^2)`` and the
    activation's saturation test never fires: the speed profile leaves it out.
    """
    deviation = np.maximum(np.abs(law.region_min - law.x_eq), np.abs(law.region_max - law.x_eq)) / law.x_scale
    largest = np.concatenate([deviation, [1.0 + activation.TANH32_RELATIVE_UNITS * 2.0 ** -23]])
    free = []
    for index, (W, b) in enumerate(zip(law.weights[:-1], law.biases[:-1])):
        inputs = largest[:-1] if index == 0 else np.full(W.shape[1], largest[-1])
        W32, b32 = np.abs(W.astype(np.float32).astype(float)), np.abs(b.astype(np.float32).astype(float))
        with np.errstate(invalid="ignore"):
            bound = (b32 + W32 @ inputs) * (1.0 + margin)
        free.append(bool(np.all(np.isfinite(bound)) and np.all(bound <= float(activation.CLAMP))))
    return free + [False]


def speed_blocks(sizes: tuple) -> list:
    """Outputs per block of each layer in the speed profile: :data:`SPEED_BLOCK`, halved for a layer that
    also carries a full first block of the next layer (registers: its accumulators, the carried ones
    and the activation's constants)."""
    outputs = list(sizes[1:])
    return [SPEED_BLOCK // 2 if index + 1 < len(outputs) and outputs[index + 1] > SPEED_BLOCK // 2 else SPEED_BLOCK
            for index in range(len(outputs))]


def speed_network(layers: list, checked_blocks: bool) -> str:
    """The speed profile's network code (inside the step function; ``h_a`` holds the normalised input).

    Layer ``l`` runs its output blocks with each input loaded once per block; as each of its outputs
    appears (after the activation) it is also added into the accumulators of layer ``l + 1``'s first
    block, which therefore needs no loads of its inputs and starts where layer ``l`` ends. Every output
    is still summed from its bias over the inputs in index order.
    """
    lines = []
    carried = None
    for index, layer in enumerate(layers):
        src, dst = ("h_a", "h_b") if index % 2 == 0 else ("h_b", "h_a")
        following = layers[index + 1] if index + 1 < len(layers) else None
        ahead = min(SPEED_BLOCK, following["n_out"]) if following else 0
        store = following is None or following["n_out"] > ahead
        if following:
            lines.append(f"    /* layer {index + 1}'s outputs 0..{ahead - 1}: summed as layer {index}'s outputs "
                         "appear */")
            lines += [f"    real_t f{index + 1}_{r} = b{index + 1}[{r}];" for r in range(ahead)]
        finish = _speed_outputs(index, layer, dst, store, ahead, checked_blocks)
        start = 0
        if carried:
            lines.append(f"    j = 0; /* layer {index}, outputs 0..{carried - 1}: summed during layer {index - 1} */")
            lines.append("    {")
            lines += [f"        real_t a{r} = f{index}_{r};" for r in range(carried)]
            lines += finish(carried)
            lines.append("    }")
            start = carried
        for group in output_blocks(layer["n_out"] - start, layer["block"]):
            size, first, stop = group["size"], group["start"] + start, group["stop"] + start
            lines.append(f"    /* layer {index}, outputs {first}..{stop - 1} in blocks of {size}: each input loaded "
                         "once per block */")
            lines.append(f"    for (j = {first}; j < {stop}; j += {size}) {{")
            lines.append(f"        const real_t *w = &W{index}[j * {layer['n_in']}];")
            lines += [f"        real_t a{r} = b{index}[j + {r}];" for r in range(size)]
            lines.append(f"#pragma GCC unroll {layer['unroll']}")
            lines.append(f"        for (i = 0; i < {layer['n_in']}; ++i) {{")
            lines.append(f"            const real_t xi = {src}[i];")
            lines += [f"            a{r} += w[{r}] * xi;" for r in range(size)]
            lines.append(f"            w += {size};")
            lines.append("        }")
            lines += finish(size)
            lines.append("    }")
        carried = ahead
    return "\n".join(lines) + "\n"


def _speed_outputs(index: int, layer: dict, dst: str, store: bool, ahead: int, checked_blocks: bool):
    """The lines ending a block of layer ``index`` (accumulators ``a0..``, first output ``j``): activation,
    store when the next layer reads it from memory, accumulation into the next layer's first block.

    ``checked_blocks``: a block's sum of squares at most ``fl(CLAMP^2)`` bounds every square in it (float
    addition of non-negative terms never falls below a term), so its activations skip their own test.
    """

    def finish(size: int) -> list:
        lines = []
        if not layer["last"]:
            if checked_blocks and layer["clamp_free"]:
                lines += [f"        a{r} = activation_inside(a{r}); /* |a{r}| <= clamp: see the layer's table */"
                          for r in range(size)]
            elif checked_blocks and size > 1:
                lines.append("        const real_t sq = " + " + ".join(f"a{r} * a{r}" for r in range(size)) + ";")
                lines.append("        if (sq <= CLAMP_SQUARED) {")
                lines += [f"            a{r} = activation_inside(a{r});" for r in range(size)]
                lines.append("        } else {")
                lines += [f"            a{r} = activation(a{r});" for r in range(size)]
                lines.append("        }")
            else:
                lines += [f"        a{r} = activation(a{r});" for r in range(size)]
        for r in range(size):
            if store:
                lines.append(f"        {dst}[j + {r}] = a{r};")
            for k in range(ahead):
                lines.append(f"        f{index + 1}_{k} += W{index + 1}[(j + {r}) * {ahead} + {k}] * a{r};")
        return lines

    return finish


def _layer_context(W: np.ndarray, b: np.ndarray, last: bool, block: int, ahead: int, clamp_free: bool, lits,
                   rows) -> dict:
    """What the templates need of one layer (literals in every profile's order; ``ahead``: outputs of its
    first block that the previous layer sums, ``block``: outputs per block of the rest)."""
    blocked = list(W[:ahead].T) + blocked_weights(W[ahead:], block) if ahead else blocked_weights(W, block)
    return {"n_in": W.shape[1], "n_out": W.shape[0], "W": rows(W), "b": lits(b), "last": last,
            "unroll": min(W.shape[1], MAX_UNROLL), "block": block, "blocked": [lits(row) for row in blocked],
            "clamp_free": clamp_free}


def _context(law: DeployedLaw, precision: str, input_hash: str, profile: str = DEFAULT_PROFILE) -> dict:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")

    def lits(values) -> list:
        return [literal(v, precision) for v in np.ravel(values)]

    def rows(matrix) -> list:
        return [lits(row) for row in np.atleast_2d(matrix)]

    limits = deployed_input_limits(law, precision)
    blocks, free = speed_blocks(law.sizes), clamp_free_layers(law)
    layers = [_layer_context(W, b, index == len(law.weights) - 1, blocks[index],
                             min(SPEED_BLOCK, W.shape[0]) if index else 0, free[index], lits, rows)
              for index, (W, b) in enumerate(zip(law.weights, law.biases))]
    early = activation.early_saturation()
    if not early.exact:
        raise ValueError("the speed profile's early saturation would not reproduce the clamped tanh")
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
        "output": "in" if profile == "size" else ("h_b" if (len(law.weights) - 1) % 2 == 0 else "h_a"),
        "profile": profile, "early_saturation": profile in ("speed", "size") and precision == "float32",
        "tanh_at_clamp": literal(early.upper, precision), "tanh_at_minus_clamp": literal(early.lower, precision),
        "clamp_squared": literal(early.threshold, precision),
        "speed_network": speed_network(layers, precision == "float32") if profile == "speed" else "",
        "theta_length": sum(W.size + b.size for W, b in zip(law.weights, law.biases)),
        "backup_input": not law.backup_kind.in_closed_form, "backup_name": law.backup_kind.type.upper(),
    }


def render_bundle(law: DeployedLaw, precision: str, input_hash: str, profile: str = DEFAULT_PROFILE) -> tuple:
    """The deployable pair ``(<name>_policy.h, <name>_policy.c)`` as :class:`CSource`, in code ``profile``."""
    environment, context = _environment(), _context(law, precision, input_hash, profile)
    return tuple(
        CSource(f"{law.name}_policy{suffix}", environment.get_template(f"policy{suffix}.j2").render(context))
        for suffix in (".h", ".c")
    )


def render_host_batch(law: DeployedLaw, precision: str, input_hash: str) -> CSource:
    """The host-only batch helper (``<name>_policy_batch``), for tests and verification; not deployed."""
    context = _context(law, precision, input_hash)
    return CSource(f"{law.name}_policy_batch.c", _environment().get_template("host_batch.c.j2").render(context))
