"""The guard that continues a target the live mirror stopped, if the mirror dies while it is stopped.

``Watchdog(pid)`` forks a small process (no exec: it needs no interpreter it may not be allowed to
run, and it is ready when fork returns) in a session of its own, so that a Ctrl-C at the terminal or
a signal to the mirror's process group does not reach it.  It keeps only a pidfd of the target, which
names that process and no other even after the controller's death (no pid reuse), stderr, and the
read end of a pipe from the controller:

  ``S``  the controller is about to stop the target (armed)
  ``C``  the controller continued it (disarmed)
  EOF    the controller ended: normally (disarmed) or killed, SIGKILL included, since the kernel
         closes its end of the pipe either way

At EOF while armed it sends SIGCONT to the target, says so on stderr, and exits; otherwise it just
exits.  It is armed only while the controller's own SIGSTOP is in force: a target that someone else
had stopped before the blackout is never armed for, so never continued by it.  It ignores SIGINT,
SIGTERM and SIGHUP: only the end of the pipe ends it, and that comes as soon as the controller ends.
"""
import os
import signal

ARM, DISARM = b"S", b"C"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class WatchdogError(Exception):
    """The watchdog could not be started, or is gone (one line)."""


class Watchdog:
    """The controller's end: start the guard of ``pid``, arm it before a stop, disarm after."""

    def __init__(self, pid):
        self.pid = pid
        self.armed = False
        self._w = None
        try:
            # opened here, while the target is our unreaped child: it cannot be another process
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            raise WatchdogError(f"cannot start the watchdog: pidfd_open of pid {pid}: {e.strerror}") from None
        r, w = os.pipe()
        # no handler of the controller's may run in the child before it ignores the signals
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            child = os.fork()
        except OSError as e:
            child = -1
            err = e
        if child == 0:
            status = 1
            try:
                for s in _SIGNALS:
                    signal.signal(s, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
                os.setsid()
                # nothing of the controller's is kept open (its socket, the pipe's write end: the
                # EOF must come when the controller ends)
                for fd in os.listdir("/proc/self/fd"):
                    if int(fd) not in (2, r, pidfd):
                        try:
                            os.close(int(fd))
                        except OSError:
                            pass  # the listing's own descriptor, closed already
                status = _guard(pid, pidfd, r)
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        os.close(r)
        os.close(pidfd)
        if child < 0:
            os.close(w)
            raise WatchdogError(f"cannot start the watchdog: fork: {err.strerror}")
        self.child = child
        self._w = w

    def _send(self, b):
        try:
            os.write(self._w, b)
        except OSError as e:
            raise WatchdogError(f"the watchdog (pid {self.child}) is gone ({e.strerror}); "
                                "refusing to stop the target without it") from None

    def arm(self):
        self._send(ARM)
        self.armed = True

    def disarm(self):
        if self.armed:
            self._send(DISARM)
            self.armed = False

    def close(self):
        """End the guard: disarmed, it exits at once; armed (the controller could not continue the
        target), it continues the target itself first."""
        if self._w is None:
            return
        os.close(self._w)
        self._w = None
        try:
            os.waitpid(self.child, 0)
        except ChildProcessError:
            pass


def _guard(pid, pidfd, fd):
    armed = False
    while True:
        try:
            b = os.read(fd, 64)
        except InterruptedError:
            continue
        if not b:
            break
        armed = b[-1] == ARM[0]
    if armed:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        except ProcessLookupError:
            return 0
        try:
            os.write(2, f"pagesync-sim live mirror: watchdog: the controller ended with target pid {pid} "
                        "stopped; sent SIGCONT\n".encode())
        except OSError:
            pass  # nobody to tell; the target is continued all the same
    return 0
