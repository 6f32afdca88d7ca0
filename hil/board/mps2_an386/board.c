/* mps2-an386 (QEMU) board support: startup, FPU, SysTick, ARM semihosting. */
#include "board.h"

#include <stddef.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(void);
void reset_handler(void);
void fault_handler(void);

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

__attribute__((section(".vectors"), used)) static const uintptr_t vectors[16] = {
    (uintptr_t)&__stack_top, (uintptr_t)reset_handler, (uintptr_t)fault_handler, (uintptr_t)fault_handler,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler, (uintptr_t)fault_handler, 0, 0, 0, 0,
    (uintptr_t)fault_handler, (uintptr_t)fault_handler, 0, (uintptr_t)fault_handler, (uintptr_t)fault_handler,
};

static int32_t semihost(int32_t operation, const void *argument)
{
    register int32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void reset_handler(void)
{
    uint32_t *source = &__data_load, *destination = &__data_start;
    while (destination < &__data_end) {
        *destination++ = *source++;
    }
    for (destination = &__bss_start; destination < &__bss_end; ++destination) {
        *destination = 0u;
    }
    board_init();
    board_exit(main() != 0);
}

void fault_handler(void)
{
    board_console("fault: hard fault or unexpected exception");
    board_exit(1);
}

void board_init(void)
{
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 full access: the FPU */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x5u; /* enabled, processor clock, no interrupt */
}

uint32_t board_timer_now(void)
{
    return SYST_CVR & 0x00FFFFFFu;
}

uint32_t board_timer_elapsed(uint32_t start, uint32_t end)
{
    return (start - end) & 0x00FFFFFFu; /* down-counter */
}

static size_t length(const char *text)
{
    size_t n = 0;
    while (text[n] != '\0') {
        ++n;
    }
    return n;
}

int32_t board_file_open(const char *path, int32_t write)
{
    uint32_t block[3];
    block[0] = (uint32_t)(uintptr_t)path;
    block[1] = write ? 5u : 1u; /* "wb" : "rb" */
    block[2] = (uint32_t)length(path);
    return semihost(0x01, block);
}

int32_t board_file_read(int32_t handle, void *buffer, uint32_t bytes)
{
    uint32_t block[3];
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)buffer;
    block[2] = bytes;
    return (int32_t)bytes - semihost(0x06, block); /* the call returns the bytes NOT read */
}

int32_t board_file_write(int32_t handle, const void *buffer, uint32_t bytes)
{
    uint32_t block[3];
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)buffer;
    block[2] = bytes;
    return (int32_t)bytes - semihost(0x05, block);
}

void board_file_close(int32_t handle)
{
    uint32_t block[1];
    block[0] = (uint32_t)handle;
    (void)semihost(0x02, block);
}

void board_console(const char *text)
{
    (void)semihost(0x04, text);  /* SYS_WRITE0 */
    (void)semihost(0x04, "\n");
}

void board_exit(int32_t failed)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (QEMU exits 0) or ADP_Stopped_RunTimeErrorUnknown (1). */
    (void)semihost(0x18, (const void *)(uintptr_t)(failed ? 0x20023u : 0x20026u));
    for (;;) {
    }
}
