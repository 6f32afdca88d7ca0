"""The embedded MPC's solver alone through the vector runner (``hil/firmware/vectors.c``): on the host and
on the Cortex-M4F under QEMU, for its equivalence checks and its instruction counts.

The runner's "policy" is ``hil/firmware/empc_step.c``: the float32 solve, with the law's info fields
zeroed. Both builds use the solver's own flags (:data:`~scpo_ctrl.backup.embedded_mpc_codegen.C_FLAGS`) and
``-Wdouble-promotion -Werror``: a double literal in the solver would fail the build rather than pull soft-double
code into the M4's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backup.embedded_mpc_codegen import C_FLAGS, DATA_HEADER, EmbeddedSolverFiles
from ..resources import resource_dir
from . import build, firmware
from .law import LawOutput

STRICT = ("-Wdouble-promotion", "-Werror")


def write_solver_binding(work_dir: Path) -> None:
    """``policy_binding.h`` of the solver-alone runner (in ``work_dir``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "policy_binding.h").write_text(
        "#include <stdint.h>\n#include \"empc_data.h\"\n"
        "typedef float policy_real_t;\n"
        "typedef struct { float gate, level; int32_t branch, reason; } policy_info_t;\n"
        "#define POLICY_NX EMPC_NX\n#define POLICY_NU EMPC_NU\n"
        "int32_t policy_step(const float x[EMPC_NX], float u[EMPC_NU], policy_info_t *info);\n"
    )


def _sources(files: EmbeddedSolverFiles) -> list:
    boards, firmware_dir = resource_dir("hil") / "board", resource_dir("hil") / "firmware"
    return [f"-I{boards}", f"-I{files.directory}", f"-I{files.source_dir}", f'-DEMPC_DATA="{DATA_HEADER}"',
            str(firmware_dir / "vectors.c"), str(firmware_dir / "empc_step.c")]


def build_solver_elf(files: EmbeddedSolverFiles, work_dir: Path) -> Path:
    """The vector runner with the float32 solver for the Cortex-M4F (mps2-an386); returns the ELF path."""
    work_dir = Path(work_dir).resolve()
    write_solver_binding(work_dir)
    boards = resource_dir("hil") / "board"
    elf = work_dir / "empc_vectors.elf"
    command = [build.ARM_COMPILER, *build.CORTEX_M4_FLAGS, *firmware.RUNNER_FLAGS, *C_FLAGS, *STRICT,
               *firmware.LINK_FLAGS, f"-I{work_dir}", "-T", str(boards / "mps2_an386" / "mps2_an386.ld"),
               str(boards / "mps2_an386" / "board.c"), *_sources(files), "-o", str(elf)]
    build.run_tool(command, work_dir)
    return elf


def build_solver_host_runner(files: EmbeddedSolverFiles, work_dir: Path) -> Path:
    """The same runner for the host (the same C, the same flags)."""
    work_dir = Path(work_dir).resolve()
    write_solver_binding(work_dir)
    boards = resource_dir("hil") / "board"
    executable = work_dir / "empc_vectors"
    command = [build.HOST_COMPILER, *firmware.RUNNER_FLAGS, *C_FLAGS, *STRICT, f"-I{work_dir}",
               str(boards / "host" / "board.c"), *_sources(files), "-o", str(executable)]
    build.run_tool(command, work_dir)
    return executable


def solve_on_host(executable: Path, X: np.ndarray, nu: int, work_dir: Path) -> np.ndarray:
    """float32 inputs ``(B, nu)`` of the host runner at ``float32(X (B, nx))``."""
    output, _ = firmware.run_host_runner(executable, np.asarray(X, dtype=np.float32), nu, "float32", Path(work_dir))
    return output.u


def solve_on_target(elf: Path, X: np.ndarray, nu: int, work_dir: Path) -> tuple[LawOutput, firmware.TargetTiming]:
    """float32 inputs (``LawOutput.u``, shape (B, nu)) of the M4 runner under QEMU, and its instruction counts."""
    return firmware.run_vectors(elf, np.asarray(X, dtype=np.float32), nu, "float32", Path(work_dir))
