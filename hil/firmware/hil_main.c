/* HIL firmware: the exported control law behind the frame protocol of hil/protocol.md.
 *
 * Per step k: wait for the STATE frame with seq = k, run policy_step on it, answer a CONTROL frame
 * (u, branch, reason, compute time in board clock ticks). Bad frames (CRC, length, header, sequence)
 * are counted and never applied. The deadline of step k ends in one of two ways, by CONFIG.mode:
 * simulated time (lockstep SIL/QEMU): a DEADLINE frame with seq = k from the host; real time: the
 * board clock reaching watchdog_us after the previous answer (then the watchdog pauses until the
 * host is heard again, so a late host gets one backup answer per step and the target never runs
 * ahead of it). Either way, a step without a valid STATE frame is answered with status WATCHDOG
 * and u = backup_step(last valid state) (x_eq if none yet); a STATE frame that arrives after its
 * step was answered so is counted as late (STATS.late_frames), never applied. Links the generated
 * bundle through policy_binding.h; the board supplies the UART and the clock (board.h).
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "hil_protocol.h"
#include "policy_binding.h"

#define NX POLICY_NX
#define NU POLICY_NU

typedef uint8_t hil_u8_t;
typedef uint16_t hil_u16_t;
typedef uint32_t hil_u32_t;
typedef float hil_f32_t;
typedef char policy_real_is_float32[sizeof(policy_real_t) == sizeof(float) ? 1 : -1];

/* One struct per frame type, generated from the layout lists of hil_protocol.h. */
#define HIL_MEMBER(name, type, count) hil_##type##_t name[count];
typedef struct { HIL_CONFIG_FIELDS(HIL_MEMBER) } config_msg_t;
typedef struct { HIL_HELLO_FIELDS(HIL_MEMBER) } hello_msg_t;
typedef struct { HIL_STATE_FIELDS(HIL_MEMBER) } state_msg_t;
typedef struct { HIL_CONTROL_FIELDS(HIL_MEMBER) } control_msg_t;
typedef struct { HIL_STATS_FIELDS(HIL_MEMBER) } stats_msg_t;
#define HIL_SIZE(name, type, count) + (uint32_t)(count) * (uint32_t)sizeof(hil_##type##_t)
#define HIL_PUT(name, type, count) p = put_##type(p, m->name, (uint32_t)(count));
#define HIL_GET(name, type, count) p = get_##type(p, m->name, (uint32_t)(count));

static uint8_t *put_u8(uint8_t *p, const uint8_t *v, uint32_t n)
{
    memcpy(p, v, n);
    return p + n;
}
static uint8_t *put_u16(uint8_t *p, const uint16_t *v, uint32_t n)
{
    uint32_t i;
    for (i = 0u; i < n; ++i) {
        *p++ = (uint8_t)(v[i] & 0xFFu);
        *p++ = (uint8_t)(v[i] >> 8);
    }
    return p;
}
static uint8_t *put_u32(uint8_t *p, const uint32_t *v, uint32_t n)
{
    uint32_t i, k;
    for (i = 0u; i < n; ++i) {
        for (k = 0u; k < 4u; ++k) {
            *p++ = (uint8_t)((v[i] >> (8u * k)) & 0xFFu);
        }
    }
    return p;
}
static uint8_t *put_f32(uint8_t *p, const float *v, uint32_t n)
{
    uint32_t i, bits;
    for (i = 0u; i < n; ++i) {
        memcpy(&bits, &v[i], sizeof bits);
        p = put_u32(p, &bits, 1u);
    }
    return p;
}
static const uint8_t *get_u32(const uint8_t *p, uint32_t *v, uint32_t n)
{
    uint32_t i;
    for (i = 0u; i < n; ++i, p += 4) {
        v[i] = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    }
    return p;
}
static const uint8_t *get_f32(const uint8_t *p, float *v, uint32_t n)
{
    uint32_t i, bits;
    for (i = 0u; i < n; ++i) {
        p = get_u32(p, &bits, 1u);
        memcpy(&v[i], &bits, sizeof bits);
    }
    return p;
}

static uint16_t crc16(const uint8_t *data, uint32_t bytes)
{
    uint16_t crc = (uint16_t)HIL_CRC_INIT;
    uint32_t i, bit;
    for (i = 0u; i < bytes; ++i) {
        crc = (uint16_t)(crc ^ ((uint16_t)data[i] << 8));
        for (bit = 0u; bit < 8u; ++bit) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ HIL_CRC_POLY) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

/* ---- framing ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t bytes[HIL_HEADER_BYTES + HIL_MAX_PAYLOAD + HIL_CRC_BYTES];
    uint32_t fill;
} parser_t;

static stats_msg_t stats;
static uint8_t tx[HIL_HEADER_BYTES + HIL_MAX_PAYLOAD + HIL_CRC_BYTES];

static uint32_t expected_length(uint8_t type)
{
    switch (type) {
    case HIL_TYPE_CONFIG: return 0u HIL_CONFIG_FIELDS(HIL_SIZE);
    case HIL_TYPE_STATE: return 0u HIL_STATE_FIELDS(HIL_SIZE);
    case HIL_TYPE_REPEAT: return 0u HIL_REPEAT_FIELDS(HIL_SIZE);
    case HIL_TYPE_STATS_REQUEST: return 0u HIL_STATS_REQUEST_FIELDS(HIL_SIZE);
    case HIL_TYPE_DEADLINE: return 0u HIL_DEADLINE_FIELDS(HIL_SIZE);
    default: return 0xFFFFFFFFu; /* not a host -> target type */
    }
}

static void parser_reset(parser_t *parser)
{
    stats.discarded_bytes[0] += parser->fill;
    parser->fill = 0u;
}

/* Push one byte; returns 1 when bytes[] holds a complete valid frame (then the caller resets). */
static int parser_push(parser_t *parser, uint8_t byte)
{
    uint32_t length, total;
    if (parser->fill == 0u && byte != HIL_SYNC0) {
        stats.discarded_bytes[0] += 1u;
        return 0;
    }
    if (parser->fill == 1u && byte != HIL_SYNC1) {
        parser_reset(parser);
        return parser_push(parser, byte);
    }
    parser->bytes[parser->fill++] = byte;
    if (parser->fill < HIL_HEADER_BYTES) {
        return 0;
    }
    length = (uint32_t)parser->bytes[8] | ((uint32_t)parser->bytes[9] << 8);
    if (parser->fill == HIL_HEADER_BYTES) {
        if (parser->bytes[2] != HIL_VERSION || expected_length(parser->bytes[3]) == 0xFFFFFFFFu) {
            stats.header_errors[0] += 1u;
            parser_reset(parser);
        } else if (length != expected_length(parser->bytes[3])) {
            stats.length_errors[0] += 1u;
            parser_reset(parser);
        }
        return 0;
    }
    total = HIL_HEADER_BYTES + length + HIL_CRC_BYTES;
    if (parser->fill < total) {
        return 0;
    }
    if (crc16(parser->bytes + 2, HIL_HEADER_BYTES - 2u + length) !=
        (uint16_t)(parser->bytes[total - 2u] | (parser->bytes[total - 1u] << 8))) {
        stats.crc_errors[0] += 1u;
        parser_reset(parser);
        return 0;
    }
    stats.valid_frames[0] += 1u;
    return 1;
}

static uint32_t frame_seq(const parser_t *parser)
{
    uint32_t seq;
    (void)get_u32(parser->bytes + 4, &seq, 1u);
    return seq;
}

static void send_frame(uint8_t type, uint32_t seq, uint32_t length)
{
    uint16_t crc, len16 = (uint16_t)length;
    uint32_t tx_length;
    tx[0] = HIL_SYNC0;
    tx[1] = HIL_SYNC1;
    tx[2] = HIL_VERSION;
    tx[3] = type;
    (void)put_u32(tx + 4, &seq, 1u);
    (void)put_u16(tx + 8, &len16, 1u);
    crc = crc16(tx + 2, HIL_HEADER_BYTES - 2u + length);
    (void)put_u16(tx + HIL_HEADER_BYTES + length, &crc, 1u);
    tx_length = HIL_HEADER_BYTES + length + HIL_CRC_BYTES;
    board_uart_write(tx, tx_length);
}

static void send_hello(uint32_t seq, const hello_msg_t *m)
{
    uint8_t *p = tx + HIL_HEADER_BYTES;
    HIL_HELLO_FIELDS(HIL_PUT)
    send_frame(HIL_TYPE_HELLO, seq, (uint32_t)(p - (tx + HIL_HEADER_BYTES)));
}

static void send_stats(uint32_t seq)
{
    const stats_msg_t *m = &stats;
    uint8_t *p = tx + HIL_HEADER_BYTES;
    HIL_STATS_FIELDS(HIL_PUT)
    send_frame(HIL_TYPE_STATS, seq, (uint32_t)(p - (tx + HIL_HEADER_BYTES)));
}

/* The last two CONTROL frames, for REPEAT: in real time the target may have answered one step past the
 * harness (its watchdog, while the harness was late) when the harness asks again for its own step. */
#define CONTROL_BYTES (HIL_HEADER_BYTES + (0u HIL_CONTROL_FIELDS(HIL_SIZE)) + HIL_CRC_BYTES)
static uint8_t sent_controls[2][CONTROL_BYTES]; /* [seq % 2] */

static void send_control(uint32_t seq, const control_msg_t *m)
{
    uint8_t *p = tx + HIL_HEADER_BYTES;
    HIL_CONTROL_FIELDS(HIL_PUT)
    send_frame(HIL_TYPE_CONTROL, seq, (uint32_t)(p - (tx + HIL_HEADER_BYTES)));
    memcpy(sent_controls[seq % 2u], tx, CONTROL_BYTES);
}

/* ---- instruction-count calibration (QEMU -icount) ------------------------------------------ */

static void spin(uint32_t n)
{
#if defined(__arm__)
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc"); /* 2 instructions per turn */
#else
    (void)n; /* the host has no instruction count */
#endif
}

/* ---- the step state machine ------------------------------------------------------------------ */

/* What the firmware knows between frames (one instance, in main). */
typedef struct {
    uint32_t mode;           /* HIL_MODE_SIMULATED or HIL_MODE_REALTIME */
    uint64_t watchdog_ticks; /* real time: the deadline in board clock ticks (0: no watchdog) */
    uint32_t expected;       /* the step being waited for: its STATE (or its deadline) is next */
    int armed;               /* real time: the deadline of step `expected` is running */
    int paused;              /* real time: a watchdog answer was given; re-armed when the host is heard */
    uint32_t answered;       /* steps answered since CONFIG (sent_controls holds the last two) */
    int last_was_watchdog;   /* ... and it was a watchdog answer */
    uint64_t waited;         /* real time: board clock ticks since the deadline started */
    policy_real_t last_x[NX];
    uint32_t calibration_ticks;
} session_t;

static void session_reset(session_t *s)
{
    uint32_t i;
    s->expected = 1u;
    s->armed = s->mode == HIL_MODE_REALTIME && s->watchdog_ticks > 0u; /* step 1's deadline runs from HELLO */
    s->paused = 0;
    s->answered = 0u;
    s->last_was_watchdog = 0;
    s->waited = 0u;
    for (i = 0u; i < NX; ++i) {
        s->last_x[i] = policy_x_eq[i];
    }
}

/* The host was heard with a frame of step seq: if it has caught up with the step the watchdog answered
 * (seq >= expected - 1), a paused real-time watchdog starts the current step's deadline. A frame of an
 * older step (a REPEAT of a lagging host) does not: the target never runs more than one step ahead. */
static void host_heard(session_t *s, uint32_t seq)
{
    if (s->paused && seq + 1u >= s->expected) {
        s->paused = 0;
        s->armed = 1;
        s->waited = 0u;
    }
}

/* Send the CONTROL frame of step `expected` and move to the next step. */
static void answer(session_t *s, control_msg_t *control, int watchdog)
{
    control->reserved[0] = 0u;
    control->bad_frames[0] = stats.crc_errors[0] + stats.length_errors[0] + stats.header_errors[0] +
                             stats.sequence_errors[0];
    send_control(s->expected, control);
    s->answered += 1u;
    s->last_was_watchdog = watchdog;
    stats.steps[0] += 1u;
    s->expected += 1u;
    s->waited = 0u;
    if (s->mode == HIL_MODE_REALTIME && s->watchdog_ticks > 0u) {
        s->armed = !watchdog; /* after a watchdog answer, wait for the host before timing the next step */
        s->paused = watchdog;
    }
}

static void answer_policy(session_t *s)
{
    control_msg_t control;
    policy_info_t info;
    uint32_t t0 = board_clock_now();
    (void)policy_step(s->last_x, control.u, &info);
    control.compute_ticks[0] = board_clock_elapsed(t0, board_clock_now());
    control.branch[0] = (uint8_t)info.branch;
    control.reason[0] = (uint8_t)info.reason;
    control.status[0] = HIL_STATUS_OK;
    answer(s, &control, 0);
}

static void answer_watchdog(session_t *s)
{
    control_msg_t control;
    uint32_t t0 = board_clock_now();
    policy_backup_step(s->last_x, control.u);
    control.compute_ticks[0] = board_clock_elapsed(t0, board_clock_now());
    control.branch[0] = 0u; /* backup */
    control.reason[0] = 0u;
    control.status[0] = HIL_STATUS_WATCHDOG;
    stats.watchdog_events[0] += 1u;
    answer(s, &control, 1);
}

static void on_config(session_t *s, const parser_t *parser, uint32_t seq)
{
    config_msg_t config;
    hello_msg_t hello;
    config_msg_t *m = &config;
    const uint8_t *p = parser->bytes + HIL_HEADER_BYTES;
    HIL_CONFIG_FIELDS(HIL_GET)
    (void)p;
    s->mode = config.mode[0] == HIL_MODE_REALTIME ? HIL_MODE_REALTIME : HIL_MODE_SIMULATED;
    s->watchdog_ticks = ((uint64_t)config.watchdog_us[0] * board_clock_hz()) / 1000000u;
    memset(&stats, 0, sizeof stats);
    policy_reset(); /* a new episode: a stateful policy (MPC plan) starts afresh */
    session_reset(s);
    hello.nx[0] = NX;
    hello.nu[0] = NU;
    hello.real_bytes[0] = (uint16_t)sizeof(policy_real_t);
    hello.board[0] = BOARD_ID;
    hello.clock_hz[0] = board_clock_hz();
    hello.calibration_instructions[0] = 200000u;
    hello.calibration_ticks[0] = s->calibration_ticks;
    hello.watchdog_us[0] = config.watchdog_us[0];
    hello.mode[0] = s->mode;
    send_hello(seq, &hello);
}

static void on_state(session_t *s, const parser_t *parser, uint32_t seq)
{
    if (seq == s->expected) {
        state_msg_t state;
        state_msg_t *m = &state;
        const uint8_t *p = parser->bytes + HIL_HEADER_BYTES;
        uint32_t i;
        HIL_STATE_FIELDS(HIL_GET)
        (void)p;
        for (i = 0u; i < NX; ++i) {
            s->last_x[i] = state.x[i];
        }
        answer_policy(s);
        return;
    }
    if (s->answered > 0u && s->last_was_watchdog && seq == s->expected - 1u) {
        stats.late_frames[0] += 1u; /* its deadline passed: the watchdog answered that step; never applied */
    } else {
        stats.sequence_errors[0] += 1u; /* a repeat of an answered step or out of order: never applied */
    }
    host_heard(s, seq);
}

static void on_deadline(session_t *s, uint32_t seq)
{
    if (seq == s->expected) {
        answer_watchdog(s); /* no valid STATE frame of this step came before its deadline */
    } else if (seq > s->expected) {
        stats.sequence_errors[0] += 1u; /* the deadline of a step not yet begun */
    } /* else: the step was answered already (the usual case: the STATE frame came in time) */
}

static void on_repeat(session_t *s, uint32_t seq)
{
    uint32_t back = s->expected - seq; /* 1: the last answer, 2: the one before */
    if ((back == 1u || back == 2u) && s->answered >= back) {
        board_uart_write(sent_controls[seq % 2u], CONTROL_BYTES);
        stats.repeats_served[0] += 1u;
        if (back == 1u) {
            s->waited = 0u; /* the host is still on the previous step */
        }
    } else if (seq != s->expected) {
        stats.sequence_errors[0] += 1u;
    } /* else: nothing to repeat yet (the step's STATE frame was lost); its deadline will answer it */
    host_heard(s, seq);
}

static void dispatch(session_t *s, const parser_t *parser)
{
    uint32_t seq = frame_seq(parser);
    switch (parser->bytes[3]) {
    case HIL_TYPE_CONFIG: on_config(s, parser, seq); break;
    case HIL_TYPE_STATE: on_state(s, parser, seq); break;
    case HIL_TYPE_DEADLINE: on_deadline(s, seq); break;
    case HIL_TYPE_REPEAT: on_repeat(s, seq); break;
    case HIL_TYPE_STATS_REQUEST:
        send_stats(seq);
        s->armed = 0;
        s->paused = 0;
        s->answered = 0u;
        break;
    default: break;
    }
}

/* Microseconds left of a running deadline (0 when it has passed): the byte wait's timeout. */
static uint32_t remaining_us(const session_t *s)
{
    if (s->waited >= s->watchdog_ticks) {
        return 0u;
    }
    return (uint32_t)(((s->watchdog_ticks - s->waited) * 1000000u) / board_clock_hz()) + 1u;
}

/* ---- main loop ------------------------------------------------------------------------------ */

int main(void)
{
    static parser_t parser;
    static session_t session;
    uint32_t t0, last;

    board_init();
    board_uart_init();
    t0 = board_clock_now();
    spin(100000u);
    session.calibration_ticks = board_clock_elapsed(t0, board_clock_now());
    session.mode = HIL_MODE_SIMULATED;
    session_reset(&session);
    memset(&stats, 0, sizeof stats);

    last = board_clock_now();
    for (;;) {
        /* bytes already received are always read first: the real-time deadline fires only on a quiet
         * line, so a frame that reached the receive buffer in time is never turned away by a late poll */
        int32_t byte = board_uart_read_byte(session.armed ? remaining_us(&session) : 1000000u);
        uint32_t now = board_clock_now();
        session.waited += board_clock_elapsed(last, now);
        last = now;
        if (byte == -2) {
            return 0; /* the harness closed the link */
        }
        if (byte >= 0) {
            if (parser_push(&parser, (uint8_t)byte)) {
                parser.fill = 0u;
                dispatch(&session, &parser);
                last = board_clock_now(); /* the answer's own time is not waiting time */
            }
        } else if (session.armed && session.waited >= session.watchdog_ticks) {
            answer_watchdog(&session); /* a partial frame stays in the parser: if late, it is counted so */
            last = board_clock_now();
        }
    }
}
