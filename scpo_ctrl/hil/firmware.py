"""Build the HIL firmware (``hil/firmware/hil_main.c``) against an export: host SIL and Cortex-M4F (QEMU).

Both builds link the export's static library of the generated bundle (``export/host/lib<name>_policy.a``
or ``export/cortex-m4/lib<name>_policy.a``) with the same ``hil_main.c``; only the board files differ.
Flags come from :mod:`scpo_ctrl.export.build` and :mod:`scpo_ctrl.export.firmware`.
"""

from __future__ import annotations

from pathlib import Path

from ..backup.acados_env import find_acados
from ..export import build
from ..export.firmware import LINK_FLAGS, RUNNER_FLAGS
from ..resources import resource_dir

HOST_BOARD_ID, MPS2_BOARD_ID = "HIL_BOARD_HOST", "HIL_BOARD_MPS2_AN386"


def write_binding(work_dir: Path, name: str, mpc_u_init=None) -> None:
    """``policy_binding.h``: the firmware's generic names mapped onto the plant's symbols.

    ``mpc_u_init (nu,)``: for an MPC-backed law, the cold plan's input; ``policy_step``,
    ``policy_backup_step`` and ``policy_reset`` are then ``hil/firmware/mpc_policy.c``'s.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    upper = name.upper()
    common = (f'#include "{name}_policy.h"\n'
              f"typedef {name}_real_t policy_real_t;\ntypedef {name}_info_t policy_info_t;\n"
              f"#define POLICY_NX {upper}_NX\n#define POLICY_NU {upper}_NU\n#define policy_x_eq {name}_x_eq\n")
    if mpc_u_init is None:
        specific = (f"#define policy_step {name}_policy_step\n#define policy_backup_step {name}_backup_step\n"
                    "#define policy_reset() ((void)0)\n")
    else:
        values = ", ".join(repr(float(v)) for v in mpc_u_init)
        specific = (f"#define policy_law_step {name}_policy_step\n#define policy_law_backup_step {name}_backup_step\n"
                    f"#define POLICY_MPC_U_INIT {{ {values} }}\n"
                    "int32_t policy_step(const policy_real_t x[POLICY_NX], policy_real_t u[POLICY_NU], "
                    "policy_info_t *info);\n"
                    "void policy_backup_step(const policy_real_t x[POLICY_NX], policy_real_t u[POLICY_NU]);\n"
                    "void policy_reset(void);\n")
    (work_dir / "policy_binding.h").write_text(common + specific)


def _library(export_dir: Path, name: str, target: str) -> Path:
    library = export_dir / target / f"lib{name}_policy.a"
    if not library.is_file():
        hint = " (export with --target cortex-m4)" if target == "cortex-m4" else ""
        raise build.BuildError(f"{library} is missing{hint}")
    return library


def build_sil(export_dir: Path, name: str, work_dir: Path, mpc_u_init=None) -> Path:
    """The host (SIL) firmware: talks frames on stdin/stdout. Returns the executable's path.

    ``mpc_u_init``: for an MPC-backed export, the cold plan's input; the firmware then links
    ``hil/firmware/mpc_policy.c`` and the export's ``host/lib<name>_mpc.so`` (the acados controller).
    """
    export_dir, work_dir = Path(export_dir).resolve(), Path(work_dir).resolve()
    write_binding(work_dir, name, mpc_u_init)
    hil = resource_dir("hil")
    executable = work_dir / "hil_sil"
    mpc = []
    if mpc_u_init is not None:
        host = export_dir / "host"
        if not (host / f"lib{name}_mpc.so").is_file():
            raise build.BuildError(f"{host / f'lib{name}_mpc.so'} is missing (export the MPC-backed run again)")
        mpc = [f"-I{export_dir / 'mpc'}", str(hil / "firmware" / "mpc_policy.c"), f"-L{host}", f"-l{name}_mpc",
               f"-Wl,-rpath,{host}"]
        if not (export_dir / "mpc" / "empc_data.h").is_file():  # acados' controller (not the embedded MPC's)
            acados_libraries = find_acados().lib_dir
            mpc += [f"-Wl,-rpath-link,{acados_libraries}", f"-Wl,-rpath,{acados_libraries}"]
    command = [
        build.HOST_COMPILER, *RUNNER_FLAGS, f"-DBOARD_ID={HOST_BOARD_ID}", f"-I{hil / 'board'}",
        f"-I{hil / 'firmware'}", f"-I{export_dir}", f"-I{work_dir}", str(hil / "board" / "host" / "board.c"),
        str(hil / "board" / "host" / "uart.c"), str(hil / "firmware" / "hil_main.c"), *mpc,
        str(_library(export_dir, name, "host")), "-lm", "-o", str(executable),
    ]
    build.run_tool(command, work_dir)
    return executable


def build_qemu(export_dir: Path, name: str, work_dir: Path, mpc_u_init=None) -> Path:
    """The mps2-an386 (Cortex-M4F) firmware: frames on UART0. Returns the ELF's path.

    ``mpc_u_init``: a law on the embedded MPC, whose ``policy_step``, ``policy_backup_step`` and ``policy_reset``
    the export's ``cortex-m4/lib<name>_policy.a`` provides (``hil/firmware/empc_policy.c``)."""
    export_dir, work_dir = Path(export_dir).resolve(), Path(work_dir).resolve()
    write_binding(work_dir, name, mpc_u_init)
    hil = resource_dir("hil")
    boards = hil / "board"
    elf = work_dir / "hil_mps2_an386.elf"
    command = [
        build.ARM_COMPILER, *build.CORTEX_M4_FLAGS, *RUNNER_FLAGS, *LINK_FLAGS, f"-DBOARD_ID={MPS2_BOARD_ID}",
        # cortex-m4/ first: an MPC-backed export keeps its LQR-fallback header there
        f"-I{boards}", f"-I{hil / 'firmware'}", f"-I{export_dir / 'cortex-m4'}", f"-I{export_dir}", f"-I{work_dir}",
        "-T", str(boards / "mps2_an386" / "mps2_an386.ld"), str(boards / "mps2_an386" / "board.c"),
        str(boards / "mps2_an386" / "uart.c"), str(hil / "firmware" / "hil_main.c"),
        str(_library(export_dir, name, "cortex-m4")), "-lm", "-o", str(elf),
    ]
    build.run_tool(command, work_dir)
    return elf
