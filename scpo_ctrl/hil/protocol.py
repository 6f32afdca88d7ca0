"""The HIL frame protocol, read from its one source ``hil/firmware/hil_protocol.h``.

The header's ``#define HIL_<NAME> <integer>`` constants and its ``F(name, type, count)``
payload lists are parsed here, so the Python side cannot drift from the C firmware.
Frame: ``sync0 sync1 | version u8 | type u8 | seq u32 | length u16 | payload | crc u16``,
little-endian, CRC-16/CCITT-FALSE over version .. payload.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..resources import resource_dir

TYPE_CODES = {"u8": "B", "u16": "H", "u32": "I", "f32": "f"}


@dataclass(frozen=True)
class Protocol:
    """Constants and payload layouts of the header.

    Attributes
    ----------
    constants : dict
        ``{"SYNC0": 0xA5, ...}`` (the ``HIL_`` prefix removed).
    layouts : dict
        ``{"CONTROL": (("u", "f32", "NU"), ...)}``: per frame type, its fields in order.
    """

    constants: dict
    layouts: dict

    def __getattr__(self, name: str):
        constants = self.__dict__.get("constants", {})
        if name in constants:
            return constants[name]
        raise AttributeError(name)

    def type_name(self, code: int) -> str:
        for key, value in self.constants.items():
            if key.startswith("TYPE_") and value == code:
                return key[5:]
        return f"unknown({code})"


@lru_cache(maxsize=None)
def load_protocol(path: str | None = None) -> Protocol:
    """Parse ``hil_protocol.h`` (default: the package's ``hil/firmware/hil_protocol.h``)."""
    header = Path(path) if path else resource_dir("hil") / "firmware" / "hil_protocol.h"
    text = header.read_text()
    constants = {m.group(1): int(m.group(2), 0)
                 for m in re.finditer(r"^#define HIL_(\w+)\s+(0x[0-9A-Fa-f]+|\d+)u?\b", text, re.M)}
    joined = text.replace("\\\n", " ")
    layouts = {}
    for m in re.finditer(r"^#define HIL_(\w+)_FIELDS\(F\)(.*)$", joined, re.M):
        layouts[m.group(1)] = tuple(re.findall(r"F\((\w+),\s*(\w+),\s*(\w+)\)", m.group(2)))
    return Protocol(constants=constants, layouts=layouts)


def crc16(data: bytes, init: int | None = None, poly: int | None = None) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value of b"123456789": 0x29B1)."""
    p = load_protocol()
    crc = p.CRC_INIT if init is None else init
    poly = p.CRC_POLY if poly is None else poly
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def payload_format(kind: str, nx: int, nu: int) -> str:
    """``struct`` format (little-endian) of the payload of frame type ``kind`` (e.g. ``"CONTROL"``)."""
    parts = []
    for _, type_name, count in load_protocol().layouts[kind]:
        n = {"NX": nx, "NU": nu}.get(count)
        n = int(count) if n is None else n
        parts.append(f"{n}{TYPE_CODES[type_name]}")
    return "<" + "".join(parts)


def pack_payload(kind: str, values: dict, nx: int, nu: int) -> bytes:
    """Payload bytes from ``{field: value or sequence}`` (every field of the layout is required)."""
    flat = []
    for name, _, count in load_protocol().layouts[kind]:
        value = values[name]
        if count in ("NX", "NU") or int(count) > 1:
            flat.extend(value)
        else:
            flat.append(value)
    return struct.pack(payload_format(kind, nx, nu), *flat)


def unpack_payload(kind: str, payload: bytes, nx: int, nu: int) -> dict:
    """``{field: value}`` (tuples for the NX/NU/array fields); raises ``struct.error`` on a wrong length."""
    flat = list(struct.unpack(payload_format(kind, nx, nu), payload))
    out = {}
    for name, _, count in load_protocol().layouts[kind]:
        n = {"NX": nx, "NU": nu}.get(count)
        if n is not None or int(count) > 1:
            n = int(count) if n is None else n
            out[name], flat = tuple(flat[:n]), flat[n:]
        else:
            out[name] = flat.pop(0)
    return out


def encode(kind: str, seq: int, payload: bytes) -> bytes:
    """One frame of type ``kind`` with sequence number ``seq`` (mod 2^32)."""
    p = load_protocol()
    if len(payload) > p.MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {p.MAX_PAYLOAD}")
    body = struct.pack("<BBIH", p.VERSION, p.constants[f"TYPE_{kind}"], seq & 0xFFFFFFFF, len(payload)) + payload
    return bytes((p.SYNC0, p.SYNC1)) + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True)
class Frame:
    """A frame that passed the sync, version, type, length and CRC checks."""

    kind: str
    seq: int
    payload: bytes


@dataclass
class FrameReader:
    """Incremental parser: feed bytes, collect valid frames; counts what it rejects.

    A frame is rejected for a bad version or unknown type (``header_errors``), a length above
    ``MAX_PAYLOAD`` (``length_errors``) or a CRC mismatch (``crc_errors``); bytes skipped while
    hunting for the sync pair are ``discarded_bytes``. After a rejection the parser restarts one
    byte after the rejected frame's sync, so a corrupted length cannot swallow the next frame.
    Sequence checks belong to the caller (it knows which ``seq`` it expects).
    """

    buffer: bytearray = field(default_factory=bytearray)
    crc_errors: int = 0
    length_errors: int = 0
    header_errors: int = 0
    discarded_bytes: int = 0

    def feed(self, data: bytes) -> list:
        """Append ``data``; return the valid frames now complete, in order."""
        p = load_protocol()
        self.buffer.extend(data)
        frames = []
        while True:
            start = self._find_sync(p)
            if start < 0 or len(self.buffer) < p.HEADER_BYTES:
                return frames
            version, type_code, seq, length = struct.unpack_from("<BBIH", self.buffer, 2)
            known = any(k.startswith("TYPE_") and v == type_code for k, v in p.constants.items())
            if version != p.VERSION or not known:
                self.header_errors += 1
                self._skip(1)
                continue
            if length > p.MAX_PAYLOAD:
                self.length_errors += 1
                self._skip(1)
                continue
            total = p.HEADER_BYTES + length + p.CRC_BYTES
            if len(self.buffer) < total:
                return frames
            body = bytes(self.buffer[2:p.HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<H", self.buffer, p.HEADER_BYTES + length)
            if crc != crc16(body):
                self.crc_errors += 1
                self._skip(1)
                continue
            frames.append(Frame(p.type_name(type_code), seq, body[p.HEADER_BYTES - 2:]))
            del self.buffer[:total]

    def _find_sync(self, p: Protocol) -> int:
        while len(self.buffer) >= 2:
            if self.buffer[0] == p.SYNC0 and self.buffer[1] == p.SYNC1:
                return 0
            del self.buffer[:1]
            self.discarded_bytes += 1
        return -1

    def _skip(self, count: int) -> None:
        del self.buffer[:count]
        self.discarded_bytes += count

    @property
    def rejected(self) -> int:
        return self.crc_errors + self.length_errors + self.header_errors
