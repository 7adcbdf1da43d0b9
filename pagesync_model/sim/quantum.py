"""The time step of a page-level run: ``sim.quantum`` as given, or chosen by ``auto``.

The CPUs apply their writes a quantum at a time, and the link carries at most a quantum's worth of
pages between two looks at the CPUs, so a write reaches the dirty log at most one quantum late and
a decision (a sync, a peek, a window's quota, the downtime estimate) sees the machine as it was up
to one quantum before. The error this makes in a decision is bounded by the share of the period the
decision covers that one quantum is, and by the share of the pages it counts that one quantum moves.
``auto`` picks the coarsest step that keeps both shares small:

- no coarser than 1/``PER_PERIOD`` of every decision period of the policy and the workload (the
  policy's ``time_scales``: QEMU's downtime limit, its 100 ms bandwidth window and auto-converge's
  1 s period; a Xen batch's time on the link; the time Stratus takes to copy its threshold's pages),
  a workload phase and ``sim.time_limit``;
- no coarser than what lets the link or the CPUs (writes and DMA) move more than ``PAGE_SHARE`` of
  the working set's pages in one quantum;
- no finer than ``FLOOR`` (1 ms, the fixed default: ``auto`` never costs more than it), no coarser
  than ``bounds.MAX_QUANTUM``;
- rounded down to 1, 2 or 5 times a power of ten seconds, so the step reads as a user would write it.

A trace workload keeps ``FLOOR``: its intervals are not read before the run.
"""
import math

from ..bounds import MAX_QUANTUM
from ..workloads import working_set_pages

AUTO = "auto"
FLOOR = 1e-3        # s: auto never picks a finer step than the default
PER_PERIOD = 10     # quanta in the shortest decision period at least
PAGE_SHARE = 0.01   # most pages of the working set moved by the link or the CPUs in one quantum


def nice_floor(seconds):
    """The largest 1, 2 or 5 x 10^k not above ``seconds`` (> 0)."""
    exp = math.floor(math.log10(seconds))
    for mant in (5, 2, 1):
        v = mant * 10.0 ** exp
        if v <= seconds * (1 + 1e-12):
            return v
    return 10.0 ** exp


def _phases(cfg):
    """Durations of every workload phase (top-level and groups')."""
    w = cfg.workload
    out = [p.duration for p in (w.phases or ())]
    for g in (w.groups or ()):
        out += [p.duration for p in (g.phases or ())]
    return out


def bounds(cfg, policy):
    """[(what, seconds)]: the ceilings ``auto`` takes the least of, before rounding and clamping."""
    out = [(f"{name} / {PER_PERIOD}", s / PER_PERIOD) for name, s in policy.time_scales(cfg) if s > 0]
    out += [(f"workload phase / {PER_PERIOD}", d / PER_PERIOD) for d in _phases(cfg)]
    out.append((f"sim.time_limit / {PER_PERIOD}", cfg.sim.time_limit / PER_PERIOD))
    ps = cfg.memory.page_size
    ws_pages = max(1, working_set_pages(cfg.workload, ps))
    cap = PAGE_SHARE * ws_pages
    link_pages = cfg.link.bandwidth * cfg.link.efficiency / ps
    out.append((f"link pages <= {PAGE_SHARE:g} x working set", cap / link_pages))
    cpu_pages = _write_rate(cfg) + cfg.dma.rate
    if cpu_pages > 0:
        out.append((f"written pages <= {PAGE_SHARE:g} x working set", cap / cpu_pages))
    return out


def _write_rate(cfg):
    """Page writes per second of all CPUs."""
    w = cfg.workload
    if w.groups:
        return sum(g.cpus * max([g.rate] + [p.rate for p in (g.phases or ())]) for g in w.groups)
    return cfg.cpus.count * max([w.rate] + [p.rate for p in (w.phases or ())])


def auto_quantum(cfg, policy):
    """(seconds, why): the step ``auto`` picks for ``cfg`` under ``policy`` (a PagePolicy) and the
    bound that set it ('floor' when none is coarser than 1 ms)."""
    if cfg.workload.kind == "trace" or any(g.kind == "trace" for g in (cfg.workload.groups or ())):
        return FLOOR, "trace workload"
    why, least = min(bounds(cfg, policy), key=lambda b: b[1])
    q = min(MAX_QUANTUM, nice_floor(least)) if least > FLOOR else FLOOR
    return q, why if q > FLOOR else "floor"


def resolve(cfg, policy):
    """The step in seconds of ``cfg`` under ``policy``: ``sim.quantum``, or ``auto_quantum``'s."""
    q = cfg.sim.quantum
    return auto_quantum(cfg, policy)[0] if q == AUTO else q
