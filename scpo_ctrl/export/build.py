"""Compile the C bundle: host shared/static libraries and Cortex-M4F objects; sizes and stack use.

Every build uses the strict flag set of the embedded rules (C99, pedantic,
all warnings as errors, no silent double promotion or narrowing) and
``-ffp-contract=off`` so host and target perform the same roundings.
Commands run in the output directory with relative file names, so the
objects do not depend on where the run directory lives.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScpoError

STRICT_FLAGS = ("-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wconversion")
OPTIMISATION = ("-O2", "-ffp-contract=off")
#: optimisation flags per code profile (:data:`.c_bundle.PROFILES`); the rounding flags are the same for all.
#: speed: -Os, because at -O2 GCC splits the Cortex-M4F's VMLA (a multiply and an add, each rounded: the
#: same bits) into VMUL + VADD, one more instruction per multiply-accumulate; -fno-tree-loop-im, because
#: hoisting a layer's inputs out of its block loop spills them (measured: 3953 vs 4058 instructions per
#: step for 2-32-32-1). size: -Os. unrolled: the flags of the code before profiles.
PROFILE_OPTIMISATION = {
    "speed": ("-Os", "-fno-tree-loop-im", "-ffp-contract=off"),
    "size": ("-Os", "-ffp-contract=off"),
    "unrolled": OPTIMISATION,
}
CORTEX_M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")
HOST_COMPILER, ARM_COMPILER = "gcc", "arm-none-eabi-gcc"
TARGETS = ("host", "cortex-m4")


class BuildError(ScpoError):
    """A compiler or binutils step failed (message carries the tool's output)."""


@dataclass(frozen=True)
class ObjectReport:
    """One compiled object: where it is, its section sizes [bytes] and stack use [bytes] per function."""

    path: Path
    sections: dict
    stack: dict


def tool_available(tool: str) -> bool:
    return shutil.which(tool) is not None


def run_tool(command: list, cwd: Path) -> str:
    """Run a toolchain command; raise :class:`BuildError` with its output on failure."""
    if not tool_available(command[0]):
        raise BuildError(f"{command[0]} is not installed (run scripts/install-debian-packages.sh)")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed in {cwd}:\n{result.stdout}{result.stderr}")
    return result.stdout


def compile_object(compiler: str, source: str, cwd: Path, object_name: str, extra: tuple = (),
                   optimisation: tuple = OPTIMISATION) -> ObjectReport:
    """Compile ``cwd/source`` to ``cwd/object_name`` with the strict flags and ``optimisation``; report sizes
    and stack use."""
    stack_file = Path(cwd) / (Path(object_name).stem + ".su")
    command = [compiler, *STRICT_FLAGS, *optimisation, *extra, "-fstack-usage", "-c", source, "-o", object_name]
    run_tool(command, cwd)
    size_tool = "arm-none-eabi-size" if compiler == ARM_COMPILER else "size"
    return ObjectReport(Path(cwd) / object_name, section_sizes(size_tool, Path(cwd) / object_name),
                        stack_usage(stack_file))


def archive(objects: list, cwd: Path, library: str, arm: bool) -> Path:
    """A deterministic static library (``ar rcsD``) of ``objects``."""
    tool = "arm-none-eabi-ar" if arm else "ar"
    target = Path(cwd) / library
    target.unlink(missing_ok=True)
    run_tool([tool, "rcsD", library, *[Path(o).name for o in objects]], cwd)
    return target


def shared_library(sources: list, cwd: Path, library: str, optimisation: tuple = OPTIMISATION) -> Path:
    """A host shared library of ``sources`` (for ctypes in tests and verification)."""
    command = [HOST_COMPILER, *STRICT_FLAGS, *optimisation, "-fPIC", "-shared", *sources, "-o", library, "-lm"]
    run_tool(command, cwd)
    return Path(cwd) / library


def section_sizes(size_tool: str, path: Path) -> dict:
    """``.text``, ``.rodata``, ``.data``, ``.bss`` sizes [bytes] of an object (sections with a
    ``.text.*``-style suffix are added to their family)."""
    output = run_tool([size_tool, "-A", Path(path).name], Path(path).parent)
    totals = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for line in output.splitlines():
        match = re.match(r"^\.(text|rodata|data|bss)(\.\S*)?\s+(\d+)\s", line)
        if match:
            totals[match.group(1)] += int(match.group(3))
    return totals


def stack_usage(path: Path) -> dict:
    """Stack use per function [bytes] from a GCC ``.su`` file (``{function: bytes}``; qualifiers dropped)."""
    usage = {}
    if not Path(path).is_file():
        return usage
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            function = parts[0].rsplit(":", 1)[-1]
            usage[function] = int(parts[1])
    return usage


def undefined_symbols(path: Path, arm: bool) -> list:
    """Symbols an object needs from elsewhere (``nm -u``)."""
    tool = "arm-none-eabi-nm" if arm else "nm"
    output = run_tool([tool, "-u", Path(path).name], Path(path).parent)
    return sorted(line.split()[-1] for line in output.splitlines() if line.strip())


def compiler_version(compiler: str) -> str:
    if not tool_available(compiler):
        return "not installed"
    return subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
