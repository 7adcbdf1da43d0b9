/* writer.c - a target with a known write pattern for the live mirror.
 *
 *   writer MIB RATE SECONDS [HOT]
 *
 * Allocates MIB MiB, writes every page once, then writes RATE pages per second for SECONDS (in
 * steps of 1 ms, one 8-byte counter per page), sweeping the pages in order (HOT = 0, default) or
 * rewriting the first HOT pages over and over (HOT > 0), and exits 0.  RATE 0 = idle. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t mib, npages, span, next = 0;
    double rate, secs;
    uint64_t t0, done = 0, counter = 1;
    char *mem;
    if (argc < 4) {
        fprintf(stderr, "usage: writer MIB RATE SECONDS [HOT]\n");
        return 2;
    }
    mib = strtoul(argv[1], NULL, 10);
    rate = atof(argv[2]);
    secs = atof(argv[3]);
    npages = mib * 256;
    span = argc > 4 && atol(argv[4]) > 0 ? (size_t)atol(argv[4]) : npages;
    mem = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < npages; i++)
        memset(mem + i * 4096, (int)(i & 0xff) | 1, 4096);
    t0 = now_ns();
    for (;;) {
        uint64_t t = now_ns() - t0;
        uint64_t due = (uint64_t)(rate * (double)t / 1e9);
        if ((double)t / 1e9 >= secs)
            break;
        while (done < due) {
            *(volatile uint64_t *)(mem + next * 4096 + (counter % 512) * 8) = counter;
            counter++;
            done++;
            next = (next + 1) % span;
        }
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}
