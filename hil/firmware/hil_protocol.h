/* HIL frame protocol: the one machine-readable source of the frame layout (see hil/protocol.md).
 *
 * The C firmware includes this header; the Python harness (scpo_ctrl/hil/protocol.py) parses it:
 * every "#define HIL_<NAME> <integer>" line and every "F(name, type, count)" entry of the
 * HIL_*_FIELDS lists. Keep one definition per line and integer literals (decimal or 0x..u).
 *
 * Frame (all multi-byte fields little-endian):
 *   sync0 sync1 | version u8 | type u8 | seq u32 | length u16 | payload[length] | crc u16
 * The CRC (CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor) covers
 * version .. end of payload (not the sync bytes, not the CRC itself).
 */
#ifndef SCPO_HIL_PROTOCOL_H
#define SCPO_HIL_PROTOCOL_H

#define HIL_SYNC0 0xA5u
#define HIL_SYNC1 0x5Au
#define HIL_VERSION 2u /* 2: CONFIG/HELLO carry the timing mode; DEADLINE frame; STATS.late_frames */
#define HIL_HEADER_BYTES 10u /* sync0 sync1 version type seq(4) length(2) */
#define HIL_CRC_BYTES 2u
#define HIL_MAX_PAYLOAD 128u
#define HIL_CRC_POLY 0x1021u
#define HIL_CRC_INIT 0xFFFFu

/* Frame types. Host -> target: CONFIG, STATE, REPEAT, STATS_REQUEST, DEADLINE. Target -> host: HELLO, CONTROL, STATS. */
#define HIL_TYPE_CONFIG 1u
#define HIL_TYPE_HELLO 2u
#define HIL_TYPE_STATE 3u
#define HIL_TYPE_CONTROL 4u
#define HIL_TYPE_REPEAT 5u
#define HIL_TYPE_STATS_REQUEST 6u
#define HIL_TYPE_STATS 7u
#define HIL_TYPE_DEADLINE 8u /* simulated time: the deadline of step seq has elapsed (see hil/protocol.md) */

/* CONFIG.mode / HELLO.mode: what moves the target's watchdog */
#define HIL_MODE_SIMULATED 0u /* lockstep on simulated time: no wall-clock watchdog; DEADLINE frames end a step */
#define HIL_MODE_REALTIME 1u  /* the watchdog runs on the board clock (watchdog_us after the last answer) */

/* CONTROL.status */
#define HIL_STATUS_OK 0u       /* u = policy_step(x) of the STATE frame with this seq */
#define HIL_STATUS_WATCHDOG 1u /* no valid STATE frame before the deadline: u = backup_step(last valid x) */

/* Payload layouts: F(name, type, count); types u8 u16 u32 f32; count an integer, NX or NU. */
#define HIL_CONFIG_FIELDS(F) F(watchdog_us, u32, 1) F(mode, u32, 1)
#define HIL_HELLO_FIELDS(F) \
    F(nx, u16, 1) F(nu, u16, 1) F(real_bytes, u16, 1) F(board, u16, 1) \
    F(clock_hz, u32, 1) F(calibration_instructions, u32, 1) F(calibration_ticks, u32, 1) F(watchdog_us, u32, 1) \
    F(mode, u32, 1)
#define HIL_STATE_FIELDS(F) F(x, f32, NX)
#define HIL_CONTROL_FIELDS(F) \
    F(u, f32, NU) F(branch, u8, 1) F(reason, u8, 1) F(status, u8, 1) F(reserved, u8, 1) \
    F(compute_ticks, u32, 1) F(bad_frames, u32, 1)
#define HIL_REPEAT_FIELDS(F) F(reserved, u32, 1)
#define HIL_STATS_REQUEST_FIELDS(F) F(reserved, u32, 1)
#define HIL_DEADLINE_FIELDS(F) F(reserved, u32, 1)
#define HIL_STATS_FIELDS(F) \
    F(valid_frames, u32, 1) F(crc_errors, u32, 1) F(length_errors, u32, 1) F(header_errors, u32, 1) \
    F(sequence_errors, u32, 1) F(watchdog_events, u32, 1) F(repeats_served, u32, 1) \
    F(discarded_bytes, u32, 1) F(steps, u32, 1) F(late_frames, u32, 1)

/* HELLO.board */
#define HIL_BOARD_HOST 1u
#define HIL_BOARD_MPS2_AN386 2u

#endif
