/*
 * live_layout.c - a target for tests/test_live_stream.py: mappings at chosen addresses, filled with a
 * pattern the test recomputes on its own, then idle.
 *
 * usage: live_layout SECONDS ADDR:BYTES[:COUNT] ...
 * Maps BYTES at ADDR (MAP_FIXED_NOREPLACE; ADDR 0 = where the kernel likes), COUNT times (default 1)
 * with a one-page hole between copies so that each stays a mapping of its own, writes into every
 * 8-byte word its own address XOR 0x9e3779b97f4a7c15, prints "map ADDR BYTES" per mapping and
 * "ready", then sleeps SECONDS.  Exit 1 if a mapping cannot be made where asked.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

int main(int argc, char **argv)
{
    long page = sysconf(_SC_PAGESIZE);
    if (argc < 3) {
        fprintf(stderr, "usage: live_layout SECONDS ADDR:BYTES[:COUNT] ...\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        char *end;
        uintptr_t addr = strtoull(argv[i], &end, 0);
        size_t bytes = strtoull(end + 1, &end, 0);
        long count = *end == ':' ? strtol(end + 1, NULL, 0) : 1;
        for (long c = 0; c < count; c++) {
            uintptr_t want = addr ? addr + (uintptr_t)c * (bytes + (size_t)page) : 0;
            uint64_t *m = mmap((void *)want, bytes, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | (want ? MAP_FIXED_NOREPLACE : 0), -1, 0);
            if (m == MAP_FAILED || (want && (uintptr_t)m != want)) {
                fprintf(stderr, "live_layout: cannot map %zu bytes at %#lx\n", bytes, (unsigned long)want);
                return 1;
            }
            for (size_t w = 0; w < bytes / 8; w++)
                m[w] = (uint64_t)(uintptr_t)&m[w] ^ 0x9e3779b97f4a7c15ull;
            printf("map %#lx %zu\n", (unsigned long)(uintptr_t)m, bytes);
        }
    }
    printf("ready\n");
    fflush(stdout);
    sleep((unsigned)atoi(argv[1]));
    return 0;
}
