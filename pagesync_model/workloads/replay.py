"""Replay of a recorded write trace (``pagesync_model.trace``) onto simulated memory.

Mapping: the trace's dense page indices (which follow virtual page numbers, lowest first) are kept
as working-set indices: trace page i is working-set page ``region + i`` (plus ``i_cpu x distinct
pages`` when each CPU replays its own copy). Neighbouring virtual pages therefore stay neighbours
inside a 2 MiB block, as transparent huge pages and the buddy allocator keep them. Working-set
pages beyond the trace's are never written.

Time: each CPU has its own program clock, the cycles it has run (a CPU stopped by a harvest, or
slowed by throttling or by tracking costs, replays the trace later, as the program itself would
run slower). Interval k of the trace, [t_{k-1}, t_k) since the start of recording, is replayed in
[t_{k-1}, t_k) x time_scale + offset of that clock; its n_k pages are spread evenly over the
interval, in page order (the order of writes inside an interval is not recorded), the j-th at
t_{k-1} + (j + 1/2)/n_k of it, so a harvest at a boundary finds exactly that interval's pages.
With ``loop`` the trace starts over after its last interval. Everything is numpy shared by both
backends (a ``searchsorted`` over the write times, then a gather), with no loop over writes.
"""
import os

import numpy as np

from ..bounds import MAX_SIM_TIME, MAX_TIME_SCALE
from ..kernels.dtypes import INDEX_DTYPE
from ..schema import BOOL, DURATION, FLOAT, STR, Field
from ..trace.format import read_trace
from .patterns import Workload, WorkloadKind

_CACHE = {}


def load_trace(path):
    """The Trace at ``path``, read once per file version (path, size, mtime). Raises TraceError."""
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    trace = read_trace(path)
    if key is not None:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = trace
    return trace


class TraceReplay(Workload):
    """Replay ``trace`` (a Trace) on ``ncpu`` CPUs at ``clock`` Hz.

    ``time_scale`` simulated seconds per recorded second, ``loop`` start over at the end, ``offset``
    seconds of each CPU's running time before the trace starts, ``shared`` all CPUs write the same
    pages (else CPU c uses working-set pages ``region + c x distinct + i``). Raises ValueError when
    the span is smaller than the pages the trace needs.
    """

    name = "trace"

    def __init__(self, memory, ncpu, kernels, trace, clock, time_scale=1.0, loop=True, offset=0.0, shared=False,
                 region=0, span=None):
        super().__init__(memory, ncpu, kernels, region, span)
        d = trace.n_distinct
        copies = 1 if shared else ncpu
        if d * copies > self.span:
            raise ValueError(f"the trace needs {d * copies} pages, the working set has {self.span}")
        self.trace = trace
        self.pages = trace.pages.astype(INDEX_DTYPE)
        self.n = n = len(self.pages)
        counts = trace.counts
        t_end = trace.t_end_ns.astype(np.float64) * 1e-9
        t_start = np.concatenate([[0.0], t_end[:-1]])
        k = trace.interval_of_write()
        j = np.arange(n, dtype=np.float64) - trace.offsets[:-1].astype(np.float64)[k]
        t = t_start[k] + (j + 0.5) / np.maximum(counts[k], 1) * (t_end[k] - t_start[k])
        cyc = float(time_scale) * float(clock)
        self.times = t * cyc                                    # write times in cycles, non-decreasing
        self.period = float(t_end[-1]) * cyc if len(t_end) else 0.0
        self.offset = float(offset) * float(clock)
        self.loop = bool(loop) and n > 0 and self.period > 0
        self.bases = region + (np.zeros(ncpu, dtype=INDEX_DTYPE) if shared
                               else np.arange(ncpu, dtype=INDEX_DTYPE) * d)
        self.progress = np.zeros(ncpu)

    def writes_before(self, x):
        """How many trace writes each CPU has issued by its program time ``x`` (cycles, an array)."""
        x = np.asarray(x, dtype=np.float64) - self.offset
        if self.n == 0:
            return np.zeros(x.shape, dtype=INDEX_DTYPE)
        if not self.loop:
            return np.searchsorted(self.times, x, side="left").astype(INDEX_DTYPE)
        laps = np.floor(np.maximum(x, 0.0) / self.period)
        rest = np.maximum(x, 0.0) - laps * self.period
        return (laps.astype(INDEX_DTYPE) * self.n
                + np.searchsorted(self.times, rest, side="left").astype(INDEX_DTYPE))

    def _frames(self, first, counts):
        total = int(counts.sum())
        out = self._buffer(total)
        if total == 0:
            return out
        starts = np.cumsum(counts) - counts
        g = np.repeat(first - starts, counts) + np.arange(total, dtype=INDEX_DTYPE)
        dense = self.pages[g % self.n] + np.repeat(self.bases, counts)
        out[:] = self.memory.dense_to_frames(dense)
        return out

    def step(self, run, counts):
        before = self.writes_before(self.progress)
        self.progress = self.progress + run
        counts[:] = self.writes_before(self.progress) - before
        return self._frames(before, counts)

    def generate(self, counts):
        """The next ``counts[c]`` trace writes of each CPU; its program clock moves to the last of them."""
        counts = np.asarray(counts, dtype=INDEX_DTYPE)
        before = self.writes_before(self.progress)
        if not self.loop:
            counts = np.minimum(counts, self.n - before)
        out = self._frames(before, counts)
        last = before + counts - 1
        has = counts > 0
        if has.any() and self.n:
            lap, pos = np.divmod(last[has], self.n)
            self.progress[has] = np.maximum(self.progress[has],
                                            np.nextafter(self.offset + lap * self.period + self.times[pos], np.inf))
        return out


TRACE = WorkloadKind("trace", dict(
    trace=Field(STR, "", "trace: a trace file (.npz, `pagesync-sim trace record`), relative to the "
                         "current directory."),
    time_scale=Field(FLOAT, 1.0, "trace: simulated seconds per recorded second (2 = half speed).",
                     ge=1 / MAX_TIME_SCALE, le=MAX_TIME_SCALE),
    loop=Field(BOOL, True, "trace: start the trace over after its last interval."),
    offset=Field(DURATION, "0s", "trace: the CPU's running time before the trace starts.", ge=0, le=MAX_SIM_TIME),
    shared=Field(BOOL, False, "trace: all CPUs replay onto the same pages (threads of one program); "
                              "false: each CPU replays its own copy (one process each)."),
), lambda sec, memory, ncpu, kernels, seed, clock, region, span, first, salt:
    TraceReplay(memory, ncpu, kernels, load_trace(sec.trace), clock, sec.time_scale, sec.loop, sec.offset, sec.shared,
                region=region, span=span))
