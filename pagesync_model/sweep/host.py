"""Runs under a time limit: a child process that runs simulations for its parent, so a run that hangs
can be killed without losing the worker or the sweep, and a run that takes the interpreter down (a
crash in a kernel, the OOM killer) becomes its row's error.

Each executor thread (the in-process executor, or a thread of a Dask worker) keeps one child,
``python -m pagesync_model.sweep.host``, and hands it one call at a time: a module-level function
(sent by its name, as pickle does) and its arguments. A run that has not answered
within its timeout is killed with its child; the next run starts a new child. The child's imports
are done before it says it is ready, so they never count against a run's time.

Messages both ways are an 8-byte big-endian length and a pickle. The child answers on its original
stdout and points fd 1 at stderr, so a stray print cannot corrupt an answer. It ignores SIGINT (the
parent decides what a Ctrl-C stops), dies with its parent (PR_SET_PDEATHSIG on Linux, else a watchdog
thread), and exits when its input ends or after IDLE_S without a request.
"""
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time

IDLE_S = 600.0
START_TIMEOUT_S = 120.0
_HEADER = struct.Struct(">Q")
_IDLE_EXIT = 0


class HostError(RuntimeError):
    """The child could not be started or broke the protocol."""


def _readable(fd, seconds):
    """Whether ``fd`` has input (or its end) within ``seconds``; poll, not select, so a worker with
    many open files does not hit select's descriptor limit."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(seconds * 1000) + 1)))


def _read_exact(fd, n, deadline=None):
    """``n`` bytes from ``fd``; None at end of input (or before ``deadline``, a monotonic time:
    TimeoutError)."""
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not _readable(fd, left):
                raise TimeoutError
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(fd, deadline=None):
    head = _read_exact(fd, _HEADER.size, deadline)
    if head is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(head)[0], deadline)
    if body is None:
        return None
    return pickle.loads(body)


def _send(fd, obj):
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = _HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Timeout(Exception):
    """A run did not answer within its time; its child has been killed."""


class Died(Exception):
    """The child died under a run; the message says how."""


class RunHost:
    """One child process that runs calls one at a time (see the module docstring)."""

    def __init__(self):
        self.proc = None

    def _start(self):
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        # the child must import this very package, not whatever else is installed
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "pagesync_model.sweep.host", str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        try:
            hello = _recv(self.proc.stdout.fileno(), time.monotonic() + START_TIMEOUT_S)
        except TimeoutError:
            hello = None
        if not (isinstance(hello, tuple) and hello[:1] == ("ready",)):
            code = self.kill()
            raise HostError(f"the run process did not start ({_exit_text(code)})")

    def call(self, fn, args, timeout):
        """Run ``fn(*args)`` in the child and return what it returns (``fn`` a module-level function). Raises Timeout after ``timeout``
        seconds (None: no limit), Died if the child died, HostError if it cannot start. Any other
        interruption (Ctrl-C) kills the child and propagates."""
        for attempt in (0, 1):
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                _send(self.proc.stdin.fileno(), ("run", fn, args))
                deadline = None if timeout is None else time.monotonic() + timeout
                answer = _recv(self.proc.stdout.fileno(), deadline)
            except TimeoutError:
                self.kill()
                raise Timeout from None
            except BrokenPipeError:
                answer = None
            except BaseException:
                self.kill()
                raise
            if answer is not None:
                return answer[1]
            code = self.kill()
            if code == _IDLE_EXIT and attempt == 0:
                continue  # it left for idleness just as this run was sent: start another
            raise Died(f"the run's process died ({_exit_text(code)})")
        raise AssertionError("unreachable")

    def kill(self):
        """Kill the child (if any) and return its exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return code

    def close(self):
        """Let the child finish (end of input), killing it if it does not exit promptly."""
        proc = self.proc
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _exit_text(code):
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


_LOCAL = threading.local()


def thread_host():
    """This thread's RunHost (made on first use)."""
    host = getattr(_LOCAL, "host", None)
    if host is None:
        host = _LOCAL.host = RunHost()
    return host


def _die_with_parent(parent):
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch():  # also where prctl is missing, and in case the parent died before it took effect
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv):
    """The child: answer ``run`` requests (a function and its arguments) on stdin until end of input
    or IDLE_S without one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)
    _die_with_parent(int(argv[0]) if argv else os.getppid())
    from ..sim import engine  # noqa: F401 -- imported before 'ready', so never on a run's clock
    _send(out, ("ready", os.getpid()))
    fd = sys.stdin.fileno()
    while True:
        if not _readable(fd, IDLE_S):
            return _IDLE_EXIT
        msg = _recv(fd)
        if msg is None:
            return 0
        _send(out, ("row", msg[1](*msg[2])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
