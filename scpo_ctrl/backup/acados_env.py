"""Loading acados (``scpo-ctrl setup-acados``, :mod:`.acados_setup`) without touching the network or stdin.

The wheel ``comma-deps-acados`` carries acados' shared libraries, headers, the
``t_renderer`` template binary and the (old-API) ``acados_template`` package,
imported as ``acados.acados_template``. Loading it means: putting its directory
*after* everything else on ``sys.path`` (the real casadi must win), pointing
``ACADOS_SOURCE_DIR``, ``ACADOS_PYTHON_INTERFACE_PATH`` and ``TERA_PATH`` at
its files (otherwise acados_template offers, on stdin, to download
t_renderer), and preloading its libraries with ``RTLD_GLOBAL`` so that the
solvers it generates resolve their symbols.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScpoError
from ..resources import source_checkout

VENDOR_ENVIRONMENT_VARIABLE = "SCPO_CTRL_ACADOS_DIR"
PRELOADED_LIBRARIES = ("libblasfeo.so", "libhpipm.so", "libqpOASES_e.so.3.1", "libacados.so")


class AcadosUnavailable(ScpoError):
    """acados is not installed where scpo-ctrl looks for it."""


@dataclass(frozen=True)
class AcadosInstallation:
    """Where the vendored acados lives.

    Attributes
    ----------
    root : Path
        The directory holding the ``acados`` package.
    install_dir : Path
        acados' ``install/`` (``lib/``, ``include/``, ``bin/t_renderer``).
    template_dir : Path
        The ``acados_template`` package.
    """

    root: Path
    install_dir: Path
    template_dir: Path

    @property
    def include_dir(self) -> Path:
        return self.install_dir / "include"

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"


def user_acados_dir() -> Path:
    """Where ``scpo-ctrl setup-acados`` installs acados by default: ``$XDG_DATA_HOME/scpo-ctrl/acados``.

    ``$XDG_DATA_HOME`` defaults to ``~/.local/share``.
    """
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).resolve() / "scpo-ctrl" / "acados"


def candidate_dirs() -> tuple[Path, ...]:
    """Where acados is looked for, in order.

    ``$SCPO_CTRL_ACADOS_DIR`` alone when it is set; otherwise a checkout's
    ``.vendor/acados`` (``scripts/install-acados.sh``), then :func:`user_acados_dir`.
    """
    configured = os.environ.get(VENDOR_ENVIRONMENT_VARIABLE)
    if configured:
        return (Path(configured).resolve(),)
    checkout = source_checkout()
    vendored = (checkout / ".vendor" / "acados",) if checkout is not None else ()
    return vendored + (user_acados_dir(),)


def install_target() -> Path:
    """Where ``scpo-ctrl setup-acados`` installs: ``$SCPO_CTRL_ACADOS_DIR`` if set, else :func:`user_acados_dir`."""
    configured = os.environ.get(VENDOR_ENVIRONMENT_VARIABLE)
    return Path(configured).resolve() if configured else user_acados_dir()


def missing_files(root: Path) -> list[Path]:
    """The files of an acados installation under ``root`` that are absent (empty when it is complete)."""
    install_dir, template_dir = root / "acados" / "install", root / "acados" / "acados_template"
    required = (install_dir / "lib" / "libacados.so", install_dir / "bin" / "t_renderer", template_dir / "__init__.py")
    return [path for path in required if not path.exists()]


def vendor_dir() -> Path:
    """The acados directory in use: the first of :func:`candidate_dirs` that holds a complete installation,
    else the first of them."""
    candidates = candidate_dirs()
    return next((root for root in candidates if not missing_files(root)), candidates[0])


def find_acados() -> AcadosInstallation:
    """Locate acados; raises :class:`AcadosUnavailable` (one line saying how to install it) if it is missing."""
    root = vendor_dir()
    missing = missing_files(root)
    if missing:
        raise AcadosUnavailable(
            f"acados is not installed (an MPC backup needs it; missing {missing[0]}); install it with "
            f"`scpo-ctrl setup-acados`, or set {VENDOR_ENVIRONMENT_VARIABLE} to an acados directory"
        )
    return AcadosInstallation(root=root, install_dir=root / "acados" / "install",
                              template_dir=root / "acados" / "acados_template")


def load_acados():
    """Import and return ``acados.acados_template`` from the vendored installation.

    Idempotent: the process-wide effects (path entry, environment variables,
    loaded libraries) are the same on every call.
    """
    import casadi  # noqa: F401  - the real casadi first, so the path entry below can never shadow it

    installation = find_acados()
    root = str(installation.root)
    if root not in sys.path:
        sys.path.append(root)
    os.environ["ACADOS_SOURCE_DIR"] = str(installation.install_dir)
    os.environ["ACADOS_PYTHON_INTERFACE_PATH"] = str(installation.template_dir)
    os.environ["TERA_PATH"] = str(installation.install_dir / "bin" / "t_renderer")
    for name in PRELOADED_LIBRARIES:
        ctypes.CDLL(str(installation.lib_dir / name), mode=ctypes.RTLD_GLOBAL)
    from acados import acados_template

    return acados_template


@contextlib.contextmanager
def c_output_to_log(logger):
    """Send what C code prints on stdout (acados' solver notices) to ``logger`` at debug level.

    acados prints from C (``printf``) whatever its print level; the command line's stdout carries
    results only, so file descriptor 1 is pointed at a temporary file for the duration.
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            text = capture.read(65536).decode(errors="replace").strip()
            if text:
                logger.debug("solver output: %s", text[:2000])


#: the acados runtime libraries an exported controller loads from the installation (outside the export)
RUNTIME_LIBRARIES = ("libacados.so", "libhpipm.so", "libblasfeo.so", "libqpOASES_e.so.3.1")


def runtime_hashes() -> dict:
    """sha256 of each acados runtime library of the installation (``{file name: hex digest}``); an export's
    manifest records them, since its controller runs with them but they are not copied into the export."""
    import hashlib

    directory = find_acados().lib_dir
    hashes = {}
    for name in RUNTIME_LIBRARIES:
        path = directory / name
        if path.is_file():
            hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
