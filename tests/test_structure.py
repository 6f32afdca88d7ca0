"""The package's import structure: no cycle between modules and no private name imported across modules.

Every import statement counts, including those inside functions (a lazy import hides a cycle from the
interpreter, not from the reader), and so do ``import_module`` calls with a literal module name. Not seen:
module names built at run time, and the implicit import of a package's ``__init__`` by its submodules. The graph is read from the source with :mod:`ast`, so the test
needs nothing importable and names the modules of a cycle when it fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scpo_ctrl

PACKAGE = Path(scpo_ctrl.__file__).resolve().parent


def _modules() -> dict:
    """``{dotted module name: source path}`` for every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(modules: dict) -> tuple[dict, list]:
    """The import graph ``{module: {imported module}}`` and the private names imported across modules
    as ``(importer, module, name)``."""
    graph = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                if not target or target.split(".")[0] != "scpo_ctrl":
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        graph[name].add(submodule)
                    elif target in modules:
                        graph[name].add(target)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append((name, target, alias.name))
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names if alias.name in modules)
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)):
                # importlib.import_module("scpo_ctrl.x") or import_module(".x", package): a string import
                text = node.args[0].value
                dots = len(text) - len(text.lstrip("."))
                target = ".".join(package[: len(package) - dots + 1] + [text[dots:]]) if dots else text
                if target in modules:
                    graph[name].add(target)
    for name in graph:
        graph[name].discard(name)
    return graph, private


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_the_package():
    graph, _ = _imports(_modules())
    assert "scpo_ctrl.verify.run" in graph and "scpo_ctrl.verify.reach" in graph["scpo_ctrl.verify.run"]


def test_cycle_detection_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph, _ = _imports(_modules())
    assert _cycles(graph) == []


def test_no_private_name_is_imported_across_modules():
    _, private = _imports(_modules())
    assert private == []


# -- the backup is asked, not identified -----------------------------------------------------------
#: names a branch on which backup is running would test: the attributes, keys and variables that hold a
#: backup's name (compared with one), and the flags that told the MPC variants apart
_NAME_HOLDERS = {"backup", "type", "backup_type", "solver", "kind"}
_VARIANT_FLAGS = {"backup_is_input", "embedded"}


def _backup_names() -> set:
    from scpo_ctrl.backup.kinds import BACKUPS
    from scpo_ctrl.config.plant_spec import BACKUP_TYPES, MPC_SOLVERS

    return set(BACKUPS) | set(BACKUP_TYPES) | set(MPC_SOLVERS) | {backup.type for backup in BACKUPS.values()}


def _held_name(node) -> str | None:
    """The name an expression reads a value by: ``x.name``, ``x["name"]``, ``x.get("name")`` or ``name``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value if isinstance(node.slice.value, str) else None
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and node.args and isinstance(node.args[0], ast.Constant)):
        return node.args[0].value if isinstance(node.args[0].value, str) else None
    return None


def backup_branches(source: str, names: set) -> list:
    """``(line, text)`` of each place in ``source`` that tells backups apart by what they are rather than by
    asking them (:class:`scpo_ctrl.backup.kinds.Backup`): a comparison of a backup's name with one of
    ``names``, ``mpc is None`` / ``is not None``, and any read of the old variant flags."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            literals = [o for o in operands if isinstance(o, (ast.Constant, ast.Tuple, ast.List, ast.Set))]
            constants = {c.value for o in literals for c in ([o] if isinstance(o, ast.Constant) else o.elts)
                         if isinstance(c, ast.Constant)}
            held = {_held_name(o) for o in operands if o not in literals}
            if constants & names and held & _NAME_HOLDERS:
                found.append((node.lineno, ast.unparse(node)))
            elif (None in constants and "mpc" in held
                  and all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops)):
                found.append((node.lineno, ast.unparse(node)))
        elif _held_name(node) in _VARIANT_FLAGS and not isinstance(node, ast.Name):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def test_the_backup_branch_check_finds_branches():
    names = _backup_names()
    source = "\n".join([
        "if law.backup_is_input: pass",
        "if problem.mpc is None: pass",
        "x = 1 if problem.mpc is not None else 2",
        "if spec.backup.type == 'mpc' and spec.backup.solver == 'admm': pass",
        "if m['solver'] != 'admm': pass",
        "if manifest.backup.get('type') in ('mpc',): pass",
        "embedded = bool(manifest.backup.get('embedded'))",
        "if files.embedded: pass",
    ])
    assert [line for line, _ in backup_branches(source, names)] == [1, 2, 3, 4, 4, 5, 6, 7, 8]
    asked = "\n".join([
        "if law.backup_kind.in_closed_form: pass",
        "if not backup.cortex_m4_carries_certified_law and target == 'cortex-m4': pass",
        "if policy.backup != spec.backup.type: pass",
        "if request.target == 'host': pass",
    ])
    assert backup_branches(asked, names) == []


def test_no_module_outside_the_backups_tells_them_apart():
    """Outside ``scpo_ctrl/backup/`` (the implementations) and ``scpo_ctrl/config/`` (the plant file's reader,
    where the names are defined, one layer below the backups) code asks the backup, never tests which it is."""
    names = _backup_names()
    exempt = (PACKAGE / "backup", PACKAGE / "config")
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
             for path in sorted(PACKAGE.rglob("*.py")) if not any(d in path.parents for d in exempt)
             for line, text in backup_branches(path.read_text(), names)]
    assert found == []
