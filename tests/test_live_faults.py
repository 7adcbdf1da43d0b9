"""The live mirror under faults: it never leaves its target stopped.

A receiver that stops reading in the blackout, one that reads but never acknowledges, SIGINT and
SIGTERM of the mirror while it waits for them, an exception in the blackout, SIGKILL of the mirror at
random moments of the blackout (the watchdog), and a target stopped by its user before the blackout
(kept stopped). The truth is the target's state in /proc, read by the test.

Needs what tests/test_live.py needs (Linux 6.7+, gcc); skipped with the reason otherwise. The
SIGKILL campaign runs a few cases here and ``PAGESYNC_FAULT_CASES`` (default 200) with ``-m slow``.
"""
import json
import os
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pagesync_model.trace.record import probe

ROOT = Path(__file__).resolve().parent.parent
WRITER_C = ROOT / "experiments" / "live_mirror" / "writer.c"
OUTSIDE = tempfile.gettempdir()  # as in test_live.py: python -m must import the tree on PYTHONPATH

_reason = probe()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"no live mirror here: {_reason}")

# the receivers' shared secret (live receive refuses to start without one): the mirror and the real
# receiver read it from the environment, the fake receiver checks it in the HELLO
TOKEN = "fault-test-secret"


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("PAGESYNC_LIVE_TOKEN", TOKEN)  # the subprocesses inherit it


# stops itself (as a user's kill -STOP would) once the preload library has had time to start
STOPPER_C = r"""
#include <signal.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
int main(void)
{
    char *m = malloc(4 << 20);
    memset(m, 7, 4 << 20);
    usleep(300000);
    raise(SIGSTOP);
    for (;;)
        pause();
}
"""


@pytest.fixture(scope="module")
def bindir():
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: cannot build the C targets")
    d = tempfile.mkdtemp(prefix="pagesync-live-faults-")
    os.chmod(d, 0o755)
    subprocess.run(["gcc", "-O2", "-o", os.path.join(d, "writer"), str(WRITER_C)], check=True)
    Path(d, "stopper.c").write_text(STOPPER_C)
    subprocess.run(["gcc", "-O2", "-o", os.path.join(d, "stopper"), os.path.join(d, "stopper.c")], check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def state_of(pid):
    """The process's state letter, None once it is gone (or a zombie nobody reaped yet: Z)."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return s[s.rfind(")") + 2]


def stopped(pid):
    """True if any thread of pid is in a job-control stop."""
    for p in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            s = p.read_text()
        except OSError:
            continue
        if s[s.rfind(")") + 2] == "T":
            return True
    return False


def running_within(pid, seconds=1.0):
    t0 = time.monotonic()
    while stopped(pid):
        if time.monotonic() - t0 > seconds:
            return False
        time.sleep(0.002)
    return True


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


def children(pid):
    """Pids whose parent is ``pid`` (from /proc/*/stat: /proc/<pid>/task/*/children needs
    CONFIG_PROC_CHILDREN)."""
    out = []
    for p in Path("/proc").glob("[0-9]*/stat"):
        try:
            s = p.read_text()
        except OSError:
            continue
        if int(s[s.rfind(")") + 2:].split()[1]) == pid:
            out.append(int(p.parent.name))
    return out


def find_target(mirror, name, timeout=20.0):
    """The pid of the mirror's child running ``name`` (its target)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for c in children(mirror.pid):
            try:
                if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[0].endswith(name.encode()):
                    return c
            except OSError:
                pass
        if mirror.poll() is not None:
            break
        time.sleep(0.005)
    raise AssertionError(f"no target {name} under the mirror (status {mirror.poll()})")


class FakeReceiver:
    """A receiver over TCP that accepts the HELLO as ``live receive`` does (the token checked, REPLY|HELLO
    with no refusal text), acknowledges the full pass (pass 0), then misbehaves:
    ``stall``: reads nothing more; ``mute``: reads everything, acknowledges nothing more;
    ``no-verify``: acknowledges every pass, then never answers the VERIFY after the cut-over;
    ``no-end``: answers the VERIFY too (an empty image: the verdict is FAILED), never the END;
    ``hangup``: reads 64 KiB of the blackout's pages and resets the connection (a truncated stream).
    ``misbehaving`` is set when it begins to.  With ``fifo``, the reader of that named pipe
    instead (nothing to acknowledge there, and no token is sent down a pipe).  ``acks``: how many passes
    it acknowledges before it misbehaves (2 for ``--stop after-copy`` with ``--passes 0``: the full pass
    and the deciding pass, copied with the target running; then the blackout, pass 2)."""

    def __init__(self, mode, fifo=None, acks=1):
        from pagesync_model.live import protocol
        self.P = protocol
        self.acks = acks
        self.mode = mode
        self.fifo = fifo
        self.srv = self.conn = self.f = None
        self.hello_token = None
        if fifo is None:
            self.srv = socket.socket()
            # a fixed small receive buffer (no autotuning up to tcp_rmem's 32 MiB): what the receiver
            # does not read stays in the mirror's 8 MiB send buffer, and the send waits
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            self.srv.bind(("127.0.0.1", 0))
            self.srv.listen()
            self.to = f"127.0.0.1:{self.srv.getsockname()[1]}"
        else:
            self.to = fifo
        self.misbehaving = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _read(self, f, n):
        b = f.read(n)
        if len(b) < n:
            raise EOFError
        return b

    def _run(self):
        P = self.P
        try:
            if self.fifo is None:
                self.conn, _ = self.srv.accept()
                f = self.f = self.conn.makefile("rb")
            else:
                f = self.f = open(self.fifo, "rb")
            while True:
                typ, count, arg = P.HDR.unpack(self._read(f, P.HDR.size))
                if typ == P.HELLO:
                    meta = json.loads(self._read(f, count))
                    if self.conn:
                        self.hello_token = meta.get("token")
                        why = b"" if self.hello_token == TOKEN else b"wrong token"
                        self.conn.sendall(P.HDR.pack(P.REPLY | P.HELLO, len(why), 0) + why)
                        if why:
                            raise EOFError
                elif typ in (P.PAGES, P.DROP):
                    self._read(f, 16 * count + (arg if typ == P.PAGES else 0))
                elif typ == P.VERIFY and self.mode in ("no-verify", "no-end"):
                    if self.mode == "no-end":
                        self.conn.sendall(P.HDR.pack(P.REPLY | P.VERIFY, 0, 0))
                    self.misbehaving.set()
                    while f.read1(65536):  # drain, never answer
                        pass
                elif typ == P.PASS:
                    if count < self.acks or self.mode in ("no-verify", "no-end"):
                        if self.conn:
                            self.conn.sendall(P.HDR.pack(P.REPLY | P.PASS, count, 0))
                        if self.mode == "hangup" and count == self.acks - 1:
                            self.misbehaving.set()  # the blackout's stream cut mid-record: 64 KiB, then a reset
                            self._read(f, 64 << 10)
                            self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            f.close()  # the file holds the socket too: both go, and the reset is sent
                            self.conn.close()
                            return
                        if self.mode == "stall" and count == self.acks - 1:
                            self.misbehaving.set()
                            return  # the connection stays open, unread
                        continue
                    self.misbehaving.set()
                    while f.read1(65536):  # mute: drain, never answer
                        pass
        except (EOFError, OSError, ValueError):
            self.misbehaving.set()

    def close(self):
        for x in (self.f, self.conn, self.srv):
            try:
                if x:
                    x.close()
            except OSError:
                pass


def start_mirror(args, cmd):
    """The mirror CLI; its stderr goes to a file (a pipe would stay open in a target left running)."""
    err = tempfile.TemporaryFile()
    m = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "mirror", "--then", "kill", *args,
                          "--", *cmd], stdout=subprocess.DEVNULL, stderr=err, cwd=OUTSIDE)
    m.err = err
    return m


def finish(m, timeout):
    """Wait for the mirror; its exit status and stderr."""
    m.wait(timeout)
    m.err.seek(0)
    text = m.err.read().decode()
    m.err.close()
    return m.returncode, text


# a blackout of 32 MiB: a hot set rewritten ~50 times a second is all dirty again at the blackout (pass 1,
# with --passes 0), more than the socket buffers hold, so a receiver that stops reading stops the send
HOT = ["32", "400000", "60", "8192"]
IDLE = ["8", "0", "60"]


STOPS = ["at-once", "after-copy"]
ACKS = {"at-once": 1, "after-copy": 2}  # passes acknowledged before the blackout, with --passes 0


@pytest.mark.parametrize("stop", STOPS)
def test_receiver_stalls_in_the_blackout(bindir, stop):
    # with the default --max-blackout (5 s): today the mirror blocked in the C write forever
    rx = FakeReceiver("stall", acks=ACKS[stop])
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--stop", stop, "--to", rx.to],
                     [f"{bindir}/writer", *HOT])
    pid = None
    try:
        pid = find_target(m, "writer")
        t0 = time.monotonic()
        rc, err = finish(m, 30)
        took = time.monotonic() - t0
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert "exceeded --max-blackout 5s while sending the last pages to the receiver" in err, err
        assert f"target pid {pid} continued" in err, err
        assert took < 15, took
        assert running_within(pid, 0.1) and state_of(pid) is None  # --then kill: continued, then killed
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


@pytest.mark.parametrize("stop", STOPS)
def test_receiver_reads_but_never_acknowledges(bindir, stop):
    rx = FakeReceiver("mute", acks=ACKS[stop])
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--max-blackout", "700ms",
                      "--stop", stop, "--then", "wait", "--to", rx.to], [f"{bindir}/writer", *IDLE])
    pid = None
    try:
        pid = find_target(m, "writer")
        rc, err = finish(m, 30)
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert ("exceeded --max-blackout 0.7s while waiting for the receiver's acknowledgement of "
                f"pass {ACKS[stop]}; "
                f"no cut-over; target pid {pid} continued") in err, err
        assert state_of(pid) in ("R", "S"), state_of(pid)  # --then wait: running, not killed
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


@pytest.mark.parametrize("stop", STOPS)
def test_receiver_hangs_up_in_the_middle_of_the_blackout(bindir, stop):
    # the blackout's stream truncated by the receiver: one line naming the pass, the target continued
    rx = FakeReceiver("hangup", acks=ACKS[stop])
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--stop", stop, "--then", "wait",
                      "--to", rx.to], [f"{bindir}/writer", *HOT])
    pid = None
    try:
        pid = find_target(m, "writer")
        rc, err = finish(m, 30)
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert f"went away in pass {ACKS[stop]}" in err and f"target pid {pid} continued" in err, err
        assert running_within(pid, 0.1) and state_of(pid) in ("R", "S"), state_of(pid)
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


def test_fifo_reader_stalls_in_the_blackout(bindir, tmp_path):
    # --to a named pipe: the send waits in poll there too (the pipe is O_NONBLOCK), not in write
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rx = FakeReceiver("stall", fifo=str(fifo))
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--max-blackout", "700ms",
                      "--to", str(fifo)], [f"{bindir}/writer", *HOT])
    pid = None
    try:
        pid = find_target(m, "writer")
        rc, err = finish(m, 30)
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert ("exceeded --max-blackout 0.7s while sending the last pages to the receiver; no cut-over; "
                f"target pid {pid} continued") in err, err
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


def test_a_named_pipe_gets_the_stream_but_no_verdict(bindir, tmp_path):
    # --to a named pipe: written to directly (not replaced by a file renamed over it); nothing can be
    # read back from it, so the mirror is not verified: no verdict, no END, exit 2 after the cut-over
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rx = FakeReceiver("mute", fifo=str(fifo))
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--then", "wait", "--to", str(fifo)],
                     [f"{bindir}/writer", *IDLE])
    pid = None
    try:
        pid = find_target(m, "writer")
        rc, err = finish(m, 30)
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert "not a regular file" in err and "cannot be verified" in err, err
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert state_of(pid) in ("R", "S"), state_of(pid)  # cut over, running
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


@pytest.mark.parametrize("sig,stop", [(signal.SIGTERM, "at-once"), (signal.SIGINT, "at-once"),
                                      (signal.SIGTERM, "after-copy")])
def test_signal_while_the_send_waits_for_a_stalled_receiver(bindir, sig, stop):
    # today the C write retried on EINTR: the handler never ran, the signal was ignored; now the
    # mirror ends at once, long before the deadline (the default 5 s)
    rx = FakeReceiver("stall", acks=ACKS[stop])
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--stop", stop, "--to", rx.to],
                     [f"{bindir}/writer", *HOT])
    pid = None
    try:
        pid = find_target(m, "writer")
        assert rx.misbehaving.wait(20)
        t0 = time.monotonic()
        while not stopped(pid):
            assert time.monotonic() - t0 < 10, "the blackout never began"
            time.sleep(0.001)
        time.sleep(0.3)  # well inside the send, which waits for the receiver
        assert stopped(pid)
        m.send_signal(sig)
        rc, err = finish(m, 2)
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert f"interrupted by {signal.Signals(sig).name}; target pid {pid} continued" in err, err
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


@pytest.mark.parametrize("mode,sig", [("no-verify", signal.SIGINT), ("no-end", signal.SIGTERM)])
def test_a_receiver_that_hangs_after_the_cut_over_cannot_hang_the_mirror(bindir, mode, sig):
    # the verification and the verdict come after the cut-over (the target runs again): no deadline
    # there (a receiver may take its time to save a large mirror), but a signal still ends the mirror
    rx = FakeReceiver(mode)
    m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "200ms", "--max-blackout", "2s",
                      "--then", "wait", "--to", rx.to], [f"{bindir}/writer", *IDLE])
    pid = None
    try:
        pid = find_target(m, "writer")
        assert rx.misbehaving.wait(20)
        time.sleep(2.5)  # past --max-blackout: the exchange is not under it
        assert m.poll() is None and running_within(pid, 0.1)
        m.send_signal(sig)
        rc, err = finish(m, 5)
        assert rc == 2, err
        assert err.count("\n") == 1, err
        assert f"interrupted by {signal.Signals(sig).name}; target pid {pid} continued" in err, err
        assert state_of(pid) in ("R", "S"), state_of(pid)  # --then wait: running, not killed
        assert rx.hello_token == TOKEN
    finally:
        kill_quietly(m.pid)
        kill_quietly(pid)
        rx.close()


def test_exception_in_the_blackout_continues_the_target(bindir, tmp_path, monkeypatch):
    # any Python exception while the target is stopped: it propagates, and the target runs
    from pagesync_model.live import _lib, mirror
    seen = {}

    def broken(self, pid, ranges, npages, deadline_ns=0):
        seen["stopped"] = stopped(pid)
        seen["pid"] = pid
        raise RuntimeError("injected")

    monkeypatch.setattr(_lib.Sender, "hash_remote", broken)
    before = set(children(os.getpid()))
    with pytest.raises(RuntimeError, match="injected"):
        mirror.run_mirror([f"{bindir}/writer", *IDLE], str(tmp_path / "s"), passes=0, threshold=0, delay=0.1,
                          then="kill")
    assert seen["stopped"]
    assert state_of(seen["pid"]) is None  # continued, then killed (--then kill)
    # the watchdog was reaped: no new child of ours is left, not even a zombie
    assert set(children(os.getpid())) <= before


def test_watchdog_continues_only_what_it_is_armed_for():
    """The watchdog alone: a controller (a forked child) that dies with the target stopped by it
    (armed) has it continued; one that dies after continuing it (disarmed) leaves alone a stop the
    user made later."""
    from pagesync_model.live.watchdog import Watchdog
    for armed in (True, False):
        target = subprocess.Popen(["sleep", "30"])
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        ctl = os.fork()
        if ctl == 0:
            try:
                os.close(r)
                os.close(go_w)
                wd = Watchdog(target.pid)
                wd.arm()
                os.kill(target.pid, signal.SIGSTOP)
                if not armed:
                    os.kill(target.pid, signal.SIGCONT)
                    wd.disarm()
                os.write(w, str(wd.child).encode())
                os.read(go_r, 1)  # the test may stop the target itself now
            finally:
                os.kill(os.getpid(), signal.SIGKILL)
        os.close(w)
        os.close(go_r)
        try:
            wd_pid = int(os.read(r, 32))
            if not armed:
                os.kill(target.pid, signal.SIGSTOP)  # the user's stop
                t0 = time.monotonic()
                while not stopped(target.pid):
                    assert time.monotonic() - t0 < 1
                    time.sleep(0.001)
            os.write(go_w, b"x")
            os.waitpid(ctl, 0)
            t0 = time.monotonic()
            while state_of(wd_pid) not in (None, "Z"):  # the watchdog ends at the controller's end
                assert time.monotonic() - t0 < 2, "the watchdog outlived its controller"
                time.sleep(0.005)
            if armed:
                assert running_within(target.pid, 1.0)
            else:
                time.sleep(0.1)
                assert stopped(target.pid)
        finally:
            os.close(r)
            os.close(go_w)
            target.kill()
            target.wait()


def test_a_target_stopped_by_its_user_stays_stopped(bindir):
    # stopped before the blackout: mirrored as it is; neither the mirror nor its watchdog continue it
    for end in ("deadline", "sigkill"):
        rx = FakeReceiver("mute")
        m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "800ms", "--then", "wait", "--to", rx.to]
                         + (["--max-blackout", "700ms"] if end == "deadline" else []), [f"{bindir}/stopper"])
        pid = None
        try:
            pid = find_target(m, "stopper")
            if end == "deadline":
                rc, err = finish(m, 30)
                assert rc == 2, err
                assert f"target pid {pid} left stopped, as it was found" in err, err
            else:
                assert rx.misbehaving.wait(20)
                time.sleep(0.2)
                m.kill()
                m.wait()
                time.sleep(0.3)  # time for a watchdog to do wrong
            assert stopped(pid)
        finally:
            kill_quietly(m.pid)
            kill_quietly(pid)
            rx.close()


def test_bad_max_blackout():
    for value, text in (("0s", "--max-blackout: must be a time > 0"), ("soon", "--max-blackout: ")):
        p = subprocess.run([sys.executable, "-m", "pagesync_model", "live", "mirror", "--max-blackout", value,
                            "--", "true"], capture_output=True, text=True, timeout=60, cwd=OUTSIDE)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and text in p.stderr, (value, p.stderr)
        assert "unrecognized" not in p.stderr


# ---- SIGKILL of the mirror at random moments of the blackout ---------------------------------------

def kill_campaign(bindir, n, seed, progress=None, stop="at-once"):
    """n cases: a receiver (the real one, one that stalls, one that never acknowledges), a target
    (idle, or a hot set), and a SIGKILL of the mirror a random time after its target is seen stopped
    (0-3 ms: the stop wait, the final scans, the send; or up to 1.5 s: waiting for the stalled
    receiver). Returns the figures: cases, kills that found the target stopped, cases whose blackout
    passed unseen (the real receiver is fast), targets left stopped, and the longest time from the kill
    to the target running again."""
    rng = random.Random(seed)
    stats = {"cases": 0, "killed_while_stopped": 0, "missed_the_blackout": 0, "left_stopped": 0,
             "max_resume_ms": 0.0}
    for case in range(n):
        mode = rng.choice(["real", "stall", "mute"])
        hot = rng.random() < 0.5
        delay_s = rng.uniform(0, 0.003) if rng.random() < 0.5 or mode == "real" else rng.uniform(0, 1.5)
        rx = recv = None
        if mode == "real":
            recv = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "receive", "--listen",
                                     "127.0.0.1:0", "--quiet"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    text=True, cwd=OUTSIDE)
            to = "127.0.0.1:" + recv.stderr.readline().strip().rsplit(":", 1)[1]
        else:
            rx = FakeReceiver(mode, acks=ACKS[stop])
            to = rx.to
        m = start_mirror(["--passes", "0", "--threshold", "0", "--delay", "100ms", "--stop", stop, "--to", to],
                         [f"{bindir}/writer", *(HOT if hot else IDLE)])
        pid = None
        try:
            pid = find_target(m, "writer")
            seen = False
            while m.poll() is None:
                if stopped(pid):
                    seen = True
                    break
            if seen:
                t_kill = time.perf_counter() + delay_s
                while time.perf_counter() < t_kill:
                    pass
                at_kill = stopped(pid)
                m.kill()
                t_killed = time.perf_counter()
                m.wait()
                stats["killed_while_stopped"] += at_kill
            else:
                stats["missed_the_blackout"] += 1
            if running_within(pid, 1.0):
                if seen and at_kill:
                    stats["max_resume_ms"] = max(stats["max_resume_ms"], (time.perf_counter() - t_killed) * 1e3)
            else:
                stats["left_stopped"] += 1
            stats["cases"] += 1
            if progress:
                progress(case, mode, hot, delay_s, stats)
        finally:
            kill_quietly(m.pid)
            kill_quietly(pid)
            m.err.close()
            if rx:
                rx.close()
            if recv:
                recv.kill()
                recv.wait()
                recv.stderr.close()
    return stats


def _report(stats, seed):
    print(f"\nSIGKILL campaign (seed {seed}): " + json.dumps(stats))


@pytest.mark.parametrize("stop", STOPS)
def test_sigkill_of_the_mirror_during_the_blackout(bindir, stop):
    seed = int(os.environ.get("PAGESYNC_FAULT_SEED", "13"))
    stats = kill_campaign(bindir, 3, seed, stop=stop)
    _report(stats, seed)
    assert stats["left_stopped"] == 0, stats
    assert stats["killed_while_stopped"] >= 1, stats


@pytest.mark.slow
@pytest.mark.parametrize("stop", STOPS)
def test_sigkill_campaign(bindir, stop):
    seed = int(os.environ.get("PAGESYNC_FAULT_SEED", "1105"))
    stats = kill_campaign(bindir, int(os.environ.get("PAGESYNC_FAULT_CASES", "200")), seed,
                          lambda case, *a: print(case, *a, flush=True), stop=stop)
    _report(stats, seed)
    assert stats["left_stopped"] == 0, stats
