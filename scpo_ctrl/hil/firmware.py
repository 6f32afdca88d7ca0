"""Build the HIL firmware (``hil/firmware/hil_main.c``) against an export: host SIL and Cortex-M4F (QEMU).

Both builds link the export's static library of the generated bundle (``export/host/lib<name>_policy.a``
or ``export/cortex-m4/lib<name>_policy.a``) with the same ``hil_main.c``; only the board files differ.
Flags come from :mod:`scpo_ctrl.export.build` and :mod:`scpo_ctrl.export.firmware`.
"""

from __future__ import annotations

from pathlib import Path

from ..export import build
from ..export.firmware import LINK_FLAGS, RUNNER_FLAGS
from ..resources import resource_dir

HOST_BOARD_ID, MPS2_BOARD_ID = "HIL_BOARD_HOST", "HIL_BOARD_MPS2_AN386"


def write_binding(work_dir: Path, name: str) -> None:
    """``policy_binding.h``: the firmware's generic names mapped onto the plant's symbols."""
    work_dir.mkdir(parents=True, exist_ok=True)
    upper = name.upper()
    (work_dir / "policy_binding.h").write_text(
        f'#include "{name}_policy.h"\n'
        f"typedef {name}_real_t policy_real_t;\ntypedef {name}_info_t policy_info_t;\n"
        f"#define POLICY_NX {upper}_NX\n#define POLICY_NU {upper}_NU\n"
        f"#define policy_step {name}_policy_step\n#define policy_backup_step {name}_backup_step\n"
        f"#define policy_x_eq {name}_x_eq\n"
    )


def _library(export_dir: Path, name: str, target: str) -> Path:
    library = export_dir / target / f"lib{name}_policy.a"
    if not library.is_file():
        hint = " (export with --target cortex-m4)" if target == "cortex-m4" else ""
        raise build.BuildError(f"{library} is missing{hint}")
    return library


def build_sil(export_dir: Path, name: str, work_dir: Path) -> Path:
    """The host (SIL) firmware: talks frames on stdin/stdout. Returns the executable's path."""
    export_dir, work_dir = Path(export_dir).resolve(), Path(work_dir).resolve()
    write_binding(work_dir, name)
    hil = resource_dir("hil")
    executable = work_dir / "hil_sil"
    command = [
        build.HOST_COMPILER, *RUNNER_FLAGS, f"-DBOARD_ID={HOST_BOARD_ID}", f"-I{hil / 'board'}",
        f"-I{hil / 'firmware'}", f"-I{export_dir}", f"-I{work_dir}", str(hil / "board" / "host" / "board.c"),
        str(hil / "board" / "host" / "uart.c"), str(hil / "firmware" / "hil_main.c"),
        str(_library(export_dir, name, "host")), "-lm", "-o", str(executable),
    ]
    build.run_tool(command, work_dir)
    return executable


def build_qemu(export_dir: Path, name: str, work_dir: Path) -> Path:
    """The mps2-an386 (Cortex-M4F) firmware: frames on UART0. Returns the ELF's path."""
    export_dir, work_dir = Path(export_dir).resolve(), Path(work_dir).resolve()
    write_binding(work_dir, name)
    hil = resource_dir("hil")
    boards = hil / "board"
    elf = work_dir / "hil_mps2_an386.elf"
    command = [
        build.ARM_COMPILER, *build.CORTEX_M4_FLAGS, *RUNNER_FLAGS, *LINK_FLAGS, f"-DBOARD_ID={MPS2_BOARD_ID}",
        f"-I{boards}", f"-I{hil / 'firmware'}", f"-I{export_dir}", f"-I{work_dir}",
        "-T", str(boards / "mps2_an386" / "mps2_an386.ld"), str(boards / "mps2_an386" / "board.c"),
        str(boards / "mps2_an386" / "uart.c"), str(hil / "firmware" / "hil_main.c"),
        str(_library(export_dir, name, "cortex-m4")), "-lm", "-o", str(elf),
    ]
    build.run_tool(command, work_dir)
    return elf
