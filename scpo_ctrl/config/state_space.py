"""A plant file from a python-control state-space system and its limits.

The system gives the ``dynamics: linear`` section (``A``, ``B``; ``continuous`` for a continuous-time
system, which the plant model then discretises exactly with a zero-order hold over ``dt``, as a YAML file
with ``continuous: true`` would be); the arguments give everything else a plant file holds. The result is
validated by the same loader as a YAML file, and its text becomes ``plant.yaml`` in a run directory.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import yaml

from ..errors import UsageError
from .plant_spec import SCHEMA, PlantSpec, parse_plant_spec

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def plant_from_state_space(system, *, name: str, state_limits: Sequence, input_limits: Sequence,
                           initial_box: Sequence, horizon: int, dt: float | None = None,
                           state_names: Sequence[str] | None = None, input_names: Sequence[str] | None = None,
                           state_units: Sequence[str] | None = None, input_units: Sequence[str] | None = None,
                           Q=None, R=None, validation_states: int = 64, corners: bool = False,
                           expert_gain=None, policy: Mapping | None = None, scpo: Mapping | None = None,
                           description: str = "") -> PlantSpec:
    """The :class:`PlantSpec` of a linear plant ``x+ = A x + B u`` (or ``dx/dt = A x + B u``) around the origin.

    Parameters
    ----------
    system : control.StateSpace
        Its ``A (nx, nx)`` and ``B (nx, nu)``; ``C`` and ``D`` are not used (the controller sees the state).
        Discrete time: the control period is ``system.dt`` [s]. Continuous time: ``dt`` is required and the
        plant model discretises the system exactly (zero-order hold), as for a plant file's
        ``dynamics: {linear: {..., continuous: true}}``.
    name : str
        Plant name, ``[a-z][a-z0-9_]*`` (it prefixes the generated C symbols).
    state_limits, input_limits : sequence of (min, max)
        Per state and per input, in their units; ``None`` for an unbounded side. Every input needs a bound.
    initial_box : sequence of (lo, hi)
        Per state: the box of initial states the validation set is drawn from (inside the state limits).
    horizon : int
        Safety horizon [steps] of each validation closed loop.
    dt : float, optional
        Control period [s]; required for a continuous-time system or a discrete one without a numeric dt,
        otherwise it must equal ``system.dt``.
    state_names, input_names : sequence of str, optional
        Identifiers; default: the system's labels when they are identifiers, else ``x0, x1, ...`` /
        ``u0, u1, ...``.
    state_units, input_units : sequence of str, optional
    Q, R : array_like, optional
        LQR backup weights, diagonal ``(nx,)`` / ``(nu,)`` or full matrices; default identity.
    validation_states : int
        Low-discrepancy initial states in ``initial_box`` (plus its corners with ``corners``).
    expert_gain : array_like, optional
        ``K (nu, nx)`` of an expert ``u = -K x`` to imitate; default: the task is the closed-loop cost.
    policy, scpo : mapping, optional
        The plant file's ``policy`` (``hidden``, ``activation``) and ``scpo`` (``iterations``, ``step_size``,
        ``trust_radius``, ``seed``) sections.
    description : str

    Returns
    -------
    PlantSpec
        Validated exactly as a plant file; ``spec.text`` is the equivalent YAML.

    Raises
    ------
    SpecError
        A value the plant file loader rejects (named by its key path in the generated file).
    UsageError
        A system that is not a state-space model, or an ambiguous control period.
    """
    try:
        A = np.atleast_2d(np.asarray(system.A, dtype=float))
        B = np.atleast_2d(np.asarray(system.B, dtype=float))
    except (AttributeError, TypeError, ValueError):
        raise UsageError(f"plant_from_state_space: expected a control.StateSpace, got {type(system).__name__}") \
            from None
    nx, nu = B.shape
    system_dt = getattr(system, "dt", 0)
    continuous = system_dt is None or (system_dt is not True and float(system_dt) == 0.0)
    if continuous or system_dt is True:
        if dt is None:
            kind = "continuous-time" if continuous else "discrete-time system without a numeric dt"
            raise UsageError(f"plant_from_state_space: a {kind} system needs dt= (the control period [s])")
        period = float(dt)
    else:
        period = float(system_dt)
        if dt is not None and not np.isclose(float(dt), period, rtol=1e-12, atol=0.0):
            raise UsageError(f"plant_from_state_space: dt={dt} differs from the system's dt={period}")
    states = _names(state_names, getattr(system, "state_labels", None), "x", nx)
    inputs = _names(input_names, getattr(system, "input_labels", None), "u", nu)
    document = {
        "schema": SCHEMA, "name": name, "description": description or "from a python-control state-space system",
        "dt": period,
        "states": _variables(states, state_units, state_limits, "state_limits"),
        "inputs": _variables(inputs, input_units, input_limits, "input_limits"),
        "dynamics": {"linear": {"A": A.tolist(), "B": B.tolist(), "continuous": bool(continuous)}},
        "equilibrium": {"x": [0.0] * nx, "u": [0.0] * nu},
        "backup": {"type": "lqr", "Q": _weights(Q, nx), "R": _weights(R, nu)},
        "safety": {"horizon": int(horizon), "initial_states": {
            "box": {state: _pair(box, f"initial_box[{i}]") for i, (state, box) in
                    enumerate(zip(states, _sized(initial_box, nx, "initial_box")))},
            "count": int(validation_states), **({"corners": True} if corners else {})}},
    }
    if expert_gain is not None:
        document["task"] = {"type": "imitation",
                            "expert": {"K": np.atleast_2d(np.asarray(expert_gain, dtype=float)).tolist()}}
    if policy is not None:
        document["policy"] = dict(policy)
    if scpo is not None:
        document["scpo"] = dict(scpo)
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    return parse_plant_spec(text, f"<state-space plant {name}>")


def _names(given, labels, prefix: str, count: int) -> list:
    if given is not None:
        names = [str(n) for n in given]
        if len(names) != count:
            raise UsageError(f"plant_from_state_space: {len(names)} names for {count} {prefix} variables")
        return names
    if labels is not None and len(labels) == count and all(_IDENTIFIER.fullmatch(str(n)) for n in labels):
        return [str(n) for n in labels]
    return [f"{prefix}{i}" for i in range(count)]


def _sized(values: Sequence, count: int, what: str) -> list:
    values = list(values)
    if len(values) != count:
        raise UsageError(f"plant_from_state_space: {what} has {len(values)} entries, expected {count}")
    return values


def _pair(value, what: str) -> list:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise UsageError(f"plant_from_state_space: {what}: expected (min, max), got {value!r}") from None
    return [None if lo is None else float(lo), None if hi is None else float(hi)]


def _variables(names: list, units, limits: Sequence, what: str) -> list:
    units = [""] * len(names) if units is None else [str(u) for u in _sized(units, len(names), what + " units")]
    out = []
    for i, (variable, unit, limit) in enumerate(zip(names, units, _sized(limits, len(names), what))):
        lo, hi = _pair(limit, f"{what}[{i}]")
        entry = {"name": variable, "unit": unit}
        if lo is not None and np.isfinite(lo):
            entry["min"] = lo
        if hi is not None and np.isfinite(hi):
            entry["max"] = hi
        out.append(entry)
    return out


def _weights(weights, size: int) -> list:
    if weights is None:
        return [1.0] * size
    matrix = np.asarray(weights, dtype=float)
    return matrix.tolist()
