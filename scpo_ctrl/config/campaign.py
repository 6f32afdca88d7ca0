"""The verification campaign (``verification/campaign.yaml``) as a frozen dataclass.

The file holds every default of what ``export``, ``verify`` and ``hil`` check an
exported law on: the equivalence campaign's mix, the Monte Carlo's sizes and
scenario-bound beta, the MPC solver check, the reachability budgets per state
count, the falsifier's budget and the HIL fault presets. This module reads it
with the plant files' strict reader (unknown keys, wrong types and out-of-range
values are a :class:`~scpo_ctrl.errors.SpecError` naming file, line and key).

Which file: the one named by the caller, else ``$SCPO_CTRL_CAMPAIGN`` when set,
else the shipped ``verification/campaign.yaml`` (found through
:func:`scpo_ctrl.resources.resource_dir`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..resources import resource_dir
from .fields import Field
from .yaml_source import read_yaml

#: the environment variable naming another campaign file for every verb
ENVIRONMENT_VARIABLE = "SCPO_CTRL_CAMPAIGN"
CAMPAIGN_FORMAT = "scpo-campaign/1"
#: the kinds of equivalence-campaign states, in the order they are drawn
EQUIVALENCE_KINDS = ("inside", "beyond", "boundary", "target_surface", "gate_surface", "equilibrium")
#: the keys of a fault preset (the rates of ``--faults``; see scpo_ctrl/hil/faults.py)
FAULT_KEYS = ("drop", "corrupt", "delay", "delay_s", "noise")
FAULT_RATES = ("drop", "corrupt", "delay")


@dataclass(frozen=True)
class EquivalenceCampaign:
    """The states on which the exported C and ONNX are compared with the float64 reference.

    Attributes
    ----------
    mix : Mapping[str, int]
        States per kind (keys: :data:`EQUIVALENCE_KINDS`, in that order), read-only.
    export_self_check_scale : float
        The fraction of every count ``export`` checks itself on, in (0, 1].
    """

    mix: MappingProxyType
    export_self_check_scale: float

    @property
    def states(self) -> int:
        return sum(self.mix.values())


@dataclass(frozen=True)
class MonteCarloCampaign:
    """``samples`` i.i.d. uniform and ``halton`` low-discrepancy initial states; ``beta`` in (0, 1)."""

    samples: int
    halton: int
    beta: float


@dataclass(frozen=True)
class MpcSolverCampaign:
    """The exported solver on ``states`` states: acados against IPOPT within ``tolerance`` (input units), the
    embedded MPC against the exact QP within ``embedded_tolerance`` (fraction of each input's half-range)."""

    states: int
    tolerance: float
    embedded_tolerance: float


@dataclass(frozen=True)
class ReachBudget:
    """The reachability budget for plants of at most ``up_to`` states (None: any larger count)."""

    up_to: int | None
    cells_per_axis: int
    max_cells: int
    max_generators: int


@dataclass(frozen=True)
class ReachabilityCampaign:
    """``max_depth`` bisections of a failing cell; ``budgets`` per state count, increasing ``up_to``."""

    max_depth: int
    budgets: tuple

    def budget(self, nx: int) -> ReachBudget:
        """The budget of a plant with ``nx`` states."""
        for budget in self.budgets:
            if budget.up_to is None or nx <= budget.up_to:
                return budget
        raise AssertionError("the last budget has no up_to")  # the reader guarantees it


@dataclass(frozen=True)
class FalsificationCampaign:
    """Per row: ``random_starts`` seeded uniform starts, ``worst_starts`` of the Monte Carlo's worst states,
    ``max_iterations`` L-BFGS-B iterations per start."""

    random_starts: int
    worst_starts: int
    max_iterations: int


@dataclass(frozen=True)
class HilFaultCampaign:
    """``max_rate``: the largest fault probability accepted; ``presets``: name -> {key: value} (read-only)."""

    max_rate: float
    presets: MappingProxyType


@dataclass(frozen=True)
class Campaign:
    """The whole campaign file; ``source`` is the file it was read from, ``sha256`` its bytes' digest."""

    equivalence: EquivalenceCampaign
    monte_carlo: MonteCarloCampaign
    mpc_solver: MpcSolverCampaign
    reachability: ReachabilityCampaign
    falsification: FalsificationCampaign
    hil_faults: HilFaultCampaign
    source: str
    sha256: str


def campaign_path(path: str | Path | None = None) -> Path:
    """The campaign file to read: ``path``, else ``$SCPO_CTRL_CAMPAIGN``, else the shipped one."""
    if path:
        return Path(path)
    named = os.environ.get(ENVIRONMENT_VARIABLE)
    if named:
        return Path(named)
    return resource_dir("verification") / "campaign.yaml"


def load_campaign(path: str | Path | None = None) -> Campaign:
    """Read and check the campaign file (see :func:`campaign_path`).

    Raises
    ------
    SpecError
        On a missing file, bad YAML, an unknown key, a wrong type or an out-of-range value (with the line).
    """
    file = campaign_path(path)
    document = read_yaml(file)
    root = Field(document.data, (), document)
    root.mapping(("format", "equivalence", "monte_carlo", "mpc_solver", "reachability", "falsification", "hil"),
                 required=("format", "equivalence", "monte_carlo", "mpc_solver", "reachability", "falsification",
                           "hil"))
    root.child("format").text(choices=(CAMPAIGN_FORMAT,))
    return Campaign(
        equivalence=_equivalence(root.child("equivalence")),
        monte_carlo=_monte_carlo(root.child("monte_carlo")),
        mpc_solver=_mpc_solver(root.child("mpc_solver")),
        reachability=_reachability(root.child("reachability")),
        falsification=_falsification(root.child("falsification")),
        hil_faults=_hil_faults(root.child("hil")),
        source=document.source, sha256=document.sha256,
    )


def _equivalence(field: Field) -> EquivalenceCampaign:
    field.mapping(("mix", "export_self_check_scale"), required=("mix", "export_self_check_scale"))
    mix = field.child("mix").mapping(EQUIVALENCE_KINDS, required=EQUIVALENCE_KINDS)
    counts = {kind: mix.child(kind).integer(minimum=1) for kind in EQUIVALENCE_KINDS}
    scale = field.child("export_self_check_scale")
    if not 0 < scale.number(positive=True) <= 1:
        raise scale.error(f"expected a fraction in (0, 1], got {scale.value:g}")
    return EquivalenceCampaign(mix=MappingProxyType(counts), export_self_check_scale=float(scale.value))


def _monte_carlo(field: Field) -> MonteCarloCampaign:
    field.mapping(("samples", "halton", "beta"), required=("samples", "halton", "beta"))
    beta = field.child("beta")
    if not 0 < beta.number(positive=True) < 1:
        raise beta.error(f"expected a number in (0, 1), got {beta.value:g}")
    return MonteCarloCampaign(samples=field.child("samples").integer(minimum=1),
                              halton=field.child("halton").integer(minimum=0), beta=float(beta.value))


def _mpc_solver(field: Field) -> MpcSolverCampaign:
    keys = ("states", "tolerance", "embedded_tolerance")
    field.mapping(keys, required=keys)
    return MpcSolverCampaign(states=field.child("states").integer(minimum=1),
                             tolerance=field.child("tolerance").number(positive=True),
                             embedded_tolerance=field.child("embedded_tolerance").number(positive=True))


def _reachability(field: Field) -> ReachabilityCampaign:
    field.mapping(("max_depth", "by_state_count"), required=("max_depth", "by_state_count"))
    rows = field.child("by_state_count").elements(min_count=1)
    budgets, previous = [], 0
    for index, row in enumerate(rows):
        last = index == len(rows) - 1
        keys = ("cells_per_axis", "max_cells", "max_generators")
        row.mapping(("up_to",) + keys, required=keys if last else ("up_to",) + keys)
        up_to = None
        if row.has("up_to"):
            if last:
                raise row.child("up_to").error("the last row covers every larger state count: leave out up_to")
            up_to = row.child("up_to").integer(minimum=previous + 1)
            previous = up_to
        budgets.append(ReachBudget(up_to=up_to, cells_per_axis=row.child("cells_per_axis").integer(minimum=1),
                                   max_cells=row.child("max_cells").integer(minimum=1),
                                   max_generators=row.child("max_generators").integer(minimum=1)))
    return ReachabilityCampaign(max_depth=field.child("max_depth").integer(minimum=0), budgets=tuple(budgets))


def _falsification(field: Field) -> FalsificationCampaign:
    keys = ("random_starts", "worst_starts", "max_iterations")
    field.mapping(keys, required=keys)
    return FalsificationCampaign(random_starts=field.child("random_starts").integer(minimum=0),
                                 worst_starts=field.child("worst_starts").integer(minimum=0),
                                 max_iterations=field.child("max_iterations").integer(minimum=1))


def _hil_faults(field: Field) -> HilFaultCampaign:
    field.mapping(("faults",), required=("faults",))
    faults = field.child("faults").mapping(("max_rate", "presets"), required=("max_rate", "presets"))
    max_rate = faults.child("max_rate")
    if not 0 < max_rate.number(positive=True) <= 1:
        raise max_rate.error(f"expected a probability in (0, 1], got {max_rate.value:g}")
    presets = {}
    for name, preset in faults.child("presets").items():
        if "=" in name or "," in name or not name.strip():
            raise preset.error(f"a preset name cannot be empty or contain '=' or ',': {name!r}")
        preset.mapping(FAULT_KEYS)
        values = {}
        for key, value in preset.items():
            number = value.number(nonnegative=True)
            if key in FAULT_RATES and number > max_rate.value:
                raise value.error(f"a fault rate is at most max_rate ({max_rate.value:g}), got {number:g}")
            values[key] = number
        presets[name] = MappingProxyType(values)
    return HilFaultCampaign(max_rate=float(max_rate.value), presets=MappingProxyType(presets))
