"""States on which the exported artefacts are compared with the reference (the equivalence campaign).

Every state is float32-representable, so the float32 and float64 builds and the
reference all see exactly the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..config.campaign import load_campaign
from .law import DeployedLaw


@dataclass(frozen=True)
class Campaign:
    """States ``X (N, nx)`` and the kind of each (``kinds[i]`` one of the campaign mix's keys)."""

    X: np.ndarray
    kinds: np.ndarray


def region_box(law: DeployedLaw) -> tuple:
    """The monitor region with unbounded coordinates replaced by ``x_eq +- 3 x_scale``."""
    low = np.where(np.isfinite(law.region_min), law.region_min, law.x_eq - 3.0 * law.x_scale)
    high = np.where(np.isfinite(law.region_max), law.region_max, law.x_eq + 3.0 * law.x_scale)
    return low, high


def equivalence_campaign(law: DeployedLaw, seed: int = 0, scale: float = 1.0,
                         mix: Mapping[str, int] | None = None) -> Campaign:
    """The campaign: inside and beyond the state box, on its boundary, near the target
    set's boundary (level 1) and the gate's outer surface (level gate_ratio), near x_eq.

    ``mix`` gives the states per kind (None: the campaign file's, ``verification/campaign.yaml``:
    10,000 states); ``scale`` multiplies every count.
    """
    if mix is None:
        mix = load_campaign().equivalence.mix
    rng = np.random.default_rng(seed)
    low, high = region_box(law)
    width = high - low
    counts = {kind: max(1, int(round(n * scale))) for kind, n in mix.items()}
    parts, kinds = [], []

    def add(kind: str, X: np.ndarray) -> None:
        parts.append(X)
        kinds.extend([kind] * len(X))

    add("inside", rng.uniform(low, high, size=(counts["inside"], law.nx)))
    add("beyond", rng.uniform(low - 0.5 * width, high + 0.5 * width, size=(counts["beyond"], law.nx)))
    X = rng.uniform(low, high, size=(counts["boundary"], law.nx))
    axis = rng.integers(0, law.nx, size=len(X))
    side = rng.integers(0, 2, size=len(X))
    X[np.arange(len(X)), axis] = np.where(side == 1, high[axis], low[axis])
    add("boundary", X)
    for kind, level in (("target_surface", 1.0), ("gate_surface", law.gate_ratio)):
        add(kind, _on_level(law, rng, counts[kind], level))
    directions = rng.normal(size=(counts["equilibrium"], law.nx))
    add("equilibrium", law.x_eq + directions * law.x_scale * 10.0 ** rng.uniform(-6, -1, size=(len(directions), 1)))
    X = np.concatenate(parts).astype(np.float32).astype(float)
    return Campaign(X=X, kinds=np.array(kinds))


def _on_level(law: DeployedLaw, rng: np.random.Generator, count: int, level: float) -> np.ndarray:
    """States with V/c within 1e-3 (relative) of ``level``: random directions scaled onto the ellipsoid."""
    directions = rng.normal(size=(count, law.nx))
    quadratic = np.einsum("ni,ij,nj->n", directions, law.P, directions) / law.c
    target = level * (1.0 + rng.uniform(-1e-3, 1e-3, size=count))
    return law.x_eq + directions * np.sqrt(target / quadratic)[:, None]
