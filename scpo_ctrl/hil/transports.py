"""Byte links to a HIL target: a subprocess pipe (SIL), TCP (QEMU's UART), a serial port (pyserial).

Every transport offers ``write(data)``, ``read(timeout) -> bytes`` (``b""`` when nothing came
within ``timeout`` seconds) and ``close()``. They move bytes only; framing is :mod:`.protocol`'s.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import ScpoError


class LinkError(ScpoError):
    """The link to the target failed (closed, refused, or the target exited)."""


class PipeTransport:
    """The SIL firmware as a child process; frames on its stdin/stdout.

    Parameters
    ----------
    command : list of str
        The executable and its arguments.
    stdin, stdout : int or None
        File descriptors to give the child instead of pipes (e.g. a pseudo-terminal's side); then
        the transport itself neither reads nor writes (another transport does).
    """

    def __init__(self, command: list, stdin: int | None = None, stdout: int | None = None):
        # stderr goes to a file, never a pipe nobody reads: a chatty firmware must not block on it
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [str(c) for c in command], stdin=subprocess.PIPE if stdin is None else stdin,
            stdout=subprocess.PIPE if stdout is None else stdout, stderr=self._stderr, bufsize=0,
        )

    def write(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)
        except (BrokenPipeError, OSError) as exc:
            raise LinkError(f"the SIL firmware closed its input ({exc}); {self._exit_note()}") from None

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.process.stdout], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        data = os.read(self.process.stdout.fileno(), 4096)
        if not data:
            raise LinkError(f"the SIL firmware closed its output; {self._exit_note()}")
        return data

    def _exit_note(self) -> str:
        code = self.process.poll()
        note = "it is still running" if code is None else f"it exited with code {code}"
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 500))
            tail = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            tail = ""
        return f"{note}; its stderr ends: {tail}" if tail else note

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


class TcpTransport:
    """A TCP client (QEMU's ``-serial tcp:...,server`` UART), ``TCP_NODELAY`` set."""

    def __init__(self, host: str, port: int, connect_timeout: float = 10.0):
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.socket = socket.create_connection((host, port), timeout=1.0)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LinkError(f"cannot connect to {host}:{port}: {exc}") from None
                time.sleep(0.05)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.settimeout(None)

    def write(self, data: bytes) -> None:
        try:
            self.socket.sendall(data)
        except OSError as exc:
            raise LinkError(f"TCP link failed: {exc}") from None

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.socket], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        data = self.socket.recv(4096)
        if not data:
            raise LinkError("the target closed the TCP link")
        return data

    def close(self) -> None:
        self.socket.close()


class SerialTransport:
    """A serial port through pyserial: a real board (``/dev/ttyACM0``) or a pseudo-terminal."""

    def __init__(self, port: str, baudrate: int = 115200):
        try:
            import serial
        except ImportError:  # pragma: no cover - pyserial is a dependency
            raise LinkError("the serial transport needs pyserial (pip install pyserial)") from None
        if not Path(port).exists() and not port.startswith(("COM", "socket://", "loop://")):
            raise LinkError(f"serial port {port} does not exist")
        try:
            self.port = serial.Serial(port, baudrate=baudrate, timeout=0, write_timeout=5)
        except serial.SerialException as exc:
            raise LinkError(f"cannot open serial port {port}: {exc}") from None
        self._serial = serial

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except self._serial.SerialException as exc:
            raise LinkError(f"serial link failed: {exc}") from None

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            waiting = self.port.in_waiting
            if waiting:
                return self.port.read(waiting)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b""
            # pyserial's blocking read with a timeout returns as soon as one byte is there
            self.port.timeout = remaining
            data = self.port.read(1)
            self.port.timeout = 0
            if data:
                return data + self.port.read(self.port.in_waiting)
            return b""

    def close(self) -> None:
        self.port.close()
