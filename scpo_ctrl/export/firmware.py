"""Run the exported C on a Cortex-M4F under QEMU (``mps2-an386``): the vector runner.

The runner (``hil/firmware/vectors.c`` with the board support of
``hil/board/mps2_an386``) is linked with the export's Cortex-M4 library, reads
states from a file through semihosting, writes the step's outputs back, and
times the step with SysTick. QEMU runs with ``-icount shift=0``: the timer
then advances with executed instructions, so timings are instruction counts
(calibrated in the guest against a loop of known length), not cycles of a
real chip.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..resources import resource_dir
from . import build
from .law import LawOutput

QEMU = "qemu-system-arm"
BOARD = "mps2-an386"
LINK_FLAGS = ("--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles")
RUNNER_FLAGS = ("-std=gnu99", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off")
REAL_BYTES = {"float32": 4, "float64": 8}
REAL_FORMAT = {"float32": "<f4", "float64": "<f8"}


@dataclass(frozen=True)
class TargetTiming:
    """Instruction counts of the step on the emulated Cortex-M4F.

    Attributes
    ----------
    calls : int
    instructions_per_step : float
        Including the call and loop overhead (a few instructions).
    instructions_per_tick : float
        Calibration: SysTick ticks per known instruction count under ``-icount shift=0``.
    """

    calls: int
    instructions_per_step: float
    instructions_per_tick: float


def qemu_available() -> bool:
    return build.tool_available(QEMU) and build.tool_available(build.ARM_COMPILER)


def _binding(work_dir: Path, name: str) -> None:
    """``policy_binding.h``: maps the runner's generic names onto the plant's symbols."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "policy_binding.h").write_text(
        f'#include "{name}_policy.h"\n'
        f"typedef {name}_real_t policy_real_t;\ntypedef {name}_info_t policy_info_t;\n"
        f"#define POLICY_NX {name.upper()}_NX\n#define POLICY_NU {name.upper()}_NU\n"
        f"#define policy_step {name}_policy_step\n"
    )


def build_vector_firmware(export_dir: Path, name: str, work_dir: Path) -> Path:
    """Link the vector runner with ``export_dir``'s Cortex-M4 build; returns the ELF path."""
    export_dir, work_dir = Path(export_dir).resolve(), Path(work_dir).resolve()
    library = export_dir / "cortex-m4" / f"lib{name}_policy.a"
    if not library.is_file():
        raise build.BuildError(f"{library} is missing: export with --target cortex-m4 first")
    _binding(work_dir, name)
    boards, firmware_dir = resource_dir("hil") / "board", resource_dir("hil") / "firmware"
    elf = work_dir / "vectors.elf"
    command = [
        build.ARM_COMPILER, *build.CORTEX_M4_FLAGS, *RUNNER_FLAGS, *LINK_FLAGS,
        f"-I{boards}", f"-I{export_dir / 'cortex-m4'}", f"-I{export_dir}", f"-I{work_dir}",
        "-T", str(boards / "mps2_an386" / "mps2_an386.ld"),
        str(boards / "mps2_an386" / "board.c"), str(firmware_dir / "vectors.c"), str(library), "-lm", "-o", str(elf),
    ]
    build.run_tool(command, work_dir)
    return elf


def build_host_runner(export_dir: Path, name: str, work_dir: Path, extra_flags: tuple = ()) -> Path:
    """The same vector runner for the host, compiled from the bundle's sources (e.g. with sanitizers)."""
    export_dir, work_dir = Path(export_dir).resolve(), Path(work_dir).resolve()
    _binding(work_dir, name)
    boards, firmware_dir = resource_dir("hil") / "board", resource_dir("hil") / "firmware"
    executable = work_dir / "vectors"
    command = [
        build.HOST_COMPILER, *RUNNER_FLAGS, *extra_flags, f"-I{boards}", f"-I{export_dir}", f"-I{work_dir}",
        str(boards / "host" / "board.c"), str(firmware_dir / "vectors.c"), str(export_dir / f"{name}_policy.c"),
        "-lm", "-o", str(executable),
    ]
    build.run_tool(command, work_dir)
    return executable


def run_host_runner(executable: Path, X: np.ndarray, nu: int, precision: str, work_dir: Path,
                    timeout: float = 300.0) -> tuple:
    """Run a host vector runner; returns ``(LawOutput, console text)``."""
    work_dir = Path(work_dir)
    _write_vectors(work_dir, X, precision)
    result = _run([str(executable)], work_dir, timeout)
    return _read_results(work_dir, len(X), nu, precision), result


def run_vectors(elf: Path, X: np.ndarray, nu: int, precision: str, work_dir: Path,
                timeout: float = 300.0) -> tuple:
    """Evaluate the firmware's step on the rows of ``X (N, nx)``; returns ``(LawOutput, TargetTiming)``."""
    work_dir = Path(work_dir)
    _write_vectors(work_dir, X, precision)
    command = [QEMU, "-M", BOARD, "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]
    console = _run(command, work_dir, timeout)
    output = _read_results(work_dir, len(X), nu, precision)
    match = re.search(r"timing calls=(\d+) step_ticks=(\d+) calibration_instructions=(\d+) "
                      r"calibration_ticks=(\d+)", console)
    if not match:
        raise build.BuildError(f"the firmware printed no timing line:\n{console}")
    calls, ticks, calibration_instructions, calibration_ticks = (int(v) for v in match.groups())
    per_tick = calibration_instructions / max(calibration_ticks, 1)
    return output, TargetTiming(calls=calls, instructions_per_step=ticks * per_tick / max(calls, 1),
                                instructions_per_tick=per_tick)


def _write_vectors(work_dir: Path, X: np.ndarray, precision: str) -> None:
    X = np.ascontiguousarray(np.atleast_2d(X), dtype=REAL_FORMAT[precision])
    header = struct.pack("<4sIII", b"SCPV", len(X), X.shape[1], REAL_BYTES[precision])
    (work_dir / "vectors.in").write_bytes(header + X.tobytes())
    (work_dir / "vectors.out").unlink(missing_ok=True)


def _run(command: list, work_dir: Path, timeout: float) -> str:
    try:
        result = subprocess.run(command, cwd=work_dir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise build.BuildError(f"{command[0]} did not finish within {timeout:.0f} s") from None
    console = result.stdout + result.stderr
    if result.returncode != 0:
        raise build.BuildError(f"the vector runner failed ({command[0]}, exit {result.returncode}):\n{console}")
    return console


def _read_results(work_dir: Path, expected: int, nu: int, precision: str) -> LawOutput:
    size = REAL_BYTES[precision]
    data = (work_dir / "vectors.out").read_bytes()
    magic, count, n_out, real = struct.unpack_from("<4sIII", data)
    if magic != b"SCPR" or count != expected or n_out != nu or real != size:
        raise build.BuildError(f"vectors.out has an unexpected header ({magic!r}, {count}, {n_out}, {real})")
    record = np.dtype([("u", REAL_FORMAT[precision], (nu,)), ("gate", REAL_FORMAT[precision]),
                       ("level", REAL_FORMAT[precision]), ("branch", "<i4"), ("reason", "<i4")])
    rows = np.frombuffer(data, dtype=record, offset=16, count=count)
    return LawOutput(u=rows["u"].astype(float).reshape(count, nu), branch=rows["branch"].astype(np.int32),
                     reason=rows["reason"].astype(np.int32), gate=rows["gate"].astype(float),
                     level=rows["level"].astype(float))
