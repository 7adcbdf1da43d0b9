"""Device DMA: writes into the working set that bypass the CPUs' page tables and TLBs.

A device writes memory through the I/O bus: the page's contents change (its version is bumped)
but no PTE dirty bit is set and no TLB is involved, so dirty tracking never sees the write and a
page last copied before it is stale on the partner: a lost write the oracle reports. Stratus
mirrored DMA in its PCI bridge: with ``mirrored`` every DMA write also lands in the partner's copy.
Devices are not throttled; they stop when the CPUs are stopped (a harvest or the blackout
quiesces I/O). Targets are uniform over working-set pages ``[0, span)`` from a counter-based
stream (``gen_random``), identical in both backends.
"""
import numpy as np

from ..kernels.dtypes import INDEX_DTYPE, VERSION_DTYPE

TWO32 = 1 << 32


class DmaWriter:
    """``rate`` device page writes per second (at ``clock`` Hz) into working-set pages ``[0, span)``;
    ``mirrored`` also writes the partner's copy."""

    def __init__(self, memory, partner, kernels, seed, rate, span, mirrored, clock):
        self.memory = memory
        self.partner = partner
        self.kernels = kernels
        self.key = np.array([np.random.SeedSequence([seed, 0xD3A]).generate_state(1, dtype=np.uint64)[0]],
                            dtype=np.uint64)
        self.counters = np.zeros(1, dtype=np.uint64)
        self.rate_per_cycle = float(rate) / float(clock)
        self.span = int(span)
        self.mirrored = bool(mirrored)
        self.carry = 0.0
        self.writes = 0

    def advance(self, cycles):
        """Apply the DMA writes of ``cycles`` of time."""
        expected = cycles * self.rate_per_cycle + self.carry
        n = int(expected)
        self.carry = expected - n
        if n == 0:
            return
        m = self.memory
        out = np.empty(n, dtype=INDEX_DTYPE)
        if len(getattr(m, "hole_at", ())):  # holes: working-set indices, placed by the memory's own map
            self.kernels.gen_random(self.key, self.counters, np.array([n], dtype=INDEX_DTYPE), 0, 0, self.span,
                                    0, 1, TWO32, out, 1)
            out = m.dense_to_frames(out)
        else:
            self.kernels.gen_random(self.key, self.counters, np.array([n], dtype=INDEX_DTYPE), 0, 0, self.span,
                                    m.user_base, m.mult, m.blocks, out, m.block)
        frames, times = np.unique(out, return_counts=True)
        m.add_versions(frames, times.astype(VERSION_DTYPE))
        if self.mirrored:
            self.partner.write_versions(frames, m.read_versions(frames))
        self.writes += n
