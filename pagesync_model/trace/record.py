"""Record which pages an unmodified program writes, interval by interval, into a trace file.

``record(cmd, out)`` runs ``cmd`` with the preload library ``pagesync_model/_pagesync_trace*.so``
(built from ``_ext/tracer/pagesync_trace.c``) in ``LD_PRELOAD``.  A thread inside the program
registers every writable private mapping with a userfaultfd in asynchronous write-protect mode
and, every ``interval_s``, asks the kernel with the ``PAGEMAP_SCAN`` ioctl (PM_SCAN_WP_MATCHING)
which pages were written since the last scan, re-arming them in the same call.  The library writes
a raw log; this module converts it to the .npz format of ``pagesync_model.trace.format``.

Requirements: Linux 6.7 or later with CONFIG_USERFAULTFD (UFFD_FEATURE_WP_ASYNC and
UFFD_FEATURE_WP_UNPOPULATED); root, or vm.unprivileged_userfaultfd=1 (the library falls back to a
user-mode-only descriptor, which suffices for async write-protect on kernels that allow it).
``probe()`` checks all of it end to end.

Limits (what the trace does not contain):
  * Memory mapped and unmapped (or MADV_DONTNEED'ed, e.g. by free()) within one interval: its
    writes are lost.  A mapping is registered at the first scan after it appears; writes to it
    before that are reported in that first interval, so they are late by up to one interval.
  * Pages written before main() (loader, constructors) are discarded as a baseline.
  * Children are not traced: only the process ``record`` started is, through every program it
    execs itself.  A forked child runs normally but untraced (the library disarms itself in it);
    a program exec'd by a descendant loads the library, which stays inert there.  The number of
    forks is in the metadata (``tracer_stats.n_forks``, when the program ended cleanly).
  * Shared mappings (MAP_SHARED, shmem, files mapped shared) are not registered; writes through
    them are not recorded.  Private file mappings (.data) are.
  * Static binaries and setuid programs ignore LD_PRELOAD: nothing is recorded (an error).
  * A page written several times within one interval appears once; the order of writes inside an
    interval is unknown.  Interval ends are the moments the scan started; a scan takes about 1 ms
    per GiB of registered memory, and writes during it may land on either side of the boundary.
  * If the program dies (a fatal signal, SIGKILL, the timeout) or execs, the partial interval
    since the last scan is lost; every interval before it is kept (each is written out when its
    scan ends).  ``returncode`` is then -signal, and the metadata names the signal.
  * The program's own userfaultfd use on the same memory (EBUSY) leaves that memory unrecorded.
  * Kernel writes into user memory (read(2) into a buffer) are recorded like CPU writes; DMA is not.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import errno as _errno
import glob
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .format import Trace, TraceError, write_trace

RECORDER_VERSION = "1"

# ---- the library's raw log; must match pagesync_trace.c ----
_MAGIC = b"PSTRACE\0"
_FILE_HEADER = struct.Struct("=8sIIQQIIQ16x")   # struct file_header, 64 bytes
_REC_HEADER = struct.Struct("=II")                # struct rec_header
_REC_INTERVAL, _REC_REGISTER, _REC_END, _REC_ERROR, _REC_TICK = 1, 2, 3, 4, 5
_END_STATS = ("n_intervals", "scan_ns_total", "maps_ns_total", "n_register_ok",
              "n_register_failed", "n_rescans", "n_scan_errors", "n_forks")
(_ERR_UFFD_OPEN, _ERR_UFFD_API, _ERR_PAGEMAP_OPEN, _ERR_PAGEMAP_SCAN, _ERR_REGISTER, _ERR_MEMORY,
 _ERR_THREAD, _ERR_PROBE_MISSED) = range(1, 9)

CHILDREN = ("not traced: only the process started by the recorder is, across the programs it execs "
            "itself; forked children run untraced, and programs exec'd by descendants do not trace")
METHOD = ("userfaultfd async write-protect (UFFD_FEATURE_WP_ASYNC|WP_UNPOPULATED, "
          "UFFDIO_REGISTER_MODE_WP) on every writable private mapping; every interval one "
          "PAGEMAP_SCAN on /proc/self/pagemap with PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC "
          "reports pages written (present or swapped, not the zero page) and re-arms them")
LIMITS = [
    "mappings created and freed (or MADV_DONTNEED) within one interval are missed",
    "writes before main() are discarded as a baseline",
    "children are not traced: forked children run untraced, programs exec'd by children too",
    "shared and shmem mappings are not recorded",
    "static and setuid binaries ignore LD_PRELOAD",
    "a page appears at most once per interval; order within an interval is unknown",
    "the last partial interval is lost if the program dies (signal, kill, timeout) or execs",
]


@dataclass
class RecordSummary:
    """What one ``record`` run produced (flat, JSON-friendly)."""

    out: str
    command: list
    returncode: int             # the program's exit status, or -N if signal N ended it
    n_intervals: int
    n_distinct_pages: int
    n_page_writes: int          # sum over intervals of pages written in the interval
    duration_s: float
    interval_s: float
    page_size: int
    baseline_pages: int         # written before main(), discarded
    scan_s_total: float         # time the tracer thread spent in PAGEMAP_SCAN
    scan_ms_mean: float
    scan_ms_max: float
    maps_s_total: float         # time reading /proc/self/maps and registering new mappings
    complete: bool              # the program exited (exit or _exit) and its last interval was scanned
    other_processes: int        # logs of other processes found (not kept; normally 0)
    signal: str | None = None   # the signal that ended the program (e.g. "SIGSEGV"), else None
    timed_out: bool = False     # the program was killed by record's timeout

    @property
    def exit_status(self) -> int:
        """The program's status as a shell reports it: its exit status, or 128 + signal."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    def as_dict(self) -> dict:
        return asdict(self)


def library_path() -> str:
    """Path of the built preload library.  Raises TraceError if it has not been built."""
    override = os.environ.get("PAGESYNC_TRACE_LIB")
    if override:
        if not os.path.exists(override):
            raise TraceError(f"PAGESYNC_TRACE_LIB={override}: no such file")
        return override
    pkg = Path(__file__).resolve().parent.parent
    found = sorted(glob.glob(str(pkg / "_pagesync_trace*.so")))
    if not found:
        raise TraceError("the tracer library is not built (no pagesync_model/_pagesync_trace*.so): "
                         "run 'python setup.py build_ext --inplace' or reinstall the package")
    return found[0]


def _kernel() -> str:
    return platform.release()


def _explain(stage: int, err: int) -> str:
    """One line for an error stage reported by the library (or its probe)."""
    k = _kernel()
    name = _errno.errorcode.get(err, str(err))
    if stage == _ERR_UFFD_OPEN:
        if err == _errno.ENOSYS:
            return (f"kernel {k} has no userfaultfd (CONFIG_USERFAULTFD); recording needs "
                    "Linux 6.7+ with userfaultfd")
        if err == _errno.EPERM:
            return ("userfaultfd is not permitted for this user: run as root or set "
                    "'sysctl vm.unprivileged_userfaultfd=1'")
        return f"userfaultfd() failed ({name})"
    if stage == _ERR_UFFD_API:
        return (f"kernel {k} lacks userfaultfd async write-protect (UFFD_FEATURE_WP_ASYNC|"
                f"WP_UNPOPULATED, Linux 6.7+; UFFDIO_API: {name}); recording is not possible here")
    if stage == _ERR_PAGEMAP_OPEN:
        return f"cannot open /proc/self/pagemap ({name}); is /proc mounted?"
    if stage == _ERR_PAGEMAP_SCAN:
        if err in (_errno.ENOTTY, _errno.EINVAL):
            return (f"kernel {k} lacks the PAGEMAP_SCAN ioctl (Linux 6.7+; {name}); "
                    "recording is not possible here")
        return f"PAGEMAP_SCAN failed ({name})"
    if stage == _ERR_REGISTER:
        return f"cannot register memory for write-protection (UFFDIO_REGISTER: {name})"
    if stage == _ERR_MEMORY:
        return "the tracer could not allocate its buffers"
    if stage == _ERR_THREAD:
        return f"the tracer could not start its thread ({name})"
    if stage == _ERR_PROBE_MISSED:
        return (f"kernel {k} did not report a test write correctly through PAGEMAP_SCAN; "
                "recording disabled")
    return f"tracer error stage {stage} ({name})"


def probe() -> str | None:
    """Check, end to end, that this machine can record.

    Returns None when it can, else a one-line reason (kernel without support, not permitted, the
    library not built).  Never raises.
    """
    try:
        lib = library_path()
    except TraceError as e:
        return str(e)
    # loading the library runs its constructor, which is inert without PAGESYNC_TRACE_DIR
    saved = os.environ.pop("PAGESYNC_TRACE_DIR", None)
    try:
        dll = ctypes.CDLL(lib)
        err = ctypes.c_int(0)
        stage = dll.pagesync_trace_probe(ctypes.byref(err))
    except OSError as e:
        return f"cannot load the tracer library {lib}: {e}"
    finally:
        if saved is not None:
            os.environ["PAGESYNC_TRACE_DIR"] = saved
    return None if stage == 0 else _explain(stage, err.value)


def check_support() -> None:
    """Raise TraceError (one line, saying what to do) unless ``probe()`` succeeds."""
    reason = probe()
    if reason is not None:
        raise TraceError(reason)


@dataclass
class _RawLog:
    page_size: int
    interval_ns: int
    t0_ns: int
    mode: int
    pid: int
    baseline_pages: int
    t_scan_start: list
    t_scan_end: list
    ranges: list             # per interval: uint64 array [n, 2] of [start, end) addresses
    registered: list         # (t_ns, start, end, errno): when the library registered each mapping
    ticks: list              # register mode: when the library's thread woke (ns, CLOCK_MONOTONIC)
    end_t: int | None
    end_stats: dict | None
    error: tuple | None      # (stage, errno, message)


def parse_raw_log(path) -> _RawLog:
    """Parse one file written by the preload library.  A truncated last record is dropped (the
    process may have been killed mid-write).  Raises TraceError for a file that is not such a log."""
    data = Path(path).read_bytes()
    if len(data) < _FILE_HEADER.size or data[:8] != _MAGIC:
        raise TraceError(f"{path}: not a tracer log (bad header)")
    magic, version, ps, interval, t0, mode, pid, base = _FILE_HEADER.unpack_from(data, 0)
    if version != 1:
        raise TraceError(f"{path}: tracer log version {version} is not supported")
    log = _RawLog(ps, interval, t0, mode, pid, base, [], [], [], [], [], None, None, None)
    pos = _FILE_HEADER.size
    while pos + _REC_HEADER.size <= len(data):
        rtype, count = _REC_HEADER.unpack_from(data, pos)
        body = pos + _REC_HEADER.size
        if rtype == _REC_INTERVAL:
            size = 16 + 16 * count
        elif rtype == _REC_REGISTER:
            size = 8 + 24 * count
        elif rtype == _REC_END:
            size = 8 + 8 * len(_END_STATS)
        elif rtype == _REC_ERROR:
            size = 8 + count
        elif rtype == _REC_TICK:
            size = 8
        else:
            raise TraceError(f"{path}: corrupt tracer log (record type {rtype} at byte {pos})")
        if body + size > len(data):
            break  # truncated tail
        if rtype == _REC_INTERVAL:
            ts, te = struct.unpack_from("=QQ", data, body)
            log.t_scan_start.append(ts)
            log.t_scan_end.append(te)
            log.ranges.append(np.frombuffer(data, dtype=np.uint64, count=2 * count,
                                            offset=body + 16).reshape(-1, 2))
        elif rtype == _REC_REGISTER:
            (t_reg,) = struct.unpack_from("=Q", data, body)
            arr = np.frombuffer(data, dtype=np.uint64, count=3 * count, offset=body + 8)
            log.registered.extend((t_reg,) + tuple(int(x) for x in row) for row in arr.reshape(-1, 3))
        elif rtype == _REC_TICK:
            log.ticks.append(struct.unpack_from("=Q", data, body)[0])
        elif rtype == _REC_END:
            vals = struct.unpack_from("=Q" + "Q" * len(_END_STATS), data, body)
            log.end_t = vals[0]
            log.end_stats = dict(zip(_END_STATS, vals[1:]))
        else:
            stage, err = struct.unpack_from("=II", data, body)
            msg = data[body + 8:body + 8 + count].decode(errors="replace")
            log.error = (stage, err, msg)
        pos = body + size
    return log


def log_to_trace(log: _RawLog, metadata: dict) -> Trace:
    """Convert a parsed raw log to a Trace: page ranges -> per-interval sorted page numbers."""
    shift = int(log.page_size).bit_length() - 1
    n = len(log.ranges)
    t0 = log.t0_ns
    starts = np.asarray(log.t_scan_start, dtype=np.int64) - t0
    if n and starts[0] <= 0:
        raise TraceError("tracer log: first interval ends before recording started")
    iv_parts, vpn_parts = [], []
    for k, rng in enumerate(log.ranges):
        if len(rng) == 0:
            continue
        first = rng[:, 0] >> np.uint64(shift)
        lens = ((rng[:, 1] - rng[:, 0]) >> np.uint64(shift)).astype(np.int64)
        total = int(lens.sum())
        # expand [first, first + len) runs: a running index minus each run's start position
        run_start = np.repeat(np.cumsum(lens) - lens, lens)
        vpn = np.repeat(first, lens) + (np.arange(total, dtype=np.int64) - run_start).astype(np.uint64)
        vpn_parts.append(vpn)
        iv_parts.append(np.full(total, k, dtype=np.int64))
    if vpn_parts:
        vpn = np.concatenate(vpn_parts)
        iv = np.concatenate(iv_parts)
        order = np.lexsort((vpn, iv))
        vpn, iv = vpn[order], iv[order]
        keep = np.ones(len(vpn), dtype=bool)
        keep[1:] = (vpn[1:] != vpn[:-1]) | (iv[1:] != iv[:-1])  # a rescan may repeat a range
        vpn, iv = vpn[keep], iv[keep]
    else:
        vpn = np.zeros(0, dtype=np.uint64)
        iv = np.zeros(0, dtype=np.int64)
    page_vpn, dense = np.unique(vpn, return_inverse=True)
    offsets = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(np.bincount(iv, minlength=n), out=offsets[1:])
    scan_ns = np.asarray(log.t_scan_end, dtype=np.int64) - np.asarray(log.t_scan_start, dtype=np.int64)
    return Trace(offsets=offsets, pages=dense.reshape(-1).astype(np.uint32),
                 page_vpn=page_vpn.astype(np.uint64), t_end_ns=starts.astype(np.uint64),
                 page_size=int(log.page_size), metadata=metadata,
                 scan_ns=scan_ns.astype(np.uint64))


def record(cmd: list[str], out: str, interval_s: float = 0.01, *, mode: str = "scan",
           env: dict | None = None, stdin=None, stdout=None, stderr=None,
           timeout: float | None = None, check: bool = True) -> RecordSummary:
    """Run ``cmd`` under the tracer and write its trace to ``out`` (.npz).

    ``cmd``: program and arguments (dynamically linked); ``out``: trace path; ``interval_s``:
    scan interval in seconds (> 0, at least 100 us); ``mode``: "scan" only ("register" is for an
    external controller and produces no trace); ``env``: extra environment variables;
    ``stdin``/``stdout``/``stderr``: as for subprocess.run (default: inherited); ``timeout``:
    seconds before the program is killed (its last interval is then lost); ``check``: run
    ``check_support()`` first.  A non-zero exit status of ``cmd``, or its death by a signal, is
    recorded (``returncode``, ``signal``, ``exit_status``), not an error: the trace keeps every
    interval scanned before the program ended.

    Raises TraceError (one line): no kernel support or permission, library not built, command not
    found, the program never loaded the library (static or setuid binary), or an unwritable ``out``.
    """
    if not cmd:
        raise TraceError("record: no command given")
    if not interval_s or interval_s < 1e-4:
        raise TraceError(f"record: interval {interval_s!r} s is too short (minimum 100us)")
    if mode != "scan":
        raise TraceError(f"record: mode {mode!r} produces no trace; only 'scan' is recorded")
    lib = library_path()
    if check:
        check_support()
    if shutil.which(cmd[0]) is None:
        raise TraceError(f"record: command not found: {cmd[0]}")
    interval_ns = int(round(interval_s * 1e9))
    with tempfile.TemporaryDirectory(prefix="pagesync-trace-") as tmp:
        child_env = dict(os.environ)
        child_env.update(env or {})
        preload = child_env.get("LD_PRELOAD", "")
        child_env["LD_PRELOAD"] = lib + (" " + preload if preload else "")
        child_env["PAGESYNC_TRACE_DIR"] = tmp
        child_env["PAGESYNC_TRACE_INTERVAL_NS"] = str(interval_ns)
        child_env["PAGESYNC_TRACE_MODE"] = "scan"
        child_env["PAGESYNC_TRACE_PARENT"] = str(os.getpid())
        started = _dt.datetime.now(_dt.timezone.utc)
        try:
            proc = subprocess.Popen(cmd, env=child_env, stdin=stdin, stdout=stdout, stderr=stderr)
        except OSError as e:
            raise TraceError(f"record: cannot run {cmd[0]}: {e.strerror or e}") from e
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            timed_out = True
        except BaseException:
            # interrupted (KeyboardInterrupt): the program must not outlive the recorder unseen
            proc.kill()
            proc.wait()
            raise
        sig = _signal_name(rc)
        logs = sorted(glob.glob(os.path.join(tmp, f"trace.{proc.pid}.*.bin")))
        others = len(glob.glob(os.path.join(tmp, "trace.*.bin"))) - len(logs)
        # a log shorter than its header: the program died inside the library's start-up
        logs = [p for p in logs if os.path.getsize(p) >= _FILE_HEADER.size or sig is None]
        if not logs:
            if sig is not None:
                raise TraceError(f"record: {cmd[0]} was killed by {sig} before the tracer started; "
                                 "nothing was recorded")
            raise TraceError(f"record: {cmd[0]} never loaded the tracer (a static or setuid "
                             "binary ignores LD_PRELOAD); nothing was recorded")
        parsed = [parse_raw_log(p) for p in logs]
        for lg in parsed:
            if lg.error is not None:
                raise TraceError(f"record: {_explain(lg.error[0], lg.error[1])}")
        # after exec in the same process there is one log per program image: keep the longest
        log = max(parsed, key=lambda lg: len(lg.ranges))
        stats = log.end_stats or {}
        meta = {
            "command": list(cmd),
            "interval_s": interval_s,
            "interval_ns": interval_ns,
            "kernel": _kernel(),
            "machine": platform.machine(),
            "recorder": "pagesync_model.trace.record",
            "recorder_version": RECORDER_VERSION,
            "date": started.isoformat(timespec="seconds"),
            "recorded": "pages of writable private mappings written in each interval",
            "method": METHOD,
            "limits": LIMITS,
            "pid": log.pid,
            "t0_monotonic_ns": log.t0_ns,  # CLOCK_MONOTONIC at time 0, to align external logs
            "returncode": rc,
            "signal": sig,
            "timed_out": timed_out,
            "complete": log.end_stats is not None,
            "children": CHILDREN,
            "baseline_pages_discarded": log.baseline_pages,
            "registered_mappings": sum(1 for r in log.registered if r[3] == 0),
            # [ns since time 0, first page number, pages] of each mapping when it was registered (at
            # the first scan after it appeared): a live mirror copies such a mapping in full until
            # its own library registers it
            "registrations": [[t - log.t0_ns, s // log.page_size, (e - s) // log.page_size]
                              for t, s, e, er in log.registered if er == 0],
            "registration_failures": [
                {"start": hex(s), "end": hex(e), "errno": _errno.errorcode.get(er, str(er))}
                for _, s, e, er in log.registered if er][:50],
            "tracer_stats": stats,
            "other_processes_not_kept": others,
            "program_images_in_process": len(parsed),
        }
        trace = log_to_trace(log, meta)
    write_trace(out, trace)
    scan = trace.scan_ns.astype(np.float64) if trace.n_intervals else np.zeros(1)
    return RecordSummary(
        out=str(out), command=list(cmd), returncode=rc, n_intervals=trace.n_intervals,
        n_distinct_pages=trace.n_distinct, n_page_writes=int(len(trace.pages)),
        duration_s=float(trace.t_end_ns[-1]) / 1e9 if trace.n_intervals else 0.0,
        interval_s=interval_s, page_size=trace.page_size, baseline_pages=log.baseline_pages,
        scan_s_total=float(scan.sum()) / 1e9, scan_ms_mean=float(scan.mean()) / 1e6,
        scan_ms_max=float(scan.max()) / 1e6,
        maps_s_total=stats.get("maps_ns_total", 0) / 1e9,
        complete=log.end_stats is not None, other_processes=others, signal=sig,
        timed_out=timed_out)


def _signal_name(returncode: int) -> str | None:
    """The name of the signal a subprocess returncode reports (-N), or None for an exit."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def summary_json(summary: RecordSummary) -> str:
    """The summary as one JSON line (for logs and the CLI)."""
    return json.dumps(summary.as_dict(), sort_keys=True)


# What the live mirror shares with the tracer: it waits until a log holds its header, and reports the
# library's error as the tracer does.
HEADER_BYTES = _FILE_HEADER.size
explain_error = _explain
