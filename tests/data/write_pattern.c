/*
 * write_pattern.c - a program with a known write pattern, for tests/test_recorder.py.
 *
 * usage: write_pattern N_PAGES INTERVAL_US
 * Allocates a buffer, reads every page of it (reads must not be reported as writes), then
 *   phase 1: writes page i = 0..N-1, one page per 2*INTERVAL_US sleep;
 *   phase 2: writes pages 1, 3, 5 together, four times, one round per 2*INTERVAL_US sleep.
 * Prints "buf <hex address> <page size>" and then one "w <page> <CLOCK_MONOTONIC ns>" per write.
 * The log lives in static memory, not in the buffer, so only the pattern touches the buffer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static struct { int page; uint64_t t; } log_[4096];
static int n_log;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put(volatile char *buf, long ps, int page)
{
    buf[(long)page * ps] = 1;
    log_[n_log].page = page;
    log_[n_log].t = now_ns();
    n_log++;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 8;
    long us = argc > 2 ? atol(argv[2]) : 10000;
    long ps = sysconf(_SC_PAGESIZE);
    /* large enough for malloc to use its own mmap; page-aligned start past the chunk header */
    char *raw = malloc((size_t)(n + 64) * (size_t)ps);
    volatile char *buf = (char *)(((uintptr_t)raw + 2 * (uintptr_t)ps) & ~((uintptr_t)ps - 1));
    volatile long sum = 0;

    for (int i = 0; i < n; i++)
        sum += buf[(long)i * ps];
    usleep(3 * us); /* let the tracer register the new mapping */
    for (int i = 0; i < n; i++) {
        put(buf, ps, i);
        usleep(2 * us);
    }
    for (int r = 0; r < 4; r++) {
        put(buf, ps, 1);
        put(buf, ps, 3);
        put(buf, ps, 5);
        usleep(2 * us);
    }
    printf("buf %lx %ld\n", (unsigned long)(uintptr_t)buf, ps);
    for (int i = 0; i < n_log; i++)
        printf("w %d %llu\n", log_[i].page, (unsigned long long)log_[i].t);
    return (int)(sum & 0);
}
