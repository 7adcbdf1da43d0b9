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

Each kind is a `WorkloadKind` next to its code (its config fields and its builder) and one name in
`KINDS`; the config schema's pattern fields and ``workload.kind``'s choices are built from `KINDS`.
"""
from .compose import Groups, Phases, merge_cpu_major
from .dma import DmaWriter
from .patterns import (HOTCOLD, SEQUENTIAL, TWO32, UNIFORM, ZIPF, RandomWrites, RateWorkload, SequentialSweep,
                       Workload, WorkloadKind, ZipfWrites, stream_keys, zipf_table)
from .replay import TRACE, TraceReplay, load_trace

__all__ = ["Workload", "RateWorkload", "RandomWrites", "ZipfWrites", "SequentialSweep", "TraceReplay", "Phases",
           "Groups", "DmaWriter", "WorkloadKind", "KINDS", "kind_fields", "stream_keys", "zipf_table", "load_trace",
           "merge_cpu_major", "build_workload", "build_dma", "working_set_pages", "TWO32"]


def _registry(*kinds):
    """name -> WorkloadKind, refusing a duplicate name or a field two kinds both declare."""
    out, seen = {}, {}
    for k in kinds:
        if k.name in out:
            raise ValueError(f"workload kind '{k.name}' is registered twice")
        for name in k.fields:
            if name in seen:
                raise ValueError(f"workload kind '{k.name}': field '{name}' is already declared by '{seen[name]}'")
            seen[name] = k.name
        out[k.name] = k
    return out


# The registry: a new kind is a WorkloadKind in its module and one name here. The order is the order
# of ``workload.kind``'s choices and of the kinds' fields in the schema.
KINDS = _registry(UNIFORM, HOTCOLD, SEQUENTIAL, ZIPF, TRACE)


def kind_fields():
    """Every kind's own config fields, in registry order."""
    return {name: f for k in KINDS.values() for name, f in k.fields.items()}


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
    try:
        kind = KINDS[sec.kind]
    except KeyError:
        raise ValueError(f"workload.kind: unknown workload '{sec.kind}'") from None
    return kind.build(sec, memory, ncpu, kernels, seed, clock, region, span, first, salt)


def build_dma(cfg, memory, partner, kernels, seed, clock):
    """The DmaWriter of config section ``dma``, or None when its rate is 0."""
    d = cfg.dma
    if d.rate <= 0:
        return None
    span = d.working_set // memory.page_size or working_set_pages(cfg.workload, memory.page_size)
    return DmaWriter(memory, partner, kernels, seed, d.rate, span, d.mirrored, clock)
