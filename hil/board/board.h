/* Board support for the firmware: what a port to a real board must provide.
 *
 * mps2-an386 under QEMU implements it with semihosting (files, console, exit)
 * and SysTick (timer). A real board implements board_init, the timer and the
 * UART functions of hil/firmware (see hil/README.md); the file functions are
 * only used by the vector runner, which is an emulator-only test tool.
 */
#ifndef SCPO_BOARD_H
#define SCPO_BOARD_H

#include <stdint.h>

void board_init(void);                 /* clocks, FPU, timer */
uint32_t board_timer_now(void);        /* free-running down-counter, 24 bits (SysTick) */
uint32_t board_timer_elapsed(uint32_t start, uint32_t end); /* ticks between two readings (< 2^24) */

int32_t board_file_open(const char *path, int32_t write); /* -1 on failure */
int32_t board_file_read(int32_t handle, void *buffer, uint32_t bytes);  /* bytes read */
int32_t board_file_write(int32_t handle, const void *buffer, uint32_t bytes); /* bytes written */
void board_file_close(int32_t handle);
void board_console(const char *text);   /* one line of text on the host's stdout */
void board_exit(int32_t failed) __attribute__((noreturn));

/* Serial link and step clock of the HIL firmware (hil/firmware/hil_main.c); implemented in
 * hil/board/<board>/uart.c. A port to a real board implements these six functions (see
 * hil/protocol.md, "Board-support shim"). */
void board_uart_init(void);                                       /* pins, baud rate, enable RX/TX */
int32_t board_uart_read_byte(uint32_t timeout_us);                /* 0..255; -1 timeout; -2 link closed */
void board_uart_write(const uint8_t *data, uint32_t bytes);       /* blocking */
uint32_t board_clock_now(void);                                   /* free-running step clock */
uint32_t board_clock_elapsed(uint32_t start, uint32_t end);       /* clock ticks between two readings */
uint32_t board_clock_hz(void);                                    /* ticks per second of that clock */

#endif
