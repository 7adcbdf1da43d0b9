"""Workloads: where and when each CPU's page writes land.

A workload turns the cycles each CPU ran in one time step into the frames written, CPU 0's first
(``Workload.step``). Targets come from counter-based streams, so CPU c's n-th write always hits the
same page whatever the quantum or the backend.

Kinds (``workload.kind``, see patterns.py and replay.py):
- ``uniform``: every write picks a page of the working set uniformly at random;
- ``hotcold``: a ``hot_fraction`` of the working set takes ``hot_share`` of the writes;
- ``zipf``: page of rank r (dense index r) takes writes in proportion to 1/(r+1)^exponent;
- ``sequential``: each CPU sweeps the working set with a ``stride``, starting at its own offset and
  wrapping around (a heap or buffer rewritten in order; a strided sweep);
- ``trace``: a recorded trace replayed in time (``trace``, ``time_scale``, ``loop``, ``offset``, ``shared``).
Composition (compose.py): ``phases`` (piecewise over each CPU's running time) and ``groups`` (CPUs
0.. in groups, each with its own workload on its own part of the working set, stacked in order).
``dma`` (dma.py): device writes that bypass the dirty bits.
"""
from .compose import Groups, Phases, merge_cpu_major
from .dma import DmaWriter
from .patterns import (TWO32, RandomWrites, RateWorkload, SequentialSweep, Workload, ZipfWrites, stream_keys,
                       zipf_table)
from .replay import TraceReplay, load_trace

__all__ = ["Workload", "RateWorkload", "RandomWrites", "ZipfWrites", "SequentialSweep", "TraceReplay", "Phases",
           "Groups", "DmaWriter", "stream_keys", "zipf_table", "load_trace", "merge_cpu_major",
           "build_workload", "build_dma", "working_set_pages", "TWO32"]


def working_set_pages(wcfg, page_size):
    """Pages the workload section ``wcfg`` writes: its working set, or the sum of its groups'."""
    if wcfg.groups:
        return sum(max(1, g.working_set // page_size) for g in wcfg.groups)
    return max(1, wcfg.working_set // page_size)


def build_workload(wcfg, memory, ncpu, kernels, seed, clock=None):
    """The workload described by config section ``wcfg`` (``workload``), its rates at ``clock`` Hz.
    Raises ValueError for an unknown kind, or a trace that does not fit its working set."""
    if clock is None:
        raise ValueError("build_workload needs the CPU clock")
    ps = memory.page_size
    if wcfg.groups:
        children, sizes, region, first = [], [], 0, 0
        for i, g in enumerate(wcfg.groups):
            span = max(1, g.working_set // ps)
            children.append(_section(g, memory, g.cpus, kernels, seed, clock, region, span, first, (i + 1,)))
            sizes.append(g.cpus)
            region += span
            first += g.cpus
        return Groups(memory, ncpu, kernels, children, sizes)
    return _section(wcfg, memory, ncpu, kernels, seed, clock, 0, memory.working_set_pages, 0, ())


def _section(sec, memory, ncpu, kernels, seed, clock, region, span, first, salt):
    if sec.phases:
        children = [_leaf(ph, memory, ncpu, kernels, seed, clock, region, span, first, salt + (j + 1,))
                    for j, ph in enumerate(sec.phases)]
        return Phases(memory, ncpu, kernels, [ph.duration * clock for ph in sec.phases], children, sec.repeat)
    return _leaf(sec, memory, ncpu, kernels, seed, clock, region, span, first, salt)


def _leaf(sec, memory, ncpu, kernels, seed, clock, region, span, first, salt):
    common = dict(rate=sec.rate, clock=clock, region=region, span=span)
    if sec.kind in ("uniform", "hotcold"):
        hot = (sec.hot_fraction, sec.hot_share) if sec.kind == "hotcold" else (0.0, 0.0)
        return RandomWrites(memory, ncpu, kernels, seed, *hot, first_cpu=first, salt=salt, **common)
    if sec.kind == "zipf":
        return ZipfWrites(memory, ncpu, kernels, seed, sec.exponent, first_cpu=first, salt=salt, **common)
    if sec.kind == "sequential":
        return SequentialSweep(memory, ncpu, kernels, sec.stride, **common)
    if sec.kind == "trace":
        return TraceReplay(memory, ncpu, kernels, load_trace(sec.trace), clock, sec.time_scale, sec.loop,
                           sec.offset, sec.shared, region=region, span=span)
    raise ValueError(f"workload.kind: unknown workload '{sec.kind}'")


def build_dma(cfg, memory, partner, kernels, seed, clock):
    """The DmaWriter of config section ``dma``, or None when its rate is 0."""
    d = cfg.dma
    if d.rate <= 0:
        return None
    span = d.working_set // memory.page_size or working_set_pages(cfg.workload, memory.page_size)
    return DmaWriter(memory, partner, kernels, seed, d.rate, span, d.mirrored, clock)
