"""The live controller: the Stratus pagesync algorithm run against a real Linux process.

``run_mirror(cmd, to, ...)`` starts ``cmd`` with the preload library of ``pagesync_model.trace`` in
register mode (it registers every writable private mapping of the target for userfaultfd
asynchronous write-protection, and keeps registering new ones; it never write-protects or scans),
then, from this separate process:

1. pass 0 ("full"): one PAGEMAP_SCAN of /proc/<pid>/pagemap with PM_SCAN_WP_MATCHING |
   PM_SCAN_CHECK_WPASYNC over every writable private mapping returns every present page (none is
   write-protected yet, so all read as written) and arms them all; they are read with
   process_vm_readv and sent;
2. for pass = passes .. 0: the same scan returns the pages written since the previous scan and
   re-arms them in the same walk (the harvest; the target keeps running). If the count is under
   ``threshold`` or pass == 0: blackout (with ``stop="after-copy"`` the pass first copies the pages
   it found, as any pass, and the blackout's final scan finds what was written meanwhile). Otherwise pages that are no longer present (unmapped,
   MADV_DONTNEED) are dropped at the partner and the written ones are copied;
3. blackout: SIGSTOP, wait until every thread is in state T, a final scan, copy the pages of both
   scans (and every present page of writable mappings the library has not registered yet), drop the
   pages gone, wait for the partner's acknowledgement (the downtime ends here), checksum every
   present page of the stopped target, SIGCONT; then (the target running again) compare with the
   partner's checksums and send the verdict (VERIFIED or FAILED) and END.

Every failure is a LiveError (one line). The target is never left stopped: every step of the
blackout ends by ``max_blackout`` after the SIGSTOP (the writes to the receiver wait in poll, not in
write; the wait for its acknowledgement has a socket timeout), past which the mirror gives up and
continues the target; any exception continues it (try/finally); SIGINT/SIGTERM/SIGHUP are turned into
an orderly stop, and reach the controller even while it waits in C for a stalled receiver; and a
watchdog process (``watchdog``) continues the target if the controller dies (SIGKILL) while it is
stopped. A target found stopped by someone else at the blackout is mirrored as it is and left stopped.
The verification and the verdict after the cut-over have no deadline (a receiver may take a while to
save a large mirror); a signal ends them like any other step.
"""
from __future__ import annotations

import errno as _errno
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np

from .. import __version__
from ..policies.stratus import PASSES, THRESHOLD, stop_rule
from ..results import PassRecord, Result, Summary
from . import _lib
from .errors import LiveError
from .protocol import Link
from .watchdog import Watchdog, WatchdogError

POLICY = "stratus-live"


class _Signalled(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class _BlackoutExceeded(Exception):
    """A step of the blackout did not end by the deadline; ``step`` says which."""

    def __init__(self, step):
        super().__init__(step)
        self.step = step


def _mono_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def read_maps(pid):
    """Writable private mappings of ``pid`` as uint64 [n, 2] (start, end), and their names."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            text = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(_errno.ESRCH, "no such process") from None
    rows, names = [], []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[1][1] != "w" or parts[1][3] != "p":
            continue
        a, b = parts[0].split("-")
        rows.append((int(a, 16), int(b, 16)))
        names.append(parts[5] if len(parts) > 5 else "")
    return np.array(rows, dtype=np.uint64).reshape(-1, 2), names


def expand(ranges, page_size):
    """uint64 [k, 2] ranges -> sorted page addresses."""
    if len(ranges) == 0:
        return np.empty(0, dtype=np.uint64)
    ps = np.uint64(page_size)
    lens = ((ranges[:, 1] - ranges[:, 0]) // ps).astype(np.int64)
    total = int(lens.sum())
    run_start = np.repeat(np.cumsum(lens) - lens, lens)
    pages = np.repeat(ranges[:, 0], lens) + (np.arange(total, dtype=np.int64) - run_start).astype(np.uint64) * ps
    if len(pages) > 1 and not (pages[1:] > pages[:-1]).all():
        pages = np.unique(pages)
    return pages


def to_ranges(pages, page_size):
    """Sorted page addresses -> uint64 [k, 2] maximal runs (start, end)."""
    if len(pages) == 0:
        return np.empty((0, 2), dtype=np.uint64)
    ps = np.uint64(page_size)
    brk = np.flatnonzero(np.diff(pages) != ps) + 1
    starts = pages[np.r_[0, brk]]
    ends = pages[np.r_[brk - 1, len(pages) - 1]] + ps
    return np.stack([starts, ends], axis=1).astype(np.uint64)


def npages(ranges, page_size):
    return int(((ranges[:, 1] - ranges[:, 0]) // np.uint64(page_size)).sum()) if len(ranges) else 0


def thread_states(pid):
    """State letter of every thread of ``pid`` (from /proc/<pid>/task/*/stat)."""
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            with open(path) as f:
                s = f.read()
        except OSError:
            continue  # the thread ended
        out.append(s[s.rfind(")") + 2])
    return out


def wait_stopped(pid, timeout=5.0):
    """Wait until every thread of ``pid`` is stopped (T, t) or dead (Z, X); returns the seconds waited.
    TimeoutError (its text names the threads' states) if they are not after ``timeout`` s."""
    t0 = time.perf_counter()
    while True:
        st = thread_states(pid)
        if st and all(c in "TtZX" for c in st):
            return time.perf_counter() - t0
        if not st:
            raise ProcessLookupError(_errno.ESRCH, "no such process")
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(_errno.ETIMEDOUT, f"threads still running {timeout:.3g} s after SIGSTOP "
                                                 f"(states {''.join(st)})")
        time.sleep(20e-6)


def schedstat():
    """(seconds on a CPU, seconds runnable but waiting for one, times it was put on a CPU) of the calling
    thread so far, from the kernel's accounting (/proc/thread-self/schedstat); zeros where the kernel
    does not keep it."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            cpu, wait, slices = f.read().split()[:3]
        return int(cpu) / 1e9, int(wait) / 1e9, int(slices)
    except (OSError, ValueError):
        return 0.0, 0.0, 0


def _share(a, b):
    """The CPU time, run-queue wait and times scheduled between two ``schedstat`` readings."""
    return {"cpu_s": b[0] - a[0], "runqueue_s": b[1] - a[1], "slices": b[2] - a[2]}


def _library_ticks(proc, tmp, t0_ns):
    """When the library's polling thread woke so far (seconds since the target's start): it writes a
    few pages of its own at each wake, which the mirror copies like the program's."""
    from ..trace.record import parse_raw_log
    from ..trace.format import TraceError
    logs = glob.glob(os.path.join(tmp, f"trace.{proc.pid}.*.bin"))
    try:
        return [(t - t0_ns) / 1e9 for t in parse_raw_log(logs[0]).ticks] if logs else []
    except (TraceError, OSError):
        return []


def _wait_library(proc, tmp, timeout):
    """Wait for the preload library's log header (written once every mapping is registered); returns
    the parsed log.  LiveError if the target exits first, never loads the library, or reports an error."""
    from ..trace.record import HEADER_BYTES, explain_error, parse_raw_log
    from ..trace.format import TraceError
    t0 = time.monotonic()
    while True:
        logs = glob.glob(os.path.join(tmp, f"trace.{proc.pid}.*.bin"))
        if logs and os.path.getsize(logs[0]) >= HEADER_BYTES:
            time.sleep(0.002)  # an error record follows the header in the same flush
            try:
                log = parse_raw_log(logs[0])
            except TraceError as e:
                raise LiveError(str(e)) from None
            if log.error is not None:
                raise LiveError(f"live mirror: {explain_error(log.error[0], log.error[1])}")
            return log
        rc = proc.poll()
        if rc is not None:
            raise LiveError(f"target {proc.args[0]} exited (status {rc}) before the mirror could start")
        if time.monotonic() - t0 > timeout:
            raise LiveError(f"target {proc.args[0]} never loaded the preload library within {timeout:.0f} s "
                            "(a static or setuid binary ignores LD_PRELOAD); nothing can be tracked")
        time.sleep(0.002)


def is_running(pid, timeout=1.0):
    """True once no thread of ``pid`` is in a job-control stop (T), within ``timeout`` s (a SIGCONT
    takes effect as each thread is scheduled); False if one still is; True if the process is gone."""
    t0 = time.monotonic()
    while True:
        st = thread_states(pid)
        if "T" not in st:
            return True
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.001)


def _access_message(pid, err):
    return (f"no ptrace access to the target (pid {pid}): {os.strerror(err)} reading its memory; run as root, "
            "or as the target's own user with a dumpable target (kernel.yama.ptrace_scope <= 1)")


class Controller:
    """One live mirror of a started target ``proc`` to ``link``."""

    def __init__(self, proc, link, page_size, passes, threshold, log_t0_ns, max_blackout, watchdog,
                 stop="at-once"):
        self.proc = proc
        self.stop_mode = stop
        self.pid = proc.pid
        self.link = link
        self.ps = page_size
        self.passes = passes
        self.threshold = threshold
        self.log_t0_ns = log_t0_ns
        self.sender = _lib.Sender(page_size)
        self.held = np.empty(0, dtype=np.uint64)
        self.records = []
        self.live = []
        self.max_blackout = max_blackout
        self.watchdog = watchdog
        self.stopped = False  # by our SIGSTOP, not yet continued
        self.found_stopped = False  # someone else had stopped the target before the blackout
        self.step = None
        self.deadline_ns = 0
        self.pass_no = 0
        self._debug = []
        try:
            self.fd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY)
        except PermissionError as e:
            raise LiveError(_access_message(self.pid, e.errno)) from None
        except FileNotFoundError:
            raise ProcessLookupError(_errno.ESRCH, "no such process") from None

    # -- primitives -------------------------------------------------------------------------------
    def alive(self):
        if self.proc.poll() is not None:
            raise ProcessLookupError(_errno.ESRCH, "exited")

    def scan(self, mode):
        maps, _ = read_maps(self.pid)
        err = np.zeros(len(maps), dtype=np.int32)
        try:
            r = _lib.scan(self.fd, maps, mode, err, self.ps)
        except _lib.OsErr as e:
            if e.errno in (_errno.EACCES, _errno.EPERM):
                raise LiveError(_access_message(self.pid, e.errno)) from None
            if e.errno == _errno.ESRCH:
                raise ProcessLookupError(e.errno, "scan") from None
            if e.errno in (_errno.ENOTTY, _errno.EINVAL, _errno.EOPNOTSUPP):
                raise LiveError(f"kernel {os.uname().release} lacks the PAGEMAP_SCAN ioctl (Linux 6.7+): "
                                f"{os.strerror(e.errno)}; a live mirror is not possible here") from None
            raise LiveError(f"PAGEMAP_SCAN of pid {self.pid} failed: {os.strerror(e.errno)}") from None
        unreg = int(((maps[err != 0, 1] - maps[err != 0, 0]) // np.uint64(self.ps)).sum()) if err.any() else 0
        return r, int((err != 0).sum()), unreg

    def send(self, ranges):
        try:
            self.sender.send(self.pid, self.link.fd, ranges, self.deadline_ns)
        except _lib.OsErr as e:
            if e.errno == _errno.ESRCH:
                raise ProcessLookupError(e.errno, "read") from None
            if e.errno in (_errno.EPERM, _errno.EACCES):
                raise LiveError(_access_message(self.pid, e.errno)) from None
            raise OSError(e.errno, os.strerror(e.errno)) from None

    def copy(self, written, present, only_present=False):
        """Drop the pages gone, send the written ones; update the set the partner holds.  With
        ``only_present`` (the blackout: the target is stopped, ``present`` is final) a written page that
        is no longer present is not sent: given back (MADV_DONTNEED) after the scan that found it
        written, it would be read as zeros and the partner would keep a page the target has not."""
        t0 = _mono_ns()
        pres_pages = expand(present, self.ps)
        if only_present and len(written):
            w = expand(written, self.ps)
            written = to_ranges(w[np.isin(w, pres_pages, assume_unique=True)], self.ps)
        gone = self.held[~np.isin(self.held, pres_pages, assume_unique=True)] if len(self.held) else self.held
        self.link.drop(to_ranges(gone, self.ps))
        stats0 = self.sender.stats.copy()
        t1 = _mono_ns()
        self.send(written)
        d = self.sender.stats - stats0
        t2 = _mono_ns()
        if os.environ.get("PAGESYNC_LIVE_DEBUG"):
            self._debug.append((expand(written, self.ps), pres_pages, gone))
        self._pending = (written, gone)
        self.t_copy = ((t1 - t0) / 1e9, (t2 - t1) / 1e9)
        return len(gone), d

    def update_held(self):
        """After the pass: the set of pages the partner holds (used to find pages gone next time)."""
        written, gone = self._pending
        keep = self.held if not len(gone) else self.held[~np.isin(self.held, gone, assume_unique=True)]
        self.held = np.union1d(keep, expand(written, self.ps))

    def open_pass(self, kind, t_start):
        rec = PassRecord(pass_=len(self.records), kind=kind, start_s=(t_start - self.t0) / 1e9)
        rec.writes = None
        self.records.append(rec)
        self.pass_no = rec.pass_
        return rec

    def close_pass(self, rec, t_start, dirty, d, info):
        t = _mono_ns()
        rec.duration_s = (t - t_start) / 1e9
        rec.dirty_pages = int(dirty)
        rec.pages_copied = int(d[0]) // self.ps
        rec.bytes = int(d[0])
        rec.ranges = int(d[2])
        self.update_held()
        info.update(prep_s=self.t_copy[0], send_s=self.t_copy[1],
                    ack_s=(t - self.t_ack) / 1e9, pass_=rec.pass_, t_from_target_start_s=(t_start - self.log_t0_ns) / 1e9,
                    unreadable_pages=int(d[3]), read_s=int(d[4]) / 1e9, write_s=int(d[5]) / 1e9)
        info["pass"] = info.pop("pass_")
        self.live.append(info)
        return t

    # -- the algorithm -----------------------------------------------------------------------------
    def run(self):
        self.sched = [schedstat()]  # at the start, at the stop, at the end of the blackout
        self.t0 = t = _mono_ns()
        rec = self.open_pass("full", t)
        written, n_unreg, unreg = self.scan(0)
        t_scan = _mono_ns()
        self.alive()
        present, _, _ = self.scan(1)
        gone, d = self.copy(written, present)
        self.t_ack = _mono_ns()
        self.link.end_pass(rec.pass_)
        self.close_pass(rec, t, npages(written, self.ps), d,
                        dict(scan_s=(t_scan - t) / 1e9, unregistered_mappings=n_unreg, dropped_pages=gone))
        for pass_left in range(self.passes, -1, -1):
            t = _mono_ns()
            self.alive()
            rec = self.open_pass("pass", t)
            written, n_unreg, unreg = self.scan(0)
            t_scan = _mono_ns()
            count = npages(written, self.ps)
            stop, converged = stop_rule(count, pass_left, self.threshold)
            if stop and self.stop_mode == "at-once":
                rec.kind = "blackout"
                return self.blackout(rec, t, t_scan, written, count, converged)
            self.alive()
            present, _, _ = self.scan(1)
            gone, d = self.copy(written, present)
            self.t_ack = _mono_ns()
            self.link.end_pass(rec.pass_)
            self.close_pass(rec, t, count, d, dict(scan_s=(t_scan - t) / 1e9, unregistered_mappings=n_unreg,
                                                   dropped_pages=gone))
            if stop:  # after-copy: the deciding pass is copied; stop, scan once more, copy what was written
                t = _mono_ns()
                self.alive()
                rec = self.open_pass("blackout", t)
                return self.blackout(rec, t, t, np.empty((0, 2), dtype=np.uint64), None, converged)
        raise AssertionError("unreachable")

    def _left(self):
        """Seconds left before the blackout's deadline; TimeoutError once it has passed."""
        left = (self.deadline_ns - _mono_ns()) / 1e9
        if left <= 0:
            raise TimeoutError(_errno.ETIMEDOUT, "deadline passed")
        return left

    def blackout(self, rec, t, t_scan, written, count, converged):
        self.alive()
        self.sched.append(schedstat())
        t_stop = _mono_ns()
        self.deadline_ns = t_stop + int(self.max_blackout * 1e9)
        self.step = "stopping the target"
        # stopped already (kill -STOP, ^Z): mirrored as it is, and neither continued here nor armed
        # for, so that the user's stop is kept
        self.found_stopped = "T" in thread_states(self.pid)
        if not self.found_stopped:
            self.watchdog.arm()
            self.stopped = True  # before the signal: an exception between the two still continues it
            os.kill(self.pid, signal.SIGSTOP)
        try:
            self.link.set_deadline(self.deadline_ns)
            stop_wait = wait_stopped(self.pid, timeout=self._left())
            self.alive()
            self.step = "scanning the stopped target"
            t_final = _mono_ns()
            final, n_unreg, unreg = self.scan(0)
            present, _, _ = self.scan(1)
            t_final_end = _mono_ns()
            self._left()
            self.step = "sending the last pages to the receiver"
            held_before = len(self.held)  # the pages the partner holds: the mirror's size so far
            both = np.union1d(expand(written, self.ps), expand(final, self.ps))
            gone, d = self.copy(to_ranges(both, self.ps), present, only_present=True)
            self.t_ack = _mono_ns()
            self.step = f"waiting for the receiver's acknowledgement of pass {rec.pass_}"
            self.link.end_pass(rec.pass_)
            t_end = self.close_pass(rec, t, npages(final, self.ps) if count is None else count, d, dict(
                scan_s=(t_scan - t) / 1e9, unregistered_mappings=n_unreg, dropped_pages=gone,
                stop_wait_s=stop_wait, final_scan_s=(t_final_end - t_final) / 1e9,
                final_scan_pages=npages(final, self.ps), blackout_pages=len(both),
                mirrored_pages=held_before))
            self.downtime_s = (t_end - t_stop) / 1e9
            self.sched.append(schedstat())
            # verification: checksums of every present page of the stopped target
            self.step = "checksumming the stopped target"
            t_v = _mono_ns()
            target_pages = expand(present, self.ps)
            try:
                target_sums = self.sender.hash_remote(self.pid, to_ranges(target_pages, self.ps), len(target_pages),
                                                      self.deadline_ns)
            except _lib.OsErr as e:
                if e.errno == _errno.ETIMEDOUT:
                    raise TimeoutError(e.errno, "deadline passed") from None
                raise ProcessLookupError(e.errno, "verify") from None
        except TimeoutError:
            raise _BlackoutExceeded(self.step) from None
        finally:
            self.deadline_ns = 0
            self.cont()
            self.link.set_deadline(None)
        self.step = None
        if self._debug:
            import pickle
            with open(os.environ["PAGESYNC_LIVE_DEBUG"], "wb") as f:
                pickle.dump((self._debug, target_pages), f)
        self.stopped_s = (_mono_ns() - t_stop) / 1e9
        self.verify_read_s = (_mono_ns() - t_v) / 1e9
        self.converged = converged
        self.stop_reason = "threshold" if converged else "last-pass"
        self.t_stop = t_stop
        self.t_end = t_end
        return target_pages, target_sums

    def cont(self):
        if self.stopped:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.stopped = False
            # the target runs again: the watchdog must not continue it later (the user may stop it);
            # a watchdog that is gone has nothing left to do
            try:
                self.watchdog.disarm()
            except WatchdogError:
                pass


def compare(target_pages, target_sums, mirror_pages, mirror_sums):
    """Pages that differ: (missing at the partner, extra at the partner, different contents)."""
    missing = np.setdiff1d(target_pages, mirror_pages, assume_unique=True)
    extra = np.setdiff1d(mirror_pages, target_pages, assume_unique=True)
    common, it, im = np.intersect1d(target_pages, mirror_pages, assume_unique=True, return_indices=True)
    differ = common[target_sums[it] != mirror_sums[im]]
    return missing, extra, differ


def _target_after(proc, ctl):
    """The end of a failure's line: what became of a target that is still there (checked, not assumed)."""
    if proc is None or proc.poll() is not None:
        return ""
    if ctl is not None and ctl.found_stopped:
        return f"; target pid {proc.pid} left stopped, as it was found"
    if is_running(proc.pid):
        return f"; target pid {proc.pid} continued"
    return f"; target pid {proc.pid} is STOPPED although SIGCONT was sent (stopped again by someone else?)"


def run_mirror(cmd, to, passes=PASSES, threshold=THRESHOLD, delay=0.0, then="wait", interval=0.01, env=None,
               stdin=None, stdout=None, stderr=None, on_event=None, max_blackout=5.0, token=None,
               stop="at-once"):
    """Mirror the process started by ``cmd`` to ``to`` (HOST:PORT of a ``live receive``, or a stream
    FILE; ``token`` is the receiver's shared secret). Returns the result as a dict (the simulator's JSON
    schema plus ``verified`` and ``live``).
    Raises LiveError (one line) for every failure; the target is never left stopped: the blackout
    gives up ``max_blackout`` seconds after the SIGSTOP, and a watchdog process continues the target
    if this process dies while it is stopped."""
    from ..trace.record import library_path, probe
    from ..trace.format import TraceError
    if not cmd:
        raise LiveError("live mirror: no command given (use: live mirror [options] -- CMD ARGS...)")
    if passes < 0 or threshold < 0:
        raise LiveError("live mirror: --passes and --threshold must be >= 0")
    if stop not in ("at-once", "after-copy"):
        raise LiveError(f"live mirror: --stop must be at-once or after-copy, not {stop!r}")
    if then not in ("wait", "kill"):
        raise LiveError(f"live mirror: --then must be wait or kill, not {then!r}")
    if not max_blackout > 0:
        raise LiveError(f"live mirror: --max-blackout must be > 0, got {max_blackout!r}")
    try:
        lib = library_path()
    except TraceError as e:
        raise LiveError(str(e)) from None
    reason = probe()
    if reason is not None:
        raise LiveError(f"live mirror not possible: {reason}")
    _lib.lib()
    if shutil.which(cmd[0]) is None:
        raise LiveError(f"live mirror: command not found: {cmd[0]}")
    link = Link(to, token=token)
    proc = None
    ctl = None
    wd = None
    old_handlers = {}
    sig = {"raise": True, "got": None}

    def on_signal(signum, frame):
        # the first signal stops the mirror; later ones (a second ^C) must not cut short the
        # continuing of the target and the cleanup, nor one during the cleanup escape it
        if sig["got"] is None:
            sig["got"] = signum
            if sig["raise"]:
                raise _Signalled(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        old_handlers[s] = signal.signal(s, on_signal)
    tmp = tempfile.mkdtemp(prefix="pagesync-live-")
    phase = "start"
    try:
        try:
            child_env = dict(os.environ)
            child_env.update(env or {})
            pre = child_env.get("LD_PRELOAD", "")
            child_env["LD_PRELOAD"] = lib + (" " + pre if pre else "")
            child_env["PAGESYNC_TRACE_DIR"] = tmp
            child_env["PAGESYNC_TRACE_MODE"] = "register"
            child_env["PAGESYNC_TRACE_INTERVAL_NS"] = str(int(interval * 1e9))
            child_env["PAGESYNC_TRACE_PARENT"] = str(os.getpid())  # the target's descendants stay inert
            try:
                proc = subprocess.Popen(cmd, env=child_env, stdin=stdin, stdout=stdout, stderr=stderr)
            except OSError as e:
                raise LiveError(f"live mirror: cannot run {cmd[0]}: {e.strerror or e}") from None
            if on_event:
                on_event("started", proc.pid)
            try:
                wd = Watchdog(proc.pid)
            except WatchdogError as e:
                raise LiveError(f"live mirror: {e}") from None
            log = _wait_library(proc, tmp, timeout=10.0)
            page_size = int(log.page_size)
            link.hello(page_size, {"pid": proc.pid, "command": list(cmd), "version": __version__})
            if delay > 0:
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if proc.poll() is not None:
                        raise ProcessLookupError(_errno.ESRCH, "exited")
                    time.sleep(min(0.01, max(0.0, end - time.monotonic())))
            ctl = Controller(proc, link, page_size, passes, threshold, log.t0_ns, max_blackout, wd, stop)
            phase = "mirror"
            target_pages, target_sums = ctl.run()
            ctl.library_ticks = _library_ticks(proc, tmp, log.t0_ns)
            phase = "verify"
            # after the cut-over (the target runs again): no deadline here, but a signal still ends it
            mirror_pages, mirror_sums = link.checksums()
            missing, extra, differ = compare(target_pages, target_sums, mirror_pages, mirror_sums)
            bad = np.union1d(np.union1d(missing, extra), differ)
            link.end(target_pages, target_sums, len(bad))  # the verdict: the partner keeps only a verified mirror
            phase = "done"
        except BaseException:
            sig["raise"] = False  # from here on a signal is only recorded: the failure is being handled
            raise
    except _Signalled as s:
        if ctl:
            ctl.cont()
        raise LiveError(f"live mirror interrupted by {signal.Signals(s.signum).name}"
                        + _target_after(proc, ctl)) from None
    except _BlackoutExceeded as e:
        raise LiveError(f"live mirror: the blackout exceeded --max-blackout {max_blackout:g}s while {e.step}; "
                        "no cut-over" + _target_after(proc, ctl)) from None
    except WatchdogError as e:
        raise LiveError(f"live mirror: {e}" + _target_after(proc, ctl)) from None
    except ProcessLookupError:
        if ctl:
            ctl.cont()
        rc = proc.wait() if proc is not None else None
        where = f" in pass {ctl.pass_no}" if ctl and ctl.records else " before the first pass"
        raise LiveError(f"target {cmd[0]} exited during mirroring{where} (exit status {rc}); "
                        "nothing to cut over") from None
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
        if ctl:
            ctl.cont()
        where = f" in pass {ctl.pass_no}" if ctl and ctl.records else ""
        raise LiveError(f"receiver {to} went away{where} ({e.strerror or e})" + _target_after(proc, ctl)) from None
    except OSError as e:
        if ctl:
            ctl.cont()
        raise LiveError(f"live mirror to {to} failed in phase {phase}: {e.strerror or e}"
                        + _target_after(proc, ctl)) from None
    finally:
        sig["raise"] = False
        if ctl:
            ctl.cont()
            os.close(ctl.fd)
        if wd:
            wd.close()
        link.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        shutil.rmtree(tmp, ignore_errors=True)
        if phase != "done" and proc is not None and proc.poll() is None and then == "kill":
            proc.kill()
            proc.wait()
    if sig["got"] is not None:  # came during the cleanup of a mirror that had succeeded
        raise LiveError(f"live mirror interrupted by {signal.Signals(sig['got']).name} after the cut-over"
                        + _target_after(proc, ctl))

    result = _result(ctl, cmd, to, passes, threshold, delay, interval, target_pages, missing, extra, differ, bad)
    if on_event:
        on_event("cut-over", proc.pid)
    if then == "kill":
        proc.kill()
    result["live"]["target_returncode"] = proc.wait()
    return result


def _result(ctl, cmd, to, passes, threshold, delay, interval, target_pages, missing, extra, differ, bad):
    recs = ctl.records
    ps = ctl.ps
    st = ctl.sender.stats
    bytes_sent = int(st[0])
    full = recs[0]
    counters = {
        "converged": ctl.converged,
        "stop_reason": ctl.stop_reason,
        "downtime_s": ctl.downtime_s,
        "brownout_s": 0.0,
        "brownouts": 0,
        "total_time_s": (ctl.t_end - ctl.t0) / 1e9,
        "bytes_sent": bytes_sent,
        "pages_sent": bytes_sent // ps,
        "copies_per_page": (bytes_sent // ps) / max(1, len(target_pages)),
        "copy_calls": int(st[2]),
        "zero_pages_sent": 0,
        "slowdown": None,
        "lost_writes": int(len(bad)),
        "stale_frames": [hex(int(x)) for x in bad[:16]],
        "workload_writes": None,
        "dirty_bit_sets": None,
        "tlb_flush_refills": None,
        "tracking_cycles": None,
        "memory_pages": int(len(target_pages)),
        "page_size": ps,
        "dirty_sync_count": len(recs) + 1,
        "normal_pages": bytes_sent // ps,
        "zero_pages": 0,
        "expected_downtime_s": None,
        "throttle_pct": [],
    }
    summary = Summary.page_level(POLICY, len(recs), counters, {"verified": bool(len(bad) == 0)})
    copy_s = sum(p["read_s"] + p["write_s"] for p in ctl.live)
    meta = {
        "variant": "correct",
        "backend": "live",
        "seed": None,
        "version": __version__,
        "config": {"policy": POLICY, "stratus": {"passes": passes, "threshold": threshold,
                                                             "stop": ctl.stop_mode},
                   "live": {"command": list(cmd), "to": to, "delay_s": delay, "register_interval_s": interval,
                            "max_blackout_s": ctl.max_blackout}},
    }
    live = {
        "pid": ctl.pid,
        "kernel": os.uname().release,
        "stopped_s": ctl.stopped_s,
        "found_stopped": ctl.found_stopped,
        "verify_read_s": ctl.verify_read_s,
        "mirror_start_from_target_start_s": (ctl.t0 - ctl.log_t0_ns) / 1e9,
        # the library thread's wakes from 50 ms before the mirror started to the cut-over
        "library_ticks_s": [t for t in getattr(ctl, "library_ticks", [])
                            if t >= (ctl.t0 - ctl.log_t0_ns) / 1e9 - 0.05],
        "full_pass_throughput_Bps": full.bytes / full.duration_s if full.duration_s > 0 else None,
        "read_s_total": float(st[4]) / 1e9,
        "write_s_total": float(st[5]) / 1e9,
        "copy_throughput_Bps": bytes_sent / copy_s if copy_s > 0 else None,
        "verification": {"pages_compared": int(len(target_pages)), "missing": [hex(int(x)) for x in missing[:16]],
                         "extra": [hex(int(x)) for x in extra[:16]], "different": [hex(int(x)) for x in differ[:16]],
                         "n_missing": int(len(missing)), "n_extra": int(len(extra)), "n_different": int(len(differ))},
        "per_pass": ctl.live,
        # the controller's CPU time and its wait for a CPU (the host's contention), in its passes and
        # in the blackout
        "sched": {"passes": _share(ctl.sched[0], ctl.sched[1]), "blackout": _share(ctl.sched[1], ctl.sched[2])},
    }
    res = Result(summary, recs, meta, {"wall_s": (ctl.t_end - ctl.t0) / 1e9}).to_dict()
    res["live"] = live
    return res
