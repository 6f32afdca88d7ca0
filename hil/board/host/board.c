/* Host board support (Linux): stdio files, stdout console, a microsecond down-counter from
 * clock_gettime. Used to run the same firmware sources on the host (tests, sanitizers, SIL). */
#define _POSIX_C_SOURCE 199309L
#include "board.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_FILES 8

static FILE *files[MAX_FILES];

void board_init(void)
{
}

uint32_t board_timer_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* a 24-bit down-counter in microseconds, like SysTick */
    return (uint32_t)(0x00FFFFFFu - ((uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u) % 0x01000000u);
}

uint32_t board_timer_elapsed(uint32_t start, uint32_t end)
{
    return (start - end) & 0x00FFFFFFu;
}

int32_t board_file_open(const char *path, int32_t write)
{
    int32_t handle;
    for (handle = 0; handle < MAX_FILES; ++handle) {
        if (files[handle] == NULL) {
            files[handle] = fopen(path, write ? "wb" : "rb");
            return files[handle] == NULL ? -1 : handle;
        }
    }
    return -1;
}

int32_t board_file_read(int32_t handle, void *buffer, uint32_t bytes)
{
    return (int32_t)fread(buffer, 1, bytes, files[handle]);
}

int32_t board_file_write(int32_t handle, const void *buffer, uint32_t bytes)
{
    return (int32_t)fwrite(buffer, 1, bytes, files[handle]);
}

void board_file_close(int32_t handle)
{
    fclose(files[handle]);
    files[handle] = NULL;
}

void board_console(const char *text)
{
    puts(text);
    fflush(stdout);
}

void board_exit(int32_t failed)
{
    exit(failed ? 1 : 0);
}
