"""Hardware-in-the-loop: the frame protocol, the SIL firmware over a pipe and a pseudo-terminal, faults, QEMU."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from scpo_ctrl.cli import main
from scpo_ctrl.errors import UsageError
from scpo_ctrl.export import build
from scpo_ctrl.export.firmware import qemu_available
from scpo_ctrl.export.run import ExportRequest, run_export
from scpo_ctrl.hil import protocol
from scpo_ctrl.hil.faults import FaultInjector, FaultSpec, parse_faults
from scpo_ctrl.hil.firmware import build_sil
from scpo_ctrl.hil.harness import Session
from scpo_ctrl.hil.run import HilRequest, run_hil
from scpo_ctrl.hil.transports import PipeTransport, SerialTransport
from scpo_ctrl.resources import resource_dir

NX, NU = 2, 1


# ---- protocol -----------------------------------------------------------------------------------

def test_crc16_check_value():
    assert protocol.crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue check value


def test_protocol_is_parsed_from_the_c_header():
    p = protocol.load_protocol()
    text = (resource_dir("hil") / "firmware" / "hil_protocol.h").read_text()
    assert f"#define HIL_SYNC0 0x{p.SYNC0:02X}u" in text and f"#define HIL_VERSION {p.VERSION}u" in text
    assert [f[0] for f in p.layouts["CONTROL"]] == ["u", "branch", "reason", "status", "reserved",
                                                  "compute_ticks", "bad_frames"]
    assert struct.calcsize(protocol.payload_format("CONTROL", NX, 3)) == 3 * 4 + 4 + 4 + 4
    assert "hil_protocol.h" in (resource_dir("hil") / "protocol.md").read_text()


def _state(seq: int, x=(0.5, -0.25)) -> bytes:
    return protocol.encode("STATE", seq, protocol.pack_payload("STATE", {"x": x}, NX, NU))


def test_round_trip_every_type():
    values = {"CONFIG": {"watchdog_us": 50_000, "mode": 1}, "STATE": {"x": (1.5, -2.0)},
              "CONTROL": {"u": (0.25,), "branch": 2, "reason": 0, "status": 1, "reserved": 0,
                          "compute_ticks": 1234, "bad_frames": 7},
              "REPEAT": {"reserved": 0}, "STATS_REQUEST": {"reserved": 0}, "DEADLINE": {"reserved": 0}}
    reader = protocol.FrameReader()
    stream = b"".join(protocol.encode(k, i, protocol.pack_payload(k, v, NX, NU)) for i, (k, v) in enumerate(values.items()))
    frames = reader.feed(stream[:7]) + reader.feed(stream[7:])  # split mid-frame
    assert [f.kind for f in frames] == list(values)
    for frame, (kind, value) in zip(frames, values.items()):
        decoded = protocol.unpack_payload(kind, frame.payload, NX, NU)
        assert {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in decoded.items()} == value
    assert reader.rejected == 0 and reader.discarded_bytes == 0


def test_every_single_byte_corruption_is_rejected_and_the_next_frame_survives():
    frame, good = _state(7), _state(8, (3.0, 4.0))
    for i in range(len(frame)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(frame)
            bad[i] ^= flip
            reader = protocol.FrameReader()
            frames = reader.feed(bytes(bad) + good + good)
            # a corrupted length may swallow bytes of the next frame; the one after that always survives
            assert all(f.seq == 8 for f in frames) and len(frames) >= 1, (i, flip)
            assert reader.rejected + reader.discarded_bytes > 0


def test_short_frame_and_wrong_length_payload():
    reader = protocol.FrameReader()
    frame = _state(1)
    assert reader.feed(frame[:-3]) == []          # short: waits, never yields
    frames = reader.feed(_state(2))                # the truncated frame is skipped (CRC), the next one parsed
    assert [f.seq for f in frames] == [2] and reader.crc_errors == 1
    wrong = protocol.encode("STATE", 3, b"\x00" * 12)  # valid CRC, three floats for a 2-state plant
    (parsed,) = protocol.FrameReader().feed(wrong)
    with pytest.raises(struct.error):
        protocol.unpack_payload("STATE", parsed.payload, NX, NU)


def test_faults_spec_parsing():
    spec = parse_faults("drop=0.05,corrupt=0.1,noise=0.01")
    assert (spec.drop, spec.corrupt, spec.noise, spec.delay) == (0.05, 0.1, 0.01, 0.0)
    for bad in ("drop", "drip=0.1", "drop=x", "drop=0.9", "noise=-1"):
        with pytest.raises(UsageError):
            parse_faults(bad)
    injector = FaultInjector(FaultSpec(corrupt=0.5), seed=3)
    frame = _state(1)
    seen = [injector.downlink(frame) for _ in range(200)]
    assert injector.counts["downlink_corrupted"] == sum(s != frame for s in seen) > 50


# ---- SIL firmware ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hil_run(adapted_runs, tmp_path_factory):
    """A copy of the short double-integrator run, exported (with the Cortex-M4 build when possible)."""
    run = tmp_path_factory.mktemp("hil") / "double_integrator"
    shutil.copytree(adapted_runs["double_integrator"], run, ignore=shutil.ignore_patterns("export", "hil"))
    target = "cortex-m4" if build.tool_available(build.ARM_COMPILER) else "host"
    assert run_export(ExportRequest(run_dir=str(run), target=target)).equivalent
    return run


@pytest.fixture(scope="module")
def sil_binary(hil_run, tmp_path_factory):
    return build_sil(hil_run / "export", "double_integrator", tmp_path_factory.mktemp("sil"))


def test_firmware_counts_bad_frames_and_never_applies_them(sil_binary, hil_run):
    """Drive the SIL firmware by hand in real time: a corrupted, a short and an out-of-order frame are counted,
    not applied; a missing frame gets the watchdog's backup on the last valid state."""
    from scpo_ctrl.export.law import evaluate, law_from_run
    from scpo_ctrl.hil.run import backup_reference

    law = law_from_run(hil_run)
    transport = PipeTransport([sil_binary])
    try:
        session = Session(transport, NX, NU, FaultInjector(FaultSpec(), 0), reply_timeout=2.0)
        hello = session.configure(0.05, realtime=True)
        assert (hello.nx, hello.nu, hello.real_bytes, hello.watchdog_us) == (2, 1, 4, 50_000)
        assert hello.mode == protocol.load_protocol().MODE_REALTIME
        x1 = np.array([1.0, 0.5], dtype=np.float32)
        reply, _ = session.step(1, x1)
        assert reply.status == protocol.load_protocol().STATUS_OK
        assert abs(reply.u[0] - evaluate(law, x1[None].astype(float)).u[0, 0]) < 1e-5
        # step 2: a corrupted frame, a short frame, an out-of-order frame: nothing valid -> watchdog
        corrupted = bytearray(_state(2, (-4.0, 1.9)))
        corrupted[-5] ^= 0x40
        transport.write(bytes(corrupted))
        transport.write(_state(2, (-4.0, 1.9))[:-4])
        transport.write(b"\x00" * 8)  # filler; the parser hunts for the next sync
        transport.write(_state(5, (-4.0, 1.9)))
        reply2 = None
        frames = []
        while not frames:
            frames = session.wire.feed(transport.read(2.0))
        (frame,) = frames
        reply2 = protocol.unpack_payload("CONTROL", frame.payload, NX, NU)
        assert frame.seq == 2 and reply2["status"] == protocol.load_protocol().STATUS_WATCHDOG
        expected, tolerance = backup_reference(law, x1.astype(float))
        assert abs(reply2["u"][0] - expected[0]) <= tolerance[0]
        assert reply2["bad_frames"] >= 3
        stats = session.stats()
        assert stats["crc_errors"] >= 1 and stats["sequence_errors"] == 1 and stats["watchdog_events"] == 1
        assert stats["steps"] == 2
    finally:
        transport.close()


def _frame(kind: str, seq: int) -> bytes:
    return protocol.encode(kind, seq, protocol.pack_payload(kind, {"reserved": 0}, NX, NU))


def _replies(session: Session, transport, count: int, wait: float = 2.0) -> list:
    """The next ``count`` frames the target sends (fewer if it stays quiet for ``wait`` seconds)."""
    frames = []
    while len(frames) < count:
        data = transport.read(wait)
        if not data:
            break
        frames += session.wire.feed(data)
    return frames


def test_simulated_time_the_deadline_is_a_frame(sil_binary):
    """In simulated time the target never answers on its own clock: a step ends with its STATE frame or its
    DEADLINE frame, whichever comes first; a STATE frame after its deadline is counted as late, never applied;
    a repeated STATE frame and the DEADLINE of an answered step change nothing."""
    p = protocol.load_protocol()
    transport = PipeTransport([sil_binary])
    try:
        session = Session(transport, NX, NU, FaultInjector(FaultSpec(), 0), reply_timeout=2.0)
        assert session.configure(0.001).mode == p.MODE_SIMULATED  # a 1 ms deadline that wall time never hits
        assert session.step(1, np.array([1.0, 0.5], np.float32))[0].status == p.STATUS_OK
        assert _replies(session, transport, 1, wait=0.3) == []           # no STATE 2: silence, no watchdog
        transport.write(_frame("DEADLINE", 2))
        transport.write(_frame("DEADLINE", 3) + _state(3))                # step 3's frame after its deadline
        transport.write(_state(4) + _state(4) + _frame("DEADLINE", 4))    # a duplicate, then the deadline
        transport.write(_frame("REPEAT", 4))
        frames = _replies(session, transport, 4)
        fields = [protocol.unpack_payload("CONTROL", f.payload, NX, NU) for f in frames]
        assert [f.seq for f in frames] == [2, 3, 4, 4]
        assert [f["status"] for f in fields] == [p.STATUS_WATCHDOG, p.STATUS_WATCHDOG, p.STATUS_OK, p.STATUS_OK]
        assert frames[2] == frames[3]  # the repeat is the same frame
        stats = session.stats()
        assert (stats["late_frames"], stats["watchdog_events"], stats["sequence_errors"], stats["repeats_served"],
                stats["steps"]) == (1, 2, 1, 1, 4)
    finally:
        transport.close()


def test_realtime_watchdog_answers_a_silent_host_once(sil_binary):
    """In real time the watchdog answers a silent host once, then waits for it: the target never runs ahead of
    the harness; the late STATE frame is counted as late and the next step is timed from it."""
    p = protocol.load_protocol()
    transport = PipeTransport([sil_binary])
    try:
        session = Session(transport, NX, NU, FaultInjector(FaultSpec(), 0), reply_timeout=2.0)
        session.configure(0.01, realtime=True)
        frames = _replies(session, transport, 5, wait=0.3)  # 30 deadlines of silence
        assert [f.seq for f in frames] == [1]
        assert protocol.unpack_payload("CONTROL", frames[0].payload, NX, NU)["status"] == p.STATUS_WATCHDOG
        transport.write(_state(1))                          # the late host's frame of step 1
        reply, _ = session.step(2, np.array([0.5, 0.0], np.float32))
        assert reply.status == p.STATUS_OK
        stats = session.stats()
        assert (stats["late_frames"], stats["watchdog_events"], stats["sequence_errors"]) == (1, 1, 0)
    finally:
        transport.close()


class _ScriptedTransport:
    """A target that answers with canned bytes: each write releases the next chunk."""

    def __init__(self, chunks):
        self.chunks, self.ready, self.written = list(chunks), [], []

    def write(self, data):
        self.written.append(data)
        if self.chunks:
            self.ready.append(self.chunks.pop(0))

    def read(self, timeout):
        return self.ready.pop(0) if self.ready else b""


def _control(seq: int, u: float, status: int = 0) -> bytes:
    values = {"u": (u,), "branch": 2, "reason": 0, "status": status, "reserved": 0, "compute_ticks": 1,
              "bad_frames": 0}
    return protocol.encode("CONTROL", seq, protocol.pack_payload("CONTROL", values, NX, NU))


def test_harness_files_out_of_turn_replies_instead_of_failing():
    """A reply from an earlier step is dropped and counted, one from a later step is kept for its step:
    neither ends the run (the old harness raised 'the target answered frame k+1 while the harness is at k')."""
    transport = _ScriptedTransport([_control(0, 9.0) + _control(2, 0.2) + _control(1, 0.1), b""])
    session = Session(transport, NX, NU, FaultInjector(FaultSpec(), 0), reply_timeout=0.5)
    first, _ = session.step(1, np.zeros(2, np.float32))
    second, _ = session.step(2, np.zeros(2, np.float32))
    assert (first.seq, first.u[0], second.seq, second.u[0]) == (1, np.float32(0.1), 2, np.float32(0.2))
    assert session.counts["stale_replies"] == 1 and session.counts["replies_ahead"] == 1
    assert session.counts["repeats_sent"] == 0


@pytest.mark.slow
def test_sil_episodes_match_the_reference_and_stay_safe(hil_run):
    result = run_hil(HilRequest(run_dir=str(hil_run), target="sil", episodes=4))
    report = result.report.to_json()
    assert result.passed, report["summary"]
    assert report["equivalence"]["worst_bound_ratio"] <= 1.0 and report["equivalence"]["branch_mismatches"] == 0
    assert report["safety"]["violating_steps"] == 0 and report["deadline_misses"] == 0
    assert report["frames"]["watchdog_replies"] == 0 and report["frames"]["target"]["steps"] == 4 * 80
    assert report["latency_seconds"]["p99"] < report["dt_seconds"]
    assert report["compute"]["seconds_p50"] > 0
    # same law, same x0, no noise or faults: the HIL trajectory follows the float64 Python closed loop within
    # the float32 bound propagated over the horizon, and that bound is not vacuous
    trajectory = report["trajectory_vs_python"]
    assert trajectory["within_propagated_bound"] and trajectory["worst_deviation_over_bound"] <= 1.0
    assert 0 < max(trajectory["max_abs_state_deviation"]) and max(trajectory["propagated_bound_max"]) < 1e-3
    assert (hil_run / "hil" / "sil" / "traces.png").is_file() and (hil_run / "hil" / "sil" / "latency.png").is_file()
    summary = json.loads((hil_run / "hil" / "report.json").read_text())
    assert summary["targets"]["sil"]["summary"]["passed"]


@pytest.mark.slow
def test_sil_with_faults_applies_no_corrupted_command_and_holds_the_backup(hil_run):
    result = run_hil(HilRequest(run_dir=str(hil_run), target="sil", episodes=4, seed=1, plots=False,
                                faults="drop=0.06,corrupt=0.06,delay=0.02,noise=0.005"))
    report = result.report.to_json()
    frames = report["frames"]
    injected = frames["injected"]
    assert injected["uplink_dropped"] > 0 and injected["uplink_corrupted"] > 0
    assert injected["downlink_dropped"] > 0 and injected["downlink_corrupted"] > 0
    # every lost or corrupted STATE frame was answered by the watchdog, never by the policy; a late frame (1.5 x
    # the deadline, in simulated time: sent after the step's DEADLINE frame) is too, and the target saw it arrive
    # late; nothing else was (in simulated time the host cannot be late)
    assert report["timing"] == "simulated time" and frames["late_host_steps"] == 0
    assert frames["steps_with_lost_state_frame"] + frames["steps_with_late_state_frame"] == (
        frames["watchdog_replies"]) == frames["target"]["watchdog_events"] > 0
    assert frames["late_state_frames_answered_by_the_watchdog"] == frames["steps_with_late_state_frame"] == (
        frames["late_state_frames_seen_by_the_target"]) > 0
    assert frames["lost_state_frames_answered_ok"] == 0 and frames["watchdog_replies_without_uplink_fault"] == 0
    # every lost or corrupted reply was asked for again and served from the target's cache
    assert frames["repeat_requests"] == frames["target"]["repeats_served"] == (
        injected["downlink_dropped"] + injected["downlink_corrupted"])
    assert frames["harness"]["corrupted_frames_accepted"] == 0
    target = frames["target"]
    assert target["crc_errors"] + target["length_errors"] + target["header_errors"] > 0
    assert report["equivalence"]["worst_bound_ratio"] <= 1.0  # watchdog steps against the backup on the last valid x
    assert report["branches"]["watchdog_backup"] == frames["watchdog_replies"]
    assert result.passed and report["summary"]["safety_held"]


@pytest.mark.slow
def test_sil_over_a_pseudo_terminal_with_pyserial(sil_binary, hil_run):
    """The serial code path of a real board: pyserial on a tty (the pty's slave), the firmware on the master."""
    from scpo_ctrl.export.law import evaluate, law_from_run

    law = law_from_run(hil_run)
    master, slave = os.openpty()
    process = subprocess.Popen([str(sil_binary)], stdin=master, stdout=master, stderr=subprocess.DEVNULL)
    os.close(master)
    transport = SerialTransport(os.ttyname(slave))
    try:
        session = Session(transport, NX, NU, FaultInjector(FaultSpec(drop=0.1, corrupt=0.1), 5), reply_timeout=2.0)
        assert session.configure(0.05).nx == 2
        rng = np.random.default_rng(0)
        for k in range(1, 41):
            x = rng.uniform([-3, -1], [3, 1]).astype(np.float32)
            reply, fault = session.step(k, x)
            assert reply.status == (1 if fault == "lost" else 0)
            if not fault:
                assert abs(reply.u[0] - evaluate(law, x[None].astype(float)).u[0, 0]) < 1e-5
        stats = session.stats()
        assert stats["steps"] == 40 and stats["watchdog_events"] == sum(
            session.injector.counts[k] for k in ("uplink_dropped", "uplink_corrupted")) > 0
    finally:
        transport.close()
        os.close(slave)
        process.wait(timeout=10)


def test_hil_cli_usage_errors(hil_run, tmp_path, capsys):
    assert main(["hil", str(tmp_path / "missing")]) == 2
    assert main(["hil", str(hil_run), "--target", "jtag"]) == 2
    assert main(["hil", str(hil_run), "--faults", "drop=2"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm / arm-none-eabi-gcc not installed")
def test_qemu_episode_reports_instructions_per_step(hil_run):
    result = run_hil(HilRequest(run_dir=str(hil_run), target="qemu", episodes=2, steps=40, plots=False))
    report = result.report.to_json()
    assert result.passed, report["summary"]
    assert report["hello"]["board"] == protocol.load_protocol().BOARD_MPS2_AN386
    assert 30 <= report["compute"]["instructions_per_tick"] <= 50  # 25 MHz SysTick, 1 ns per instruction
    assert 500 < report["compute"]["instructions_per_step_p50"] < 100_000
    assert report["equivalence"]["worst_bound_ratio"] <= 1.0 and report["safety"]["violating_steps"] == 0
    assert report["frames"]["watchdog_replies"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm / arm-none-eabi-gcc not installed")
def test_qemu_with_faults_holds_the_backup(hil_run):
    # simulated time: the harness's DEADLINE frame, not the guest's clock, ends a step whose STATE frame was lost
    result = run_hil(HilRequest(run_dir=str(hil_run), target="qemu", episodes=2, steps=40, plots=False, seed=2,
                                faults="drop=0.05,corrupt=0.05", watchdog_ms=5))
    frames = result.report.frames
    assert frames["steps_with_lost_state_frame"] == frames["watchdog_replies"] == frames["target"]["watchdog_events"] > 0
    assert frames["lost_state_frames_answered_ok"] == 0 and frames["harness"]["corrupted_frames_accepted"] == 0
    assert frames["repeat_requests"] == frames["target"]["repeats_served"] > 0
    assert result.passed and result.report.summary.safety_held


def test_propagated_bound_catches_a_wrong_command(hil_run):
    """The propagated bound is tight enough to flag a command off by 10x the export's float32 tolerance."""
    from scpo_ctrl.config.plant_spec import load_plant_spec
    from scpo_ctrl.export.error_bound import float_error_bound
    from scpo_ctrl.export.law import evaluate, law_from_run
    from scpo_ctrl.hil.deviation import propagated_bound
    from scpo_ctrl.hil.run import initial_states
    from scpo_ctrl.plant.model import build_plant
    from scpo_ctrl.sim.closed_loop import simulate

    law, spec = law_from_run(hil_run), load_plant_spec(hil_run / "plant.yaml")
    model = build_plant(spec)
    x0 = initial_states(spec, 4, 0)
    exact = simulate(model, lambda X: evaluate(law, X).u, x0, 80, law.P, law.c, law.x_eq)
    bound = propagated_bound(law, model, exact.x, exact.u)
    # zero at k = 0 and while the output is saturated at an exactly representable limit; positive later
    assert bound.shape == exact.x.shape and np.all(bound[:, 0] == 0) and np.all(bound[:, -1] > 0)

    def float32_law(X):  # what the C does, emulated: float32 state, reference plus an in-bound error
        Y = X.astype(np.float32).astype(float)
        return evaluate(law, Y).u + 0.9 * float_error_bound(law, Y, "float32")

    def biased(X):
        return evaluate(law, X).u + 10 * float_error_bound(law, X, "float32")

    inside = simulate(model, float32_law, x0, 80, law.P, law.c, law.x_eq)
    outside = simulate(model, biased, x0, 80, law.P, law.c, law.x_eq)
    assert np.all(np.abs(inside.x - exact.x) <= bound)
    assert np.any(np.abs(outside.x - exact.x) > bound)


@pytest.mark.slow
@pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm / arm-none-eabi-gcc not installed")
def test_size_profile_runs_in_sil_and_qemu(adapted_runs, tmp_path):
    """The size code profile (the default run above is the speed profile) drives the SIL firmware and the QEMU
    target within the float32 bound, and QEMU counts more instructions per step for it than the speed profile's
    <= 4,000."""
    run = tmp_path / "double_integrator"
    shutil.copytree(adapted_runs["double_integrator"], run, ignore=shutil.ignore_patterns("export", "hil"))
    export = run_export(ExportRequest(run_dir=str(run), target="cortex-m4", profile="size"))
    assert export.equivalent and export.manifest.profile == "size"
    for target in ("sil", "qemu"):
        result = run_hil(HilRequest(run_dir=str(run), target=target, episodes=2, steps=40, plots=False))
        report = result.report.to_json()
        assert result.passed, report["summary"]
        assert report["equivalence"]["worst_bound_ratio"] <= 1.0 and report["safety"]["violating_steps"] == 0
    assert report["compute"]["instructions_per_step_p50"] > 4000
