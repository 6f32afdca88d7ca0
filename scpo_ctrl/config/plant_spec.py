"""The plant file (schema ``scpo-plant/1``) as a validated, frozen :class:`PlantSpec`.

Everything a later stage needs is checked here, at the key that is wrong:
types, dimensions, finite numbers, names, expressions (parsed, never
``eval``-ed), boxes inside limits. Checks that need the model (equilibrium,
stabilisability, backup safety) happen where the model is built and report
through the same :class:`~scpo_ctrl.errors.SpecError`.
"""

from __future__ import annotations

import csv
import io
import keyword
import re
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np

from ..errors import SpecError
from ..plant.expr import FUNCTIONS, Expression, ExpressionError, parse_expression
from .fields import Field
from .yaml_source import parse_yaml, read_yaml

SCHEMA = "scpo-plant/1"
#: ``schema_version`` values: 1 (files without the key) and 2 (open-loop plants for ``verify --controller``:
#: optional equilibrium and backup, the ``controller`` maps, row windows, a goal set, unsafe boxes)
SCHEMA_VERSIONS = (1, 2)
#: the network's outputs are named y0, y1, ... in ``controller.outputs`` expressions
MAX_NETWORK_OUTPUTS = 4096
BACKUP_TYPES = ("lqr", "mpc")
MPC_SOLVERS = ("sqp", "sqp_rti", "admm")
DEFAULT_MPC_HORIZON = 20
#: fixed ADMM iterations per step of the embedded MPC (``solver: admm``)
DEFAULT_ADMM_ITERATIONS = 50
TASK_TYPES = ("imitation", "closed_loop_cost")
ACTIVATIONS = ("tanh",)
MAX_EXPERT_ROWS = 1_000_000

_PLANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = (
    "schema", "schema_version", "name", "description", "dt", "states", "inputs", "params", "dynamics", "equilibrium",
    "constraints", "backup", "safety", "task", "policy", "scpo", "controller",
)
_V2_KEYS = ("controller",)


@dataclass(frozen=True)
class Variable:
    """A state or an input: name, unit, and optional bounds (``None`` = unbounded)."""

    name: str
    unit: str
    min: float | None
    max: float | None


@dataclass(frozen=True)
class DynamicsSpec:
    """How x advances.

    Attributes
    ----------
    kind : {'ode', 'next', 'linear'}
    expressions : tuple of Expression
        ``ode``: dx/dt per state [state unit / s]; ``next``: x+ per state.
    A, B : ndarray or None
        ``linear`` only, shapes ``(nx, nx)`` and ``(nx, nu)``.
    continuous : bool
        ``linear`` only: A, B are continuous-time (discretised exactly, ZOH).
    integrator : {'rk4', 'euler'}
        ``ode`` only.
    substeps : int
        ``ode`` only: integration steps per control period.
    """

    kind: str
    expressions: tuple
    A: np.ndarray | None
    B: np.ndarray | None
    continuous: bool
    integrator: str
    substeps: int


@dataclass(frozen=True)
class ConstraintSpec:
    """An extra safety constraint ``expression(x, u) <= 0`` at every step, or (schema version 2) only at the
    steps ``steps = (first, last)`` (inclusive, control steps from 0)."""

    name: str
    expression: Expression
    steps: tuple | None = None


@dataclass(frozen=True)
class AvoidSpec:
    """An unsafe box (schema version 2): the state must not lie inside ``box (nx, 2)`` (``+-inf`` for a state
    the box does not name) at any step, or only at ``steps = (first, last)``."""

    name: str
    box: np.ndarray
    steps: tuple | None = None


@dataclass(frozen=True)
class ControllerMapSpec:
    """Affine maps around a foreign network (schema version 2, ``verify --controller``).

    The network sees ``A_in x + b_in`` and the plant gets ``u = A_out y + b_out`` (``y`` the network's
    outputs). Either map may be absent (None): the identity, which needs the network's sizes to equal nx, nu.

    Attributes
    ----------
    A_in : ndarray (n_in, nx) or None
    b_in : ndarray (n_in,) or None
    A_out : ndarray (nu, n_out) or None
    b_out : ndarray (nu,) or None
    network_outputs : int or None
        How many outputs the network must have (with an output map).
    input_texts, output_texts : tuple of str
        The expressions as written.
    """

    A_in: np.ndarray | None
    b_in: np.ndarray | None
    A_out: np.ndarray | None
    b_out: np.ndarray | None
    network_outputs: int | None
    input_texts: tuple = ()
    output_texts: tuple = ()


@dataclass(frozen=True)
class BackupSpec:
    """The trusted backup controller: type and quadratic weights ``Q (nx, nx)``, ``R (nu, nu)``.

    ``horizon`` [steps], ``solver`` (``sqp``: acados, iterated to convergence, ``sqp_rti``: acados, one
    real-time iteration per step, ``admm``: the embedded linear MPC, float32 C that also runs on the
    Cortex-M4F, ``iterations`` fixed ADMM iterations per step) and ``tighten`` (the MPC plans within state limits moved this fraction of the
    way from each limit toward the equilibrium, so that its closed loops keep a margin instead of
    running along the plant's limits) apply to the ``mpc`` type only.
    """

    type: str
    Q: np.ndarray
    R: np.ndarray
    horizon: int | None
    solver: str | None = None
    tighten: float = 0.0
    iterations: int | None = None


@dataclass(frozen=True)
class InitialStateSpec:
    """The validation set: ``count`` low-discrepancy points in ``box (nx, 2)`` (plus its ``2^nx`` corners
    when ``corners``) or explicit ``points (N, nx)``."""

    box: np.ndarray | None
    count: int
    seed: int
    points: np.ndarray | None
    corners: bool = False


@dataclass(frozen=True)
class EnvelopeSpec:
    """The decay envelope ``V(x_k) <= max(reach_level c, gain rate^k V(x_0))`` at every step.

    ``enabled`` False drops those rows; ``rate``/``gain`` None are derived from the backup
    (``rate = gamma_b ** rate_fraction`` with gamma_b the backup's contraction of V per step).
    """

    enabled: bool = True
    rate: float | None = None
    gain: float | None = None
    rate_fraction: float = 0.1


@dataclass(frozen=True)
class SafetySpec:
    """Rollout length [steps], the validation initial states, how deep into the target set SCPO must
    bring every validation trajectory by the horizon (``V(x_H) <= reach_level * c``, 0 < reach_level <= 1,
    a row kept when ``final_reach``), the decay envelope, and the margin every row keeps
    (``g <= -margin * scale``, see :class:`~scpo_ctrl.scpo.control.RowSettings`)."""

    horizon: int
    initial_states: InitialStateSpec
    reach_level: float = 1.0
    envelope: EnvelopeSpec = EnvelopeSpec()
    final_reach: bool = True
    margin: float = 1e-3
    #: schema version 2: the goal set ``(nx, 2)`` (``+-inf`` for free states) the state must lie in at the
    #: final step (reach-avoid), or None
    goal: np.ndarray | None = None
    #: schema version 2: unsafe boxes, tuple of :class:`AvoidSpec`
    avoid: tuple = ()


@dataclass(frozen=True)
class ExpertSpec:
    """The (untrusted) expert to imitate.

    Exactly one form is set: ``expressions`` (one per input, in the states),
    ``K (nu, nx)`` with ``u = u_eq - K (x - x_eq)``, or ``data (N, nx + nu)``
    read from the CSV at ``data_path`` (columns ordered states then inputs).
    """

    kind: str
    expressions: tuple
    K: np.ndarray | None
    data_path: str | None
    data: np.ndarray | None


@dataclass(frozen=True)
class TaskSpec:
    """The objective: imitation of ``expert`` or the closed-loop cost with ``Q``, ``R``."""

    type: str
    expert: ExpertSpec | None
    Q: np.ndarray | None
    R: np.ndarray | None


@dataclass(frozen=True)
class PolicyConfig:
    """The residual network: hidden layer widths and activation."""

    hidden: tuple
    activation: str


@dataclass(frozen=True)
class ScpoSettings:
    """The optimizer settings the file gives (the command line may override them); None where it gives none:
    the optimizer's own default (:class:`scpo_ctrl.scpo.optimizer.OptimizerSettings`, the one place they live)."""

    iterations: int | None = None
    step_size: float | None = None
    trust_radius: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class PlantSpec:
    """A validated plant file. Arrays are read-only; units are the file's.

    ``x_eq``, ``u_eq`` and ``backup`` are None only in a schema version 2 file without them (an open-loop
    plant for ``verify --controller``; :func:`~scpo_ctrl.plant.model.build_plant` refuses it for the other
    verbs).
    """

    name: str
    description: str
    dt: float
    states: tuple
    inputs: tuple
    params: dict
    dynamics: DynamicsSpec
    x_eq: np.ndarray
    u_eq: np.ndarray
    constraints: tuple
    backup: BackupSpec
    safety: SafetySpec
    task: TaskSpec
    policy: PolicyConfig
    scpo: ScpoSettings
    source: str
    text_sha256: str
    #: the plant file's text (UTF-8), what ``adapt`` copies into the run directory as ``plant.yaml``
    text: str = dataclass_field(default="", repr=False, compare=False)
    schema_version: int = 1
    controller: ControllerMapSpec | None = None

    @property
    def uses_version_2_rows(self) -> bool:
        """True when the file has windowed rows, a goal set or unsafe boxes (checked by ``verify --controller``
        only)."""
        return (self.safety.goal is not None or bool(self.safety.avoid)
                or any(c.steps is not None for c in self.constraints))

    @property
    def nx(self) -> int:
        return len(self.states)

    @property
    def nu(self) -> int:
        return len(self.inputs)

    @property
    def state_names(self) -> tuple:
        return tuple(v.name for v in self.states)

    @property
    def input_names(self) -> tuple:
        return tuple(v.name for v in self.inputs)


def require_backup(spec: PlantSpec) -> None:
    """Refuse a schema version 2 file without an equilibrium or backup, or with windowed rows, a goal set or
    unsafe boxes, for the verbs built around the backup (check, adapt, export, ...).

    Raises
    ------
    SpecError
    """
    if spec.x_eq is None or spec.backup is None:
        raise SpecError(spec.source, "", "this plant file has no equilibrium or no backup: only "
                                         "`scpo-ctrl verify PLANT --controller NET.onnx` can use it")
    if spec.uses_version_2_rows:
        raise SpecError(spec.source, "safety", "windowed rows, a goal set and unsafe boxes are checked by "
                                               "`scpo-ctrl verify PLANT --controller NET.onnx` only")


def load_plant_spec(path: str | Path) -> PlantSpec:
    """Read and validate a plant file.

    Raises
    ------
    SpecError
        Naming the file, the key path, the line and what was expected.
    """
    path = Path(path)
    document = read_yaml(path, str(path))
    root = Field(document.data, (), document)
    return _build(root, path)


def parse_plant_spec(text: str, source: str, directory: str | Path = ".") -> PlantSpec:
    """Validate a plant file's ``text`` as :func:`load_plant_spec` validates a file (``source`` names it in
    messages; an expert's ``data`` CSV is looked up in ``directory``).

    Raises
    ------
    SpecError
    """
    document = parse_yaml(text, source)
    return _build(Field(document.data, (), document), Path(directory) / "plant.yaml")


def _build(root: Field, path: Path) -> PlantSpec:
    root.mapping(_TOP_KEYS, required=("schema", "name", "dt", "states", "inputs", "dynamics", "safety"))
    schema = root.child("schema").text()
    if schema != SCHEMA:
        raise root.child("schema").error(f"unsupported schema {schema!r}; expected {SCHEMA!r}")
    version = 1
    if root.has("schema_version"):
        version = root.child("schema_version").integer()
        if version not in SCHEMA_VERSIONS:
            raise root.child("schema_version").error(f"unsupported schema_version {version}; expected one of "
                                                     f"{', '.join(map(str, SCHEMA_VERSIONS))}")
    if version == 1:
        for key in ("equilibrium", "backup"):
            if not root.has(key):
                raise root.error(f"missing required key {key!r} (optional only with schema_version: 2)")
        for key in _V2_KEYS:
            if root.has(key):
                raise root.child(key).error(f"{key} needs schema_version: 2")
    name = root.child("name").text()
    if not _PLANT_NAME.match(name):
        raise root.child("name").error(f"{name!r} is not a valid plant name; use [a-z][a-z0-9_]* (it prefixes C symbols)")
    description = root.child("description").text(default="")
    dt = root.child("dt").number(positive=True)

    states = _variables(root.child("states"), "state")
    inputs = _variables(root.child("inputs"), "input")
    for field, variable in zip(root.child("inputs").elements(), inputs):
        if variable.min is None and variable.max is None and root.has("backup"):
            raise field.error(f"input {variable.name!r} needs at least one bound (the backup saturates it)")
    params = _params(root.child("params"))
    _check_unique_names(root, states, inputs, params)

    nx, nu = len(states), len(inputs)
    symbols = {v.name: v.name for v in states + inputs}  # any non-float marks a symbol
    symbols.update(params)
    state_symbols = {v.name: v.name for v in states}
    state_symbols.update(params)

    dynamics = _dynamics(root.child("dynamics"), states, inputs, symbols)
    x_eq, u_eq = _equilibrium(root.child("equilibrium"), nx, nu) if root.has("equilibrium") else (None, None)
    safety = _safety(root.child("safety"), states, version)
    constraints = _constraints(root.child("constraints"), symbols, version, safety.horizon)
    backup = _backup(root.child("backup"), nx, nu) if root.has("backup") else None
    if backup is None and root.has("task"):
        raise root.child("task").error("a task needs a backup (the residual is adapted around it)")
    task = _task(root.child("task"), states, inputs, state_symbols, backup, path) if backup is not None else None
    controller = _controller(root.child("controller"), states, inputs, params) if root.has("controller") else None
    policy = _policy(root.child("policy"))
    scpo = _scpo(root.child("scpo"))
    return PlantSpec(
        name=name, description=description, dt=dt, states=states, inputs=inputs, params=params,
        dynamics=dynamics, x_eq=x_eq, u_eq=u_eq, constraints=constraints, backup=backup,
        safety=safety, task=task, policy=policy, scpo=scpo, source=root.document.source, text_sha256=root.document.sha256,
        text=root.document.text, schema_version=version, controller=controller,
    )


def _variables(field: Field, kind: str) -> tuple:
    out = []
    for element in field.elements(min_count=1):
        element.mapping(("name", "unit", "min", "max"), required=("name",))
        name = element.child("name").text()
        if not _IDENTIFIER.match(name):
            raise element.child("name").error(f"{kind} name {name!r} is not an identifier")
        unit = element.child("unit").text(default="")
        lo = element.child("min").number(default=None)
        hi = element.child("max").number(default=None)
        if lo is not None and hi is not None and lo >= hi:
            raise element.error(f"min ({lo:g}) must be below max ({hi:g})")
        out.append(Variable(name, unit, lo, hi))
    return tuple(out)


def _params(field: Field) -> dict:
    if field.value is None:
        return {}
    return {key: value.number() for key, value in field.items()}


def _check_unique_names(root: Field, states, inputs, params) -> None:
    seen: dict[str, str] = {}
    groups = [("states", [v.name for v in states]), ("inputs", [v.name for v in inputs]), ("params", list(params))]
    for group, names in groups:
        for index, name in enumerate(names):
            where = root.child(group).child(name if group == "params" else index)
            if name in FUNCTIONS or keyword.iskeyword(name):
                raise where.error(f"name {name!r} is reserved (a function or keyword)")
            if name in seen:
                raise where.error(f"name {name!r} is already used in {seen[name]}")
            seen[name] = group


def _expression(field: Field, names: dict) -> Expression:
    try:
        return parse_expression(field.value, names)
    except ExpressionError as exc:
        raise field.error(f"{exc} in {field.value!r}") from None


def _dynamics(field: Field, states, inputs, symbols) -> DynamicsSpec:
    field.mapping(("ode", "next", "linear", "integrator", "substeps"))
    forms = [key for key in ("ode", "next", "linear") if field.has(key)]
    if len(forms) != 1:
        raise field.error(f"expected exactly one of ode, next, linear; got {', '.join(forms) or 'none'}")
    kind = forms[0]
    nx, nu = len(states), len(inputs)
    integrator = field.child("integrator").text(default="rk4", choices=("rk4", "euler"))
    substeps = field.child("substeps").integer(minimum=1, maximum=10_000, default=1)
    if kind != "ode" and (field.has("integrator") or field.has("substeps")):
        raise field.error("integrator and substeps apply to 'ode' dynamics only")
    if kind in ("ode", "next"):
        exprs_field = field.child(kind)
        names = [v.name for v in states]
        exprs_field.mapping(names, required=names)
        expressions = tuple(_expression(exprs_field.child(name), symbols) for name in names)
        return DynamicsSpec(kind, expressions, None, None, False, integrator, substeps)
    linear = field.child("linear").mapping(("A", "B", "continuous"), required=("A", "B"))
    A = linear.child("A").matrix(nx, nx)
    B = linear.child("B").matrix(nx, nu)
    continuous = linear.child("continuous").boolean(default=False)
    return DynamicsSpec(kind, (), A, B, continuous, integrator, substeps)


def _equilibrium(field: Field, nx: int, nu: int) -> tuple:
    field.mapping(("x", "u"), required=("x", "u"))
    return field.child("x").vector(nx), field.child("u").vector(nu)


def _steps(field: Field, horizon: int) -> tuple:
    """A window ``[first, last]`` of control steps, ``0 <= first <= last <= horizon``."""
    first, last = (e.integer(minimum=0) for e in field.elements(min_count=2)[:2])
    if len(field.value) != 2:
        raise field.error(f"expected [first, last], got {len(field.value)} numbers")
    if first > last or last > horizon:
        raise field.error(f"expected 0 <= first <= last <= horizon ({horizon}), got [{first}, {last}]")
    return first, last


def _constraints(field: Field, symbols, version: int = 1, horizon: int = 0) -> tuple:
    if field.value is None:
        return ()
    out = []
    names = set()
    for element in field.elements():
        element.mapping(("name", "expr", "steps"), required=("name", "expr"))
        if element.has("steps") and version < 2:
            raise element.child("steps").error("steps (a row's window) needs schema_version: 2")
        name = element.child("name").text()
        if not _IDENTIFIER.match(name):
            raise element.child("name").error(f"constraint name {name!r} is not an identifier")
        if name in names:
            raise element.child("name").error(f"constraint name {name!r} is used twice")
        names.add(name)
        steps = _steps(element.child("steps"), horizon) if element.has("steps") else None
        out.append(ConstraintSpec(name, _expression(element.child("expr"), symbols), steps))
    return tuple(out)


def _state_box(field: Field, states, *, every: bool) -> np.ndarray:
    """A box over (some of, unless ``every``) the states: ``{name: [lo, hi]}`` -> (nx, 2), +-inf elsewhere."""
    names = [v.name for v in states]
    field.mapping(names, required=names if every else ())
    if not every and not field.value:
        raise field.error("expected at least one state's interval")
    box = np.tile([-np.inf, np.inf], (len(states), 1))
    for index, name in enumerate(names):
        if field.has(name):
            lo, hi = field.child(name).vector(2)
            if lo > hi:
                raise field.child(name).error(f"lower end {lo:g} is above upper end {hi:g}")
            box[index] = lo, hi
    box.setflags(write=False)
    return box


def _avoid(field: Field, states, horizon: int) -> tuple:
    out, names = [], set()
    for element in field.elements(min_count=1):
        element.mapping(("name", "box", "steps"), required=("name", "box"))
        name = element.child("name").text()
        if not _IDENTIFIER.match(name) or name in names:
            raise element.child("name").error(f"avoid name {name!r} is not an identifier or is used twice")
        names.add(name)
        steps = _steps(element.child("steps"), horizon) if element.has("steps") else None
        out.append(AvoidSpec(name, _state_box(element.child("box"), states, every=False), steps))
    return tuple(out)


def _affine_map(field: Field, names: dict, variables: list, what: str) -> tuple:
    """Expressions (a list) affine in ``variables`` -> ``(A (k, n), b (k,))``, found symbolically (exact)."""
    import casadi as ca

    items = field.elements(min_count=1)
    z = ca.SX.sym("z", len(variables))
    symbols = dict(names)
    symbols.update({name: z[i] for i, name in enumerate(variables)})
    A, b = np.zeros((len(items), len(variables))), np.zeros(len(items))
    for k, item in enumerate(items):
        expression = _expression(item, {**names, **{v: v for v in variables}})
        h = expression.to_casadi(symbols)
        gradient = ca.jacobian(h, z)
        if ca.depends_on(gradient, z):
            raise item.error(f"{item.value!r} is not affine in {what}")
        values = ca.Function("affine", [z], [gradient, h])
        g, h0 = values(np.zeros(len(variables)))
        A[k], b[k] = np.array(g, dtype=float).ravel(), float(h0)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
        raise field.error("the map has non-finite coefficients")
    A.setflags(write=False)
    b.setflags(write=False)
    return A, b, tuple(str(item.value) for item in items)


def _controller(field: Field, states, inputs, params) -> ControllerMapSpec:
    """``controller: {inputs: [expr in the states], outputs: [expr in y0, y1, ...], network_outputs: k}``."""
    field.mapping(("inputs", "outputs", "network_outputs"))
    A_in = b_in = A_out = b_out = None
    in_texts = out_texts = ()
    if field.has("inputs"):
        A_in, b_in, in_texts = _affine_map(field.child("inputs"), dict(params), [v.name for v in states], "the states")
    n_out = None
    if field.has("outputs"):
        outputs = field.child("outputs")
        items = outputs.elements(min_count=1)
        if len(items) != len(inputs):
            raise outputs.error(f"expected {len(inputs)} expression(s), one per plant input; got {len(items)}")
        n_out = field.child("network_outputs").integer(minimum=1, maximum=MAX_NETWORK_OUTPUTS) \
            if field.has("network_outputs") else None
        width = n_out if n_out is not None else MAX_NETWORK_OUTPUTS
        A_wide, b_out, out_texts = _affine_map(outputs, dict(params), [f"y{i}" for i in range(width)],
                                               "the network's outputs y0, y1, ...")
        used = np.flatnonzero(np.any(A_wide != 0.0, axis=0))
        if n_out is None:
            n_out = int(used.max()) + 1 if len(used) else 1
        A_out = np.array(A_wide[:, :n_out])
        A_out.setflags(write=False)
    elif field.has("network_outputs"):
        raise field.child("network_outputs").error("network_outputs applies with an outputs map only")
    return ControllerMapSpec(A_in, b_in, A_out, b_out, n_out, in_texts, out_texts)


def _backup(field: Field, nx: int, nu: int) -> BackupSpec:
    field.mapping(("type", "Q", "R", "horizon", "solver", "tighten", "iterations"), required=("type", "Q", "R"))
    kind = field.child("type").text(choices=BACKUP_TYPES)
    Q = field.child("Q").weight_matrix(nx, definite=False)
    R = field.child("R").weight_matrix(nu, definite=True)
    for key in ("horizon", "solver", "tighten", "iterations"):
        if kind != "mpc" and field.has(key):
            raise field.child(key).error(f"{key} applies to the mpc backup only")
    if kind != "mpc":
        return BackupSpec(kind, Q, R, None)
    horizon = field.child("horizon").integer(minimum=1, maximum=200, default=DEFAULT_MPC_HORIZON)
    solver = field.child("solver").text(choices=MPC_SOLVERS, default="sqp")
    tighten = field.child("tighten").number(default=0.0)
    if not 0.0 <= tighten < 0.5:
        raise field.child("tighten").error(f"expected a fraction in [0, 0.5), got {tighten}")
    iterations = None
    if solver == "admm":
        iterations = field.child("iterations").integer(minimum=1, maximum=1000, default=DEFAULT_ADMM_ITERATIONS)
    elif field.has("iterations"):
        raise field.child("iterations").error("iterations applies to the admm solver only")
    return BackupSpec(kind, Q, R, horizon, solver, tighten, iterations)


def _safety(field: Field, states, version: int = 1) -> SafetySpec:
    field.mapping(("horizon", "initial_states", "reach_level", "envelope", "final_reach", "margin", "goal", "avoid"),
                  required=("horizon", "initial_states"))
    horizon = field.child("horizon").integer(minimum=1, maximum=100_000)
    for key in ("goal", "avoid"):
        if field.has(key) and version < 2:
            raise field.child(key).error(f"{key} needs schema_version: 2")
    goal = _state_box(field.child("goal"), states, every=False) if field.has("goal") else None
    avoid = _avoid(field.child("avoid"), states, horizon) if field.has("avoid") else ()
    reach_level = 1.0
    if field.has("reach_level"):
        reach_level = field.child("reach_level").number()
        if not 0.0 < reach_level <= 1.0:
            raise field.child("reach_level").error(f"expected a number in (0, 1], got {reach_level:g}")
    rows = {
        "envelope": _envelope(field.child("envelope")) if field.has("envelope") else EnvelopeSpec(),
        "final_reach": field.child("final_reach").boolean(default=True) if field.has("final_reach") else True,
        "margin": field.child("margin").number(nonnegative=True) if field.has("margin") else 1e-3,
        "goal": goal, "avoid": avoid,
    }
    if rows["margin"] >= 0.5:
        raise field.child("margin").error(f"expected a fraction of each row's scale below 0.5, got {rows['margin']:g}")
    if not rows["envelope"].enabled and not rows["final_reach"]:
        raise field.child("final_reach").error("with the envelope off, the final reach row is the only row that "
                                                "makes the closed loop converge: it cannot be off too")
    initial = field.child("initial_states").mapping(("box", "count", "seed", "points", "corners"))
    has_box, has_points = initial.has("box"), initial.has("points")
    if has_box == has_points:
        raise initial.error("expected exactly one of box (with count) or points")
    seed = initial.child("seed").integer(minimum=0, default=0)
    nx = len(states)
    if has_points:
        if initial.has("count") or initial.has("corners"):
            key = "count" if initial.has("count") else "corners"
            raise initial.child(key).error(f"{key} applies to box only; points are used as given")
        points = initial.child("points").matrix(cols=nx)
        for row, point in zip(initial.child("points").elements(), points):
            _inside_limits(row, point, states)
        return SafetySpec(horizon, InitialStateSpec(None, len(points), seed, points), reach_level, **rows)
    box_field = initial.child("box")
    names = [v.name for v in states]
    box_field.mapping(names, required=names)
    box = np.zeros((nx, 2))
    for index, variable in enumerate(states):
        interval = box_field.child(variable.name)
        lo, hi = interval.vector(2)
        if lo > hi:
            raise interval.error(f"lower end {lo:g} is above upper end {hi:g}")
        if (variable.min is not None and lo < variable.min) or (variable.max is not None and hi > variable.max):
            raise interval.error(
                f"[{lo:g}, {hi:g}] is outside the state limits [{_bound(variable.min)}, {_bound(variable.max)}]"
            )
        box[index] = lo, hi
    box.setflags(write=False)
    count = initial.child("count").integer(minimum=1, maximum=1_000_000)
    corners = initial.child("corners").boolean(default=False) if initial.has("corners") else False
    return SafetySpec(horizon, InitialStateSpec(box, count, seed, None, corners), reach_level, **rows)


def _envelope(field: Field) -> EnvelopeSpec:
    """``envelope: false``, ``true``, or ``{rate, gain, rate_fraction}`` (each optional)."""
    if isinstance(field.value, bool):
        return EnvelopeSpec(enabled=field.boolean())
    field.mapping(("rate", "gain", "rate_fraction"))
    rate = field.child("rate").number(positive=True) if field.has("rate") else None
    if rate is not None and rate >= 1.0:
        raise field.child("rate").error(f"expected a decay per step in (0, 1), got {rate:g}")
    gain = field.child("gain").number(positive=True) if field.has("gain") else None
    if gain is not None and gain < 1.0:
        raise field.child("gain").error(f"expected a gain >= 1, got {gain:g}")
    if (rate is None) != (gain is None):
        missing = "gain" if gain is None else "rate"
        raise field.error(f"rate and gain go together (missing {missing}); leave both out to derive them")
    fraction = field.child("rate_fraction").number(positive=True) if field.has("rate_fraction") else 0.1
    if fraction > 1.0:
        raise field.child("rate_fraction").error(f"expected a fraction in (0, 1], got {fraction:g}")
    return EnvelopeSpec(True, rate, gain, fraction)


def _bound(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"


def _inside_limits(field: Field, point: np.ndarray, states) -> None:
    for value, variable in zip(point, states):
        if (variable.min is not None and value < variable.min) or (variable.max is not None and value > variable.max):
            raise field.error(f"{variable.name} = {value:g} is outside the state limits")


def _task(field: Field, states, inputs, state_symbols, backup: BackupSpec, path: Path) -> TaskSpec:
    nx, nu = len(states), len(inputs)
    if field.value is None:
        return TaskSpec("closed_loop_cost", None, backup.Q, backup.R)
    field.mapping(("type", "expert", "closed_loop_cost"), required=("type",))
    kind = field.child("type").text(choices=TASK_TYPES)
    if kind == "imitation":
        if not field.has("expert"):
            raise field.error("an imitation task needs an 'expert'")
        if field.has("closed_loop_cost"):
            raise field.child("closed_loop_cost").error("closed_loop_cost applies to type closed_loop_cost only")
        return TaskSpec(kind, _expert(field.child("expert"), states, inputs, state_symbols, path), None, None)
    if field.has("expert"):
        raise field.child("expert").error("expert applies to type imitation only")
    cost = field.child("closed_loop_cost")
    if cost.value is None:
        return TaskSpec(kind, None, backup.Q, backup.R)
    cost.mapping(("Q", "R"))
    Q = cost.child("Q").weight_matrix(nx, definite=False) if cost.has("Q") else backup.Q
    R = cost.child("R").weight_matrix(nu, definite=False) if cost.has("R") else backup.R
    return TaskSpec(kind, None, Q, R)


def _expert(field: Field, states, inputs, state_symbols, path: Path) -> ExpertSpec:
    field.mapping(("u", "K", "data"))
    forms = [key for key in ("u", "K", "data") if field.has(key)]
    if len(forms) != 1:
        raise field.error(f"expected exactly one of u, K, data; got {', '.join(forms) or 'none'}")
    nx, nu = len(states), len(inputs)
    if forms[0] == "u":
        u = field.child("u")
        items = u.elements(min_count=1) if isinstance(u.value, list) else [u]
        if len(items) != nu:
            raise u.error(f"expected {nu} expression(s), one per input; got {len(items)}")
        expressions = tuple(_expression(item, state_symbols) for item in items)
        return ExpertSpec("expressions", expressions, None, None, None)
    if forms[0] == "K":
        return ExpertSpec("gain", (), field.child("K").matrix(nu, nx), None, None)
    data_field = field.child("data")
    relative = data_field.text()
    data_path = (path.parent / relative) if not Path(relative).is_absolute() else Path(relative)
    columns = [v.name for v in states] + [v.name for v in inputs]
    data = _read_expert_csv(data_field, data_path, columns)
    return ExpertSpec("data", (), None, str(data_path), data)


def _read_expert_csv(field: Field, data_path: Path, columns: list) -> np.ndarray:
    try:
        text = data_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise field.error(f"expert data file {str(data_path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise field.error(f"cannot read expert data file {str(data_path)!r}: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise field.error(f"expert data file {str(data_path)!r} is empty") from None
    missing = [name for name in columns if name not in header]
    if missing:
        raise field.error(f"expert data file {str(data_path)!r} lacks column(s) {', '.join(missing)}")
    index = [header.index(name) for name in columns]
    rows = []
    for line_number, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(rows) >= MAX_EXPERT_ROWS:
            raise field.error(f"expert data file has more than {MAX_EXPERT_ROWS} rows")
        try:
            values = [float(row[i]) for i in index]
        except (ValueError, IndexError):
            raise field.error(f"expert data file {str(data_path)!r} line {line_number}: expected numbers") from None
        if not np.all(np.isfinite(values)):
            raise field.error(f"expert data file {str(data_path)!r} line {line_number}: non-finite value")
        rows.append(values)
    if not rows:
        raise field.error(f"expert data file {str(data_path)!r} has no data rows")
    data = np.array(rows, dtype=float)
    data.setflags(write=False)
    return data


def _policy(field: Field) -> PolicyConfig:
    if field.value is None:
        return PolicyConfig((32, 32), "tanh")
    field.mapping(("hidden", "activation"))
    hidden = (32, 32)
    if field.has("hidden"):
        hidden = tuple(e.integer(minimum=1, maximum=4096) for e in field.child("hidden").elements(min_count=1))
    activation = field.child("activation").text(default="tanh", choices=ACTIVATIONS)
    return PolicyConfig(hidden, activation)


def _scpo(field: Field) -> ScpoSettings:
    if field.value is None:
        field = Field({}, field.path, field.document)
    field.mapping(("iterations", "step_size", "trust_radius", "seed"))
    return ScpoSettings(
        iterations=field.child("iterations").integer(minimum=0, maximum=1_000_000, default=None),
        step_size=field.child("step_size").number(positive=True, default=None),
        trust_radius=field.child("trust_radius").number(positive=True, default=None),
        seed=field.child("seed").integer(minimum=0, default=None),
    )
