"""Workloads: where each CPU's page writes land.

A workload turns per-CPU write counts for one time step into the frames written, CPU 0's first.
Targets come from counter-based kernels (``gen_random``, ``gen_sequential``), so CPU c's n-th write
always hits the same page whatever the quantum or the backend: only *when* it happens depends on
the time step.

Kinds (``workload.kind``):
- ``uniform``: every write picks a page of the working set uniformly at random;
- ``hotcold``: a ``hot_fraction`` of the working set takes ``hot_share`` of the writes;
- ``sequential``: each CPU sweeps the working set with a stride, starting at its own offset and
  wrapping around (a heap or buffer being rewritten in order).
"""
import numpy as np

from .kernels.dtypes import INDEX_DTYPE

TWO32 = 1 << 32


def stream_keys(seed, ncpu):
    """Per-CPU 64-bit keys of the write streams, derived from the run's seed."""
    return np.array([np.random.SeedSequence([seed, cpu]).generate_state(1, dtype=np.uint64)[0]
                     for cpu in range(ncpu)], dtype=np.uint64)


class Workload:
    """Base class: ``generate(counts)`` returns the frames written, ordered by CPU."""

    name = "workload"

    def __init__(self, memory, ncpu, kernels):
        self.memory = memory
        self.ncpu = ncpu
        self.kernels = kernels
        self.span = memory.working_set_pages
        self._out = np.empty(1024, dtype=INDEX_DTYPE)

    def _buffer(self, total):
        if total > len(self._out):
            self._out = np.empty(max(total, 2 * len(self._out)), dtype=INDEX_DTYPE)
        return self._out[:total]

    def generate(self, counts):
        raise NotImplementedError


class RandomWrites(Workload):
    """Uniform or hot/cold random writes over the working set."""

    def __init__(self, memory, ncpu, kernels, seed, hot_fraction=0.0, hot_share=0.0):
        super().__init__(memory, ncpu, kernels)
        self.keys = stream_keys(seed, ncpu)
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

    def generate(self, counts):
        out = self._buffer(int(counts.sum()))
        m = self.memory
        self.kernels.gen_random(self.keys, self.counters, counts, self.hot_span, self.hot_threshold, self.span,
                                m.user_base, m.mult, m.blocks, out, m.block)
        return out


class SequentialSweep(Workload):
    """Each CPU rewrites the working set in order, ``stride`` pages apart, wrapping around."""

    name = "sequential"

    def __init__(self, memory, ncpu, kernels, stride=1):
        super().__init__(memory, ncpu, kernels)
        self.stride = int(stride)
        self.cursors = (np.arange(ncpu, dtype=INDEX_DTYPE) * self.span) // max(ncpu, 1)

    def generate(self, counts):
        out = self._buffer(int(counts.sum()))
        m = self.memory
        self.kernels.gen_sequential(self.cursors, counts, self.stride, self.span, m.user_base, m.mult, m.blocks,
                                    out, m.block)
        return out


def build_workload(wcfg, memory, ncpu, kernels, seed):
    """The workload described by config section ``workload`` (see the config schema)."""
    if wcfg.kind == "uniform":
        return RandomWrites(memory, ncpu, kernels, seed)
    if wcfg.kind == "hotcold":
        return RandomWrites(memory, ncpu, kernels, seed, wcfg.hot_fraction, wcfg.hot_share)
    if wcfg.kind == "sequential":
        return SequentialSweep(memory, ncpu, kernels, wcfg.stride)
    raise ValueError(f"workload.kind: unknown workload '{wcfg.kind}'")
