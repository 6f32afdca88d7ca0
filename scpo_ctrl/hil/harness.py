"""The host side of the lockstep link: handshake, one exchange per control step, counters.

One :class:`Session` talks to one target over a transport (:mod:`.transports`), through the
fault injector (:mod:`.faults`), in the frame format of :mod:`.protocol`.
"""

from __future__ import annotations

import dataclasses
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
    """The target's answer to CONFIG: its dimensions, board, clock, instruction calibration, and the watchdog
    deadline and timing mode (``MODE_SIMULATED`` or ``MODE_REALTIME`` of the protocol) it took."""

    nx: int
    nu: int
    real_bytes: int
    board: int
    clock_hz: int
    calibration_instructions: int
    calibration_ticks: int
    watchdog_us: int
    mode: int

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
        harness's own work between steps, which counts against the target's watchdog in real time only.
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

    The harness's side of the step state machine of ``hil/protocol.md``: per step it sends the STATE
    frame and, in simulated time, the DEADLINE frame that ends the step; it accepts the one CONTROL
    frame of the step and asks again (REPEAT) for a lost or rejected one. Replies of earlier steps
    (repeats served twice) are counted and dropped; replies of later steps are kept for their step.
    Nothing the target sends out of turn ends the session.

    Parameters
    ----------
    transport
        Any transport of :mod:`.transports`.
    nx, nu : int
    injector : FaultInjector
    reply_timeout : float
        Seconds to wait for a reply before asking again (in real time it must exceed the watchdog; in
        simulated time it only guards against a stalled target).
    """

    def __init__(self, transport, nx: int, nu: int, injector: FaultInjector, reply_timeout: float):
        self.transport, self.nx, self.nu = transport, nx, nu
        self.injector, self.reply_timeout = injector, reply_timeout
        self.wire = protocol.FrameReader()     # framing of what the target really sent
        self.reader = protocol.FrameReader()   # the harness's parser, after the downlink faults
        self.counts = {"stale_replies": 0, "unexpected_frames": 0, "reply_length_errors": 0,
                       "corrupted_frames_accepted": 0, "repeats_sent": 0, "replies_ahead": 0,
                       "deadline_frames_sent": 0, "reply_timeouts": 0}
        self.watchdog_s = 0.0
        self.realtime = False
        self._control_seq = 0
        self._filed = {}  # seq -> Reply: accepted answers of this step or later ones, until their step takes them
        self._unread = []  # frames parsed after the one a request waited for, in order
        self._last_answer = time.perf_counter()

    # -- handshake and statistics (not faulted) ----------------------------------------------------
    def configure(self, watchdog_s: float, realtime: bool = False, timeout: float = 30.0) -> Hello:
        """Send CONFIG (resets the target's sequence and counters); return HELLO.

        ``realtime``: the target's watchdog runs on its clock (``watchdog_s`` after its last answer);
        otherwise the run is on simulated time and each step's deadline is a DEADLINE frame.
        """
        p = protocol.load_protocol()
        self.watchdog_s, self.realtime = watchdog_s, realtime
        mode = p.MODE_REALTIME if realtime else p.MODE_SIMULATED
        payload = protocol.pack_payload("CONFIG", {"watchdog_us": int(round(watchdog_s * 1e6)), "mode": mode},
                                        self.nx, self.nu)
        self._control_seq += 1
        frame = self._request(protocol.encode("CONFIG", self._control_seq, payload), "HELLO", timeout)
        self._filed.clear()
        self._last_answer = time.perf_counter()
        return Hello(**protocol.unpack_payload("HELLO", frame.payload, self.nx, self.nu))

    def stats(self, timeout: float = 30.0) -> dict:
        """The target's counters since the last CONFIG (STATS frame); disarms its watchdog."""
        payload = protocol.pack_payload("STATS_REQUEST", {"reserved": 0}, self.nx, self.nu)
        self._control_seq += 1
        frame = self._request(protocol.encode("STATS_REQUEST", self._control_seq, payload), "STATS", timeout)
        return protocol.unpack_payload("STATS", frame.payload, self.nx, self.nu)

    def _request(self, frame: bytes, kind: str, timeout: float):
        """Send a control frame; return the answer of ``kind``. Frames before it belong to what came before
        (counted, dropped); frames after it are kept for the next step (the target may answer at once)."""
        self.transport.write(frame)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames = self._frames(self.transport.read(min(0.5, deadline - time.monotonic())))
            for i, answer in enumerate(frames):
                if answer.kind == kind and answer.seq == self._control_seq:
                    self._unread = frames[i + 1:]
                    return answer
                self.counts["stale_replies" if answer.kind == "CONTROL" else "unexpected_frames"] += 1
        raise LinkError(f"no {kind} frame from the target within {timeout:.0f} s")

    def _frames(self, data: bytes) -> list:
        """The frames parsed and not yet used, then those complete with ``data``."""
        frames, self._unread = self._unread + self.wire.feed(data), []
        return frames

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
        sent = protocol.encode("STATE", seq, payload)
        out, delay = self.injector.uplink(sent)
        lost = out is None or out != sent
        fault = "lost" if lost else ("delayed" if delay else "")
        delay_s = 1.5 * self.watchdog_s if delay < 0 else delay
        if self.realtime:
            self._send_realtime(out, delay_s)
        else:
            self._send_simulated(seq, out, delay_s)
        reply = self._await_reply(seq, start, turnaround)
        self._last_answer = time.perf_counter()
        return reply, fault

    def _send_realtime(self, out: bytes | None, delay_s: float) -> None:
        """Real time: a delayed frame leaves ``delay_s`` late; the target's clock decides if it was in time."""
        if delay_s:
            time.sleep(delay_s)
        if out is not None:
            self.transport.write(out)

    def _send_simulated(self, seq: int, out: bytes | None, delay_s: float) -> None:
        """Simulated time: the step's deadline is a frame, ordered after the STATE frame if that arrives in
        time and before it if it is ``delay_s >= watchdog`` late (then the target answers with its watchdog
        and counts the frame as late). No wall-clock wait: the host's own speed cannot matter."""
        late = bool(delay_s) and delay_s >= self.watchdog_s
        if out is not None and not late:
            self.transport.write(out)
        self._send_deadline(seq)
        if out is not None and late:
            self.transport.write(out)

    def _send_deadline(self, seq: int) -> None:
        payload = protocol.pack_payload("DEADLINE", {"reserved": 0}, self.nx, self.nu)
        self.transport.write(protocol.encode("DEADLINE", seq, payload))
        self.counts["deadline_frames_sent"] += 1

    def _await_reply(self, seq: int, start: float, turnaround: float) -> Reply:
        repeats = 0
        deadline = time.monotonic() + self.reply_timeout
        while seq not in self._filed:
            remaining = deadline - time.monotonic()
            data = b"" if self._unread else self.transport.read(remaining) if remaining > 0 else b""
            if not data and not self._unread and time.monotonic() >= deadline:
                self.counts["reply_timeouts"] += 1
                if not self.realtime:
                    self._send_deadline(seq)  # in case the first one was lost in a garbled frame's bytes
                repeats = self._repeat(seq, repeats)
                deadline = time.monotonic() + self.reply_timeout
                continue
            if self._accept(data, seq):
                repeats = self._repeat(seq, repeats)
                deadline = time.monotonic() + self.reply_timeout
        reply = self._filed.pop(seq)
        # a reply filed while the harness was still on an earlier step came before this step began
        return dataclasses.replace(reply, repeats=repeats, round_trip_s=max(reply.round_trip_s - start, 0.0),
                                   host_turnaround_s=turnaround)

    def _repeat(self, seq: int, repeats: int) -> int:
        if repeats >= MAX_REPEATS:
            raise LinkError(f"no valid reply to frame {seq} after {MAX_REPEATS} repeat requests")
        payload = protocol.pack_payload("REPEAT", {"reserved": 0}, self.nx, self.nu)
        self.transport.write(protocol.encode("REPEAT", seq, payload))
        self.counts["repeats_sent"] += 1
        return repeats + 1

    def _accept(self, data: bytes, seq: int) -> bool:
        """Parse ``data``; file every accepted CONTROL frame of step ``>= seq``; True if step ``seq``'s
        reply was lost or rejected (ask again)."""
        need_repeat = False
        for frame in self._frames(data):
            if frame.kind != "CONTROL":
                self.counts["unexpected_frames"] += 1
                continue
            original = protocol.encode(frame.kind, frame.seq, frame.payload)
            seen = self.injector.downlink(original)
            if seen is None:
                need_repeat = need_repeat or frame.seq == seq
                continue
            rejected_before = self.reader.rejected
            accepted = self.reader.feed(seen)
            self.reader.discarded_bytes += len(self.reader.buffer)
            self.reader.buffer.clear()  # the frame's bytes end here: a corrupted length cannot wait for more
            if seen != original and accepted:
                self.counts["corrupted_frames_accepted"] += 1
            if not accepted or self.reader.rejected != rejected_before:
                need_repeat = need_repeat or frame.seq == seq
            for good in accepted:
                need_repeat = self._file(good, seq) or need_repeat
        return need_repeat and seq not in self._filed

    def _file(self, good, seq: int) -> bool:
        """Keep one accepted CONTROL frame for its step (``round_trip_s`` holding its arrival time until the
        step takes it); True if it was step ``seq``'s and unreadable."""
        if good.seq < seq or good.seq in self._filed:
            self.counts["stale_replies"] += 1  # a repeat served twice, or an earlier step's
            return False
        try:
            fields = protocol.unpack_payload("CONTROL", good.payload, self.nx, self.nu)
        except struct.error:
            self.counts["reply_length_errors"] += 1
            return good.seq == seq
        if good.seq > seq:
            self.counts["replies_ahead"] += 1
        self._filed[good.seq] = Reply(seq=good.seq, u=np.asarray(fields["u"], dtype=float),
                                      branch=fields["branch"], reason=fields["reason"], status=fields["status"],
                                      compute_ticks=fields["compute_ticks"], bad_frames=fields["bad_frames"],
                                      round_trip_s=time.perf_counter(), repeats=0,
                                      host_turnaround_s=0.0)
        return False
