"""A one-line progress bar on stderr: done/total, failures, elapsed time and an ETA.

On a terminal the line is redrawn in place (at most 5 times a second); otherwise (a log file, CI) a
line is printed at most every 10 s and at the end, so logs stay short.
"""
import sys
import time


def _clock(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of ``total`` runs of which ``skipped`` were already done (--resume). ``stream`` is
    stderr by default; ``enabled=False`` prints nothing."""

    def __init__(self, total, skipped=0, stream=None, enabled=True, label="sweep"):
        self.total = total
        self.done = skipped
        self.skipped = skipped
        self.failed = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.label = label
        self.t0 = time.monotonic()
        self.last = 0.0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self):
        width = 30
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = time.monotonic() - self.t0
        ran = self.done - self.skipped
        left = self.total - self.done
        eta = _clock(elapsed / ran * left) if ran and left else ("0:00" if not left else "?")
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.label} [{bar}] {self.done}/{self.total} runs{failed}  "
                f"elapsed {_clock(elapsed)}  ETA {eta}")

    def update(self, failed=False):
        """Count one finished run (``failed`` if it recorded an error) and redraw when due."""
        self.done += 1
        self.failed += bool(failed)
        now = time.monotonic()
        if self.enabled and (now - self.last >= (0.2 if self.tty else 10.0) or self.done == self.total):
            self.last = now
            self._draw()

    def _draw(self):
        if self.tty:
            self.stream.write("\r" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled:
            if self.tty:
                self._draw()
                self.stream.write("\n")
            elif self.done != self.total or self.last == 0.0:
                self._draw()
            self.stream.flush()
