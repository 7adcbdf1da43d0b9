/*
 * append.c - appends 80-byte rows at a steady pace, as a database filling its tables does.
 *
 * usage: append m|b SECONDS ROWS_PER_MS
 *   m: into one large mapping made at the start (registered once, tracked from then on);
 *   b: into a heap grown with sbrk 64 KiB at a time (each stretch is a mapping of its own until the
 *      library registers it: a live mirror copies it in full at every scan until then).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int brk_mode = argc > 1 && argv[1][0] == 'b';
    double secs = argc > 2 ? atof(argv[2]) : 1.0, rows_per_ms = argc > 3 ? atof(argv[3]) : 1000;
    size_t cap = (size_t)1 << 31, used = 0, top = 0;
    char *base = brk_mode ? sbrk(0)
                          : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    double t0 = now();
    uint64_t n = 0;
    if (base == (void *)-1)
        return 1;
    while (now() - t0 < secs) {
        double due = (now() - t0) * 1e3 * rows_per_ms;
        while (n < due) {
            if (brk_mode && used + 80 > top) {
                if (sbrk(65536) == (void *)-1)
                    return 1;
                top += 65536;
            }
            memset(base + used, (int)(n & 0x7f) | 1, 80);
            used += 80;
            n++;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    printf("%llu rows %zu bytes\n", (unsigned long long)n, used);
    return 0;
}
