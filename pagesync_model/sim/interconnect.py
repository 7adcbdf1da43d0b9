"""The mirror interconnect to the partner, and the partner that keeps the copy.

The scanner hands the interconnect work (runs of frames) and never computes link timing itself,
as in SimPy's ``latency.py`` example where the ``Cable`` owns the delay. A copy call costs
``per_copy`` of setup, then its bytes at ``bandwidth``, plus ``first_copy`` for each page the
partner receives for the first time (it allocates and faults in its copy); the data reaches the
partner ``latency`` later. The link is a FIFO: a copy starts when the previous one has left (``busy_until``).

Contents are read when a piece of a copy starts, after the CPUs' writes up to that instant have
been applied (``sync``). Long copies are cut into pieces of at most ``chunk_pages`` so that writes
keep interleaving with the copy at the quantum's resolution; the call overhead is still charged
once per run. The version read is what the partner ends up with; since the link is FIFO and the
partner is only compared at cut-over, the partner stores it at read time.
"""
import numpy as np

from ..kernels.dtypes import INDEX_DTYPE


def cut_runs(starts, lens, ends, lo, hi):
    """Pages [lo, hi) of a run list, counting its pages in order (``ends = cumsum(lens)``), as
    (starts, lens, split): ``split`` is true when the first piece begins inside a run (its copy call
    was already charged with the run's earlier pages). Requires 0 <= lo < hi <= ends[-1]."""
    first = int(np.searchsorted(ends, lo, side="right"))
    last = int(np.searchsorted(ends, hi, side="left"))
    run_lo = ends[first] - lens[first]
    p_starts = starts[first:last + 1].copy()
    p_lens = lens[first:last + 1].copy()
    skip = lo - run_lo
    p_starts[0] += skip
    p_lens[0] -= skip
    p_lens[-1] -= ends[last] - hi
    return p_starts, p_lens, bool(skip)


def payload_rate(link):
    """Payload bytes/s of the config section ``link``: its bandwidth less the framing (``efficiency``)."""
    return link.bandwidth * link.efficiency


def transfer_time(nbytes, rate, latency=0.0):
    """Seconds ``nbytes`` take at ``rate`` bytes/s, plus ``latency`` when the time until they have
    arrived is meant (a fluid model's view of the link: no per-copy cost, no queueing)."""
    return nbytes / rate + latency


class Interconnect:
    """Link of ``bandwidth`` bytes/s, ``latency`` s and ``per_copy`` s per copy call, timed in cycles at ``clock``.

    ``page_header_bytes`` are added per page sent (a migration stream's page header);
    ``zero_page_bytes`` (when not None) replaces the payload of an all-zero page (QEMU sends a
    header and a flag instead of 4 KiB of zeros). ``sync`` is called before contents are read.
    """

    def __init__(self, env, memory, partner, kernels, bandwidth, latency, per_copy, clock, chunk_pages,
                 sync=None, page_header_bytes=0, zero_page_bytes=None, first_copy=0.0):
        self.env = env
        self.memory = memory
        self.partner = partner
        self.kernels = kernels
        self.bandwidth = float(bandwidth)
        self.clock = float(clock)
        self.latency_cycles = int(round(latency * clock))
        self.per_copy = float(per_copy)
        self.first_copy = float(first_copy)
        self.chunk_pages = max(1, int(chunk_pages))
        self.sync = sync or (lambda: None)
        self.page_header_bytes = int(page_header_bytes)
        self.zero_page_bytes = zero_page_bytes
        self.busy_until = 0
        self.last_arrival = 0
        self.timeouts = 0
        # Totals over the run.
        self.bytes_sent = 0
        self.pages_sent = 0
        self.zero_pages_sent = 0
        self.calls = 0
        self.busy_cycles = 0

    @classmethod
    def from_config(cls, env, memory, partner, kernels, link, quantum, clock, sync=None, **options):
        """The interconnect of config section ``link``, carrying at most a ``quantum`` (s) of bytes per
        piece of a copy; ``options`` are the policy's stream format (``page_header_bytes``,
        ``zero_page_bytes``)."""
        chunk = max(1, int(link.bandwidth * quantum // memory.page_size))
        return cls(env, memory, partner, kernels, payload_rate(link), link.latency, link.per_copy, clock, chunk,
                   sync=sync, first_copy=link.first_copy, **options)

    def request_time(self, nbytes):
        """Seconds a request takes to reach the partner and ``nbytes`` to come back, the link idle."""
        return 2 * self.latency_cycles / self.clock + nbytes / self.bandwidth

    def wire_bytes(self, pages, zero_pages):
        """Bytes on the wire for ``pages`` pages of which ``zero_pages`` are all-zero."""
        ps = self.memory.page_size
        payload = pages * ps if self.zero_page_bytes is None else (pages - zero_pages) * ps + zero_pages * \
            self.zero_page_bytes
        return payload + pages * self.page_header_bytes

    def transfer_cycles(self, nbytes, calls, first=0):
        """Cycles the link is busy sending ``nbytes`` in ``calls`` copy calls, ``first`` of its pages new
        to the partner."""
        return int(round((calls * self.per_copy + nbytes / self.bandwidth + first * self.first_copy) * self.clock))

    def _first(self, starts, lens):
        """How many pages of these runs the partner has never received (before ``deliver_runs``)."""
        if self.first_copy <= 0:
            return 0
        return self.partner.count_garbage(starts, lens)

    def _send(self, pages, zeros, calls, nbytes=None, first=0):
        nbytes = self.wire_bytes(pages, zeros) if nbytes is None else int(nbytes)
        start = max(self.env.now, self.busy_until)
        cycles = self.transfer_cycles(nbytes, calls, first)
        self.busy_until = start + cycles
        self.last_arrival = self.busy_until + self.latency_cycles
        self.bytes_sent += nbytes
        self.pages_sent += pages
        self.zero_pages_sent += zeros
        self.calls += calls
        self.busy_cycles += cycles
        self.timeouts += 1
        return self.env.timeout(self.busy_until - self.env.now)

    def copy(self, starts, lens, encode=None):
        """Process step: copy runs ``[starts[i], starts[i] + lens[i])``, one copy call per run.

        ``encode(starts, lens, zeros)``, when given, returns the bytes a piece takes on the wire (a
        delta encoding such as XBZRLE); by default pages cost ``wire_bytes``. Returns (as the
        generator's value) the number of all-zero pages copied.
        """
        starts = np.ascontiguousarray(starts, dtype=INDEX_DTYPE)
        lens = np.ascontiguousarray(lens, dtype=INDEX_DTYPE)
        total = int(lens.sum())
        if total == 0:
            return 0
        if total <= self.chunk_pages:
            self.sync()
            first = self._first(starts, lens)
            zeros = self.partner.receive(self.kernels, self.memory, starts, lens)
            yield self._send(total, zeros, len(starts), encode(starts, lens, zeros) if encode else None, first)
            return zeros
        # Cut the runs into pieces of chunk_pages; read each piece when it starts.
        if len(starts) == 1:  # one long run (the copy of all memory): no searching needed
            s0 = int(starts[0])
            zeros_total = 0
            piece_s, piece_l = np.empty(1, dtype=INDEX_DTYPE), np.empty(1, dtype=INDEX_DTYPE)
            for lo in range(0, total, self.chunk_pages):
                hi = min(total, lo + self.chunk_pages)
                piece_s[0], piece_l[0] = s0 + lo, hi - lo
                self.sync()
                first = self._first(piece_s, piece_l)
                zeros = self.partner.receive(self.kernels, self.memory, piece_s, piece_l)
                zeros_total += zeros
                yield self._send(hi - lo, zeros, 1 if lo == 0 else 0,
                                 encode(piece_s, piece_l, zeros) if encode else None, first)
            return zeros_total
        ends = np.cumsum(lens)
        zeros_total = 0
        for lo in range(0, total, self.chunk_pages):
            hi = min(total, lo + self.chunk_pages)
            p_starts, p_lens, split = cut_runs(starts, lens, ends, lo, hi)
            calls = len(p_starts) - (1 if split else 0)
            self.sync()
            first = self._first(p_starts, p_lens)
            zeros = self.partner.receive(self.kernels, self.memory, p_starts, p_lens)
            zeros_total += zeros
            yield self._send(hi - lo, zeros, calls, encode(p_starts, p_lens, zeros) if encode else None, first)
        return zeros_total

    def send_aside(self, starts, lens):
        """Copy runs on a channel of their own (a second stream, such as QEMU's postcopy-preempt
        channel): delivered and counted now, without queueing behind this link's FIFO or delaying it.
        Returns the all-zero pages copied; the caller times the transfer (``request_time``)."""
        starts = np.ascontiguousarray(starts, dtype=INDEX_DTYPE)
        lens = np.ascontiguousarray(lens, dtype=INDEX_DTYPE)
        pages = int(lens.sum())
        if pages == 0:
            return 0
        self.sync()
        zeros = self.partner.receive(self.kernels, self.memory, starts, lens)
        self.bytes_sent += self.wire_bytes(pages, zeros)
        self.pages_sent += pages
        self.zero_pages_sent += zeros
        self.calls += len(starts)
        return zeros

    def send_at(self, starts, lens, at):
        """Queue runs on this link's FIFO from cycle ``at`` (or when what is queued before has left),
        for a sender that is not this process (a page a QEMU destination requested, which the source's
        thread sends at a time known in advance). No time passes here; returns the cycle the last byte
        leaves."""
        starts = np.ascontiguousarray(starts, dtype=INDEX_DTYPE)
        lens = np.ascontiguousarray(lens, dtype=INDEX_DTYPE)
        pages = int(lens.sum())
        self.sync()
        zeros = self.partner.receive(self.kernels, self.memory, starts, lens)
        nbytes = self.wire_bytes(pages, zeros)
        start = max(int(at), self.busy_until)
        cycles = self.transfer_cycles(nbytes, len(starts))
        self.busy_until = start + cycles
        self.last_arrival = max(self.last_arrival, self.busy_until + self.latency_cycles)
        self.bytes_sent += nbytes
        self.pages_sent += pages
        self.zero_pages_sent += zeros
        self.calls += len(starts)
        self.busy_cycles += cycles
        return self.busy_until

    def send_bytes(self, nbytes):
        """Process step: send ``nbytes`` that are not page contents (device state, stream headers)."""
        if nbytes <= 0:
            return
        start = max(self.env.now, self.busy_until)
        cycles = self.transfer_cycles(nbytes, 0)
        self.busy_until = start + cycles
        self.last_arrival = self.busy_until + self.latency_cycles
        self.bytes_sent += int(nbytes)
        self.busy_cycles += cycles
        self.timeouts += 1
        yield self.env.timeout(self.busy_until - self.env.now)

    def drain(self):
        """Process step: wait until everything sent so far has reached the partner."""
        if self.last_arrival > self.env.now:
            self.timeouts += 1
            yield self.env.timeout(self.last_arrival - self.env.now)
