"""The task's expert as a CasADi control law (for closed-loop evaluation and imitation)."""

from __future__ import annotations

import casadi as ca
import numpy as np

from ..config.plant_spec import PlantSpec


def expert_function(spec: PlantSpec) -> ca.Function | None:
    """``(x (nx,), theta (0,)) -> u (nu,)``, saturated to the input limits.

    None when there is no expert law to run (no imitation task, or an expert
    given only as data).
    """
    expert = spec.task.expert
    if expert is None or expert.kind == "data":
        return None
    x = ca.SX.sym("x", spec.nx)
    theta = ca.SX.sym("theta", 0)
    if expert.kind == "gain":
        u = ca.DM(spec.u_eq) - ca.mtimes(ca.DM(np.array(expert.K)), x - ca.DM(spec.x_eq))
    else:
        symbols = {name: x[i] for i, name in enumerate(spec.state_names)}
        u = ca.vertcat(*(e.to_casadi(symbols) for e in expert.expressions))
    u_min = ca.DM([-np.inf if v.min is None else v.min for v in spec.inputs])
    u_max = ca.DM([np.inf if v.max is None else v.max for v in spec.inputs])
    return ca.Function("expert", [x, theta], [ca.fmin(ca.fmax(u, u_min), u_max)], ["x", "theta"], ["u"])
