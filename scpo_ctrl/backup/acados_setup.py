"""``scpo-ctrl setup-acados``: install acados for MPC backups, atomically and idempotently.

acados comes from the registry wheel ``comma-deps-acados`` (the only one that
carries it for Python 3.11), installed with pip's ``--no-deps --target`` into
a directory of its own, never into the environment: the slim casadi the wheel
also ships is deleted so that it cannot shadow the real one, and
:mod:`.acados_env` loads what is left. The wheel is installed into a
temporary sibling of the target, which is renamed into place only once it is
complete; a stamp file names the version installed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScpoError
from .acados_env import install_target, missing_files

ACADOS_DISTRIBUTION = "comma-deps-acados"
ACADOS_VERSION = "0.2.2.post92"
#: top-level packages of the wheel that must not stay (they would shadow the environment's)
SHADOWING_PACKAGES = ("casadi",)

log = logging.getLogger(__name__)


class AcadosSetupError(ScpoError):
    """acados could not be installed."""


@dataclass(frozen=True)
class AcadosSetup:
    """The outcome of :func:`setup_acados`.

    Attributes
    ----------
    directory : Path
        The acados directory (what ``SCPO_CTRL_ACADOS_DIR`` would name).
    version : str
        The installed ``comma-deps-acados`` version.
    already_installed : bool
        True if it was there already and nothing was done.
    """

    directory: Path
    version: str
    already_installed: bool


def stamp_path(directory: Path) -> Path:
    """The file that marks a complete installation of :data:`ACADOS_VERSION` in ``directory``."""
    return directory / f".installed-{ACADOS_VERSION}"


def setup_acados(directory: Path | None = None, python: str | None = None) -> AcadosSetup:
    """Install acados into ``directory`` (default :func:`~.acados_env.install_target`) unless it is there.

    Parameters
    ----------
    directory : Path, optional
        Target directory; replaced as a whole if it holds anything but a
        complete installation of this version.
    python : str, optional
        The interpreter whose pip installs the wheel (default: this one).

    Raises
    ------
    AcadosSetupError
        If pip fails (its last line is quoted) or the wheel lacks acados' files.
    """
    target = Path(directory).resolve() if directory is not None else install_target()
    if stamp_path(target).is_file() and not missing_files(target):
        return AcadosSetup(directory=target, version=ACADOS_VERSION, already_installed=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-partial-", dir=target.parent))
    try:
        _pip_install(partial, python or sys.executable)
        for name in SHADOWING_PACKAGES:
            shutil.rmtree(partial / name, ignore_errors=True)
        missing = missing_files(partial)
        if missing:
            raise AcadosSetupError(f"{ACADOS_DISTRIBUTION}=={ACADOS_VERSION} installed no {missing[0].name}")
        stamp_path(partial).touch()
        partial.chmod(0o755)  # mkdtemp made it private; the script-installed .vendor/acados was not
        _move_into_place(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return AcadosSetup(directory=target, version=ACADOS_VERSION, already_installed=False)


def _pip_install(directory: Path, python: str) -> None:
    """``pip install --no-deps --target directory comma-deps-acados==VERSION`` from the configured registry."""
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--no-input", "--target", str(directory), f"{ACADOS_DISTRIBUTION}=={ACADOS_VERSION}"]
    log.info("running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise AcadosSetupError(f"cannot run {python} -m pip: {exc}") from None
    log.debug("pip output: %s", (result.stdout + result.stderr).strip()[:4000])
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise AcadosSetupError(f"pip could not install {ACADOS_DISTRIBUTION}=={ACADOS_VERSION} "
                               f"(acados' wheel, for CPython 3.11 on x86-64 Linux): {reason}")


def _move_into_place(partial: Path, target: Path) -> None:
    """Rename the complete ``partial`` to ``target``; an old ``target`` is set aside first, then deleted."""
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        target.rename(old / target.name)
    try:
        partial.rename(target)
    except OSError as exc:
        if not stamp_path(target).is_file():  # not another setup-acados that got there first
            raise AcadosSetupError(f"cannot move acados into {target}: {exc}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
