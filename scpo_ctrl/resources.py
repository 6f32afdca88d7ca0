"""The one resolver for the non-Python files the package operates on (``codegen/``, ``hil/``, ...).

In a source checkout they live at its top (see ARCHITECTURE.md) and are used
in place, so an editable install sees edits at once. A wheel or sdist carries
copies under ``scpo_ctrl/_resources/`` (``setup.py`` puts them there at build
time), which an installed package uses.

This module imports nothing from the package: ``setup.py`` reads
:data:`RESOURCE_DIRECTORIES` from it before anything is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

#: the top-level folders of the checkout that an installation carries
RESOURCE_DIRECTORIES = ("codegen", "hil", "models", "verification")
#: the folder, inside the package, of an installation's copies
INSTALLED_RESOURCES = "_resources"

_PLANT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def package_dir() -> Path:
    """The directory of the ``scpo_ctrl`` package."""
    return Path(__file__).resolve().parent


def source_checkout() -> Path | None:
    """The source checkout the package runs from (``pyproject.toml`` beside it), or None when installed."""
    root = package_dir().parent
    return root if (root / "pyproject.toml").is_file() else None


def resource_dir(name: str) -> Path:
    """Absolute path of the resource directory ``name`` (one of :data:`RESOURCE_DIRECTORIES`).

    A checkout uses its top-level folder; an installation its copy under
    ``scpo_ctrl/_resources/``. The installed copy is never looked for next
    to the package (``site-packages/hil`` may well be another project's).

    Raises
    ------
    ValueError
        If ``name`` is not a resource directory.
    FileNotFoundError
        If the directory is missing (a broken installation).
    """
    if name not in RESOURCE_DIRECTORIES:
        raise ValueError(f"unknown resource directory {name!r}; known: {', '.join(RESOURCE_DIRECTORIES)}")
    checkout = source_checkout()
    candidate = checkout / name if checkout is not None else package_dir() / INSTALLED_RESOURCES / name
    if not candidate.is_dir():
        raise FileNotFoundError(f"the {name}/ directory of scpo-ctrl is missing (looked for {candidate})")
    return candidate


def shipped_plants() -> tuple[str, ...]:
    """Names of the example plant files shipped in ``models/`` (empty if it is missing)."""
    try:
        models = resource_dir("models")
    except FileNotFoundError:
        return ()
    return tuple(sorted(path.stem for path in models.glob("*.yaml")))


def plant_file(argument: str) -> str:
    """The plant file an argument names: a path as given, or the shipped ``models/<name>.yaml``.

    A bare plant name (``double_integrator``) that is not an existing file
    names a shipped plant. Anything else is returned unchanged, so that the
    plant file reader reports a missing file in its own words.
    """
    if Path(argument).exists() or not _PLANT_NAME.fullmatch(argument) or argument not in shipped_plants():
        return argument
    return str(resource_dir("models") / f"{argument}.yaml")
