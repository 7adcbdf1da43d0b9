"""The closed-form geometric pre-copy model (Clark et al., NSDI 2005; Liu et al., HPDC 2011): ``analytic``.

Computed directly, no simulation, so there is no lost-write oracle. With M = memory.size bytes, a
dirty rate D = cpus.count x workload.rate x memory.page_size bytes/s (the model assumes every write
dirties a page not yet dirty) and R = link.bandwidth x link.efficiency (the payload rate, as the engine
sends), lambda = D / R: round 0 sends M, and round i
sends what was dirtied while round i-1 ran, M x lambda^i, taking M x lambda^i / R. After n live rounds
(0 .. n-1) the stop-and-copy sends M x lambda^n and the downtime is M x lambda^n / R plus the link
latency. n is the first count whose stop-and-copy fits the downtime limit (M x lambda^n <= R x
downtime_limit), else max_rounds; ``analytic.rounds`` forces n. No more than M can be dirty, so a
round never sends more than M; with lambda >= 1 the rounds never shrink and the stop is forced.
"""
from ..results import PassRecord
from ..bounds import MAX_DOWNTIME, MAX_ROUNDS
from ..schema import DURATION, INT, Field, Section
from .base import FluidPolicy, payload_rate, register, single_rate_check

SECTION = Section("Closed-form geometric pre-copy model (Clark et al. 2005, Liu et al. 2011).", dict(
    downtime_limit=Field(DURATION, "300ms", "Stop-and-copy once the next round would fit in this downtime.",
                         gt=0, le=MAX_DOWNTIME),
    max_rounds=Field(INT, 30, "Most live rounds (the full copy included) before the forced stop.", ge=1,
                     le=MAX_ROUNDS),
    rounds=Field(INT, 0, "0 = use the stop rule; n > 0 = exactly n live rounds (the full copy included).",
                 ge=0, le=MAX_ROUNDS),
))


@register
class Analytic(FluidPolicy):
    """The geometric model of the pre-copy literature, computed in closed form."""
    name = "analytic"
    variants = ("correct",)  # no pages are simulated: the broken variants have nothing to break
    sections = {"analytic": SECTION}
    checks = (single_rate_check("analytic"),)

    def compute(self, cfg, seed):
        return compute(cfg, seed)


def _pages(nbytes, page_size):
    return -(-int(round(nbytes)) // page_size)


def geometric_rounds(memory, dirty_rate, bandwidth, downtime_limit, max_rounds, rounds=0):
    """The stop rule alone: (n live rounds, bytes per round for rounds 0 .. n, stop_reason).

    ``memory`` bytes, ``dirty_rate`` and ``bandwidth`` bytes/s, ``downtime_limit`` seconds,
    ``max_rounds`` >= 1, ``rounds`` 0 or the forced count. The last entry of the bytes is the
    stop-and-copy. stop_reason is 'threshold', 'max-rounds' or 'rounds'. Raises ValueError for a
    non-positive memory, bandwidth, limit or round count.
    """
    if memory <= 0 or bandwidth <= 0 or downtime_limit <= 0 or max_rounds < 1 or rounds < 0:
        raise ValueError("memory, bandwidth, downtime_limit and max_rounds must be > 0, rounds >= 0")
    lam = dirty_rate / bandwidth
    budget = bandwidth * downtime_limit
    sizes = [float(memory)]
    while True:
        n = len(sizes)
        nxt = min(memory * lam ** n, float(memory))
        sizes.append(nxt)
        if rounds:
            if n == rounds:
                return n, sizes, "rounds"
        elif lam < 1 and nxt <= budget:
            return n, sizes, "threshold"
        elif n >= max_rounds:
            return n, sizes, "max-rounds"


def compute(cfg, seed):
    """The geometric model for ``cfg`` (memory.size, page_size, cpus.count, workload.rate,
    link.bandwidth x link.efficiency, link.latency, the ``analytic`` section); ``seed`` is unused. Returns
    (summary, per_pass): 'full' is round 0, 'pass' the other live rounds, 'blackout' the stop-and-copy."""
    a = cfg.analytic
    ps = cfg.memory.page_size
    m = cfg.memory.size
    r = payload_rate(cfg.link)
    dirty_rate = cfg.cpus.count * cfg.workload.rate * ps
    lam = dirty_rate / r
    n, sizes, stop_reason = geometric_rounds(m, dirty_rate, r, a.downtime_limit, a.max_rounds, a.rounds)
    budget = r * a.downtime_limit
    converged = lam < 1 and sizes[-1] <= budget

    records, t = [], 0.0
    for i, size in enumerate(sizes):
        kind = "full" if i == 0 else "blackout" if i == n else "pass"
        d = size / r + (cfg.link.latency if kind == "blackout" else 0.0)
        pages = _pages(size, ps)
        records.append(PassRecord(pass_=i, kind=kind, start_s=t, duration_s=d, dirty_pages=pages,
                                  pages_copied=pages, bytes=int(round(size))))
        t += d
    downtime = records[-1].duration_s
    memory_pages = m // ps
    summary = {
        "converged": converged,
        "stop_reason": stop_reason,
        "downtime_s": downtime,
        "expected_downtime_s": None if converged else downtime,
        "total_time_s": t,
        "remaining_bytes": 0 if converged else records[-1].bytes,
        "memory_pages": memory_pages,
        "page_size": ps,
        "model": "closed-form",
        "rounds": n,
        "dirty_sync_count": n,
        "lambda": lam,
        "dirty_rate_Bps": dirty_rate,
        "threshold_bytes": budget,
        "bytes_per_round": sizes,
        "pages_per_round": [size / ps for size in sizes],
    }
    return summary, records
