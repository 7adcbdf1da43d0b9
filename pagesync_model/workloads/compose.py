"""Workloads made of workloads: phases over time, and groups of CPUs each with their own workload.

Both split a time step among their parts and merge the parts' frames back into the CPU-major
order the CPUs expect, with numpy index arithmetic (a loop over parts, never over writes).
"""
import numpy as np

from ..kernels.dtypes import INDEX_DTYPE
from .patterns import Workload


class Phases(Workload):
    """A piecewise workload: ``children[k]`` runs for ``durations[k]`` cycles of each CPU's running time,
    in order; with ``repeat`` the list starts over, else the last phase goes on for ever. Each phase
    keeps its own state (stream counters, trace clock) from one visit to the next. Within one time
    step, a CPU's writes of different phases are applied phase by phase in list order."""

    name = "phases"

    def __init__(self, memory, ncpu, kernels, durations, children, repeat=True):
        super().__init__(memory, ncpu, kernels)
        if len(durations) != len(children) or not children:
            raise ValueError("phases need one duration per phase, and at least one phase")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.starts = np.concatenate([[0.0], np.cumsum(self.durations)[:-1]])
        self.period = float(self.durations.sum())
        self.children = list(children)
        self.repeat = bool(repeat)
        self.progress = np.zeros(ncpu)
        self._counts = [np.zeros(ncpu, dtype=INDEX_DTYPE) for _ in children]

    def time_in(self, k, x):
        """Cycles of program time spent in phase ``k`` before program time ``x`` (an array)."""
        s, d = self.starts[k], self.durations[k]
        if not self.repeat:
            if k == len(self.children) - 1:
                return np.maximum(x - s, 0.0)
            return np.clip(x - s, 0.0, d)
        laps = np.floor(x / self.period)
        return laps * d + np.clip(x - laps * self.period - s, 0.0, d)

    def step(self, run, counts):
        a = self.progress
        b = a + run
        self.progress = b
        parts = []
        for k, child in enumerate(self.children):
            rk = self.time_in(k, b) - self.time_in(k, a)
            if not (rk > 0).any():
                continue
            ck = self._counts[k]
            fk = child.step(np.maximum(rk, 0.0), ck)
            if ck.any():
                parts.append((fk, ck))
        return merge_cpu_major(parts, counts, self._buffer)

    def generate(self, counts):
        """The next writes of the phase each CPU is in now (all CPUs: the phase of CPU 0)."""
        k = int(np.argmax([self.time_in(k, self.progress[:1] + 0.5)[0] - self.time_in(k, self.progress[:1])[0]
                           for k in range(len(self.children))]))
        return self.children[k].generate(counts)


def merge_cpu_major(parts, counts, buffer):
    """Merge ``parts`` [(frames, counts_k)], each CPU-major, into one CPU-major array: CPU c's frames
    of part 0, then of part 1, ...; ``counts`` OUT receives the totals. ``buffer(n)`` gives the output."""
    if not parts:
        counts[:] = 0
        return buffer(0)
    if len(parts) == 1:
        counts[:] = parts[0][1]
        return parts[0][0]
    total = sum(ck for _, ck in parts)
    counts[:] = total
    out = buffer(int(total.sum()))
    at = np.cumsum(total) - total
    for fk, ck in parts:
        src = np.cumsum(ck) - ck
        dest = np.repeat(at - src, ck) + np.arange(int(ck.sum()), dtype=INDEX_DTYPE)
        out[dest] = fk
        at = at + ck
    return out


class Groups(Workload):
    """Per-CPU mixture: ``children[i]`` drives the next ``sizes[i]`` CPUs (CPUs 0.. go to the first)."""

    name = "groups"

    def __init__(self, memory, ncpu, kernels, children, sizes):
        super().__init__(memory, ncpu, kernels)
        if sum(sizes) != ncpu:
            raise ValueError(f"the groups have {sum(sizes)} CPUs, the machine {ncpu}")
        self.children = list(children)
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def _each(self, fn, counts):
        frames = []
        for child, lo, hi in zip(self.children, self.bounds[:-1], self.bounds[1:]):
            f = fn(child, lo, hi)
            if len(f):
                frames.append(f)
        if not frames:
            return self._buffer(0)
        if len(frames) == 1:
            return frames[0]
        out = self._buffer(sum(len(f) for f in frames))
        np.concatenate(frames, out=out)
        return out

    def step(self, run, counts):
        return self._each(lambda child, lo, hi: child.step(run[lo:hi], counts[lo:hi]), counts)

    def generate(self, counts):
        return self._each(lambda child, lo, hi: child.generate(counts[lo:hi]), counts)
