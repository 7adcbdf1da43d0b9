/*
 * fault_target.c - programs that fork, die or leave through _exit, for tests/test_tracer_faults.py.
 *
 * usage: fault_target MODE N_PAGES INTERVAL_US
 * Every mode allocates a buffer, reads every page of it (reads are not writes), prints
 * "buf <hex address> <page size>", and logs each write it makes to the buffer as
 * "w <page> <CLOCK_MONOTONIC ns>", written out at once (the log must survive a crash).
 *   fork   the parent writes pages 0..3; a fork() child writes pages 4..7 and N+4..N+7 of its
 *          copy and checks that it sees the parent's page 0 and its own writes; a second fork() child execs `true`; a raw
 *          syscall(SYS_fork) child (no atfork handlers) calls exit(); the parent prints
 *          "child<k> <raw wait status>" for each, then writes pages 8..11.  N_PAGES >= 12.
 *   crash  writes pages 0..N-1, one per 2*INTERVAL_US, then dereferences NULL (SIGSEGV).
 *   spin   writes pages 0..N-1 round and round, one per INTERVAL_US, until killed.
 *   exit   writes pages 0..N-1, one per 2*INTERVAL_US, then calls _exit(4) at once.
 *   sigwait blocks SIGUSR1, sends it to the process and takes it with sigwait(): the classic
 *          pattern of a program whose signals are handled by one thread; prints "sig <number>".
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long ps;
static volatile char *buf;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* the line is formatted on the stack and written with one write(2): nothing buffered to lose */
static void say(const char *fmt, unsigned long long a, unsigned long long b)
{
    char line[96];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (write(1, line, (size_t)n) != n)
        _exit(3);
}

static void put(int page)
{
    buf[(long)page * ps] = 1;
    say("w %llu %llu\n", (unsigned long long)page, (unsigned long long)now_ns());
}

static void wait_child(int k, pid_t pid)
{
    int status = -1;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        status = -1;
    say("child%llu %llu\n", (unsigned long long)k, (unsigned long long)(unsigned)status);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "crash";
    int n = argc > 2 ? atoi(argv[2]) : 12;
    long us = argc > 3 ? atol(argv[3]) : 10000;
    char *raw;
    volatile long sum = 0;
    pid_t pid;

    ps = sysconf(_SC_PAGESIZE);
    /* large enough for malloc to use its own mmap; page-aligned start past the chunk header */
    raw = malloc((size_t)(n + 64) * (size_t)ps);
    buf = (char *)(((uintptr_t)raw + 2 * (uintptr_t)ps) & ~((uintptr_t)ps - 1));
    for (int i = 0; i < n; i++)
        sum += buf[(long)i * ps];
    say("buf %llx %llu\n", (unsigned long long)(uintptr_t)buf, (unsigned long long)ps);
    usleep(3 * us); /* let the tracer register the new mapping */

    if (strcmp(mode, "fork") == 0) {
        for (int i = 0; i < 4; i++) {
            put(i);
            usleep(2 * us);
        }
        pid = fork();
        if (pid == 0) {
            char *scratch = malloc(1 << 20);
            int ok = buf[0] == 1;
            for (int r = 0; r < 4; r++) {
                /* 4..7 were read by the parent, n.. never touched (write-protect markers there) */
                for (int i = 4; i < 8; i++)
                    buf[(long)i * ps] = buf[(long)(n + i) * ps] = (char)(r + 2);
                memset(scratch, r, 1 << 20);
                usleep((useconds_t)us);
            }
            for (int i = 4; i < 8; i++)
                ok &= buf[(long)i * ps] == 5 && buf[(long)(n + i) * ps] == 5;
            free(scratch);
            exit(ok ? 0 : 5);
        }
        wait_child(1, pid);
        pid = fork();
        if (pid == 0) {
            execlp("true", "true", (char *)NULL);
            _exit(127);
        }
        wait_child(2, pid);
        pid = (pid_t)syscall(SYS_fork);
        if (pid == 0)
            exit(0);
        wait_child(3, pid);
        usleep(2 * us);
        for (int i = 8; i < 12; i++) {
            put(i);
            usleep(2 * us);
        }
        return (int)(sum & 0);
    }
    if (strcmp(mode, "sigwait") == 0) {
        sigset_t set;
        int sig = 0;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, NULL);
        /* process-directed: the kernel hands it to any thread that does not block it */
        kill(getpid(), SIGUSR1);
        usleep((useconds_t)us);
        sigwait(&set, &sig);
        say("sig %llu %llu\n", (unsigned long long)sig, 0);
        return 0;
    }
    if (strcmp(mode, "spin") == 0)
        for (int i = 0;; i = (i + 1) % n) {
            put(i);
            usleep((useconds_t)us);
        }
    for (int i = 0; i < n; i++) {
        put(i);
        if (strcmp(mode, "exit") != 0 || i < n - 1)
            usleep(2 * us);
    }
    if (strcmp(mode, "exit") == 0)
        _exit(4);
    *(volatile int *)(uintptr_t)sum = 0; /* sum is 0: a real fault, not raise() */
    return 1;
}
