"""Live mirror vs the simulator: run real targets under ``pagesync-sim live mirror``, record each
target's write trace with ``pagesync-sim trace record`` (a separate run of the same command), and
replay that trace in the simulator's ``stratus`` policy with the copy costs measured in the live run's
passes and a blackout cost model whose constants are fitted on separate calibration runs (a page
writer at several sizes, never one of the judged targets). Each target is mirrored with both stop
rules (``--stop at-once`` and ``--stop after-copy``). Writes results/calibration.json,
results/<name>.json and results/<name>@after-copy.json (live, sim and comparison per target),
results.md and mirror.png.

    python experiments/live_mirror/run.py [NAME ...]
    PAGESYNC_LIVE_EXP_TMP=DIR python experiments/live_mirror/run.py --measure [NAME ...]
    PAGESYNC_LIVE_EXP_TMP=DIR nice python experiments/live_mirror/run.py --analyze [NAME ...]

$PAGESYNC_LIVE_EXP_TMP keeps the measurements; ``--measure`` only measures (the simulations of a busy
host's runs take longer than the runs), ``--analyze`` redoes the analysis of the runs kept there
without measuring anything (a campaign cut short keeps its first runs of each target).

Needs root (or ptrace access), Linux 6.7+, gcc, sqlite3, redis-server and redis-benchmark.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
LOADED = OUT / "loaded"  # the campaign measured under load (3 December 2026, 13:45-14:00 UTC), kept as it was
PASSES, THRESHOLD, DELAY = 5, 256, 0.5
TRACE_INTERVAL = 0.002
TRACE_TAIL = 1.0   # share of the live mirror's time kept past its end: the simulated mirror may run longer,
                   # and on a busy host its passes vary more (a trace that ends before the simulated mirror
                   # leaves a target that stopped writing); every page of the trimmed trace is memory the
                   # simulated full copy copies, so a program that grows is mirrored a little larger
REPS = 5           # live runs (and separately recorded traces) per target
REDIS_PORT = 6391
STOPS = ("at-once", "after-copy")  # the live controller's stop rules (stratus.stop)
# the blackout's calibration: the C writer alone, mirrored at several sizes (the pages mirrored so far),
# slow enough that each blackout copies a few dozen pages; no judged target is among these runs
CALIBRATION = {"sizes_mib": [4, 16, 48, 128], "rate": 2000, "seconds": 3, "reps": 3}

# how long the running targets live: well past the mirror's end even on a busy host, where its passes
# take ten times as long as on an idle one (--then kill ends them at the cut-over)
TARGET_S = 8
PY_DICT = ("import time\nd = {}\nt = time.time()\ni = 0\n"
           f"while time.time() - t < {TARGET_S}:\n    d[i % 300000] = str(i) * 4\n    i += 1\n")
SQLITE_SQL = ("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);\n"
              "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) "
              "INSERT INTO t SELECT x, randomblob(64) FROM c;\n")


def targets(bindir):
    w = f"{bindir}/writer"
    return {
        "writer-5k": {"cmd": [w, "64", "5000", str(TARGET_S)],
                      "what": "C writer, 64 MiB, sequential sweep at 5k pages/s"},
        "writer-40k": {"cmd": [w, "64", "40000", str(TARGET_S)],
                       "what": "C writer, 64 MiB, sequential sweep at 40k pages/s"},
        "writer-200k": {"cmd": [w, "64", "200000", str(TARGET_S)],
                        "what": "C writer, 64 MiB, sequential sweep at 200k pages/s"},
        "python-dict": {"cmd": [sys.executable, "-c", PY_DICT], "what": "CPython dict of 300k strings rewritten"},
        "sqlite3": {"cmd": ["sqlite3", ":memory:"], "stdin": SQLITE_SQL, "what": "sqlite3 :memory: 3M inserts",
                    "fixed_work": True},
        "redis": {"cmd": ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                          "--bind", "127.0.0.1"], "bench": True,
                  "what": "redis-server under redis-benchmark (SET, 100k keys, 100 B, loopback)"},
    }


def start_bench():
    time.sleep(0.2)
    return subprocess.Popen(["redis-benchmark", "-p", str(REDIS_PORT), "-t", "set", "-n", "100000000", "-r", "100000",
                             "-d", "100", "-c", "8", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stdin_file(t, tmp):
    if "stdin" not in t:
        return None
    p = Path(tmp) / "stdin.sql"
    p.write_text(t["stdin"])
    return open(p)


def record_trace(name, t, tmp):
    from pagesync_model.trace import record
    out = Path(tmp) / f"{name}.npz"
    bench = start_bench_async() if t.get("bench") else None
    stopper = None
    if bench:  # redis runs until told: shut it down cleanly so the tracer writes its log
        import threading
        stopper = threading.Timer(TARGET_S, lambda: subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "shutdown",
                                                               "nosave"], capture_output=True))
        stopper.start()
    try:
        s = record(t["cmd"], str(out), TRACE_INTERVAL, stdin=stdin_file(t, tmp), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    finally:
        if bench:
            stopper.cancel()
            bench.kill()
            bench.wait()
    return out, s


def start_bench_async():
    import threading
    box = {}

    def go():
        box["p"] = start_bench()
    th = threading.Thread(target=go)
    th.start()
    th.join()
    return box["p"]


def cpu_times():
    """(busy, total) jiffies of every CPU of the host, from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


SAMPLE_S = 0.01  # how often the measured processes' scheduler accounting is read during a live run


def read_schedstat(pid):
    """{thread id: (seconds on a CPU, seconds runnable but waiting for one, times put on a CPU)} of every
    thread of process ``pid`` now (/proc/PID/task/*/schedstat), and (its nice value, its autogroup's nice
    or None); ({}, None) once it is gone."""
    out, nice = {}, None
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        with open(f"/proc/{pid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
    except (OSError, ValueError, IndexError):
        return {}, None
    try:  # with autogroup scheduling on, the nice value acts inside the session's group: its own nice
        with open(f"/proc/{pid}/autogroup") as f:  # ("/autogroup-N nice K") is what other sessions meet
            nice = (nice, int(f.read().split()[-1]))
    except (OSError, ValueError, IndexError):
        nice = (nice, None)
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu, wait, slices = f.read().split()[:3]
            out[int(tid)] = (int(cpu) / 1e9, int(wait) / 1e9, int(slices))
        except (OSError, ValueError):
            pass
    return out, nice


def children(pid):
    """The child processes of ``pid`` (its main thread's, /proc/PID/task/PID/children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


class SchedSampler:
    """Reads, every ``SAMPLE_S`` while a live run goes on, the scheduler accounting of its measured
    processes: the controller (the mirror), its receiver and the target (the controller's child), each
    thread's last reading kept (a thread that exits keeps what it had at the last sample before). The
    result, per process: CPU seconds, run-queue seconds (runnable, waiting for a CPU), times scheduled,
    the run-queue wait as a share of the CPU time, and the nice values seen; the readings miss at most
    the last ``SAMPLE_S`` of each process."""

    def __init__(self, controller, receiver):
        import threading
        self.pids = {"controller": controller, "receiver": receiver}
        self.last = {"controller": {}, "receiver": {}, "target": {}}
        self.nice = {"controller": set(), "receiver": set(), "target": set()}
        self.target_pid = None
        self.done = threading.Event()
        self.th = threading.Thread(target=self.loop, daemon=True)
        self.th.start()

    def sample(self):
        kids = children(self.pids["controller"])
        if kids and self.target_pid is None:
            self.target_pid = kids[0]
        for role, pid in (*self.pids.items(), ("target", self.target_pid)):
            if pid is None:
                continue
            st, nice = read_schedstat(pid)
            self.last[role].update(st)
            if nice is not None:
                self.nice[role].add(nice)

    def loop(self):
        while not self.done.is_set():
            self.sample()
            self.done.wait(SAMPLE_S)

    def stop(self):
        self.done.set()
        self.th.join()
        out = {}
        for role, threads in self.last.items():
            cpu, wait, slices = (sum(v[i] for v in threads.values()) for i in range(3))
            out[role] = {"cpu_s": cpu, "runqueue_s": wait, "slices": int(slices), "threads": len(threads),
                         "wait_share": wait / cpu if cpu > 0 else 0.0,
                         "nice": [list(n) for n in sorted(self.nice[role], key=str)]}
        cpu = sum(v["cpu_s"] for v in out.values())
        out["all"] = {"cpu_s": cpu, "runqueue_s": sum(v["runqueue_s"] for v in out.values()),
                      "wait_share": sum(v["runqueue_s"] for v in out.values()) / cpu if cpu > 0 else 0.0,
                      "sample_s": SAMPLE_S}
        return out


def live_run(name, t, tmp, stop="at-once"):
    """One live mirror of target ``t`` to a loopback receiver; the result, with the host's load: the
    1-minute load average before the run, the share of the host's CPU time busy during it (the
    mirror, its receiver and the target included, and whatever else runs: a QEMU lab shares it), and
    how much CPU the measured processes were denied (``SchedSampler``: their run-queue wait as a share
    of their CPU time; the load average counts niced work queued behind them, the wait share shows
    whether they waited)."""
    load0, (b0, t0) = os.getloadavg()[0], cpu_times()
    # a loopback receiver for this run only: no shared secret
    recv = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "receive", "--listen", "127.0.0.1:0",
                             "--no-token", "--quiet"], stderr=subprocess.PIPE, text=True)
    port = int(recv.stderr.readline().strip().rsplit(":", 1)[1])
    out = Path(tmp) / f"{name}.live.json"
    bench = start_bench_async() if t.get("bench") else None
    sampler = None
    try:
        p = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "mirror", "--passes", str(PASSES),
                              "--threshold", str(THRESHOLD), "--delay", f"{DELAY}s", "--then", "kill", "--quiet",
                              "--stop", stop,
                              "--to", f"127.0.0.1:{port}", "--json", str(out), "--", *t["cmd"]],
                             stdin=stdin_file(t, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sampler = SchedSampler(p.pid, recv.pid)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    finally:
        if bench:
            bench.kill()
            bench.wait()
        recv.wait(timeout=30)
    waits = sampler.stop()
    if p.returncode != 0:
        raise SystemExit(f"{name}: live mirror failed: {err.strip()}")
    b1, t1 = cpu_times()
    d = json.loads(out.read_text())
    d["host_load"] = {"loadavg_1min_before": load0, "cpu_busy_share": (b1 - b0) / max(1, t1 - t0),
                      "cpus": os.cpu_count(), "measured": waits}
    out.write_text(json.dumps(d))
    return d


def measure_library(tmp, runs=3):
    """The register-mode library's own writes, which the live mirror copies and a recorded trace does
    not hold (the recorder leaves its own memory out): mirror an idle target (``sleep``) for ~100 ms
    of empty passes, several times. Its polling thread wakes every register interval (10 ms) and
    writes the same few pages (stack, the maps buffer, its state)."""
    wakes = []
    for i in range(runs):
        out = Path(tmp) / f"library{i}.json"
        subprocess.run([sys.executable, "-m", "pagesync_model", "live", "mirror", "--passes", "400", "--threshold",
                        "0", "--delay", "300ms", "--then", "kill", "--quiet", "--json", str(out), "--", "sleep", "5"],
                       check=True, timeout=60)
        d = json.loads(out.read_text())
        pp = d["per_pass"][2:]
        span = pp[-1]["start_s"] - pp[0]["start_s"]
        interval = d["config"]["live"]["register_interval_s"]
        wakes.append(sum(p["dirty_pages"] for p in pp) / (span / interval))
    return {"pages_per_wake": float(np.median(wakes)), "interval_s": interval, "per_run": wakes}


def library_progress(t, tmp, runs=3, every=0.002):
    """A fixed-work program run with the live mirror's library loaded (register mode, nothing
    mirroring), as the live mirror meets it: its wall duration, and its anonymous memory sampled
    every ``every`` seconds ([seconds since start, pages]) to tell how fast it grows at each point."""
    from pagesync_model.trace.record import library_path
    out = []
    for i in range(runs):
        d = Path(tempfile.mkdtemp(dir=tmp))
        env = dict(os.environ, LD_PRELOAD=library_path(), PAGESYNC_TRACE_DIR=str(d), PAGESYNC_TRACE_MODE="register",
                   PAGESYNC_TRACE_INTERVAL_NS="10000000")
        t0 = time.monotonic()
        p = subprocess.Popen(t["cmd"], stdin=stdin_file(t, tmp), env=env, stdout=subprocess.DEVNULL)
        samples = []
        while p.poll() is None:
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("RssAnon:"):
                        samples.append([time.monotonic() - t0, int(line.split()[1]) // 4])
            except OSError:
                pass
            time.sleep(every)
        out.append({"duration_s": time.monotonic() - t0, "anon_pages": samples})
    return out


def growth(samples, t, width):
    """Pages a sampled curve ([t, pages]) grows by between ``t`` and ``t + width``."""
    ts, ps = np.array(samples, dtype=float).T
    return float(np.interp(t + width, ts, ps) - np.interp(t, ts, ps))


def first_write_interval(tr):
    """For each page of trace ``tr``, the interval it is first written in."""
    first = np.full(tr.n_distinct, tr.n_intervals)
    np.minimum.at(first, tr.pages.astype(np.int64), tr.interval_of_write())
    return first


def time_map(trace_path, progress, t_start, width):
    """For a fixed-work program: (live seconds per recorded second, the recorded time of live time
    ``t_start``). The start is where the program is as far along as at ``t_start`` on average (the
    durations' ratio); the pace is its growth there, over the mirror's ``width``: the trace's
    distinct pages against the anonymous memory sampled with the live library."""
    from pagesync_model.trace.format import read_trace
    tr = read_trace(trace_path)
    recorded = int(tr.t_end_ns[-1]) / 1e9
    tau0 = t_start * recorded / float(np.median([p["duration_s"] for p in progress]))
    first = first_write_interval(tr)
    distinct = np.cumsum(np.bincount(first, minlength=tr.n_intervals + 1)[:tr.n_intervals])
    curve = np.stack([tr.t_end_ns.astype(np.int64) / 1e9, distinct], axis=1).tolist()
    live_rate = float(np.median([growth(p["anon_pages"], t_start, width) for p in progress])) / width
    # the trace's pace over the same stretch of the program: iterate once on the window's length
    scale = tau0 / t_start
    for _ in range(3):
        rec_rate = growth(curve, tau0, width / scale) / (width / scale)
        scale = rec_rate / live_rate if live_rate > 0 else scale
    return scale, tau0


def live_view(path, register_interval_s, scale, out, ticks=()):
    """The trace as the live mirror's controller sees the same writes. A mapping that appears while
    the program runs (a new mmap, the heap's brk growth, which the kernel keeps in a mapping of its
    own until it is registered) cannot be tracked until the library registers it at its next tick
    (every ``register_interval_s`` of live time); until then every scan returns its present pages in
    full, and they are copied every pass. The recorder registered each such mapping within one of
    its own intervals and logged when (the trace's ``registrations``): from those times, the live
    ticks (``scale`` = live seconds per recorded second) and each page's first write, add to every
    interval the pages the controller would see as written although the program did not write them
    again, up to the first scan after the registration (which finds them all written once more).
    ``ticks``: the live library's wakes, in recorded seconds, where the live run logged them (else
    every interval from 0). Mappings re-registered whole after a merge count only for their new part."""
    from pagesync_model.trace.format import Trace, read_trace, write_trace
    tr = read_trace(path)
    regs = sorted(tr.metadata.get("registrations", []))
    t_end = tr.t_end_ns.astype(np.int64)
    offs = tr.offsets.astype(np.int64)
    first = first_write_interval(tr)
    vpn = tr.page_vpn.astype(np.int64)
    tick_ns = register_interval_s * 1e9 / scale  # the live library's ticks, in recorded time
    ticks_ns = sorted(t * 1e9 for t in ticks)
    step = int(tr.metadata.get("interval_ns", 2_000_000))
    covered = []  # disjoint [lo, hi) vpn ranges registered so far
    extra = [[] for _ in range(tr.n_intervals)]
    for t_reg, lo, n in regs:
        hi = lo + n
        parts, cur = [], lo  # the part of [lo, hi) not covered before
        for a, b in sorted(covered):
            if b <= cur or a >= hi:
                continue
            if a > cur:
                parts.append((cur, a))
            cur = max(cur, b)
        if cur < hi:
            parts.append((cur, hi))
        covered.append((lo, hi))
        if t_reg <= step or not parts:  # registered at start-up, before anything ran
            continue
        appeared = t_reg - step / 2
        later = [t for t in ticks_ns if t > appeared] if ticks_ns else []
        live_reg = later[0] if later and ticks_ns[0] <= appeared else (np.floor(appeared / tick_ns) + 1) * tick_ns
        # every scan until the registration, and the first one after it (the stretch's pages were
        # never write-protected, so they read as written once more)
        ks = np.flatnonzero((t_end > appeared) & (t_end <= live_reg + step))
        for a, b in parts:
            i0, i1 = np.searchsorted(vpn, a), np.searchsorted(vpn, b)
            idx = np.arange(i0, i1)
            for k in ks:  # the pages of the new part present by then
                extra[k].append(idx[first[idx] <= k])
    pages, new_offs = [], [0]
    for k in range(tr.n_intervals):
        own = tr.pages[offs[k]:offs[k + 1]]
        if extra[k]:
            own = np.union1d(own, np.concatenate(extra[k])).astype(tr.pages.dtype)
        pages.append(own)
        new_offs.append(new_offs[-1] + len(own))
    meta = dict(tr.metadata, live_view={"register_interval_s": register_interval_s, "scale": scale})
    write_trace(out, Trace(offsets=np.array(new_offs, dtype=np.uint64), pages=np.concatenate(pages),
                           page_vpn=tr.page_vpn, t_end_ns=tr.t_end_ns, page_size=tr.page_size, metadata=meta))
    return out


def trim_trace(path, start_s, end_s, out):
    """The trace from ``start_s`` to ``end_s`` (seconds since the target's start), time shifted to 0
    at ``start_s``: the part a mirror that started there can see."""
    from pagesync_model.trace.format import Trace, read_trace, write_trace
    tr = read_trace(path)
    t_end = tr.t_end_ns.astype(np.int64) - int(start_s * 1e9)
    keep = np.flatnonzero((t_end > 0) & (t_end - int((end_s - start_s) * 1e9) < int(TRACE_INTERVAL * 2e9)))
    k0, k1 = int(keep[0]), int(keep[-1]) + 1
    offs = tr.offsets.astype(np.int64)
    pages = tr.pages[offs[k0]:offs[k1]]
    new_offs = (offs[k0:k1 + 1] - offs[k0]).astype(np.uint64)
    # the first kept interval straddles the start: keep the share of its pages that falls after it
    t_prev = int(tr.t_end_ns[k0 - 1]) - int(start_s * 1e9) if k0 > 0 else -int(start_s * 1e9)
    share = t_end[k0] / max(1, t_end[k0] - t_prev)
    n0 = int(new_offs[1])
    drop = n0 - int(round(n0 * share))
    if drop > 0:
        pages = np.concatenate([pages[:n0][drop:], pages[n0:]])
        new_offs = np.concatenate([[0], new_offs[1:] - drop]).astype(np.uint64)
    used = np.unique(pages)  # keep only the pages this window writes: a small file
    remap = np.searchsorted(used, pages).astype(tr.pages.dtype)
    meta = {k: v for k, v in tr.metadata.items() if k != "registrations"}
    meta.update(trimmed_from_s=start_s, trimmed_to_s=end_s)
    write_trace(out, Trace(offsets=new_offs, pages=remap, page_vpn=tr.page_vpn[used], t_end_ns=t_end[k0:k1].astype(np.uint64),
                           page_size=tr.page_size, metadata=meta))
    return read_trace(out)


def fitted_costs(live):
    """This run's copy costs, from its passes before the blackout (the blackout's own times are not
    used: its cost is the calibrated model of ``blackout_model``). The time from one scan to the next
    is a fixed cost (the scans, reading the maps, bookkeeping, the acknowledgement) plus a cost per
    page copied:
    - per pass and per page re-copied: a least-squares line through the re-copy passes' scan-to-scan
      times against their pages (the receiver already holds these pages);
    - the full pass: whatever its scan-to-scan time has beyond that line, per page, is the cost of
      a page the receiver gets for the first time (allocating and faulting in its copy);
    - the deciding scan: the time of the scan that decided the blackout, taken before the target was
      stopped (the blackout's final scans walk the same mappings).
    With fewer than two re-copy passes, or re-copy passes all within 20% of the same size, the send times
    measured inside the passes stand in."""
    recs, lp = live["per_pass"], live["live"]["per_pass"]
    starts = [r["start_s"] for r in recs]
    re = [k for k in range(1, len(recs) - 1) if recs[k]["kind"] == "pass" and recs[k]["pages_copied"] > 0]
    # the line needs passes of different sizes: where every re-copy pass copies about the same pages (a
    # writer that rewrites its whole buffer between scans) its slope is noise, and the send times stand in
    if len(re) >= 2 and max(recs[k]["pages_copied"] for k in re) > 1.2 * min(recs[k]["pages_copied"] for k in re):
        per_page, fixed = np.polyfit([recs[k]["pages_copied"] for k in re], [starts[k + 1] - starts[k] for k in re], 1)
    elif re:
        per_page = sum(lp[k]["send_s"] for k in re) / sum(recs[k]["pages_copied"] for k in re)
        fixed = float(np.median([starts[k + 1] - starts[k] - lp[k]["send_s"] for k in re]))
    else:  # no re-copy pass: the full pass's own send rate, its own fixed cost
        per_page = lp[0]["send_s"] / max(1, recs[0]["pages_copied"])
        fixed = (starts[1] - starts[0]) - lp[0]["send_s"] if len(starts) > 1 else 0.0
    per_page, fixed = max(float(per_page), 1e-9), max(0.0, float(fixed))
    full = starts[1] - starts[0] if len(starts) > 1 else recs[0]["duration_s"]
    first = max(0.0, (full - fixed) / max(1, recs[0]["pages_copied"]) - per_page)
    return {"bandwidth_Bps": 4096 / per_page, "pass_overhead_s": fixed, "first_copy_s": first,
            "deciding_scan_s": deciding_scan(live)}


def deciding_scan(live):
    """Seconds the scan that decided the blackout took (before the stop: the last scan with a time;
    with ``--stop after-copy`` that is the deciding pass's, the blackout's own scan being its final one)."""
    return [p["scan_s"] for p in live["live"]["per_pass"][1:] if p["scan_s"] > 0][-1]


def stretch(live):
    """The host's CPU contention as the live controller met it in its passes, before the stop: how much
    longer its CPU work took than its CPU time, (on a CPU + waiting for one) / on a CPU, from the
    kernel's scheduler accounting of the controller (``live.sched``). The blackout's CPU-bound steps
    (the controller's and the receiver's, sharing the host's 2 cores with whatever else runs there)
    are taken to stretch as much."""
    sc = live["live"]["sched"]["passes"]
    return (sc["cpu_s"] + sc["runqueue_s"]) / sc["cpu_s"] if sc["cpu_s"] > 0 else 1.0


def sched_wait(live):
    """The host's CPU contention as the live controller met it in its passes, before the stop: its mean
    wait for a CPU each time it was put on one, run-queue seconds / times scheduled, from the kernel's
    scheduler accounting of the controller (``live.sched``)."""
    sc = live["live"]["sched"]["passes"]
    return sc["runqueue_s"] / sc["slices"] if sc.get("slices") else 0.0


def blackout_parts(live):
    """The live blackout's measured parts: (pages mirrored so far, pages it copied, the deciding scan's
    seconds, the final scans' seconds, the acknowledgement's seconds, the downtime, the contention
    stretch of its passes, the mean wait for a CPU in its passes)."""
    lp = live["live"]["per_pass"][-1]
    return (lp["mirrored_pages"], live["per_pass"][-1]["pages_copied"], deciding_scan(live), lp["final_scan_s"],
            lp["ack_s"], live["downtime_s"], stretch(live), sched_wait(live))


def _fit_stretch(a):
    """The stretch model's constants (see ``blackout_model``) from the rows ``a`` of ``blackout_parts``
    plus the copy cost per page."""
    mirrored, n, scan, final, ack, down, st, wait, per_copy = a.T
    handshake = float(np.median(ack / st))
    ratio = float(np.median(final / scan))
    rest = (down - n * per_copy - ratio * scan) / st - handshake
    per_page, stop = np.polyfit(mirrored, rest, 1)
    return {"stop_s": max(1e-6, float(stop)), "per_page_mirrored_s": max(0.0, float(per_page)),
            "scan_ratio": ratio, "handshake_s": handshake}


def _fit_waits(a):
    """The waits model's constants (see ``blackout_model``)."""
    mirrored, n, scan, final, ack, down, st, wait, per_copy = a.T
    ratio = float(np.median(final / scan))
    return {"scan_ratio": ratio, "waits": float(np.median((down - n * per_copy - ratio * scan) / wait))}


def _fit_mirrored(a):
    """The mirrored model's constants (see ``blackout_model``)."""
    mirrored, n, scan, final, ack, down, st, wait, per_copy = a.T
    ratio = float(np.median(final / scan))
    per_page, stop = np.polyfit(mirrored, down - n * per_copy - ratio * scan, 1)
    return {"scan_ratio": ratio, "stop_s": max(1e-6, float(stop)), "per_page_mirrored_s": max(0.0, float(per_page))}


FORMS = {"waits": _fit_waits, "stretch": _fit_stretch, "mirrored": _fit_mirrored}


def _blackout_formula(kind, m, row):
    """The blackout a model gives one row of ``blackout_parts`` (plus its copy cost per page): what the
    simulator charges, without its copy-time rounding (used for the calibration's cross-validation)."""
    mirrored, n, scan, final, ack, down, st, wait, per_copy = row
    if kind == "waits":
        return n * per_copy + m["scan_ratio"] * scan + m["waits"] * wait
    if kind == "mirrored":
        return n * per_copy + m["scan_ratio"] * scan + m["stop_s"] + m["per_page_mirrored_s"] * mirrored
    return n * per_copy + m["scan_ratio"] * scan + st * (m["stop_s"] + m["per_page_mirrored_s"] * mirrored
                                                         + m["handshake_s"])


def _rows(runs):
    return np.array([blackout_parts(r["live"]) + (4096 / r["costs"]["bandwidth_Bps"],) for r in runs], dtype=float)


def blackout_model(cal_runs, contended_runs=()):
    """The blackout's cost, fitted on the calibration runs ``cal_runs`` only (never on a judged target).
    Three forms, each fitted on the same runs; the simulations use the one with the smallest error on
    calibration runs, the larger of (its leave-one-out error on ``cal_runs``, and its error on
    ``contended_runs``, the same calibration runs measured with the host's CPUs contended, predicted by
    the form fitted on ``cal_runs``: a form must also carry over to a busier host). The others are kept
    for comparison. In each, the copy cost and the deciding scan are the run's own, measured in its
    passes (``fitted_costs``), and scan_ratio is the final scans against the scan that decided the
    blackout (median ratio):

    mirrored: downtime = the blackout's pages x the run's copy cost + scan_ratio x the deciding scan
                         + stop + per_page x pages mirrored so far
    - stop (SIGSTOP, waiting for the threads, the receiver's acknowledgement) and per_page (the
      controller's bookkeeping over the pages the partner holds: which are gone, the set held after the
      copy): a least-squares line through what is left of each blackout against its pages mirrored;

    stretch: downtime = the blackout's pages x the run's copy cost + scan_ratio x the deciding scan
                        + stretch x (stop + per_page x pages mirrored so far + handshake)
    - stretch: (on a CPU + waiting) / on a CPU of the controller in its passes (``stretch``): the
      blackout's CPU work waits for a CPU as much as the passes' did;
    - handshake: the receiver's acknowledgement (median, unstretched); stop and per_page: a
      least-squares line through what is left of each blackout, unstretched, against its pages mirrored;

    waits: downtime = the blackout's pages x the run's copy cost + scan_ratio x the deciding scan
                      + waits x the controller's mean wait for a CPU in the run's passes
    - waits: the blackout's fixed work in units of the wait for a CPU the controller met each time it
      was scheduled in its passes (``sched_wait``), median over the runs."""
    a = _rows(cal_runs)
    b = _rows(contended_runs) if len(contended_runs) else None
    loo, contended, forms = {}, {}, {}
    for kind, fit in FORMS.items():
        errs = []
        for i in range(len(a)):
            m = fit(np.delete(a, i, axis=0))
            errs.append(_blackout_formula(kind, m, a[i]) / a[i][5] - 1)
        loo[kind] = float(np.median(np.abs(errs)))
        forms[kind] = fit(a)
        if b is not None:
            contended[kind] = float(np.median(np.abs([_blackout_formula(kind, forms[kind], r) / r[5] - 1 for r in b])))
    form = min(FORMS, key=lambda k: (max(loo[k], contended.get(k, 0.0)), k))
    mirrored, st, wait = a[:, 0], a[:, 6], a[:, 7]
    return {"form": form, "forms": forms, "runs": len(a), "mirrored_pages": [int(min(mirrored)), int(max(mirrored))],
            "wait_s": [float(min(wait)), float(max(wait))], "stretch": [float(min(st)), float(max(st))],
            "loo_median_abs_error": loo, "contended_runs": 0 if b is None else len(b),
            "contended_stretch": [] if b is None else [float(min(b[:, 6])), float(max(b[:, 6]))],
            "contended_median_abs_error": contended}


def form_constants(bm, form=None):
    """(form, constants) of blackout model ``bm``: its chosen form, or ``form``. A model written before
    the forms were kept by name (the loaded campaign's) holds the waits form's constants at its top level
    and the stretch form's in ``stretch_model``, and uses the waits form."""
    form = form or bm.get("form", "waits")
    if "forms" in bm:
        return form, bm["forms"][form]
    return form, (bm if form == "waits" else bm["stretch_model"])


def predicted_blackout_costs(live, c, bm, model=None):
    """The simulated blackout's inputs for one live run: (stop and final scans, per page mirrored,
    handshake) in seconds, from its passes' measurements and the calibrated model ``bm`` (its chosen
    form, or the form ``model``)."""
    model, m = form_constants(bm, model)
    if model == "waits":
        return m["scan_ratio"] * c["deciding_scan_s"] + m["waits"] * sched_wait(live), 0.0, 0.0
    if model == "mirrored":
        return m["scan_ratio"] * c["deciding_scan_s"] + m["stop_s"], m["per_page_mirrored_s"], 0.0
    st = stretch(live)
    return (m["scan_ratio"] * c["deciding_scan_s"] + st * m["stop_s"], st * m["per_page_mirrored_s"],
            st * m["handshake_s"])


def calibrate(tmp, measure=True, contended=False):
    """The calibration runs: the writer alone at each size, mirrored ``reps`` times (at-once). With
    ``contended``, the same runs under another tag (``calib-contended-...``): the campaign measures them
    with the lab's session at no priority over the host's other work (see the README); without, the
    model is fitted on the quiet ones and its form chosen with the contended ones too, where kept."""
    runs = []
    for mib in CALIBRATION["sizes_mib"]:
        t = {"cmd": [f"{tmp}/writer", str(mib), str(CALIBRATION["rate"]), str(CALIBRATION["seconds"])]}
        for i in range(CALIBRATION["reps"]):
            tag = f"calib-{'contended-' if contended else ''}{mib}M__r{i}"
            cached = Path(tmp) / f"{tag}.live.json"
            if not cached.exists():
                if not measure:
                    raise SystemExit(f"--analyze: the calibration run {tag} is not in the kept measurements")
                print(f"{tag}: live mirror (calibration)", file=sys.stderr)
                live_run(tag, t, tmp)
            live = json.loads(cached.read_text())
            runs.append({"size_mib": mib, "run": i, "live": slim_live(live), "costs": fitted_costs(live)})
    if contended:
        return runs
    have = all((Path(tmp) / f"calib-contended-{mib}M__r{i}.live.json").exists()
               for mib in CALIBRATION["sizes_mib"] for i in range(CALIBRATION["reps"]))
    hot = calibrate(tmp, False, True) if have else []
    return {"what": f"C writer alone, {CALIBRATION['rate']} pages/s, mirrored at each size (--stop at-once)",
            "setup": CALIBRATION, "model": blackout_model(runs, hot), "runs": runs, "contended_runs": hot}


LIBRARY_BURST = 50e-6  # s: a wake's writes (maps read, registrations) take this long, all on its few pages


def library_writer(pages, interval_s, t_start, ticks=()):
    """The library's polling thread as a workload group: it wakes every ``interval_s`` and writes its
    ``pages`` at once. The live run logged its wakes (``ticks``, seconds since the program started);
    the simulated mirror starts at ``t_start``, so its first wake comes at the first tick after."""
    after = [t for t in ticks if t >= t_start]
    phase = (after[0] - t_start) if after else (-t_start) % interval_s
    idle = 0.001  # writes/s: a phase must have a rate
    return {"cpus": 1, "kind": "sequential", "rate": f"{idle}/s", "working_set": f"{pages * 4}KiB", "phases": [
        {"duration": f"{max(1e-6, phase) * 1e6:.1f}us", "rate": f"{idle}/s"},
        {"duration": f"{LIBRARY_BURST * 1e6:.1f}us", "rate": f"{pages / LIBRARY_BURST:.1f}/s"},
        {"duration": f"{max(1e-6, interval_s - LIBRARY_BURST - phase) * 1e6:.1f}us", "rate": f"{idle}/s"}]}


def sim_config(live, trace_file, n_trace_pages, c, library, bm, time_scale=1.0, model=None):
    """The simulator config replaying a trimmed trace against one live run's copy costs (and its
    passes, threshold and stop rule) and the calibrated blackout model ``bm``."""
    from pagesync_model.memory import memory_regions
    stop_s, per_page_s, handshake_s = predicted_blackout_costs(live, c, bm, model)
    full = live["per_pass"][0]["pages_copied"]
    lib = max(1, round(library["pages_per_wake"]))
    ws = max(full - lib, n_trace_pages)
    frames = ws + lib  # the process's pages; the tracking structures come on top and are not copied
    while memory_regions(frames * 4096, 4096, 0).user_bytes < (ws + lib) * 4096:
        frames += 1
    return {
        "policy": "stratus",
        "memory": {"size": f"{frames * 4}KiB", "kernel_size": "0B", "layout": "contiguous", "processes": 1,
                   "zero_fraction": 0.0},
        "cpus": {"count": 2, "clock": "1GHz"},
        # the target replays its trace; the library's polling thread, which the trace does not hold,
        # writes the same few pages every register interval
        "workload": {"rate": "1k/s", "working_set": f"{(ws + lib) * 4}KiB", "groups": [
            {"cpus": 1, "kind": "trace", "trace": str(trace_file), "working_set": f"{ws * 4}KiB", "loop": False,
             "time_scale": time_scale},
            library_writer(lib, library["interval_s"], live["live"]["mirror_start_from_target_start_s"],
                           live["live"].get("library_ticks_s", ()))]},
        # the scan runs while the target keeps running (stop_cpus: false): the per-pass overhead (scans,
        # maps, bookkeeping) passes with the target writing, and only the blackout stops it
        "tracking": {"rendezvous": f"{c['pass_overhead_s'] * 1e6:.1f}us", "pte_scan": "0cycles",
                     "pte_harvest": "0cycles", "tlb_flush": "0us", "stop_cpus": False,
                     # the blackout's stop, wait and final scans: the final scans as the calibrated multiple
                     # of this run's deciding scan, the rest as the calibrated number of waits for a CPU
                     "stop_scan": f"{stop_s * 1e6:.1f}us"},
        "link": {"bandwidth": f"{c['bandwidth_Bps']:.0f}B/s", "latency": "0us", "per_copy": "0us",
                 "first_copy": f"{c['first_copy_s'] * 1e9:.0f}ns"},
        # the target's page tables live in the kernel and the controller is another process: the
        # blackout copies the pages found written, nothing pinned, in as many ranges as it takes
        # the calibrated bookkeeping per page mirrored, and the receiver's acknowledgement as the cut-over
        "stratus": {"passes": live["config"]["stratus"]["passes"], "threshold": live["config"]["stratus"]["threshold"],
                    "cutover": f"{handshake_s * 1e6:.1f}us", "tracking_outside": True,
                    "max_copyrange": 1000000, "nearby": 0, "stop": stop_of(live),
                    "stop_per_page": f"{per_page_s * 1e9:.3f}ns"},
        "sim": {"quantum": "100us"},
    }


def stop_of(live):
    return live["config"]["stratus"].get("stop", "at-once")


_PLAIN = {}


def plain_trace(path):
    """A committed trace as a file the simulator reads. The trimmed traces are stored xz-compressed
    (``.npz.xz``): an npz's deflate leaves the repeats from one interval to the next, which xz finds
    (a writer sweeping its whole buffer: 1.4 MB npz, 64 kB compressed); each is decompressed once per
    process, into a temporary folder removed at exit."""
    path = Path(path)
    if path.suffix != ".xz":
        return path
    if path not in _PLAIN:
        import atexit
        import lzma
        if "dir" not in _PLAIN:
            _PLAIN["dir"] = Path(tempfile.mkdtemp(prefix="pagesync-live-traces-"))
            atexit.register(shutil.rmtree, _PLAIN["dir"], True)
        out = _PLAIN["dir"] / f"{len(_PLAIN)}-{path.name[:-3]}"
        out.write_bytes(lzma.decompress(path.read_bytes()))
        _PLAIN[path] = out
    return _PLAIN[path]


def store_trace(path, out):
    """Write trace file ``path`` xz-compressed to ``out`` (see ``plain_trace``)."""
    import lzma
    Path(out).write_bytes(lzma.compress(Path(path).read_bytes(), preset=6))


def simulate_run(run, library, bm, folder=None, model=None):
    """Simulate one committed run (its trimmed trace, its costs, the blackout model ``bm``): the
    result dict."""
    from pagesync_model.config import config_from_dict
    from pagesync_model.sim.engine import simulate
    from pagesync_model.trace.format import read_trace
    trace = plain_trace((folder or OUT) / run["trace"])
    cfg = sim_config(run["live"], trace, read_trace(trace).n_distinct, run["costs"], library, bm,
                     run.get("time_scale", 1.0), model)
    return simulate(config_from_dict(cfg)).to_dict()


def slim_live(d):
    keep = ("policy", "passes", "converged", "stop_reason", "downtime_s", "total_time_s", "bytes_sent", "pages_sent",
            "memory_pages", "page_size", "verified", "lost_writes", "per_pass", "config")
    out = {k: d[k] for k in keep}
    out["live"] = {k: d["live"][k] for k in ("kernel", "stopped_s", "mirror_start_from_target_start_s",
                                             "library_ticks_s", "full_pass_throughput_Bps", "copy_throughput_Bps",
                                             "per_pass", "sched")}
    # the interpreter and the compiled writer by their names: their paths are this machine's
    out["config"] = json.loads(json.dumps(d["config"]))
    cmd = out["config"]["live"]["command"]
    cmd[:1] = [os.path.basename(c) if c == sys.executable or c.startswith(tempfile.gettempdir() + os.sep)
               or c.startswith(os.environ.get("PAGESYNC_LIVE_EXP_TMP") or "\0") else c for c in cmd[:1]]
    out["command"] = cmd
    out["host_load"] = d["host_load"]
    return out


def slim_sim(d):
    return {k: d[k] for k in ("policy", "passes", "converged", "stop_reason", "downtime_s", "total_time_s",
                              "bytes_sent", "pages_sent", "lost_writes", "per_pass")}


def dirty(d):
    """Dirty pages found by each scan after the full copy (the last one decided the blackout)."""
    return [p["dirty_pages"] for p in d["per_pass"][1:]]


def summarize(runs):
    """The target's live runs against their simulations, as distributions: per pass (by index, over
    the runs that reached it) the medians; the blackout medians; the verdict counts."""
    live, sim = [r["live"] for r in runs], [r["sim"] for r in runs]
    n = max(max(len(dirty(d)) for d in live), max(len(dirty(d)) for d in sim))
    per_pass = []
    for k in range(n):
        lv = [dirty(d)[k] for d in live if len(dirty(d)) > k]
        sm = [dirty(d)[k] for d in sim if len(dirty(d)) > k]
        per_pass.append({"live": lv, "sim": sm,
                         "live_median": float(np.median(lv)) if lv else None,
                         "sim_median": float(np.median(sm)) if sm else None})
    return {"runs": len(runs), "converged_live": sum(d["converged"] for d in live),
            "converged_sim": sum(d["converged"] for d in sim), "per_pass": per_pass,
            "downtime_live_s": sorted(d["downtime_s"] for d in live),
            "downtime_sim_s": sorted(d["downtime_s"] for d in sim)}


def main(argv, measure=True, analyze=True):
    """Measure (what the cache in $PAGESYNC_LIVE_EXP_TMP does not hold yet) and analyse; with
    ``measure`` false, analyse only the runs the cache holds (each target's first runs that have a
    trace and a live run with every stop rule), measuring nothing."""
    OUT.mkdir(exist_ok=True)
    (OUT / "traces").mkdir(exist_ok=True)
    tmp = os.environ.get("PAGESYNC_LIVE_EXP_TMP") or tempfile.mkdtemp(prefix="pagesync-live-exp-")
    os.makedirs(tmp, exist_ok=True)
    try:
        subprocess.run(["gcc", "-O2", "-o", f"{tmp}/writer", str(HERE / "writer.c")], check=True)
        ts = targets(tmp)
        names = [] if argv in (["calibration"], ["calibration-contended"]) else (argv or list(ts))
        libfile = Path(tmp) / "library.json"
        if not measure and not (libfile.exists() and os.environ.get("PAGESYNC_LIVE_EXP_TMP")):
            raise SystemExit("--analyze needs the measurements kept by a run with PAGESYNC_LIVE_EXP_TMP=DIR")
        if libfile.exists():
            library = json.loads(libfile.read_text())
        else:
            print("library: measuring its own writes", file=sys.stderr)
            library = measure_library(tmp)
            libfile.write_text(json.dumps(library))
        if analyze:  # measuring only leaves the committed results as they are
            (OUT / "library.json").write_text(json.dumps(library, indent=1) + "\n")
        print(f"library: {library}", file=sys.stderr)
        if argv == ["calibration-contended"]:
            calibrate(tmp, measure, contended=True)
        cal = calibrate(tmp, measure)
        if analyze:
            (OUT / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")
        bm = cal["model"]
        print(f"blackout model (calibration runs): {bm}", file=sys.stderr)
        for name in names:
            runs = {stop: [] for stop in STOPS}
            # The recorder's scans and write-protect faults slow the program it traces. A program that
            # runs for a fixed time (the paced writers, the dict loop, redis under its benchmark) just
            # does less in that time; one with fixed work (sqlite3's inserts) takes longer, and its
            # trace's clock runs slow: replay it faster by its duration with the live library over its
            # duration traced.
            progress = None
            if ts[name].get("fixed_work"):
                progfile = Path(tmp) / f"{name}.progress.json"
                if not progfile.exists():
                    progfile.write_text(json.dumps(library_progress(ts[name], tmp)))
                progress = json.loads(progfile.read_text())
            for i in range(REPS):  # a separately recorded trace and a live run with each stop rule, REPS times
                tag = f"{name}__r{i}"
                if not measure and not all((Path(tmp) / f"{tag}{suffix(stop)}.live.json").exists() for stop in STOPS):
                    break
                if not (Path(tmp) / f"{tag}.npz").exists():
                    print(f"{tag}: recording the trace", file=sys.stderr)
                    record_trace(tag, ts[name], tmp)
                for stop in STOPS:
                    ltag = tag + suffix(stop)
                    cached = Path(tmp) / f"{ltag}.live.json"
                    if not cached.exists():
                        print(f"{ltag}: live mirror", file=sys.stderr)
                        live_run(ltag, ts[name], tmp, stop)
                    if not analyze:
                        continue
                    live = json.loads(cached.read_text())
                    scale, start = 1.0, live["live"]["mirror_start_from_target_start_s"]
                    if progress:
                        scale, start = time_map(Path(tmp) / f"{tag}.npz", progress, start, live["total_time_s"])
                    end = start + live["total_time_s"] * (1 + TRACE_TAIL) / scale
                    t_live = live["live"]["mirror_start_from_target_start_s"]
                    ticks = [start + (t - t_live) / scale for t in live["live"].get("library_ticks_s", [])]
                    seen = live_view(Path(tmp) / f"{tag}.npz", library["interval_s"], scale,
                                     Path(tmp) / f"{ltag}.live.npz", ticks)
                    trim_trace(seen, start, end, Path(tmp) / f"{ltag}.trim.npz")
                    store_trace(Path(tmp) / f"{ltag}.trim.npz", OUT / "traces" / f"{ltag}.npz.xz")
                    run = {"run": i, "trace": f"traces/{ltag}.npz.xz", "time_scale": scale, "live": slim_live(live),
                           "costs": fitted_costs(live)}
                    run["sim"] = slim_sim(simulate_run(run, library, bm))
                    runs[stop].append(run)
                    print(f"{ltag}: live {dirty(run['live'])} {live['downtime_s'] * 1e3:.2f} ms {live['converged']} | "
                          f"sim {dirty(run['sim'])} {run['sim']['downtime_s'] * 1e3:.2f} ms {run['sim']['converged']}",
                          file=sys.stderr)
            if not runs[STOPS[0]]:  # nothing kept (--analyze), or measuring only (--measure)
                continue
            for stop in STOPS:
                res = {"name": name, "stop": stop, "what": ts[name]["what"], "library": library,
                       "blackout_model": bm, "summary": summarize(runs[stop]), "runs": runs[stop]}
                (OUT / f"{name}{suffix(stop)}.json").write_text(json.dumps(res, indent=1) + "\n")
    finally:
        if not os.environ.get("PAGESYNC_LIVE_EXP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    if analyze:
        table()


ORDER = ["writer-5k", "writer-40k", "writer-200k", "python-dict", "sqlite3", "redis"]


def suffix(stop):
    """The results' file-name suffix of a stop rule: none for the published at-once."""
    return "" if stop == "at-once" else f"@{stop}"


def load_results(folder=None, stop=None):
    """The targets' results (of one stop rule, or all), in table order."""
    rows = [json.loads(p.read_text()) for p in sorted((folder or OUT).glob("*.json"))
            if p.name not in ("library.json", "calibration.json", "stop_latency.json")]
    rows = [r for r in rows if stop is None or r.get("stop", "at-once") == stop]
    rows.sort(key=lambda r: (ORDER.index(r["name"]) if r["name"] in ORDER else 99, STOPS.index(r.get("stop", "at-once"))))
    return rows


def load_calibration(folder=None):
    return json.loads(((folder or OUT) / "calibration.json").read_text())


def blackout_errors(rows, sim_key="sim"):
    """Each judged run's blackout error, simulated against live, relative."""
    return [(x[sim_key]["downtime_s"] - x["live"]["downtime_s"]) / x["live"]["downtime_s"] for r in rows for x in r["runs"]]


def blackout_line(rows, sim_key="sim"):
    e = np.array(blackout_errors(rows, sim_key))
    return (f"Over all {len(e)} judged runs, the single run's blackout error: median {np.median(np.abs(e)) * 100:.0f}%, "
            f"spread {np.percentile(e, 10) * 100:+.0f}% to {np.percentile(e, 90) * 100:+.0f}% (10th to 90th percentile).")


def model_line(cal):
    """The calibrated blackout model in words, for results.md."""
    bm = cal["model"]
    loo, hot, f = bm["loo_median_abs_error"], bm["contended_median_abs_error"], bm["forms"]
    m, st, w = f["mirrored"], f["stretch"], f["waits"]
    shares = [r["live"]["host_load"]["measured"]["all"]["wait_share"] for r in cal["runs"]]
    hshares = [r["live"]["host_load"]["measured"]["all"]["wait_share"] for r in cal["contended_runs"]]
    name = {"mirrored": "mirrored-pages", "stretch": "stretch", "waits": "waits"}
    return (f"Blackout model, fitted on {bm['runs']} quiet calibration runs (the C writer alone, "
            f"{bm['mirrored_pages'][0]}-{bm['mirrored_pages'][-1]} pages mirrored, run-queue wait of the measured "
            f"processes {min(shares) * 100:.0f}-{max(shares) * 100:.0f}% of their CPU time; "
            "[`results/calibration.json`](results/calibration.json)), its form chosen on calibration runs only "
            f"(leave-one-out on these; fitted on these, predicting {bm['contended_runs']} contended calibration runs, "
            f"wait {min(hshares) * 100:.0f}-{max(hshares) * 100:.0f}%): the **{name[bm['form']]}** form. "
            f"Mirrored-pages: final scans {m['scan_ratio']:.2f} x the deciding scan, plus {m['stop_s'] * 1e3:.2f} ms "
            f"plus {m['per_page_mirrored_s'] * 1e9:.0f} ns per page mirrored so far (leave-one-out "
            f"{loo['mirrored'] * 100:.0f}%, contended {hot['mirrored'] * 100:.0f}%). Stretch: the same terms "
            f"({st['stop_s'] * 1e3:.2f} ms, {st['per_page_mirrored_s'] * 1e9:.0f} ns per page, handshake "
            f"{st['handshake_s'] * 1e3:.2f} ms) times the controller's (on a CPU + waiting) / on a CPU in the passes "
            f"({loo['stretch'] * 100:.0f}%, contended {hot['stretch'] * 100:.0f}%). Waits: {w['waits']:.2f} x the "
            f"controller's mean wait per scheduling in the passes ({loo['waits'] * 100:.0f}%, contended "
            f"{hot['waits'] * 100:.0f}%).")


def _range(xs, fmt):
    return f"{fmt(min(xs))}-{fmt(max(xs))}"


def judged_rows(rows, sim_key="sim"):
    """results.md's rows for a campaign's results (the simulations under ``sim_key``)."""
    lines = []
    for r in rows:
        s = r["summary"]
        sims = [x[sim_key] for x in r["runs"]]
        errs = []
        for k in range(len(s["per_pass"])):  # each simulated run against its own live run
            pairs = [(lv[k], sv[k]) for lv, sv in ((dirty(x["live"]), dirty(y)) for x, y in zip(r["runs"], sims))
                     if len(lv) > k and len(sv) > k]
            if len(pairs) >= 3:
                errs.append(abs(float(np.median([(b - a) / a for a, b in pairs]))))
        dl, ds = float(np.median(s["downtime_live_s"])), float(np.median([d["downtime_s"] for d in sims]))
        lv = ", ".join(f"{p['live_median']:.0f}" + (f" ({len(p['live'])})" if len(p["live"]) < s["runs"] else "")
                       for p in s["per_pass"] if p["live"])
        per = [[dirty(d)[k] for d in sims if len(dirty(d)) > k] for k in range(max(len(dirty(d)) for d in sims))]
        sm = ", ".join(f"{np.median(v):.0f}" + (f" ({len(v)})" if len(v) < s["runs"] else "") for v in per if v)
        verified = all(x["live"]["verified"] for x in r["runs"])
        hl = [x["live"]["host_load"] for x in r["runs"]]
        load = _range([h["loadavg_1min_before"] for h in hl], lambda v: f"{v:.1f}")
        if all("measured" in h for h in hl):
            load += "; " + _range([h["measured"]["all"]["wait_share"] for h in hl], lambda v: f"{v * 100:.0f}") + "%"
        else:
            load += "; " + _range([stretch(x["live"]) - 1 for x in r["runs"]], lambda v: f"{v * 100:.0f}") + "% (ctl)"
        conv = sum(d["converged"] for d in sims)
        lines.append(f"| {r['name']} | {r.get('stop', 'at-once')} | {s['converged_live']}/{s['runs']} / "
                     f"{conv}/{s['runs']} | {lv} | "
                     f"{sm} | {max(errs, default=0) * 100:.0f}% | {dl * 1e3:.2f} / {ds * 1e3:.2f} ({(ds - dl) / dl * 100:+.0f}%) | "
                     f"{load} | {'yes' if verified else 'NO'} |")
    return lines


HEADER = ["| target | stop | converged live / sim | dirty pages per pass: live median (runs) | simulated median | "
          "worst pass error (median over runs) | blackout ms live / sim median (error) | 1-min load; run-queue wait "
          "share | verified |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


def table():
    rows = load_results()
    cal = load_calibration()
    lines = [model_line(cal), "", *HEADER, *judged_rows(rows), "", blackout_line(rows)]
    loaded = [r for r in load_results(LOADED) if all("sim_quiet_model" in x for x in r["runs"])]
    if loaded:
        lines += ["", "The campaign measured under load ([`results/loaded/`](results/loaded/), its own model and "
                  "simulations as committed then), simulated again with the model above (the contention test; the "
                  "last column gives the controller's run-queue wait as a share of its CPU time in the passes, "
                  "the receiver's and target's were not recorded then):", "", *HEADER,
                  *judged_rows(loaded, "sim_quiet_model"), "",
                  blackout_line(loaded, "sim_quiet_model").replace("judged runs", "loaded runs")]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ncol = len({r["name"] for r in rows})
    fig, axes = plt.subplots(len(STOPS), ncol, figsize=(3 * ncol, 3.2 * len(STOPS)), squeeze=False)
    for ax, r in zip([ax for row in axes for ax in row], sorted(rows, key=lambda r: STOPS.index(r["stop"]))):
        for j, run in enumerate(r["runs"]):
            lv, sm = dirty(run["live"]), dirty(run["sim"])
            ax.semilogy(range(1, len(lv) + 1), [max(1, x) for x in lv], "o-", color="C0", alpha=0.5, ms=3,
                        label="live" if j == 0 else None)
            ax.semilogy(range(1, len(sm) + 1), [max(1, x) for x in sm], "s--", color="C1", alpha=0.5, ms=3,
                        label="simulated" if j == 0 else None)
        ax.axhline(THRESHOLD, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{r['name']} ({r['stop']})", fontsize=9)
        ax.set_xlabel("pass")
    for row in axes:
        row[0].set_ylabel("dirty pages")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "mirror.png", dpi=90)


STOP_PROBES, STOP_GAP = 40, 0.05


def stop_latency(names=(), tmp=None):
    """A separate measurement of how long a SIGSTOP takes to stop every thread of each target (the
    blackout's first step, ``stop_wait_s`` in a live run), without mirroring it: each target started
    as the live mirror starts it (the live library loaded in register mode, its polling thread running),
    stopped ``STOP_PROBES`` times ``STOP_GAP`` s apart with the live mirror's own wait
    (``pagesync_model.live.mirror.wait_stopped``) and continued each time; the calibration writer too.
    With each target, the 1-minute load before it and the target's run-queue wait as a share of its CPU
    time over the probes. Writes results/stop_latency.json."""
    import signal
    from pagesync_model.live.mirror import wait_stopped
    from pagesync_model.trace.record import library_path
    tmp = tmp or tempfile.mkdtemp(prefix="pagesync-live-stop-")
    subprocess.run(["gcc", "-O2", "-o", f"{tmp}/writer", str(HERE / "writer.c")], check=True)
    ts = targets(tmp)
    ts = {"calibration-writer": {"cmd": [f"{tmp}/writer", "16", str(CALIBRATION["rate"]), str(TARGET_S)]},
          **{n: ts[n] for n in (names or ORDER)}}
    out = {}
    for name, t in ts.items():
        d = Path(tempfile.mkdtemp(dir=tmp))
        env = dict(os.environ, LD_PRELOAD=library_path(), PAGESYNC_TRACE_DIR=str(d), PAGESYNC_TRACE_MODE="register",
                   PAGESYNC_TRACE_INTERVAL_NS="10000000")
        load = os.getloadavg()[0]
        p = subprocess.Popen(t["cmd"], stdin=stdin_file(t, tmp), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        bench = start_bench_async() if t.get("bench") else None
        try:
            time.sleep(DELAY)
            s0, _ = read_schedstat(p.pid)
            lat = []
            for _ in range(STOP_PROBES):
                t0 = time.perf_counter()
                os.kill(p.pid, signal.SIGSTOP)
                wait_stopped(p.pid, timeout=5.0)
                lat.append(time.perf_counter() - t0)
                os.kill(p.pid, signal.SIGCONT)
                time.sleep(STOP_GAP)
            s1, _ = read_schedstat(p.pid)
        finally:
            if bench:
                bench.kill()
                bench.wait()
            p.kill()
            p.wait()
        cpu = sum(v[0] - s0.get(k, (0, 0, 0))[0] for k, v in s1.items())
        wait = sum(v[1] - s0.get(k, (0, 0, 0))[1] for k, v in s1.items())
        out[name] = {"stop_s": lat, "loadavg_1min_before": load, "threads": len(s1),
                     "target_wait_share": wait / cpu if cpu > 0 else 0.0,
                     "median_s": float(np.median(lat)), "mean_s": float(np.mean(lat)),
                     "over_1_5ms": int(sum(x > 1.5e-3 for x in lat))}
        print(f"{name}: stop {out[name]['median_s'] * 1e3:.2f} ms median, {out[name]['mean_s'] * 1e3:.2f} mean, "
              f"{out[name]['over_1_5ms']}/{STOP_PROBES} over 1.5 ms, target wait {out[name]['target_wait_share']:.0%}",
              file=sys.stderr)
    (OUT / "stop_latency.json").write_text(json.dumps({"probes": STOP_PROBES, "gap_s": STOP_GAP, "targets": out},
                                                      indent=1) + "\n")
    return out


def refit_loaded(names=()):
    """The loaded campaign's runs simulated again with the blackout model of the committed (quiet)
    calibration: ``sim_quiet_model`` in each of its runs (its own model's simulations, ``sim``, stay)."""
    bm = load_calibration()["model"]
    for r in load_results(LOADED):
        if names and r["name"] not in names:
            continue
        for run in r["runs"]:
            run["sim_quiet_model"] = slim_sim(simulate_run(run, r["library"], bm, LOADED))
            print(f"{r['name']}@{r['stop']} run {run['run']}: live {run['live']['downtime_s'] * 1e3:.2f} ms, "
                  f"quiet model {run['sim_quiet_model']['downtime_s'] * 1e3:.2f} ms", file=sys.stderr)
        (LOADED / f"{r['name']}{suffix(r['stop'])}.json").write_text(json.dumps(r, indent=1) + "\n")
    table()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        table()
    elif sys.argv[1:2] == ["--stop-latency"]:
        stop_latency(sys.argv[2:])
    elif sys.argv[1:2] == ["--refit-loaded"]:
        refit_loaded(sys.argv[2:])
    elif sys.argv[1:2] == ["--analyze"]:
        main(sys.argv[2:], measure=False)
    elif sys.argv[1:2] == ["--measure"]:
        main(sys.argv[2:], analyze=False)
    else:
        main(sys.argv[1:])
