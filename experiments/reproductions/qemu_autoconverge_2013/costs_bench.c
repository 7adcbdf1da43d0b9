/* The per-page costs of QEMU 1.6's migration thread (commit 7ca1dfad), measured on the machine this
 * runs on: the code paths below are copied from that tree (read: SOURCES.md (d)).
 *
 *  1. the zero test of every page the thread sends: is_zero_page (arch_init.c) ->
 *     buffer_find_nonzero_offset (util/cutils.c: SSE2 __m128i, unrolled 8 times; include/qemu-common.h),
 *     over an all-zero page (reads all 4096 bytes) and over a page whose first byte is not zero;
 *  2. migration_bitmap_sync's walk of every page of RAM (arch_init.c): memory_region_test_and_clear_dirty
 *     (memory.c, a call into another file: not inlined) reading the page's byte of ram_list.phys_dirty
 *     and, when its migration flag is set, cpu_physical_memory_reset_dirty (exec.c) and
 *     migration_bitmap_set_dirty (test_and_set_bit on the migration bitmap).
 *
 * Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so other load on the machine does not
 * inflate them. Build and run: see README.md ("Per-page costs"). Output: one JSON object.
 *
 * usage: costs_bench [zero-MiB] [ram-pages] [dirty-per-mille] [repeats]
 */
#include <emmintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TARGET_PAGE_BITS 12
#define TARGET_PAGE_SIZE (1 << TARGET_PAGE_BITS)
#define TARGET_PAGE_MASK (~(uint64_t)(TARGET_PAGE_SIZE - 1))
#define TARGET_PAGE_ALIGN(a) (((a) + TARGET_PAGE_SIZE - 1) & TARGET_PAGE_MASK)
#define VECTYPE __m128i
#define ALL_EQ(v1, v2) (_mm_movemask_epi8(_mm_cmpeq_epi8(v1, v2)) == 0xFFFF)
#define BUFFER_FIND_NONZERO_OFFSET_UNROLL_FACTOR 8
#define MIGRATION_DIRTY_FLAG 0x08
#define BITS_PER_LONG (sizeof(unsigned long) * 8)

/* util/cutils.c at 7ca1dfad */
__attribute__((noinline)) size_t buffer_find_nonzero_offset(const void *buf, size_t len)
{
    const VECTYPE *p = buf;
    const VECTYPE zero = (VECTYPE){0};
    size_t i;

    if (!len) {
        return 0;
    }
    for (i = 0; i < BUFFER_FIND_NONZERO_OFFSET_UNROLL_FACTOR; i++) {
        if (!ALL_EQ(p[i], zero)) {
            return i * sizeof(VECTYPE);
        }
    }
    for (i = BUFFER_FIND_NONZERO_OFFSET_UNROLL_FACTOR; i < len / sizeof(VECTYPE);
         i += BUFFER_FIND_NONZERO_OFFSET_UNROLL_FACTOR) {
        VECTYPE tmp0 = _mm_or_si128(p[i + 0], p[i + 1]);
        VECTYPE tmp1 = _mm_or_si128(p[i + 2], p[i + 3]);
        VECTYPE tmp2 = _mm_or_si128(p[i + 4], p[i + 5]);
        VECTYPE tmp3 = _mm_or_si128(p[i + 6], p[i + 7]);
        VECTYPE tmp01 = _mm_or_si128(tmp0, tmp1);
        VECTYPE tmp23 = _mm_or_si128(tmp2, tmp3);
        if (!ALL_EQ(_mm_or_si128(tmp01, tmp23), zero)) {
            break;
        }
    }
    return i * sizeof(VECTYPE);
}

/* arch_init.c at 7ca1dfad */
static inline int is_zero_page(uint8_t *p)
{
    return buffer_find_nonzero_offset(p, TARGET_PAGE_SIZE) == TARGET_PAGE_SIZE;
}

/* ram_list.phys_dirty and the migration bitmap (include/exec/memory-internal.h, arch_init.c) */
static uint8_t *phys_dirty;
static unsigned long *migration_bitmap;
static uint64_t migration_dirty_pages;

struct MemoryRegion { int terminates; uint64_t ram_addr; };

static inline int cpu_physical_memory_get_dirty(uint64_t start, uint64_t length, int dirty_flags)
{
    int ret = 0;
    uint64_t addr, end = TARGET_PAGE_ALIGN(start + length);
    start &= TARGET_PAGE_MASK;
    for (addr = start; addr < end; addr += TARGET_PAGE_SIZE) {
        ret |= phys_dirty[addr >> TARGET_PAGE_BITS] & dirty_flags;
    }
    return ret;
}

/* exec.c (the TCG branch is not taken under KVM) */
__attribute__((noinline)) void cpu_physical_memory_reset_dirty(uint64_t start, uint64_t end, int dirty_flags)
{
    uint64_t addr, length;
    start &= TARGET_PAGE_MASK;
    end = TARGET_PAGE_ALIGN(end);
    length = end - start;
    if (length == 0) {
        return;
    }
    for (addr = start; addr < start + length; addr += TARGET_PAGE_SIZE) {
        phys_dirty[addr >> TARGET_PAGE_BITS] &= ~dirty_flags;
    }
}

/* memory.c */
__attribute__((noinline)) int memory_region_test_and_clear_dirty(struct MemoryRegion *mr, uint64_t addr,
                                                                 uint64_t size, unsigned client)
{
    int ret;
    if (!mr->terminates) {
        abort();
    }
    ret = cpu_physical_memory_get_dirty(mr->ram_addr + addr, size, 1 << client);
    if (ret) {
        cpu_physical_memory_reset_dirty(mr->ram_addr + addr, mr->ram_addr + addr + size, 1 << client);
    }
    return ret;
}

static inline int test_and_set_bit(long nr, unsigned long *addr)
{
    unsigned long mask = 1UL << (nr % BITS_PER_LONG);
    unsigned long *p = addr + nr / BITS_PER_LONG;
    unsigned long old = *p;
    *p = old | mask;
    return (old & mask) != 0;
}

static inline int migration_bitmap_set_dirty(struct MemoryRegion *mr, uint64_t offset)
{
    int ret;
    long nr = (mr->ram_addr + offset) >> TARGET_PAGE_BITS;
    ret = test_and_set_bit(nr, migration_bitmap);
    if (!ret) {
        migration_dirty_pages++;
    }
    return ret;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t zero_mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1024;
    uint64_t ram_pages = argc > 2 ? strtoull(argv[2], 0, 10) : 67111056ULL;
    unsigned per_mille = argc > 3 ? strtoul(argv[3], 0, 10) : 10;
    int repeats = argc > 4 ? atoi(argv[4]) : 5;
    double zero_ns[64], nonzero_ns[64], sync_ns[64];
    size_t pages = zero_mib * 1024 * 1024 / TARGET_PAGE_SIZE;
    uint8_t *buf;
    volatile size_t found = 0;

    if (repeats < 1 || repeats > 64) {
        fprintf(stderr, "costs_bench: repeats must be 1..64\n");
        return 2;
    }
    if (posix_memalign((void **)&buf, TARGET_PAGE_SIZE, pages * TARGET_PAGE_SIZE)) {
        return 1;
    }
    memset(buf, 0, pages * TARGET_PAGE_SIZE);   /* resident zero pages */
    for (int r = 0; r < repeats; r++) {
        double t = cpu_now();
        for (size_t i = 0; i < pages; i++) {
            found += is_zero_page(buf + i * TARGET_PAGE_SIZE);
        }
        zero_ns[r] = (cpu_now() - t) / pages * 1e9;
    }
    for (size_t i = 0; i < pages; i++) {
        buf[i * TARGET_PAGE_SIZE] = 1;
    }
    for (int r = 0; r < repeats; r++) {
        double t = cpu_now();
        for (size_t i = 0; i < pages; i++) {
            found += is_zero_page(buf + i * TARGET_PAGE_SIZE);
        }
        nonzero_ns[r] = (cpu_now() - t) / pages * 1e9;
    }
    free(buf);

    phys_dirty = malloc(ram_pages);
    migration_bitmap = calloc(ram_pages / BITS_PER_LONG + 1, sizeof(unsigned long));
    struct MemoryRegion mr = {1, 0};
    for (int r = 0; r < repeats; r++) {
        memset(phys_dirty, 0xff & ~MIGRATION_DIRTY_FLAG, ram_pages);
        for (uint64_t p = 0; p < ram_pages; p++) {   /* per_mille of the pages dirty since the last sync */
            if ((p * 2654435761ULL) % 1000 < per_mille) {
                phys_dirty[p] |= MIGRATION_DIRTY_FLAG;
            }
        }
        memset(migration_bitmap, 0, (ram_pages / BITS_PER_LONG + 1) * sizeof(unsigned long));
        double t = cpu_now();
        for (uint64_t addr = 0; addr < ram_pages * TARGET_PAGE_SIZE; addr += TARGET_PAGE_SIZE) {
            if (memory_region_test_and_clear_dirty(&mr, addr, TARGET_PAGE_SIZE, 3)) {
                migration_bitmap_set_dirty(&mr, addr);
            }
        }
        sync_ns[r] = (cpu_now() - t) / ram_pages * 1e9;
    }
    qsort(zero_ns, repeats, sizeof(double), cmp);
    qsort(nonzero_ns, repeats, sizeof(double), cmp);
    qsort(sync_ns, repeats, sizeof(double), cmp);
    printf("{\"zero_page_test_ns\": %.3f, \"nonzero_page_test_ns\": %.3f, \"sync_ns_per_page\": %.3f, "
           "\"zero_buffer_MiB\": %zu, \"ram_pages\": %llu, \"dirty_per_mille\": %u, \"repeats\": %d, "
           "\"zero_found\": %zu, \"dirtied_found\": %llu}\n",
           zero_ns[repeats / 2], nonzero_ns[repeats / 2], sync_ns[repeats / 2], zero_mib,
           (unsigned long long)ram_pages, per_mille, repeats, (size_t)found,
           (unsigned long long)migration_dirty_pages);
    return 0;
}
