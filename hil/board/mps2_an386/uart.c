/* mps2-an386 HIL link: UART0, a CMSDK APB UART at 0x40004000 (QEMU: -serial tcp:...).
 * Step clock: SysTick (board.c), 25 MHz on this board; under QEMU -icount shift=0 one tick is
 * 40 executed instructions (calibrated in the guest and reported in the HELLO frame). */
#include "board.h"

#define UART0_DATA (*(volatile uint32_t *)0x40004000u)
#define UART0_STATE (*(volatile uint32_t *)0x40004004u)  /* bit 0: TX buffer full, bit 1: RX buffer full */
#define UART0_CTRL (*(volatile uint32_t *)0x40004008u)   /* bit 0: TX enable, bit 1: RX enable */
#define UART0_BAUDDIV (*(volatile uint32_t *)0x40004010u)
#define SYSTICK_HZ 25000000u

void board_uart_init(void)
{
    UART0_BAUDDIV = 16u; /* the smallest legal divider; QEMU ignores the rate on a socket */
    UART0_CTRL = 0x3u;
}

int32_t board_uart_read_byte(uint32_t timeout_us)
{
    uint64_t limit = (uint64_t)timeout_us * (SYSTICK_HZ / 1000000u), waited = 0u;
    uint32_t last = board_timer_now();
    while ((UART0_STATE & 0x2u) == 0u) {
        uint32_t now = board_timer_now();
        waited += board_timer_elapsed(last, now);
        last = now;
        if (waited >= limit) {
            return -1;
        }
    }
    return (int32_t)(UART0_DATA & 0xFFu);
}

void board_uart_write(const uint8_t *data, uint32_t bytes)
{
    uint32_t i;
    for (i = 0u; i < bytes; ++i) {
        while ((UART0_STATE & 0x1u) != 0u) {
        }
        UART0_DATA = data[i];
    }
}

uint32_t board_clock_now(void)
{
    return board_timer_now();
}

uint32_t board_clock_elapsed(uint32_t start, uint32_t end)
{
    return board_timer_elapsed(start, end);
}

uint32_t board_clock_hz(void)
{
    return SYSTICK_HZ;
}
