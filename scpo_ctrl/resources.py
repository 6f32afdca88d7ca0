"""The one resolver for the non-Python files the package operates on (``codegen/``, ``hil/``, ...).

They live at the top of the source checkout (see ARCHITECTURE.md); an
installation may instead place them under ``scpo_ctrl/_resources/``.
"""

from __future__ import annotations

from pathlib import Path

RESOURCE_DIRECTORIES = ("codegen", "hil", "verification")


def resource_dir(name: str) -> Path:
    """Absolute path of the resource directory ``name`` (one of :data:`RESOURCE_DIRECTORIES`).

    Raises
    ------
    FileNotFoundError
        If neither location holds it (a broken installation).
    """
    if name not in RESOURCE_DIRECTORIES:
        raise ValueError(f"unknown resource directory {name!r}; known: {', '.join(RESOURCE_DIRECTORIES)}")
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / name, package / "_resources" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ directory of scpo-ctrl is missing (looked next to {package})")
