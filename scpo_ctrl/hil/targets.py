"""Start a HIL target and open its link: ``sil`` (host process, pipe), ``qemu`` (mps2-an386, UART over
TCP), ``serial:PORT`` (a board already running the firmware, through pyserial)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..export import build
from ..export.firmware import BOARD, QEMU
from . import firmware
from .transports import PipeTransport, SerialTransport, TcpTransport


@dataclass(frozen=True)
class TargetSpec:
    """``kind`` in {sil, qemu, serial}; ``port`` the serial device for ``serial``."""

    kind: str
    port: str | None = None

    @property
    def label(self) -> str:
        return self.kind


def parse_target(text: str) -> TargetSpec:
    if text in ("sil", "qemu"):
        return TargetSpec(text)
    if text.startswith("serial:") and len(text) > len("serial:"):
        return TargetSpec("serial", text[len("serial:"):])
    raise UsageError(f"--target must be sil, qemu or serial:PORT, not {text!r}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def open_target(target: TargetSpec, export_dir: Path, name: str, work_dir: Path, mpc_u_init=None):
    """Build (sil, qemu) and start the target; yield ``(transport, description)``; stop it afterwards.

    ``mpc_u_init``: an MPC-backed export (SIL only), see :func:`.firmware.build_sil`.
    """
    if target.kind == "sil":
        executable = firmware.build_sil(export_dir, name, work_dir, mpc_u_init)
        transport = PipeTransport([executable])
        try:
            yield transport, f"host SIL process {executable.name} over a pipe"
        finally:
            transport.close()
    elif target.kind == "qemu":
        for tool in (QEMU, build.ARM_COMPILER):
            if not build.tool_available(tool):
                raise UsageError(f"--target qemu needs {tool} (run scripts/install-debian-packages.sh)")
        elf = firmware.build_qemu(export_dir, name, work_dir, mpc_u_init)
        port = free_port()
        command = [QEMU, "-M", BOARD, "-nographic", "-monitor", "none",
                   "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on",
                   "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            transport = TcpTransport("127.0.0.1", port)
            try:
                yield transport, f"QEMU {BOARD} (Cortex-M4F), UART0 over TCP port {port}, -icount shift=0"
            finally:
                transport.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    else:
        transport = SerialTransport(target.port)
        try:
            yield transport, f"serial port {target.port} (firmware already running on the board)"
        finally:
            transport.close()
