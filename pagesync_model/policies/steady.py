"""Knowing early: when a pre-copy loop that cannot converge may stop before ``sim.time_limit``.

A policy feeds `SteadyState` one `Sample` per decision point of its loop (QEMU: each bitmap sync that
decided not to complete; Xen: each live round) and asks ``steady()``. The run is in steady state when
the last ``window`` samples span at least ``min_span_s`` of simulated time and, over them, the dirty
set found at the decision (``dirty_bytes``), the transfer rate and the spacing of the decisions each
have no trend (the means of the window's two halves differ by at most ``trend``, relative) and stay
within ``tol`` (relative spread, max - min over the mean: the noise of a random workload), and every
one of them missed convergence by more than ``tol`` (``margin`` > 1 + ``tol``: how far the decision's
quantity was from its convergence test). The policy alone knows whether an event still due can change the verdict (an
auto-converge step, an operator's timeout or downtime step, a phase change of the workload, the end of a
trace); it checks that before it stops: `workload_settled` answers for the workload.

``project(t_limit)`` extrapolates the counters linearly from the window to the time limit: what the run
would report had it gone on (``sim.early_stop: false``). The tests hold these projections to full runs.
"""
import dataclasses

WINDOW = 8          # decisions in the steady window
TOLERANCE = 0.10    # relative spread allowed within it (and the least miss of the convergence test)
TREND = 0.03        # relative difference allowed between the means of its two halves
MIN_SPAN_S = 2.0    # simulated seconds the window must cover at least


@dataclasses.dataclass
class Sample:
    """One decision point: at ``t_s`` (simulated seconds) the dirty set was ``dirty_bytes`` and the
    link carried ``rate`` bytes/s; ``margin`` is how far the decision missed convergence (> 1: missed;
    e.g. QEMU's pending bytes over its threshold); the cumulative counters are those the projection
    extrapolates (``passes``, ``syncs``, ``bytes_sent``, ``pages_sent``)."""
    t_s: float
    dirty_bytes: float
    rate: float
    margin: float
    passes: int
    syncs: int
    bytes_sent: int
    pages_sent: int


def _spread(values):
    lo, hi = min(values), max(values)
    mean = sum(values) / len(values)
    if mean <= 0:
        return 0.0 if hi == lo else float("inf")
    return (hi - lo) / mean


def _trend(values):
    h = len(values) // 2
    a, b = sum(values[:h]) / h, sum(values[-h:]) / h
    if a == b:
        return 0.0
    return abs(b - a) / max(abs(a), abs(b))


class SteadyState:
    """The last ``window`` decisions of one run, and whether they are in steady state."""

    def __init__(self, window=WINDOW, tol=TOLERANCE, min_span_s=MIN_SPAN_S, trend=TREND):
        self.window = int(window)
        self.tol = float(tol)
        self.trend = float(trend)
        self.min_span_s = float(min_span_s)
        self.samples = []

    def add(self, sample):
        self.samples.append(sample)
        if len(self.samples) > self.window + 1:
            del self.samples[0]

    def steady(self):
        """True when the last ``window`` samples (and the gaps between the last ``window`` + 1) are
        steady and all missed convergence by more than ``tol``."""
        s = self.samples
        if len(s) < self.window + 1:
            return False
        w = s[1:]
        if w[-1].t_s - s[0].t_s < self.min_span_s:
            return False
        gaps = [b.t_s - a.t_s for a, b in zip(s, w)]
        series = ([x.dirty_bytes for x in w], [x.rate for x in w], gaps)
        return (all(_spread(v) <= self.tol and _trend(v) <= self.trend for v in series)
                and min(x.margin for x in w) > 1 + self.tol)

    def project(self, t_limit_s):
        """The cumulative counters extrapolated from the window's slope to ``t_limit_s``: a dict of
        passes, dirty_sync_count, bytes_sent, pages_sent (rounded) and the mean dirty set and rate."""
        a, b = self.samples[0], self.samples[-1]
        span = b.t_s - a.t_s
        ahead = max(0.0, t_limit_s - b.t_s)

        def extra(x, y):
            return (y - x) / span * ahead
        w = self.samples[1:]
        return {
            "passes": int(round(b.passes + extra(a.passes, b.passes))),
            "dirty_sync_count": int(round(b.syncs + extra(a.syncs, b.syncs))),
            "bytes_sent": int(round(b.bytes_sent + extra(a.bytes_sent, b.bytes_sent))),
            "pages_sent": int(round(b.pages_sent + extra(a.pages_sent, b.pages_sent))),
            "dirty_bytes": sum(x.dirty_bytes for x in w) / len(w),
            "rate": sum(x.rate for x in w) / len(w),
        }


def workload_settled(workload):
    """True when nothing in the workload's own schedule can still change its write pattern: no phase
    change still due (phases that repeat always have one; without repeat, every CPU must have reached
    the last phase), no trace (a replay has its own time line and an end), in every group."""
    name = type(workload).__name__
    if name == "TraceReplay":
        return False
    if name == "Phases":
        if workload.repeat or len(workload.children) and min(workload.progress) < workload.starts[-1]:
            return False
        return workload_settled(workload.children[-1])
    return all(workload_settled(c) for c in getattr(workload, "children", ()))
