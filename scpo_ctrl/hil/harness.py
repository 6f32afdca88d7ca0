"""The host side of the lockstep link: handshake, one exchange per control step, counters.

One :class:`Session` talks to one target over a transport (:mod:`.transports`), through the
fault injector (:mod:`.faults`), in the frame format of :mod:`.protocol`.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np

from . import protocol
from .faults import FaultInjector
from .transports import LinkError

MAX_REPEATS = 8


@dataclass(frozen=True)
class Hello:
    """The target's answer to CONFIG: its dimensions, board, clock and instruction calibration."""

    nx: int
    nu: int
    real_bytes: int
    board: int
    clock_hz: int
    calibration_instructions: int
    calibration_ticks: int
    watchdog_us: int

    @property
    def instructions_per_tick(self) -> float | None:
        """Instructions per clock tick (meaningful on QEMU -icount only; None on the host)."""
        if self.board != protocol.load_protocol().BOARD_MPS2_AN386 or self.calibration_ticks == 0:
            return None
        return self.calibration_instructions / self.calibration_ticks


@dataclass(frozen=True)
class Reply:
    """One CONTROL frame as accepted by the harness.

    Attributes
    ----------
    seq : int
    u : ndarray, shape (nu,)
        The command [input units], float32 values.
    branch, reason, status : int
    compute_ticks : int
        Target clock ticks of the step (or of the backup, for a watchdog reply).
    bad_frames : int
        The target's running count of rejected frames.
    round_trip_s : float
        From the moment the harness meant to send the STATE frame to the accepted reply [s].
    repeats : int
        REPEAT requests this step needed.
    host_turnaround_s : float
        From the previous accepted answer (CONTROL or HELLO) to this STATE frame's send time [s]: the
        harness's own work between steps, which counts against the target's watchdog.
    """

    seq: int
    u: np.ndarray
    branch: int
    reason: int
    status: int
    compute_ticks: int
    bad_frames: int
    round_trip_s: float
    repeats: int
    host_turnaround_s: float


class Session:
    """A lockstep session with a target.

    Parameters
    ----------
    transport
        Any transport of :mod:`.transports`.
    nx, nu : int
    injector : FaultInjector
    reply_timeout : float
        Seconds to wait for a reply before asking for a repeat (must exceed the watchdog).
    """

    def __init__(self, transport, nx: int, nu: int, injector: FaultInjector, reply_timeout: float):
        self.transport, self.nx, self.nu = transport, nx, nu
        self.injector, self.reply_timeout = injector, reply_timeout
        self.wire = protocol.FrameReader()     # framing of what the target really sent
        self.reader = protocol.FrameReader()   # the harness's parser, after the downlink faults
        self.counts = {"stale_replies": 0, "unexpected_frames": 0, "reply_length_errors": 0,
                       "corrupted_frames_accepted": 0, "repeats_sent": 0}
        self.watchdog_s = 0.0
        self._control_seq = 0
        self._last_answer = time.perf_counter()

    # -- handshake and statistics (not faulted) ----------------------------------------------------
    def configure(self, watchdog_s: float, timeout: float = 30.0) -> Hello:
        """Send CONFIG (resets the target's sequence and counters, disarms its watchdog); return HELLO."""
        self.watchdog_s = watchdog_s
        payload = protocol.pack_payload("CONFIG", {"watchdog_us": int(round(watchdog_s * 1e6))}, self.nx, self.nu)
        self._control_seq += 1
        frame = self._request(protocol.encode("CONFIG", self._control_seq, payload), "HELLO", timeout)
        self._last_answer = time.perf_counter()
        return Hello(**protocol.unpack_payload("HELLO", frame.payload, self.nx, self.nu))

    def stats(self, timeout: float = 30.0) -> dict:
        """The target's counters since the last CONFIG (STATS frame); disarms its watchdog."""
        payload = protocol.pack_payload("STATS_REQUEST", {"reserved": 0}, self.nx, self.nu)
        self._control_seq += 1
        frame = self._request(protocol.encode("STATS_REQUEST", self._control_seq, payload), "STATS", timeout)
        return protocol.unpack_payload("STATS", frame.payload, self.nx, self.nu)

    def _request(self, frame: bytes, kind: str, timeout: float):
        self.transport.write(frame)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for answer in self.wire.feed(self.transport.read(min(0.5, deadline - time.monotonic()))):
                if answer.kind == kind and answer.seq == self._control_seq:
                    return answer
                self.counts["stale_replies" if answer.kind == "CONTROL" else "unexpected_frames"] += 1
        raise LinkError(f"no {kind} frame from the target within {timeout:.0f} s")

    # -- one control step ----------------------------------------------------------------------
    def step(self, seq: int, x: np.ndarray) -> tuple:
        """Send state ``x (nx,)`` (float32 on the wire) as frame ``seq``; return ``(Reply, uplink_fault)``.

        ``uplink_fault`` is ``"lost"`` (the STATE frame was dropped or corrupted: the target cannot have
        used it), ``"delayed"`` (intact but late) or ``""``.

        Never returns a frame the parser rejected; a rejected or lost reply is asked for again (REPEAT).
        """
        payload = protocol.pack_payload("STATE", {"x": [float(v) for v in np.asarray(x, np.float32)]},
                                        self.nx, self.nu)
        start = time.perf_counter()
        turnaround = start - self._last_answer
        out, delay = self.injector.uplink(protocol.encode("STATE", seq, payload))
        lost = out is None or out != protocol.encode("STATE", seq, payload)
        fault = "lost" if lost else ("delayed" if delay else "")
        if delay:
            time.sleep(1.5 * self.watchdog_s if delay < 0 else delay)
        if out is not None:
            self.transport.write(out)
        repeats = 0
        deadline = time.monotonic() + self.reply_timeout
        while True:
            remaining = deadline - time.monotonic()
            data = self.transport.read(remaining) if remaining > 0 else b""
            if not data and time.monotonic() >= deadline:
                repeats = self._repeat(seq, repeats)
                deadline = time.monotonic() + self.reply_timeout
                continue
            reply, need_repeat = self._accept(data, seq, start, repeats, turnaround)
            if reply is not None:
                self._last_answer = time.perf_counter()
                return reply, fault
            if need_repeat:
                repeats = self._repeat(seq, repeats)
                deadline = time.monotonic() + self.reply_timeout

    def _repeat(self, seq: int, repeats: int) -> int:
        if repeats >= MAX_REPEATS:
            raise LinkError(f"no valid reply to frame {seq} after {MAX_REPEATS} repeat requests")
        payload = protocol.pack_payload("REPEAT", {"reserved": 0}, self.nx, self.nu)
        self.transport.write(protocol.encode("REPEAT", seq, payload))
        self.counts["repeats_sent"] += 1
        return repeats + 1

    def _accept(self, data: bytes, seq: int, start: float, repeats: int, turnaround: float) -> tuple:
        need_repeat = False
        for frame in self.wire.feed(data):
            if frame.kind != "CONTROL":
                self.counts["unexpected_frames"] += 1
                continue
            original = protocol.encode(frame.kind, frame.seq, frame.payload)
            seen = self.injector.downlink(original)
            if seen is None:
                need_repeat = True
                continue
            rejected_before = self.reader.rejected
            accepted = self.reader.feed(seen)
            self.reader.discarded_bytes += len(self.reader.buffer)
            self.reader.buffer.clear()  # the frame's bytes end here: a corrupted length cannot wait for more
            if seen != original and accepted:
                self.counts["corrupted_frames_accepted"] += 1
            if not accepted or self.reader.rejected != rejected_before:
                need_repeat = True
            for good in accepted:
                if good.seq < seq:
                    self.counts["stale_replies"] += 1
                    continue
                if good.seq > seq:
                    raise LinkError(f"the target answered frame {good.seq} while the harness is at {seq}")
                try:
                    fields = protocol.unpack_payload("CONTROL", good.payload, self.nx, self.nu)
                except struct.error:
                    self.counts["reply_length_errors"] += 1
                    need_repeat = True
                    continue
                return Reply(seq=good.seq, u=np.asarray(fields["u"], dtype=float), branch=fields["branch"],
                             reason=fields["reason"], status=fields["status"],
                             compute_ticks=fields["compute_ticks"], bad_frames=fields["bad_frames"],
                             round_trip_s=time.perf_counter() - start, repeats=repeats,
                             host_turnaround_s=turnaround), False
        return None, need_repeat
