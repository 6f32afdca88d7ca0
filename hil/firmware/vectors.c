/* Vector runner: evaluates the exported step function on every state of vectors.in and writes
 * vectors.out (both in the host's working directory, through the board's file functions), then
 * times the step on the first states and prints one "timing ..." line.
 *
 * vectors.in : "SCPV" u32 count u32 nx u32 sizeof(real), then count*nx reals (little-endian)
 * vectors.out: "SCPR" u32 count u32 nu u32 sizeof(real), then per state: nu reals u, gate, level,
 *              int32 branch, int32 reason
 *
 * Timing: the board timer (SysTick) around blocks of calls, and a calibration loop of a known
 * instruction count; under QEMU -icount the timer advances with executed instructions, so the
 * ratio is instructions, not cycles of a real chip.
 */
#include <stdint.h>

#include "board.h"
#include "policy_binding.h"

#define CHUNK 64
#define TIMED_STATES 64
#ifndef TIMING_ROUNDS
#define TIMING_ROUNDS 32 /* calls timed: TIMING_ROUNDS x (up to) TIMED_STATES */
#endif

static policy_real_t x_chunk[CHUNK][POLICY_NX];
static policy_real_t timed[TIMED_STATES][POLICY_NX];
static uint8_t record[CHUNK][(POLICY_NU + 2) * sizeof(policy_real_t) + 2 * sizeof(int32_t)];

static void copy_bytes(void *destination, const void *source, uint32_t bytes)
{
    uint8_t *d = (uint8_t *)destination;
    const uint8_t *s = (const uint8_t *)source;
    uint32_t i;
    for (i = 0; i < bytes; ++i) {
        d[i] = s[i];
    }
}

static char *append_number(char *out, const char *label, uint32_t value)
{
    char digits[11];
    int n = 0;
    while (*label != '\0') {
        *out++ = *label++;
    }
    do {
        digits[n++] = (char)('0' + (char)(value % 10u));
        value /= 10u;
    } while (value != 0u);
    while (n > 0) {
        *out++ = digits[--n];
    }
    return out;
}

static void spin(uint32_t n)
{
    /* exactly 2 instructions per iteration */
#if defined(__arm__)
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
#else
    volatile uint32_t m = 2u * n; /* host: no instruction count; keep the loop */
    while (m != 0u) {
        m = m - 1u;
    }
#endif
}

int main(void)
{
    uint32_t header[4], out_header[4], done = 0u, have_timed = 0u, calls = 0u, step_ticks = 0u;
    uint32_t calibration_ticks, t0, round, i, k;
    int32_t input = board_file_open("vectors.in", 0), output;
    char line[160], *cursor;
    if (input < 0 || board_file_read(input, header, sizeof header) != (int32_t)sizeof header ||
        header[0] != 0x56504353u || header[2] != POLICY_NX || header[3] != sizeof(policy_real_t)) {
        board_console("vectors: cannot read a matching vectors.in");
        return 1;
    }
    output = board_file_open("vectors.out", 1);
    if (output < 0) {
        board_console("vectors: cannot open vectors.out");
        return 1;
    }
    out_header[0] = 0x52504353u; /* "SCPR" */
    out_header[1] = header[1];
    out_header[2] = POLICY_NU;
    out_header[3] = sizeof(policy_real_t);
    (void)board_file_write(output, out_header, sizeof out_header);
    while (done < header[1]) {
        uint32_t count = header[1] - done < CHUNK ? header[1] - done : CHUNK;
        uint32_t bytes = count * POLICY_NX * (uint32_t)sizeof(policy_real_t);
        if (board_file_read(input, x_chunk, bytes) != (int32_t)bytes) {
            board_console("vectors: vectors.in is truncated");
            return 1;
        }
        for (i = 0; i < count; ++i) {
            policy_real_t u[POLICY_NU];
            policy_info_t info;
            uint8_t *r = record[i];
            (void)policy_step(x_chunk[i], u, &info);
            copy_bytes(r, u, sizeof u);
            r += sizeof u;
            copy_bytes(r, &info.gate, sizeof info.gate);
            r += sizeof info.gate;
            copy_bytes(r, &info.level, sizeof info.level);
            r += sizeof info.level;
            copy_bytes(r, &info.branch, sizeof info.branch);
            r += sizeof info.branch;
            copy_bytes(r, &info.reason, sizeof info.reason);
            if (have_timed < TIMED_STATES) {
                copy_bytes(timed[have_timed++], x_chunk[i], sizeof x_chunk[i]);
            }
        }
        (void)board_file_write(output, record, count * (uint32_t)sizeof record[0]);
        done += count;
    }
    board_file_close(input);
    board_file_close(output);

    for (round = 0; round < TIMING_ROUNDS; ++round) {
        t0 = board_timer_now();
        for (k = 0; k < have_timed; ++k) {
            policy_real_t u[POLICY_NU];
            policy_info_t info;
            (void)policy_step(timed[k], u, &info);
        }
        step_ticks += board_timer_elapsed(t0, board_timer_now());
        calls += have_timed;
    }
    t0 = board_timer_now();
    spin(1000000u);
    calibration_ticks = board_timer_elapsed(t0, board_timer_now());

    cursor = append_number(line, "timing calls=", calls);
    cursor = append_number(cursor, " step_ticks=", step_ticks);
    cursor = append_number(cursor, " calibration_instructions=", 2000000u);
    cursor = append_number(cursor, " calibration_ticks=", calibration_ticks);
    *cursor = '\0';
    board_console(line);
    return 0;
}
