"""CasADi functions compiled to C with the system compiler (JIT), in a private temporary directory."""

from __future__ import annotations

import logging
import shutil
import tempfile

import casadi as ca

log = logging.getLogger(__name__)


def compiler_available() -> bool:
    return shutil.which("gcc") is not None


def compile_function(name: str, inputs: list, outputs: list, input_names: list, output_names: list,
                     jit: bool) -> tuple[ca.Function, bool]:
    """A CasADi function, JIT-compiled to C (gcc -O2) in a private temporary directory if ``jit``.

    Falls back to CasADi's virtual machine, with a warning, when compilation
    fails. Returns the function and whether it was compiled.
    """
    if jit:
        with tempfile.TemporaryDirectory(prefix="scpo-jit-") as directory:
            options = {
                "jit": True, "compiler": "shell", "jit_cleanup": False,
                "jit_options": {"flags": ["-O2", "-w"], "verbose": False, "directory": directory, "cleanup": False},
            }
            try:
                # The shared object is loaded during construction; the directory may go afterwards.
                return ca.Function(name, inputs, outputs, input_names, output_names, options), True
            except RuntimeError as exc:
                log.warning("JIT compilation of %s failed (%s); using CasADi's virtual machine", name, exc)
    return ca.Function(name, inputs, outputs, input_names, output_names), False
