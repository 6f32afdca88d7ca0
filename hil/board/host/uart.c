/* Host (Linux) HIL link: the "UART" is file descriptors 0 (in) and 1 (out): a pipe to the harness,
 * or a pseudo-terminal / socket the harness redirected them to. board_uart_init moves the output side
 * to a private descriptor and points descriptor 1 at stderr, so that text a library prints (acados'
 * solver notices in an MPC-backed firmware) can never enter the frame stream.
 * Step clock: CLOCK_MONOTONIC in ns. */
#define _GNU_SOURCE
#include "board.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

static uint8_t rx_buffer[256];
static uint32_t rx_head, rx_count;
static int link_out = 1;

void board_uart_init(void)
{
    int fd;
    rx_head = rx_count = 0u;
    fd = dup(1);
    if (fd >= 0 && dup2(2, 1) >= 0) {
        link_out = fd;
    }
}

int32_t board_uart_read_byte(uint32_t timeout_us)
{
    if (rx_head == rx_count) {
        struct pollfd fd;
        struct timespec timeout;
        ssize_t n;
        int ready;
        fd.fd = 0;
        fd.events = POLLIN;
        timeout.tv_sec = (time_t)(timeout_us / 1000000u);
        timeout.tv_nsec = (long)(timeout_us % 1000000u) * 1000L;
        do {
            ready = ppoll(&fd, 1, &timeout, NULL);
        } while (ready < 0 && errno == EINTR);
        if (ready == 0) {
            return -1;
        }
        do {
            n = read(0, rx_buffer, sizeof rx_buffer);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            return -2; /* end of file or error: the harness closed the link */
        }
        rx_head = 0u;
        rx_count = (uint32_t)n;
    }
    return rx_buffer[rx_head++];
}

void board_uart_write(const uint8_t *data, uint32_t bytes)
{
    while (bytes > 0u) {
        ssize_t n = write(link_out, data, bytes);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            board_exit(1);
        }
        data += n;
        bytes -= (uint32_t)n;
    }
}

uint32_t board_clock_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint32_t)((uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec);
}

uint32_t board_clock_elapsed(uint32_t start, uint32_t end)
{
    return end - start; /* up-counter, wraps after 4.29 s */
}

uint32_t board_clock_hz(void)
{
    return 1000000000u;
}
