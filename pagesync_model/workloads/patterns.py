"""Rate-driven write patterns: uniform, hot/cold, Zipf and sequential (strided) sweeps.

Each CPU writes ``rate`` pages per second of its running time; the targets come from counter-based
streams (the ``gen_random`` and ``gen_sequential`` kernels, plus pure-numpy table lookups shared by
both backends), so CPU c's n-th write always hits the same page whatever the quantum or the
backend: only *when* it happens depends on the time step.

A pattern writes dense working-set indices ``[region, region + span)``; ``Memory.dense_to_frames``
places them in physical memory (2 MiB blocks permuted). A pattern at region 0 lets the kernel place
its targets directly, the others place them with the same map in numpy.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..bounds import MAX_FRAMES
from ..kernels.dtypes import INDEX_DTYPE
from ..schema import FLOAT, FRACTION, INT, Field

TWO32 = 1 << 32


@dataclass(frozen=True)
class WorkloadKind:
    """A write pattern ``workload.kind`` may name: its own config fields (declared next to its code,
    shared by the workload, its phases and its groups) and ``build(sec, memory, ncpu, kernels, seed,
    clock, region, span, first, salt)``, which returns the Workload of config section ``sec`` for CPUs
    ``first ..`` writing dense indices ``[region, region + span)``, its streams separated by ``salt``."""
    name: str
    fields: dict
    build: Callable


def stream_keys(seed, ncpu, first=0, salt=()):
    """Per-CPU 64-bit keys of the write streams of CPUs ``first .. first + ncpu - 1``, derived from the
    run's seed; ``salt`` (a tuple of ints) separates the streams of different groups and phases."""
    return np.array([np.random.SeedSequence([seed, first + cpu, *salt]).generate_state(1, dtype=np.uint64)[0]
                     for cpu in range(ncpu)], dtype=np.uint64)


class Workload:
    """Base class of every workload.

    ``step(run, counts)`` is what the CPUs call once per time step: ``run`` IN float64[ncpu] is the
    cycles each CPU ran, ``counts`` OUT int64[ncpu] receives how many pages each wrote, and the
    return value is the frames written, CPU 0's first (a view of an internal buffer, valid until the
    next call). ``generate(counts)`` returns the frames of the next ``counts[c]`` writes of each CPU.
    """

    name = "workload"

    def __init__(self, memory, ncpu, kernels, region=0, span=None):
        self.memory = memory
        self.ncpu = ncpu
        self.kernels = kernels
        self.region = int(region)
        self.span = memory.working_set_pages if span is None else int(span)
        self._out = np.empty(1024, dtype=INDEX_DTYPE)

    def _buffer(self, total):
        if total > len(self._out):
            self._out = np.empty(max(total, 2 * len(self._out)), dtype=INDEX_DTYPE)
        return self._out[:total]

    def _kernel_map(self):
        """(base, mult, modulus, block) for a generator kernel: the memory's own placement at region 0;
        else the identity (the kernel returns working-set indices, ``_place_in_memory`` maps them)."""
        m = self.memory
        if self.region == 0 and not len(getattr(m, "hole_at", ())):
            return m.user_base, m.mult, m.blocks, m.block
        return 0, 1, TWO32, 1

    def _place_in_memory(self, out):
        if self.region != 0 or len(getattr(self.memory, "hole_at", ())):
            out[:] = self.memory.dense_to_frames(out + self.region)
        return out

    def generate(self, counts, total=None):
        """The frames of the next ``counts[c]`` writes of each CPU (``total`` = counts.sum() when known)."""
        raise NotImplementedError

    def step(self, run, counts):
        raise NotImplementedError


class RateWorkload(Workload):
    """A pattern writing ``rate`` pages per second of running time per CPU at ``clock`` Hz."""

    def __init__(self, memory, ncpu, kernels, rate=0.0, clock=1.0, region=0, span=None):
        super().__init__(memory, ncpu, kernels, region, span)
        self.rate_per_cycle = float(rate) / float(clock)
        self.carry = np.zeros(ncpu)

    def step(self, run, counts):
        # the same arithmetic the CPUs used before workloads owned their rate: results are unchanged
        total = self.kernels.rate_step(run, self.rate_per_cycle, self.carry, counts)
        if not total:
            return self._out[:0]
        return self.generate(counts, total)


class RandomWrites(RateWorkload):
    """Uniform or hot/cold random writes over the working set."""

    def __init__(self, memory, ncpu, kernels, seed, hot_fraction=0.0, hot_share=0.0, *, rate=0.0, clock=1.0,
                 region=0, span=None, first_cpu=0, salt=()):
        super().__init__(memory, ncpu, kernels, rate, clock, region, span)
        self.keys = stream_keys(seed, ncpu, first_cpu, salt)
        self.counters = np.zeros(ncpu, dtype=np.uint64)
        hot_span = int(round(self.span * hot_fraction)) if hot_share > 0 else 0
        hot_span = min(max(hot_span, 1 if hot_share > 0 else 0), self.span)
        threshold = int(round(hot_share * TWO32)) if hot_span else 0
        if hot_span == self.span:  # everything is hot: the draw never needs the cold side
            threshold = TWO32
        if threshold == TWO32 and hot_span == 0:
            threshold = 0
        self.hot_span = hot_span
        self.hot_threshold = threshold
        self.name = "hotcold" if hot_span else "uniform"

    def generate(self, counts, total=None):
        out = self._buffer(int(counts.sum()) if total is None else total)
        base, mult, modulus, block = self._kernel_map()
        self.kernels.gen_random(self.keys, self.counters, counts, self.hot_span, self.hot_threshold, self.span,
                                base, mult, modulus, out, block)
        return self._place_in_memory(out)


def zipf_table(span, s, exact=4096, ratio=1.02):
    """Inverse-CDF table of a Zipf law over ranks [0, span): p(r) ~ (r + 1)^-s.

    Returns (edges int64[nb+1], thresholds uint64[nb+1]): bin i holds ranks [edges[i], edges[i+1]) and
    takes 32-bit draws u with thresholds[i] <= u < thresholds[i+1]. The first ``exact`` ranks have a
    bin each; beyond, bins grow geometrically by ``ratio`` (their mass is the integral of x^-s over
    the bin, and a draw is placed uniformly inside the bin, where the law varies by < 2%).
    Built once in float64 by the same code for both backends.
    """
    span = int(span)
    head = np.arange(min(span, exact) + 1, dtype=np.int64)
    tail = []
    x = float(head[-1])
    while int(x) < span:
        x = max(x + 1, x * ratio)
        tail.append(min(int(x), span))
    edges = np.unique(np.concatenate([head, np.array(tail, dtype=np.int64)]))
    lo, hi = edges[:-1].astype(np.float64), edges[1:].astype(np.float64)
    if s == 1.0:
        mass = np.log((hi + 0.5) / (lo + 0.5))
    else:
        mass = ((hi + 0.5) ** (1 - s) - (lo + 0.5) ** (1 - s)) / (1 - s)
    single = (hi - lo) == 1
    mass[single] = (lo[single] + 1.0) ** -s
    cdf = np.concatenate([[0.0], np.cumsum(mass)])
    thresholds = np.round(cdf / cdf[-1] * TWO32).astype(np.uint64)
    thresholds[-1] = TWO32
    return edges, thresholds


class ZipfWrites(RateWorkload):
    """Writes following a Zipf law of exponent ``s`` over the working set's ranks: rank r is dense
    index r (the hottest pages first, as the hot set of ``hotcold``)."""

    name = "zipf"

    def __init__(self, memory, ncpu, kernels, seed, s, *, rate=0.0, clock=1.0, region=0, span=None, first_cpu=0,
                 salt=()):
        super().__init__(memory, ncpu, kernels, rate, clock, region, span)
        self.keys = stream_keys(seed, ncpu, first_cpu, salt)
        self.counters = np.zeros(ncpu, dtype=np.uint64)
        self.s = float(s)
        self.edges, self.thresholds = zipf_table(self.span, self.s)

    def generate(self, counts, total=None):
        out = self._buffer(int(counts.sum()) if total is None else total)
        # the uniform 32-bit draws: gen_random over a span of 2**32 with the identity map returns them
        self.kernels.gen_random(self.keys, self.counters, counts, 0, 0, TWO32, 0, 1, TWO32, out, 1)
        u = out.astype(np.uint64)
        b = np.searchsorted(self.thresholds, u, side="right") - 1
        t0, t1 = self.thresholds[b], self.thresholds[b + 1]
        width = (self.edges[b + 1] - self.edges[b]).astype(np.uint64)
        rank = self.edges[b] + ((u - t0) * width // (t1 - t0)).astype(np.int64)
        out[:] = self.memory.dense_to_frames(rank + self.region)
        return out


class SequentialSweep(RateWorkload):
    """Each CPU rewrites the working set in order, ``stride`` pages apart, wrapping around: a strided
    sweep visits every page when the stride and the working set share no factor, else a subset."""

    name = "sequential"

    def __init__(self, memory, ncpu, kernels, stride=1, *, rate=0.0, clock=1.0, region=0, span=None):
        super().__init__(memory, ncpu, kernels, rate, clock, region, span)
        self.stride = int(stride)
        self.cursors = (np.arange(ncpu, dtype=INDEX_DTYPE) * self.span) // max(ncpu, 1)

    def generate(self, counts, total=None):
        out = self._buffer(int(counts.sum()) if total is None else total)
        base, mult, modulus, block = self._kernel_map()
        self.kernels.gen_sequential(self.cursors, counts, self.stride, self.span, base, mult, modulus, out, block)
        return self._place_in_memory(out)


# -- the kinds of this module (workloads/__init__.py lists them in KINDS) -------------------------------

UNIFORM = WorkloadKind("uniform", {}, lambda sec, memory, ncpu, kernels, seed, clock, region, span, first, salt:
                       RandomWrites(memory, ncpu, kernels, seed, 0.0, 0.0, first_cpu=first, salt=salt, rate=sec.rate,
                                    clock=clock, region=region, span=span))
HOTCOLD = WorkloadKind("hotcold", dict(
    hot_fraction=Field(FRACTION, 0.1, "hotcold: share of the working set that is hot.", gt=0, lt=1),
    hot_share=Field(FRACTION, 0.9, "hotcold: share of writes that go to the hot pages.", ge=0, le=1),
), lambda sec, memory, ncpu, kernels, seed, clock, region, span, first, salt:
    RandomWrites(memory, ncpu, kernels, seed, sec.hot_fraction, sec.hot_share, first_cpu=first, salt=salt,
                 rate=sec.rate, clock=clock, region=region, span=span))
SEQUENTIAL = WorkloadKind("sequential", dict(
    stride=Field(INT, 1, "sequential: pages advanced between consecutive writes (wraps around the "
                         "working set; a stride sharing no factor with it visits every page).", ge=1,
                 le=MAX_FRAMES),
), lambda sec, memory, ncpu, kernels, seed, clock, region, span, first, salt:
    SequentialSweep(memory, ncpu, kernels, sec.stride, rate=sec.rate, clock=clock, region=region, span=span))
ZIPF = WorkloadKind("zipf", dict(
    exponent=Field(FLOAT, 1.0, "zipf: exponent s; the page of rank r (0 = hottest, at the start of the "
                               "working set) takes writes in proportion to 1/(r+1)^s.", ge=0, le=10),
), lambda sec, memory, ncpu, kernels, seed, clock, region, span, first, salt:
    ZipfWrites(memory, ncpu, kernels, seed, sec.exponent, first_cpu=first, salt=salt, rate=sec.rate, clock=clock,
               region=region, span=span))
