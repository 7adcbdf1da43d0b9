/*
 * pagesync_live.c - the hot loops of the live pagesync controller (pagesync_model.live), called
 * through ctypes.  A plain shared object (no PyInit), built by setup.py next to the package.
 *
 *   psl_scan        PAGEMAP_SCAN over a list of mappings of another process (/proc/<pid>/pagemap):
 *                   mode 0 returns the written pages and re-arms them (PM_SCAN_WP_MATCHING |
 *                   PM_SCAN_CHECK_WPASYNC, written and present or swapped, not the zero page); a
 *                   mapping without async write-protect (EPERM) is returned in full (its present
 *                   pages) and flagged.  Mode 1 only reads: the present pages, nothing re-armed.
 *   psl_send        process_vm_readv of a list of ranges, batched (one readv of up to 1024 ranges
 *                   per buffer), each batch written to a socket or file as one PAGES record; the
 *                   writes wait in poll, never in write, so that a deadline and signals end them.
 *   psl_hash_*      a 64-bit checksum per page, of another process's pages or of local memory.
 *   psl_scatter     the receiver: copy a PAGES record's data into its image chunks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <time.h>
#include <stdint.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../tracer/pagemap_uapi.h"

#define REC_PAGES 2u
#define MAX_IOV 1024

struct rec_header {
    uint32_t type;
    uint32_t count;
    uint64_t arg;
};

/* The progress of one psl_send, kept by the caller across calls cut short by a signal. */
struct send_state {
    int64_t i;         /* next range to read */
    uint64_t off;      /* bytes of ranges[i] already read */
    int64_t kept;      /* ranges in the record in flight (0: none) */
    uint64_t fill;     /* its data bytes */
    uint64_t done;     /* bytes of the record (header included) already written */
    uint64_t not_socket;
    uint64_t table[2 * MAX_IOV];
};

/* Scan maps[i] = [start, end) for i in [*map_i, nmaps), resuming at *pos inside map *map_i.
 * Ranges go into out (page_region, capacity cap), adjacent ones coalesced.  map_err[i] is set to
 * the errno of a mapping that could not be scanned with write-protection (EPERM: not registered),
 * whose present pages are then returned instead.  Returns the number of ranges written; *map_i ==
 * nmaps when finished, else out was full: call again from *map_i / *pos.  -errno on failure. */
long psl_scan(int fd, const uint64_t *maps, long nmaps, int mode, struct page_region *out, long cap,
              int32_t *map_err, long *map_i, uint64_t *pos, uint64_t page_size)
{
    long n = 0;
    while (*map_i < nmaps) {
        long i = *map_i;
        uint64_t start = *pos > maps[2 * i] ? *pos : maps[2 * i], end = maps[2 * i + 1];
        int wp = mode == 0 && map_err[i] == 0;
        while (start < end) {
            struct pm_scan_arg arg = {
                .size = sizeof arg,
                .flags = wp ? (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC) : 0,
                .start = start, .end = end,
                .vec = (uint64_t)(uintptr_t)(out + n), .vec_len = (uint64_t)(cap - n),
                .category_mask = wp ? PAGE_IS_WRITTEN : 0,
                .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
            };
            long got, k, w;
            if (cap - n <= 0) {
                *pos = start;
                return n;
            }
            memset(out + n, 0, (size_t)(cap - n > 64 ? 64 : cap - n) * sizeof *out);
            got = ioctl(fd, PAGEMAP_SCAN, &arg);
            if (got < 0) {
                int err = errno;
                if (wp && (err == EPERM || err == EINVAL)) {
                    /* not (or no longer) registered: copy its present pages in full */
                    map_err[i] = err;
                    wp = 0;
                    start = maps[2 * i] > *pos ? maps[2 * i] : *pos;
                    continue;
                }
                if (err == ENOENT || err == EFAULT) /* unmapped meanwhile (running target) */
                    break;
                return -err;
            }
            /* filter the zero page out, coalesce with the previous range */
            for (k = 0, w = n; k < got; k++) {
                struct page_region r = out[n + k];
                if (r.categories & PAGE_IS_PFNZERO)
                    continue;
                if (w > 0 && out[w - 1].end == r.start)
                    out[w - 1].end = r.end;
                else
                    out[w++] = r;
            }
            n = w;
            if (arg.walk_end <= start || arg.walk_end >= end)
                break;
            start = arg.walk_end; /* vector full: continue where the walk stopped */
        }
        *map_i = i + 1;
        *pos = 0;
    }
    return n;
}

/* Read [k] remote ranges into buf; on a short read (a page unmapped meanwhile) fall back to page
 * by page and drop unreadable pages from the table.  Returns the number of table entries kept
 * (table rewritten in place, data compacted), or -errno (ESRCH, EPERM, ...). */
static long read_batch(pid_t pid, uint64_t *table, long k, char *buf, uint64_t page_size,
                       uint64_t *failed_pages)
{
    struct iovec local = { buf, 0 }, remote[MAX_IOV];
    uint64_t total = 0;
    long i, kept = 0;
    ssize_t r;
    for (i = 0; i < k; i++) {
        remote[i].iov_base = (void *)(uintptr_t)table[2 * i];
        remote[i].iov_len = table[2 * i + 1];
        total += table[2 * i + 1];
    }
    local.iov_len = total;
    r = process_vm_readv(pid, &local, 1, remote, (unsigned long)k, 0);
    if (r == (ssize_t)total)
        return k;
    if (r < 0 && errno != EFAULT)
        return -errno;
    /* slow path: page by page */
    {
        uint64_t off = 0, woff = 0;
        uint64_t cur_a = 0, cur_l = 0;
        for (i = 0; i < k; i++) {
            uint64_t a = table[2 * i], l = table[2 * i + 1], p;
            for (p = 0; p < l; p += page_size) {
                struct iovec lo = { buf + woff, page_size }, re = { (void *)(uintptr_t)(a + p), page_size };
                ssize_t q = process_vm_readv(pid, &lo, 1, &re, 1, 0);
                if (q == (ssize_t)page_size) {
                    if (cur_l && cur_a + cur_l == a + p) {
                        cur_l += page_size;
                    } else {
                        if (cur_l) {
                            table[2 * kept] = cur_a;
                            table[2 * kept + 1] = cur_l;
                            kept++;
                        }
                        cur_a = a + p;
                        cur_l = page_size;
                    }
                    woff += page_size;
                } else if (q < 0 && errno != EFAULT) {
                    return -errno;
                } else {
                    (*failed_pages)++;
                }
                off += page_size;
            }
        }
        if (cur_l) {
            table[2 * kept] = cur_a;
            table[2 * kept + 1] = cur_l;
            kept++;
        }
        (void)off;
    }
    return kept;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wait until fd takes more data or the deadline (CLOCK_MONOTONIC ns, 0 = none) passes.  0, or
 * -ETIMEDOUT, or -EINTR: a signal came, the caller returns to Python so that its handler runs. */
static int wait_writable(int fd, uint64_t deadline_ns)
{
    struct pollfd p = { fd, POLLOUT, 0 };
    int ms = -1, r;
    if (deadline_ns) {
        uint64_t t = now_ns();
        if (t >= deadline_ns)
            return -ETIMEDOUT;
        ms = (int)((deadline_ns - t + 999999u) / 1000000u);
    }
    r = poll(&p, 1, ms);
    if (r < 0)
        return -errno;
    if (r == 0)
        return -ETIMEDOUT;
    return 0;
}

/* Write the record in flight (header, table, data), from byte st->done on.  Never blocks in the
 * write itself (MSG_DONTWAIT on a socket; a pipe or file is expected O_NONBLOCK): a receiver that
 * stops reading is waited for in poll, which the deadline and signals cut short. */
static int write_record(int fd, struct send_state *st, char *buf, uint64_t deadline_ns)
{
    struct rec_header h = { REC_PAGES, (uint32_t)st->kept, st->fill };
    uint64_t skip = st->done;
    struct iovec all[3] = { { &h, sizeof h }, { st->table, (size_t)st->kept * 16 }, { buf, st->fill } }, *iov = all;
    int n = 3;
    for (;;) {
        ssize_t w;
        while (n > 0 && skip >= iov->iov_len) {
            skip -= iov->iov_len;
            iov++;
            n--;
        }
        if (n == 0)
            return 0;
        iov->iov_base = (char *)iov->iov_base + skip;
        iov->iov_len -= skip;
        if (!st->not_socket) {
            struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
            w = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0 && errno == ENOTSOCK) {
                st->not_socket = 1;
                w = writev(fd, iov, n);
            }
        } else {
            w = writev(fd, iov, n);
        }
        if (w < 0) {
            int e = errno;
            if (e != EAGAIN && e != EWOULDBLOCK)
                return -e; /* EINTR included: Python runs the handler and calls again */
            e = wait_writable(fd, deadline_ns);
            if (e < 0)
                return e;
            skip = 0;
            continue;
        }
        st->done += (uint64_t)w;
        skip = (uint64_t)w;
    }
}

/* Send ranges (page_region [n]: start, end) of pid's memory to fd as PAGES records, batches of at
 * most bufsize bytes and MAX_IOV ranges.  stats: [0] bytes of page data, [1] records, [2] ranges
 * sent, [3] pages that could not be read (unmapped meanwhile), [4] ns in process_vm_readv,
 * [5] ns writing.  deadline_ns: CLOCK_MONOTONIC time past which it gives up (0 = none).
 * Returns 0, or -errno: ESRCH target gone; EPIPE/ECONNRESET receiver gone; ETIMEDOUT deadline
 * passed; EINTR a signal came: call again with the same st (zeroed before the first call), which
 * holds the progress, record in flight included, so that nothing is read or sent twice. */
long psl_send(pid_t pid, int fd, const struct page_region *ranges, long n, char *buf, uint64_t bufsize,
              uint64_t page_size, uint64_t *stats, uint64_t deadline_ns, struct send_state *st)
{
    for (;;) {
        if (st->kept > 0) {
            uint64_t t1 = now_ns();
            int e = write_record(fd, st, buf, deadline_ns);
            stats[5] += now_ns() - t1;
            if (e < 0)
                return e;
            stats[0] += st->fill;
            stats[1] += 1;
            stats[2] += st->kept;
            st->kept = 0;
        }
        if (st->i >= n)
            return 0;
        {
            long k = 0, kept;
            uint64_t fill = 0, t0;
            while (st->i < n && k < MAX_IOV && fill < bufsize) {
                uint64_t a = ranges[st->i].start + st->off, l = ranges[st->i].end - a;
                if (l > bufsize - fill) {
                    l = bufsize - fill;
                    st->off += l;
                } else {
                    st->i++;
                    st->off = 0;
                }
                st->table[2 * k] = a;
                st->table[2 * k + 1] = l;
                k++;
                fill += l;
            }
            t0 = now_ns();
            kept = read_batch(pid, st->table, k, buf, page_size, &stats[3]);
            stats[4] += now_ns() - t0;
            if (kept < 0)
                return kept;
            fill = 0;
            for (long j = 0; j < kept; j++)
                fill += st->table[2 * j + 1];
            st->kept = kept;
            st->fill = fill;
            st->done = 0;
        }
    }
}

/* 64-bit checksum of one page: a multiply-xorshift over its words (not cryptographic; a changed
 * word changes the result with probability 1 - 2^-64 for non-adversarial data). */
static uint64_t hash_page(const uint64_t *w, uint64_t nwords, uint64_t seed)
{
    uint64_t h = seed ^ 0x9e3779b97f4a7c15ull, h2 = 0x6a09e667f3bcc909ull;
    for (uint64_t i = 0; i < nwords; i += 2) {
        h = (h ^ w[i]) * 0xff51afd7ed558ccdull;
        h2 = (h2 ^ w[i + 1]) * 0xc4ceb9fe1a85ec53ull;
        h ^= h >> 29;
        h2 ^= h2 >> 31;
    }
    h ^= h2 * 0x94d049bb133111ebull;
    h ^= h >> 32;
    return h;
}

/* Hashes of the pages at local addresses base + idx[j] * page_size. */
void psl_hash_local(const char *base, const uint64_t *idx, long n, uint64_t page_size, uint64_t *out)
{
    for (long j = 0; j < n; j++)
        out[j] = hash_page((const uint64_t *)(base + idx[j] * page_size), page_size / 8, 0);
}

/* Hashes of every page of the remote ranges, in order (the caller expands them to page numbers).
 * Returns the number of pages hashed, or -errno (-ETIMEDOUT past deadline_ns, 0 = none: the
 * target is stopped while this runs). */
long psl_hash_remote(pid_t pid, const struct page_region *ranges, long n, char *buf, uint64_t bufsize,
                     uint64_t page_size, uint64_t *out, uint64_t deadline_ns)
{
    long pages = 0;
    for (long i = 0; i < n; i++) {
        for (uint64_t a = ranges[i].start; a < ranges[i].end;) {
            uint64_t l = ranges[i].end - a;
            struct iovec lo, re;
            ssize_t r;
            if (l > bufsize)
                l = bufsize;
            if (deadline_ns && now_ns() >= deadline_ns)
                return -ETIMEDOUT;
            lo.iov_base = buf;
            lo.iov_len = l;
            re.iov_base = (void *)(uintptr_t)a;
            re.iov_len = l;
            r = process_vm_readv(pid, &lo, 1, &re, 1, 0);
            if (r != (ssize_t)l)
                return r < 0 ? -errno : -EFAULT;
            for (uint64_t p = 0; p < l; p += page_size)
                out[pages++] = hash_page((const uint64_t *)(buf + p), page_size / 8, 0);
            a += l;
        }
    }
    return pages;
}

/* Receiver: copy the data of a PAGES record (table of count (addr, len), data_len bytes of data,
 * the ranges' contents concatenated) into the image.  The image is made of chunks of 2^shift bytes
 * of address space: keys[j] = addr >> shift (sorted), bases[j] = local address of its memory,
 * present[j] = its per-page presence bytes.  The record comes from the network: the whole table is
 * checked before anything is copied (the caller checks it too), so a bad record changes nothing.
 * Returns 0, -1 (a range unaligned, empty or wrapping), -2 (the lengths do not add up to data_len),
 * -3 (a chunk the caller did not create). */
static long find_key(const uint64_t *keys, long nkeys, uint64_t key)
{
    long lo = 0, hi = nkeys - 1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (keys[mid] == key)
            return mid;
        if (keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

long psl_scatter(const char *data, uint64_t data_len, const uint64_t *table, long count, const uint64_t *keys,
                 const uint64_t *bases, const uint64_t *present, long nkeys, int shift, uint64_t page_size)
{
    uint64_t mask = ((uint64_t)1 << shift) - 1, total = 0;
    if (page_size == 0 || (page_size & (page_size - 1)) || page_size > mask + 1 || count < 0)
        return -1;
    for (long i = 0; i < count; i++) {
        uint64_t a = table[2 * i], l = table[2 * i + 1];
        if (l == 0 || ((a | l) & (page_size - 1)) != 0 || a + l < a)
            return -1;
        if (l > data_len - total)
            return -2;
        total += l;
        for (uint64_t k = a >> shift; k <= (a + l - 1) >> shift; k++)
            if (find_key(keys, nkeys, k) < 0)
                return -3;
    }
    if (total != data_len)
        return -2;
    for (long i = 0; i < count; i++) {
        uint64_t a = table[2 * i], l = table[2 * i + 1];
        while (l > 0) {
            uint64_t off = a & mask, take = (mask + 1) - off;
            long j = find_key(keys, nkeys, a >> shift);
            if (take > l)
                take = l;
            memcpy((char *)(uintptr_t)bases[j] + off, data, take);
            memset((char *)(uintptr_t)present[j] + off / page_size, 1, take / page_size);
            data += take;
            a += take;
            l -= take;
        }
    }
    return 0;
}
