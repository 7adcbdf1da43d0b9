/*
 * pagesync_trace.c - LD_PRELOAD library that records which pages a program writes, per interval.
 *
 * Mechanism (Linux 6.7+): a userfaultfd in asynchronous write-protect mode (UFFD_FEATURE_WP_ASYNC
 * | UFFD_FEATURE_WP_UNPOPULATED) is registered (UFFDIO_REGISTER_MODE_WP) on every writable private
 * mapping.  In async mode the kernel resolves a write fault on a protected page by itself (about
 * 1.3 us) and only clears the page's uffd-wp bit; nothing is ever delivered to the fd.  Every
 * interval a background thread calls PAGEMAP_SCAN on /proc/self/pagemap with PM_SCAN_WP_MATCHING,
 * which returns the pages written since the last call and write-protects them again in the same
 * walk, so no write between two scans is lost or counted twice.
 *
 * Environment (set by pagesync_model.trace.record; without PAGESYNC_TRACE_DIR the library is inert):
 *   PAGESYNC_TRACE_DIR          directory for the output file trace.<pid>.<ns>.bin
 *   PAGESYNC_TRACE_INTERVAL_NS  scan interval in nanoseconds (default 10 ms)
 *   PAGESYNC_TRACE_MODE         "scan" (default) or "register": register only, never write-protect
 *                               or scan, so that an external controller can run PAGEMAP_SCAN with
 *                               PM_SCAN_WP_MATCHING on /proc/<pid>/pagemap (the library's own
 *                               mappings are then registered as well).
 *   PAGESYNC_TRACE_PARENT       pid of the recorder: the library stays inert in any process whose
 *                               parent is not that pid (see Children below).
 *
 * The tracer keeps its own memory (I/O buffers, thread stack) in mappings it never registers and
 * makes no heap allocation after start-up, so its own writes never appear in the trace.
 *
 * Output file (native byte order; parsed by pagesync_model/trace/record.py, which must match):
 *   header  struct file_header
 *   records struct rec_header followed by payload:
 *     REC_INTERVAL  u64 t_scan_start, u64 t_scan_end, count x {u64 start, u64 end} written ranges
 *     REC_REGISTER  u64 t, count x {u64 start, u64 end, u64 err}  (err 0 = registered, else errno)
 *     REC_END       u64 t, then struct end_stats
 *     REC_ERROR     u32 stage, u32 errno, count bytes of message
 *     REC_TICK      u64 t (count 0): register mode, each time the thread woke and looked for new mappings
 * Every interval record is written out as soon as its scan ends, so a process that dies (a fatal
 * signal, SIGKILL, exec) keeps every finished interval; only the partial interval since the last
 * scan is lost, and the file then has no REC_END.  _exit() and _Exit() are interposed so that
 * programs that leave through them (dash, forked helpers) still get their last scan and REC_END.
 *
 * Children: fork() copies the tracer's thread stack (glibc keeps the thread descriptor there and
 * walks it in the child), but a forked child is not traced: the kernel drops the userfaultfd
 * registration and uffd-wp bits in the child (no UFFD_FEATURE_EVENT_FORK), and a pthread_atfork
 * handler disarms the library there and closes its descriptors, which refer to the parent's memory
 * and trace file.  Any other process that loads the library while PAGESYNC_TRACE_PARENT is set
 * (e.g. a program exec'd by a child) stays inert unless its parent is that pid: only the process
 * the recorder started is traced, however many program images it execs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pagemap_uapi.h"

#define TRACE_MAGIC "PSTRACE"
#define TRACE_VERSION 1u

enum { REC_INTERVAL = 1, REC_REGISTER = 2, REC_END = 3, REC_ERROR = 4, REC_TICK = 5 };
enum { MODE_SCAN = 0, MODE_REGISTER = 1 };
/* Error stages, reported to the recorder (record.py maps them to one-line messages). */
enum { ERR_UFFD_OPEN = 1, ERR_UFFD_API = 2, ERR_PAGEMAP_OPEN = 3, ERR_PAGEMAP_SCAN = 4,
       ERR_REGISTER = 5, ERR_MEMORY = 6, ERR_THREAD = 7, ERR_PROBE_MISSED = 8 };

struct file_header {
    char magic[8];
    uint32_t version;
    uint32_t page_size;
    uint64_t interval_ns;
    uint64_t t0_ns;          /* CLOCK_MONOTONIC at the end of the baseline scan */
    uint32_t mode;
    uint32_t pid;
    uint64_t baseline_pages; /* pages already written before tracing began (discarded) */
    uint64_t reserved[2];
};

struct rec_header {
    uint32_t type;
    uint32_t count;
};

struct end_stats {
    uint64_t n_intervals;
    uint64_t scan_ns_total;   /* time inside PAGEMAP_SCAN */
    uint64_t maps_ns_total;   /* time reading /proc/self/maps and registering */
    uint64_t n_register_ok;
    uint64_t n_register_failed;
    uint64_t n_rescans;       /* a mapping was replaced behind our back (EPERM) and re-registered */
    uint64_t n_scan_errors;
    uint64_t n_forks;         /* fork() calls (not vfork, posix_spawn): children run untraced */
};

struct range {
    uint64_t start, end, offset, inode;
    int state; /* 0 = new, 1 = registered, 2 = registration failed */
};

#define VEC_LEN 65536u            /* page_region entries per PAGEMAP_SCAN call */
#define MAPS_BUF (8u << 20)       /* /proc/self/maps text */
#define OUT_BUF (4u << 20)
#define MAX_RANGES 65536u
#define THREAD_STACK (256u << 10)

static struct {
    int active;
    int mode;
    pid_t pid;                /* the traced process; a child the atfork handler did not see (raw
                               * clone, vfork) has T but another pid */
    int uffd, pagemap_fd, out_fd, stop_fd;
    uint64_t page_size, interval_ns;
    pthread_t thread;
    struct page_region *vec;
    char *maps;
    char *out;
    size_t out_len;
    struct range *cur, *prev;
    unsigned n_cur, n_prev;
    struct { uint64_t start, end; } own[8]; /* the tracer's own mappings, never registered */
    unsigned n_own;
    struct end_stats st;
    uint64_t forks;           /* counted by the program's threads, read by the tracer's */
} T;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Private, never-registered memory for the tracer.  The madvise gives the VMA a flag that ordinary
 * anonymous mappings lack, so the kernel never merges it with the program's memory.  Buffers are
 * MADV_DONTFORK (a child never uses them); the thread stack must not be: glibc keeps the thread's
 * descriptor at its top and unlinks it from its thread list in every forked child, so a child
 * without that memory dies with SIGSEGV inside fork().  MADV_DONTDUMP keeps the stack apart. */
static void *own_map(size_t len, int advice)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, len, advice);
    if (T.n_own < sizeof T.own / sizeof T.own[0]) {
        T.own[T.n_own].start = (uint64_t)(uintptr_t)p;
        T.own[T.n_own].end = (uint64_t)(uintptr_t)p + len;
        T.n_own++;
    }
    return p;
}

static int is_own(uint64_t start, uint64_t end)
{
    for (unsigned i = 0; i < T.n_own; i++)
        if (start < T.own[i].end && T.own[i].start < end)
            return 1;
    return 0;
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

static void out_flush(void)
{
    if (T.out_len > 0 && T.out_fd >= 0)
        write_all(T.out_fd, T.out, T.out_len);
    T.out_len = 0;
}

static void out_put(const void *p, size_t len)
{
    if (T.out_len + len > OUT_BUF)
        out_flush();
    if (len > OUT_BUF) {
        write_all(T.out_fd, p, len);
        return;
    }
    memcpy(T.out + T.out_len, p, len);
    T.out_len += len;
}

static void report_error(uint32_t stage, int err, const char *msg)
{
    struct rec_header h = { REC_ERROR, (uint32_t)strlen(msg) };
    uint32_t v[2] = { stage, (uint32_t)err };
    if (T.out_fd < 0)
        return;
    out_put(&h, sizeof h);
    out_put(v, sizeof v);
    out_put(msg, strlen(msg));
    out_flush();
}

static int uffd_open(int *err)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == EPERM)
        /* Without CAP_SYS_PTRACE and with vm.unprivileged_userfaultfd=0 only user-mode-only
         * descriptors are allowed.  Async write-protect faults are resolved in the fault path
         * without consulting the descriptor, so this restriction changes nothing here. */
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    *err = fd < 0 ? errno : 0;
    return fd;
}

static int uffd_enable(int fd)
{
    struct uffdio_api api = { .api = UFFD_API,
                              .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
    return ioctl(fd, UFFDIO_API, &api);
}

static int uffd_register(uint64_t start, uint64_t end)
{
    struct uffdio_register reg = { .range = { .start = start, .len = end - start },
                                   .mode = UFFDIO_REGISTER_MODE_WP };
    return ioctl(T.uffd, UFFDIO_REGISTER, &reg);
}

/* ---- /proc/self/maps ---- */

static int read_maps(size_t *len)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    size_t n = 0;
    if (fd < 0)
        return -1;
    for (;;) {
        ssize_t r = read(fd, T.maps + n, MAPS_BUF - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n >= MAPS_BUF - 1)
            break;
    }
    close(fd);
    T.maps[n] = 0;
    *len = n;
    return 0;
}

static uint64_t parse_hex(const char **s)
{
    uint64_t v = 0;
    for (;; (*s)++) {
        char c = **s;
        if (c >= '0' && c <= '9')
            v = v * 16 + (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (uint64_t)(c - 'a' + 10);
        else
            return v;
    }
}

static uint64_t parse_dec(const char **s)
{
    uint64_t v = 0;
    while (**s >= '0' && **s <= '9')
        v = v * 10 + (uint64_t)(*(*s)++ - '0');
    return v;
}

/* Rebuild T.cur from /proc/self/maps: every writable private mapping, with the registration state
 * carried over from the previous snapshot when the mapping is unchanged; register the rest. */
static void refresh_mappings(void)
{
    size_t len;
    struct range *tmp;
    unsigned j = 0;
    struct { uint64_t start, end, err; } ev[256];
    unsigned n_ev = 0;

    tmp = T.prev; T.prev = T.cur; T.cur = tmp;
    T.n_prev = T.n_cur;
    T.n_cur = 0;
    if (read_maps(&len) < 0)
        return;
    for (const char *s = T.maps; *s && T.n_cur < MAX_RANGES;) {
        /* "start-end perms offset dev inode path" */
        struct range r = { 0 };
        char perms[4];
        r.start = parse_hex(&s);
        s++;
        r.end = parse_hex(&s);
        s++;
        memcpy(perms, s, 4);
        s += 5;
        r.offset = parse_hex(&s);
        s++;
        while (*s && *s != ' ')
            s++; /* dev */
        s++;
        r.inode = parse_dec(&s);
        while (*s && *s != '\n')
            s++;
        if (*s)
            s++;
        /* In register mode the library's own memory is registered too: the external controller
         * mirrors the whole process, and no trace of the library's own writes is kept. */
        if (perms[1] != 'w' || perms[3] != 'p' || (T.mode == MODE_SCAN && is_own(r.start, r.end)))
            continue;
        while (j < T.n_prev && T.prev[j].start < r.start)
            j++;
        if (j < T.n_prev && T.prev[j].start == r.start && T.prev[j].end == r.end &&
            T.prev[j].offset == r.offset && T.prev[j].inode == r.inode)
            r.state = T.prev[j].state;
        if (r.state == 0) {
            int err = uffd_register(r.start, r.end) == 0 ? 0 : errno;
            r.state = err ? 2 : 1;
            if (err)
                T.st.n_register_failed++;
            else
                T.st.n_register_ok++;
            if (n_ev < sizeof ev / sizeof ev[0]) {
                ev[n_ev].start = r.start;
                ev[n_ev].end = r.end;
                ev[n_ev].err = (uint64_t)err;
                n_ev++;
            }
        }
        T.cur[T.n_cur++] = r;
    }
    if (n_ev > 0) {
        struct rec_header h = { REC_REGISTER, n_ev };
        uint64_t t = now_ns();
        out_put(&h, sizeof h);
        out_put(&t, sizeof t);
        out_put(ev, n_ev * sizeof ev[0]);
    }
}

/* ---- scanning ---- */

/* One PAGEMAP_SCAN over [start, end): append the written ranges to the output buffer and re-arm
 * them.  Returns the number of pages written, or -1 with errno.  The vector is kept all-zero
 * between calls so that, when the kernel aborts with an error after filling part of it (pages it
 * already re-protected), the filled entries can still be recovered. */
static long scan_range(uint64_t start, uint64_t end, int emit)
{
    long pages = 0;
    uint64_t pos = start;
    while (pos < end) {
        struct pm_scan_arg arg = {
            .size = sizeof arg,
            .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = pos,
            .end = end,
            .vec = (uint64_t)(uintptr_t)T.vec,
            .vec_len = VEC_LEN,
            /* Match every page not write-protected, holes included: the walk then also puts
             * uffd-wp markers on unpopulated entries (WP_UNPOPULATED), so a later read fault maps
             * a protected page instead of one that looks written.  Holes, zero-page mappings and
             * markers are filtered out below by their categories. */
            .category_mask = PAGE_IS_WRITTEN,
            .return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
        };
        int n = ioctl(T.pagemap_fd, PAGEMAP_SCAN, &arg);
        int err = errno;
        unsigned used = 0;
        if (n >= 0)
            used = (unsigned)n;
        else
            while (used < VEC_LEN && T.vec[used].end != 0)
                used++;
        for (unsigned i = 0; i < used; i++) {
            struct page_region *r = &T.vec[i];
            uint64_t c = r->categories;
            if ((c & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED)) && !(c & PAGE_IS_PFNZERO)) {
                uint64_t se[2] = { r->start, r->end };
                pages += (long)((r->end - r->start) / T.page_size);
                if (emit)
                    out_put(se, sizeof se);
            }
        }
        memset(T.vec, 0, used * sizeof T.vec[0]);
        if (n < 0) {
            errno = err;
            return -1;
        }
        if (arg.walk_end <= pos || arg.walk_end >= end)
            break;
        pos = arg.walk_end; /* the vector was full: continue where the walk stopped */
    }
    return pages;
}

/* Scan every registered mapping; returns pages written.  The record header's count is patched in
 * place once the number of ranges is known. */
static uint64_t scan_all(uint64_t *t_start, uint64_t *t_end, int emit)
{
    uint64_t pages = 0;
    size_t hdr_at = 0, body_at;
    struct rec_header h = { REC_INTERVAL, 0 };
    uint64_t times[2] = { 0, 0 };
    if (emit) {
        if (T.out_len + sizeof h + sizeof times > OUT_BUF)
            out_flush();
        hdr_at = T.out_len;
        out_put(&h, sizeof h);
        out_put(times, sizeof times);
    }
    body_at = T.out_len;
    *t_start = now_ns();
    for (unsigned i = 0; i < T.n_cur; i++) {
        struct range *r = &T.cur[i];
        long n;
        if (r->state != 1)
            continue;
        if (emit && T.out_len + VEC_LEN * 16 > OUT_BUF) {
            /* Keep one record contiguous in the buffer: flush what precedes it. */
            size_t keep = T.out_len - hdr_at;
            write_all(T.out_fd, T.out, hdr_at);
            memmove(T.out, T.out + hdr_at, keep);
            T.out_len = keep;
            body_at -= hdr_at;
            hdr_at = 0;
        }
        n = scan_range(r->start, r->end, emit);
        if (n < 0 && errno == EPERM) {
            /* A VMA here is not (or no longer) registered: the mapping was replaced by one with
             * the same bounds.  Register it and scan again. */
            T.st.n_rescans++;
            if (uffd_register(r->start, r->end) == 0)
                n = scan_range(r->start, r->end, emit);
            else
                r->state = 2;
        }
        if (n < 0)
            T.st.n_scan_errors++;
        else
            pages += (uint64_t)n;
    }
    *t_end = now_ns();
    if (emit) {
        struct rec_header *hp = (struct rec_header *)(T.out + hdr_at);
        uint64_t *tp = (uint64_t *)(T.out + hdr_at + sizeof h);
        hp->count = (uint32_t)((T.out_len - body_at) / 16);
        tp[0] = *t_start;
        tp[1] = *t_end;
    }
    T.st.scan_ns_total += *t_end - *t_start;
    return pages;
}

static void *tracer_main(void *unused)
{
    uint64_t next = now_ns() + T.interval_ns;
    (void)unused;
    for (;;) {
        struct pollfd pfd = { .fd = T.stop_fd, .events = POLLIN };
        uint64_t now = now_ns(), t_maps, ts, te;
        int stopping;
        if (next > now) {
            struct timespec to = { (time_t)((next - now) / 1000000000u),
                                   (long)((next - now) % 1000000000u) };
            stopping = ppoll(&pfd, 1, &to, NULL) > 0;
        } else {
            stopping = poll(&pfd, 1, 0) > 0;
        }
        t_maps = now_ns();
        refresh_mappings();
        T.st.maps_ns_total += now_ns() - t_maps;
        if (T.mode == MODE_SCAN) {
            scan_all(&ts, &te, 1);
            T.st.n_intervals++;
            /* out of the process at once: a fatal signal or SIGKILL must not take finished
             * intervals with it (one write per interval) */
            out_flush();
        }
        if (stopping)
            break;
        next += T.interval_ns;
        now = now_ns();
        if (next < now) /* overran (descheduled): skip the missed ticks, keep the phase */
            next += ((now - next) / T.interval_ns + 1) * T.interval_ns;
        if (T.mode == MODE_REGISTER) {
            /* the wake's time: a live mirror models the thread's own writes from these */
            struct rec_header h = { REC_TICK, 0 };
            out_put(&h, sizeof h);
            out_put(&t_maps, sizeof t_maps);
            out_flush();
        }
    }
    {
        struct rec_header h = { REC_END, 0 };
        uint64_t t = now_ns();
        T.st.n_forks = __atomic_load_n(&T.forks, __ATOMIC_RELAXED);
        out_put(&h, sizeof h);
        out_put(&t, sizeof t);
        out_put(&T.st, sizeof T.st);
        out_flush();
    }
    return NULL;
}

/* Checks that this kernel supports the mechanism, end to end: a page written after re-arming is
 * reported, an untouched one is not.  Returns 0, or an error stage (ERR_*) with *err = errno.
 * Called through ctypes by pagesync_model.trace.record.probe(); does not need the environment. */
int pagesync_trace_probe(int *err)
{
    long ps = sysconf(_SC_PAGESIZE);
    int uffd, pm, stage = 0;
    char *mem;
    struct page_region vec[8];
    *err = 0;
    uffd = uffd_open(err);
    if (uffd < 0)
        return ERR_UFFD_OPEN;
    if (uffd_enable(uffd) < 0) {
        *err = errno;
        close(uffd);
        return ERR_UFFD_API;
    }
    pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm < 0) {
        *err = errno;
        close(uffd);
        return ERR_PAGEMAP_OPEN;
    }
    mem = mmap(NULL, (size_t)ps * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        *err = errno;
        close(pm);
        close(uffd);
        return ERR_MEMORY;
    }
    memset(mem, 1, (size_t)ps * 4);
    {
        struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)mem, (uint64_t)ps * 4 },
                                       .mode = UFFDIO_REGISTER_MODE_WP };
        struct pm_scan_arg arg = { .size = sizeof arg,
                                   .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                                   .start = (uint64_t)(uintptr_t)mem,
                                   .end = (uint64_t)(uintptr_t)mem + (uint64_t)ps * 4,
                                   .vec = (uint64_t)(uintptr_t)vec, .vec_len = 8,
                                   .category_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
                                   .return_mask = PAGE_IS_WRITTEN };
        int n;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
            stage = ERR_REGISTER;
        } else if (ioctl(pm, PAGEMAP_SCAN, &arg) < 0) { /* arms all four pages */
            stage = ERR_PAGEMAP_SCAN;
        } else {
            mem[2 * ps] = 2;
            n = ioctl(pm, PAGEMAP_SCAN, &arg);
            if (n < 0)
                stage = ERR_PAGEMAP_SCAN;
            else if (n != 1 || vec[0].start != (uint64_t)(uintptr_t)(mem + 2 * ps) ||
                     vec[0].end != (uint64_t)(uintptr_t)(mem + 3 * ps))
                stage = ERR_PROBE_MISSED;
        }
        if (stage && stage != ERR_PROBE_MISSED)
            *err = errno;
    }
    munmap(mem, (size_t)ps * 4);
    close(pm);
    close(uffd);
    return stage;
}

static void count_fork(void)
{
    __atomic_fetch_add(&T.forks, 1, __ATOMIC_RELAXED);
}

/* In a forked child: no tracer thread, no registration (the kernel drops it), none of the buffers
 * (MADV_DONTFORK).  The descriptors still refer to the parent's memory (uffd, pagemap), trace file
 * and thread (stop_fd): close them so the child can neither wake nor write for the parent. */
static void disarm_in_child(void)
{
    int *fds[] = { &T.uffd, &T.pagemap_fd, &T.out_fd, &T.stop_fd };
    T.active = 0;
    for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
}

/* Wake the thread for a last scan (the final, partial interval) and wait for its REC_END.  Only
 * in the traced process itself and only once: a child made by a raw clone() or vfork() shares or
 * copies T without the atfork handler, and must not stop (or wait for) the parent's thread. */
static void tracer_stop(void)
{
    uint64_t one = 1;
    if (getpid() != T.pid || !__atomic_exchange_n(&T.active, 0, __ATOMIC_ACQ_REL))
        return;
    /* the thread writes everything out itself, REC_END last: nothing is left to flush here */
    if (write(T.stop_fd, &one, sizeof one) == sizeof one)
        pthread_join(T.thread, NULL);
}

__attribute__((constructor)) static void tracer_init(void)
{
    const char *dir = getenv("PAGESYNC_TRACE_DIR");
    const char *iv = getenv("PAGESYNC_TRACE_INTERVAL_NS");
    const char *mode = getenv("PAGESYNC_TRACE_MODE");
    const char *parent = getenv("PAGESYNC_TRACE_PARENT");
    char path[4096];
    struct file_header fh = { .magic = TRACE_MAGIC, .version = TRACE_VERSION };
    uint64_t ts, te, base = 0;
    int err, rc;
    pthread_attr_t attr;
    sigset_t all, old;
    void *stack;

    if (!dir || !*dir)
        return;
    /* The recorder names itself: a process it did not start (a child's exec'd program, which
     * inherits LD_PRELOAD) stays inert instead of tracing itself into a log nobody keeps. */
    if (parent && *parent && strtol(parent, NULL, 10) != (long)getppid())
        return;
    T.pid = getpid();
    T.uffd = T.pagemap_fd = T.stop_fd = -1;
    T.page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    T.interval_ns = iv ? strtoull(iv, NULL, 10) : 0;
    if (T.interval_ns == 0)
        T.interval_ns = 10000000u;
    T.mode = (mode && strcmp(mode, "register") == 0) ? MODE_REGISTER : MODE_SCAN;
    snprintf(path, sizeof path, "%s/trace.%d.%llu.bin", dir, (int)getpid(),
             (unsigned long long)now_ns());
    T.out_fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (T.out_fd < 0) {
        fprintf(stderr, "pagesync_trace: cannot create %s: %s\n", path, strerror(errno));
        return;
    }
    pthread_atfork(NULL, count_fork, disarm_in_child);
    T.vec = own_map(VEC_LEN * sizeof(struct page_region), MADV_DONTFORK);
    T.maps = own_map(MAPS_BUF, MADV_DONTFORK);
    T.out = own_map(OUT_BUF, MADV_DONTFORK);
    T.cur = own_map(MAX_RANGES * sizeof(struct range), MADV_DONTFORK);
    T.prev = own_map(MAX_RANGES * sizeof(struct range), MADV_DONTFORK);
    stack = own_map(THREAD_STACK, MADV_DONTDUMP);
    if (!T.vec || !T.maps || !T.out || !T.cur || !T.prev || !stack) {
        /* out may be missing: write the error record unbuffered */
        struct rec_header h = { REC_ERROR, 0 };
        uint32_t v[2] = { ERR_MEMORY, ENOMEM };
        write_all(T.out_fd, &fh, sizeof fh);
        write_all(T.out_fd, &h, sizeof h);
        write_all(T.out_fd, v, sizeof v);
        return;
    }
    fh.page_size = (uint32_t)T.page_size;
    fh.interval_ns = T.interval_ns;
    fh.mode = (uint32_t)T.mode;
    fh.pid = (uint32_t)getpid();

    T.uffd = uffd_open(&err);
    if (T.uffd < 0) {
        out_put(&fh, sizeof fh);
        report_error(ERR_UFFD_OPEN, err, "userfaultfd() failed");
        return;
    }
    if (uffd_enable(T.uffd) < 0) {
        out_put(&fh, sizeof fh);
        report_error(ERR_UFFD_API, errno, "UFFDIO_API with WP_ASYNC|WP_UNPOPULATED failed");
        return;
    }
    T.pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (T.pagemap_fd < 0) {
        out_put(&fh, sizeof fh);
        report_error(ERR_PAGEMAP_OPEN, errno, "cannot open /proc/self/pagemap");
        return;
    }
    T.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    /* Baseline: register everything and arm it; pages written before main() are discarded. */
    refresh_mappings();
    if (T.mode == MODE_SCAN) {
        base = scan_all(&ts, &te, 0);
        T.st.scan_ns_total = 0;
    }
    fh.baseline_pages = base;
    fh.t0_ns = now_ns();
    {
        /* the header goes before the registration records already buffered */
        char hdr[sizeof fh];
        size_t keep = T.out_len;
        memcpy(hdr, &fh, sizeof fh);
        memmove(T.out + sizeof fh, T.out, keep);
        memcpy(T.out, hdr, sizeof fh);
        T.out_len = keep + sizeof fh;
        out_flush();
    }

    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, stack, THREAD_STACK);
    /* The thread starts with every signal blocked: the program's handlers (which may call _exit,
     * longjmp or malloc) must never run on it, in the middle of a scan or a buffered record. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&T.thread, &attr, tracer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        report_error(ERR_THREAD, rc, "cannot start the tracer thread");
        return;
    }
    T.active = 1;
}

/* Runs at exit(). */
__attribute__((destructor)) static void tracer_fini(void)
{
    tracer_stop();
}

/* _exit() skips destructors; programs that end through it (dash always does, as do forked helpers
 * and os._exit) would lose their last interval and REC_END.  The stop is a no-op where the library
 * is inert or in a child. */
void _exit(int status)
{
    tracer_stop();
    syscall(SYS_exit_group, status);
    for (;;)
        syscall(SYS_exit, status);
}

void _Exit(int status) __attribute__((alias("_exit")));
