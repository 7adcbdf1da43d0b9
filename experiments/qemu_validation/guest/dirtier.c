/*
 * dirtier: guest-side memory dirtier for the pagesync-sim QEMU lab.
 *
 * Runs as a static binary inside a busybox initramfs. Parameters are read
 * from /proc/cmdline (kernel command line), each overridable by argv
 * "key=value" arguments:
 *
 *   dirty_ws=MiB        working set size (default 128)
 *   dirty_rate=N        page writes per second after the fill (default 0)
 *   dirty_pattern=rand|seq   page choice (default rand)
 *   dirty_report_ms=N   report period in ms (default 1000)
 *   dirty_max_debt_ms=N backlog tolerance in ms of writes (default 200): see 2.
 *   dirty_spacer_mib=N  before mapping the working set, map and touch (with
 *                       zeros) a spacer of N MiB that is kept for the life of
 *                       the program, so the working set's pages come from a
 *                       different part of guest-physical memory (default 0)
 *
 * Behaviour:
 *   1. mmap the working set, fill every byte with non-zero data (so no page
 *      is a zero page for QEMU), print "DIRTIER ready ...".
 *   2. Loop forever: one 8-byte write per page, pages chosen randomly
 *      (xorshift64*) or sequentially (wrapping), paced by CLOCK_MONOTONIC
 *      in ticks of ~1 ms. If the guest falls behind by more than
 *      dirty_max_debt_ms (200) of writes (vCPU starved, VM stopped for
 *      switchover, throttled), the debt is dropped rather than burst, so the
 *      achieved rate reflects what the vCPU could do; a smaller backlog is
 *      caught up at once.
 *   3. Every report period print
 *      "DIRTIER rate t=<s> writes=<total> achieved=<pages/s over period>
 *       target=<pages/s> seq=<report number>"
 *
 * Every written value is non-zero (a counter with the top bit set).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *find_param(const char *cmdline, const char *key, char *out,
                              size_t outlen)
{
    size_t klen = strlen(key);
    const char *p = cmdline;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == cmdline || p[-1] == ' ') && p[klen] == '=') {
            const char *v = p + klen + 1;
            size_t n = strcspn(v, " \n\t");
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return out;
        }
        p += klen;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    char cmdline[4096] = "";
    FILE *f = fopen("/proc/cmdline", "r");
    if (f) {
        size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
        cmdline[n] = 0;
        fclose(f);
    }
    /* argv key=value pairs are appended and so take precedence only if the
     * key is absent from the cmdline; keep it simple: argv first. */
    char merged[8192];
    merged[0] = 0;
    for (int i = 1; i < argc; i++) {
        strncat(merged, argv[i], sizeof(merged) - strlen(merged) - 2);
        strcat(merged, " ");
    }
    strncat(merged, cmdline, sizeof(merged) - strlen(merged) - 1);

    char buf[64];
    long ws_mib = 128, rate = 0, report_ms = 1000, max_debt_ms = 200;
    long spacer_mib = 0;
    int seq = 0;
    if (find_param(merged, "dirty_ws", buf, sizeof buf))
        ws_mib = atol(buf);
    if (find_param(merged, "dirty_rate", buf, sizeof buf))
        rate = atol(buf);
    if (find_param(merged, "dirty_pattern", buf, sizeof buf))
        seq = (strcmp(buf, "seq") == 0);
    if (find_param(merged, "dirty_report_ms", buf, sizeof buf))
        report_ms = atol(buf);
    if (find_param(merged, "dirty_max_debt_ms", buf, sizeof buf))
        max_debt_ms = atol(buf);
    if (find_param(merged, "dirty_spacer_mib", buf, sizeof buf))
        spacer_mib = atol(buf);
    if (report_ms < 100)
        report_ms = 100;
    if (max_debt_ms < 1)
        max_debt_ms = 1;
    if (spacer_mib < 0)
        spacer_mib = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("DIRTIER start ws_mib=%ld rate=%ld pattern=%s report_ms=%ld "
           "max_debt_ms=%ld spacer_mib=%ld\n",
           ws_mib, rate, seq ? "seq" : "rand", report_ms, max_debt_ms,
           spacer_mib);

    if (spacer_mib > 0) {
        size_t sbytes = (size_t)spacer_mib << 20;
        uint8_t *spacer = mmap(NULL, sbytes, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (spacer == MAP_FAILED) {
            printf("DIRTIER error spacer mmap failed\n");
            return 1;
        }
        /* one write per page allocates it; zeros keep it a zero page for
         * QEMU, so only the working set's position changes */
        for (size_t off = 0; off < sbytes; off += PAGE)
            *(volatile uint8_t *)(spacer + off) = 0;
    }

    size_t bytes = (size_t)ws_mib << 20;
    uint64_t npages = bytes / PAGE;
    uint8_t *mem = NULL;
    if (npages > 0) {
        mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (mem == MAP_FAILED) {
            printf("DIRTIER error mmap failed\n");
            return 1;
        }
    }
    double t0 = now_s();
    /* Fill with non-zero, page-distinct data. */
    for (uint64_t p = 0; p < npages; p++) {
        uint64_t *w = (uint64_t *)(mem + p * PAGE);
        uint64_t v = 0x8000000000000000ULL | (p * 0x9E3779B97F4A7C15ULL);
        for (size_t i = 0; i < PAGE / 8; i++)
            w[i] = v + i;
    }
    double t1 = now_s();
    printf("DIRTIER ready ws_mib=%ld pages=%llu fill_s=%.3f\n", ws_mib,
           (unsigned long long)npages, t1 - t0);

    uint64_t x = 0x243F6A8885A308D3ULL; /* xorshift64* state */
    uint64_t seqidx = 0, total = 0, counter = 1;
    double start = now_s();
    double base_t = start;      /* pacing baseline */
    uint64_t base_n = 0;        /* writes owed since baseline */
    double last_rep = start;
    uint64_t last_rep_total = 0;
    long repno = 0;
    const double max_debt_s = max_debt_ms / 1000.0;
    struct timespec tick = {0, 1000000}; /* 1 ms */

    for (;;) {
        double t = now_s();
        if (rate > 0 && npages > 0) {
            double owed = (t - base_t) * (double)rate - (double)base_n;
            if (owed > max_debt_s * rate) {
                /* fell behind (stopped/starved): drop the debt */
                base_t = t;
                base_n = 0;
                owed = 1;
            }
            long todo = (long)owed;
            for (long k = 0; k < todo; k++) {
                uint64_t page;
                if (seq) {
                    page = seqidx;
                    if (++seqidx >= npages)
                        seqidx = 0;
                } else {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    page = (x * 0x2545F4914F6CDD1DULL) % npages;
                }
                uint64_t *w = (uint64_t *)(mem + page * PAGE +
                                           ((counter & 511) << 3));
                *w = 0x8000000000000000ULL | counter++;
            }
            if (todo > 0) {
                base_n += todo;
                total += todo;
            }
        }
        if (t - last_rep >= report_ms / 1000.0) {
            double ach = (total - last_rep_total) / (t - last_rep);
            printf("DIRTIER rate t=%.3f writes=%llu achieved=%.0f target=%ld "
                   "seq=%ld\n",
                   t - start, (unsigned long long)total, ach, rate, repno++);
            last_rep = t;
            last_rep_total = total;
        }
        nanosleep(&tick, NULL);
    }
    return 0;
}
