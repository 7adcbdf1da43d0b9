"""The write tracer under programs that fork, die by a signal or leave through _exit: the program
runs as it would untraced, its children run normally (untraced), and the trace keeps every interval
scanned before the program ended.  Truth is what the programs themselves report: their output, the
status of each child, and a log of their own writes with CLOCK_MONOTONIC times.

Skipped where the kernel lacks support or gcc is missing.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pagesync_model.trace import read_trace, record

from conftest import compile_traced_program, traced_program

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "tests" / "data" / "fault_target.c"
INTERVAL_S = 0.01
# a write logged within this of a scan boundary may be reported on either side of it
AMBIGUOUS_NS = 1_000_000

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Compile the test program, and the tracer library if the package build has not."""
    return compile_traced_program(tmp_path_factory, PROGRAM, "fault_target")


@pytest.fixture
def exe(build, monkeypatch):
    return traced_program(build, monkeypatch)


def run(cmd, tmp_path, **kw):
    """record(cmd) with stdout and stderr captured; returns (summary, trace, stdout, stderr)."""
    out = tmp_path / "t.npz"
    with open(tmp_path / "out.txt", "w") as fo, open(tmp_path / "err.txt", "w") as fe:
        summary = record([str(c) for c in cmd], str(out), interval_s=INTERVAL_S, stdout=fo,
                         stderr=fe, **kw)
    return (summary, read_trace(out), (tmp_path / "out.txt").read_text(),
            (tmp_path / "err.txt").read_text())


def parse_log(text):
    """The program's own account: buffer address, page size, writes [(page, t_ns)], child statuses."""
    base = ps = None
    writes, children = [], {}
    for ln in text.splitlines():
        f = ln.split()
        if f[0] == "buf":
            base, ps = int(f[1], 16), int(f[2])
        elif f[0] == "w":
            writes.append((int(f[1]), int(f[2])))
        elif f[0].startswith("child"):
            children[f[0]] = int(f[1])
    return base, ps, writes, children


def reported_pages(tr, base, ps, n):
    """{(interval, page)} reported inside the first n + 16 pages of the buffer."""
    first = base // ps
    rep = set()
    for k in range(tr.n_intervals):
        rel = tr.interval_vpns(k).astype(np.int64) - first
        rep |= {(k, int(p)) for p in rel[(rel >= 0) & (rel < n + 16)]}
    return rep


def check_writes(tr, writes, reported):
    """Every logged write made before the last scan is reported in the interval whose end follows
    it (either side near a boundary), and nothing else is reported.  Returns the writes lost, i.e.
    made after the last scan began."""
    ends = tr.t_end_ns.astype(np.int64) + tr.metadata["t0_monotonic_ns"]
    allowed, lost = set(), []
    for page, t in writes:
        k = int(np.searchsorted(ends, t, side="right"))
        cands = {k}
        if k < len(ends) and ends[k] - t < AMBIGUOUS_NS:
            cands.add(k + 1)
        if k > 0 and t - ends[k - 1] < AMBIGUOUS_NS:
            cands.add(k - 1)
        cands = {c for c in cands if c < len(ends)}
        allowed |= {(c, page) for c in cands}
        if any((c, page) in reported for c in cands):
            continue
        # only a write after the last scan began may be missing
        assert k == len(ends), (page, t, k)
        lost.append((page, t))
    assert reported <= allowed, sorted(reported - allowed)
    return lost


def test_forking_program(exe, tmp_path):
    """fork() children run normally and untraced; the parent is traced before and after them."""
    summary, tr, out, err = run([exe, "fork", 12, int(INTERVAL_S * 1e6)], tmp_path, timeout=30)
    base, ps, writes, children = parse_log(out)
    # raw wait statuses: 0 = exited with status 0 (a child killed by SIGSEGV would give 11)
    assert children == {"child1": 0, "child2": 0, "child3": 0}, (children, err)
    assert summary.returncode == 0 and summary.signal is None and summary.complete
    reported = reported_pages(tr, base, ps, 12)
    assert check_writes(tr, writes, reported) == []
    # the child wrote pages 4..7 and 16..19 of its own copy, 4 times each: none of it is the parent's
    assert {p for _, p in reported} == {0, 1, 2, 3, 8, 9, 10, 11}
    # the child made by a raw fork (no atfork handler) ran exit handlers without stopping the
    # parent's tracer: the parent's last writes were scanned by it, and it ended cleanly
    assert max(t for p, t in writes) < int(tr.t_end_ns[-1]) + tr.metadata["t0_monotonic_ns"]
    assert tr.metadata["tracer_stats"]["n_forks"] == 2  # glibc fork() calls: child1, child2
    # `true`, exec'd by child2, loaded the library and stayed inert: no other process's log
    assert summary.other_processes == 0
    assert tr.metadata["children"].startswith("not traced")


def test_shell_pipeline(exe, tmp_path):
    """sh forks one child per stage; the pipeline's output and status are the untraced ones."""
    script = "printf 'a\\nb\\nc\\n' | sort -r | tr a-z A-Z; exit 7"
    untraced = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    summary, tr, out, err = run(["sh", "-c", script], tmp_path, timeout=30)
    assert (out, err, summary.returncode) == (untraced.stdout, untraced.stderr, untraced.returncode)
    assert out == "C\nB\nA\n" and summary.returncode == 7
    # dash leaves through _exit(): the library's _exit still runs the last scan
    assert summary.complete and tr.n_intervals >= 1
    assert tr.metadata["tracer_stats"]["n_forks"] >= 2


def test_python_multiprocessing(exe, tmp_path):
    """A fork pool, a spawned process and a subprocess (vfork/exec) inside a traced CPython."""
    script = (
        "import multiprocessing as mp, subprocess, sys\n"
        "def sq(x):\n"
        "    return x * x\n"
        "if __name__ == '__main__':\n"
        "    f = mp.get_context('fork').Process(target=sq, args=(2,))\n"
        "    f.start(); f.join()\n"
        "    with mp.get_context('fork').Pool(2) as pool:\n"
        "        print(f.exitcode, sum(pool.map(sq, range(200))))\n"
        "    p = mp.get_context('spawn').Process(target=sq, args=(3,))\n"
        "    p.start(); p.join()\n"
        "    print(p.exitcode, subprocess.run(['true']).returncode)\n"
    )
    # a file, not -c: a spawned child re-imports __main__ to find sq
    (tmp_path / "mp_target.py").write_text(script)
    summary, tr, out, err = run([sys.executable, tmp_path / "mp_target.py"], tmp_path, timeout=60)
    # a Pool whose workers die is refilled from a helper thread and may still answer: the first
    # child is forked from the main thread, as a crash in fork() would show
    assert out.split() == ["0", str(sum(x * x for x in range(200))), "0", "0"], err
    assert summary.returncode == 0 and summary.complete and summary.other_processes == 0
    assert tr.metadata["tracer_stats"]["n_forks"] >= 2


def test_killed_by_sigsegv_mid_run(exe, tmp_path):
    """A program that faults keeps every interval scanned before its death."""
    n = 12
    summary, tr, out, err = run([exe, "crash", n, int(INTERVAL_S * 1e6)], tmp_path, timeout=30)
    assert summary.returncode == -11 and summary.signal == "SIGSEGV" and summary.exit_status == 139
    assert not summary.complete and tr.metadata["signal"] == "SIGSEGV"
    base, ps, writes, _ = parse_log(out)
    assert len(writes) == n
    lost = check_writes(tr, writes, reported_pages(tr, base, ps, n))
    # only the interval the program died in is lost: the writes, 2 intervals apart, that follow
    # the last scan can only be the last one or two (more on a badly overloaded machine)
    assert len(lost) <= 3, lost
    assert tr.n_intervals >= n


def test_timeout_kill_keeps_intervals(exe, tmp_path):
    summary, tr, out, _ = run([exe, "spin", 8, 2000], tmp_path, timeout=0.5)
    assert summary.timed_out and summary.signal == "SIGKILL" and summary.returncode == -9
    base, ps, writes, _ = parse_log(out)
    reported = reported_pages(tr, base, ps, 8)
    check_writes(tr, writes, reported)
    assert {p for _, p in reported} == set(range(8))


def test_exit_through_underscore_exit(exe, tmp_path):
    """_exit() skips destructors; the library's _exit still scans the last partial interval."""
    n = 6
    summary, tr, out, _ = run([exe, "exit", n, int(INTERVAL_S * 1e6)], tmp_path, timeout=30)
    assert summary.returncode == 4 and summary.complete
    base, ps, writes, _ = parse_log(out)
    assert check_writes(tr, writes, reported_pages(tr, base, ps, n)) == []
    # the last write came right before _exit, after every periodic scan: in the final interval
    assert (tr.n_intervals - 1, n - 1) in reported_pages(tr, base, ps, n)


def test_program_signals_never_reach_the_tracer_thread(exe, tmp_path):
    """A program that blocks a signal to take it with sigwait() gets it: the kernel must not hand
    it to the tracer's thread (whose default action would kill the program)."""
    summary, tr, out, err = run([exe, "sigwait", 4, int(INTERVAL_S * 1e6)], tmp_path, timeout=30)
    assert summary.signal is None and summary.returncode == 0, (summary.signal, err)
    assert out.splitlines()[-1] == f"sig {int(signal.SIGUSR1)} 0" and summary.complete


# Run the CLI outside the source tree (see tests/test_live.py).
OUTSIDE = tempfile.gettempdir()


def cli(args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "pagesync_model", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=OUTSIDE, env=env)


def test_cli_reports_signal_death(exe, build, tmp_path):
    env = dict(os.environ, **build[1])
    out = tmp_path / "t.npz"
    p = cli(["trace", "record", "-o", str(out), "--", str(exe), "crash", "6", "10000"], env)
    assert p.returncode == 139, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("pagesync-sim")]
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert "killed by SIGSEGV" in lines[0] and "139" in lines[0]
    assert read_trace(out).n_intervals >= 6
    p = cli(["trace", "record", "-o", str(out), "--", "sh", "-c", "echo hi | cat; exit 3"], env)
    assert p.returncode == 3 and p.stdout == "hi\n" and "exited with status 3" in p.stderr


def test_live_mirror_of_forking_target(exe, tmp_path):
    """The live mirror preloads the same library: a shell forking all the time while mirrored
    keeps running (a child crashing in fork would end it with status 9 during the mirror), and
    the mirror is verified."""
    import json
    script = "while :; do v=$(echo ok | cat) || exit 9; [ \"$v\" = ok ] || exit 8; done"
    res = tmp_path / "r.json"
    p = cli(["live", "mirror", "--json", str(res), "--quiet", "--then", "kill", "--delay", "200ms",
             "--to", str(tmp_path / "s"), "--", "sh", "-c", script], timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(res.read_text())
    assert d["verified"] and d["lost_writes"] == 0
    assert d["live"]["target_returncode"] == -9  # still looping when the mirror killed it
