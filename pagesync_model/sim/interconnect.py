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
import math

import numpy as np

from ..kernels.dtypes import INDEX_DTYPE
from ..policies.base import payload_rate


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
        # (starts, lens) -> a process step that copies them as ``copy`` would, or None: the machine's copy
        # loop (sim/fused.py) for copies of more than one piece
        self.multi_piece = None

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
        if encode is None and self.multi_piece is not None:
            loop = self.multi_piece(starts, lens)
            if loop is not None:
                return (yield from loop)
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


# -- links shared by several migrations -------------------------------------------------------------

def max_min_rates(capacities, routes, weights=None, caps=None):
    """Max-min fair rates (bytes/s) of flows over shared links, by progressive filling.

    ``capacities[l]`` is link l's bandwidth; ``routes[f]`` the links flow f crosses (at least one);
    ``weights[f]`` how many connections flow f opens (a multifd migration's channels: each is a
    flow of its own on every link, so the migration gets ``weights[f]`` shares); ``caps[f]`` the
    flow's own rate limit (None: none). All unfrozen flows grow at ``weight`` per unit of fill
    level; a flow freezes when a link it crosses is full or it reaches its cap. The result is the
    allocation in which no flow can grow without shrinking one whose rate per connection is no
    larger."""
    n = len(routes)
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    caps = [None] * n if caps is None else list(caps)
    remaining = [float(c) for c in capacities]
    on_link = [[] for _ in remaining]
    for f, route in enumerate(routes):
        if not route:
            raise ValueError(f"flow {f} crosses no link")
        for link in route:
            on_link[link].append(f)
    rates = [0.0] * n
    live = set(range(n))
    while live:
        step = math.inf
        for link, flows in enumerate(on_link):
            w = sum(weights[f] for f in flows if f in live)
            if w > 0:
                step = min(step, remaining[link] / w)
        for f in live:
            if caps[f] is not None:
                step = min(step, (caps[f] - rates[f]) / weights[f])
        step = max(step, 0.0)
        for f in live:
            rates[f] += weights[f] * step
            for link in routes[f]:
                remaining[link] -= weights[f] * step
        full = {link for link, c in enumerate(capacities) if remaining[link] <= 1e-12 * c}
        done = {f for f in live if (caps[f] is not None and rates[f] >= caps[f] * (1 - 1e-12))
                or any(link in full for link in routes[f])}
        if not done:  # only rounding left: nothing can grow
            break
        live -= done
    return rates


SHARINGS = ("equal", "simgrid")


class Lv08:
    """SimGrid's LV08 network model, as read in SimGrid's source (simgrid/simgrid,
    src/kernel/resource/models/network_cm02.cpp and src/kernel/resource/NetworkModel.cpp):
    ``latency_factor`` 13.01 and ``bandwidth_factor`` 0.97 (the LV08 model's defaults of
    network/latency-factor and network/bandwidth-factor), ``weight_s`` 20537 (network/weight-S),
    ``crosstraffic`` 0.05 (each flow also loads the links of its back route with 0.05 of its rate,
    network/crosstraffic on by default), ``tcp_gamma`` 4194304 bytes (network/TCP-gamma's default)."""
    latency_factor = 13.01
    bandwidth_factor = 0.97
    weight_s = 20537.0
    crosstraffic = 0.05
    tcp_gamma = 4194304.0


def shared_rates(sharing, capacities, routes, weights=None, caps=None, latencies=None, nominal=None):
    """The rates (bytes/s) flows get on shared links under ``sharing``:

    - ``equal``: `max_min_rates` (each connection an equal share);
    - ``simgrid``: SimGrid's LV08 (`Lv08`): a weighted max-min in which a flow's share is in inverse
      proportion to its sharing penalty, its route's latency plus weight_S / bandwidth for every link
      of the route (NetworkCm02Model::communicate; the lmm solver, src/kernel/lmm/maxmin.cpp, gives a
      variable min_usage / penalty); each flow consumes 1 + crosstraffic of its rate on its links (a
      symmetrical route's back route is the same links; comm_action_expand_constraints); the solver's
      rate is bounded by TCP-gamma / (2 x the route's latency) (comm_action_set_variable) and the
      flow's own cap; the rate the flow gets is the solver's times bandwidth_factor (set_rate_factor
      in comm_action_set_bounds). ``weights`` (channels) multiply a flow's share as in `equal`.

    ``latencies[l]`` is link l's latency (s), ``nominal[l]`` its bandwidth for the penalty (default
    ``capacities``; a stalled link keeps its penalty)."""
    if sharing == "equal":
        return max_min_rates(capacities, routes, weights, caps)
    if sharing != "simgrid":
        raise ValueError(f"unknown sharing '{sharing}' (one of {', '.join(SHARINGS)})")
    m = Lv08
    n = len(routes)
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    caps = [None] * n if caps is None else list(caps)
    latencies = [0.0] * len(capacities) if latencies is None else list(latencies)
    nominal = capacities if nominal is None else nominal
    scaled = [float(c) * m.bandwidth_factor / (1.0 + m.crosstraffic) for c in capacities]
    ws, bounds = [], []
    for f, route in enumerate(routes):
        lat = sum(latencies[link] for link in route)
        penalty = lat + sum(m.weight_s / nominal[link] for link in route)
        ws.append(weights[f] / penalty)
        bound = caps[f]
        if lat > 0 and m.tcp_gamma > 0:
            gamma = m.bandwidth_factor * m.tcp_gamma / (2.0 * lat)
            bound = gamma if bound is None else min(bound, gamma)
        bounds.append(bound)
    return max_min_rates(scaled, routes, ws, bounds)


class Stream:
    """One migration's flow on the fabric: the work (in cycles at its own, unshared rate) handed to it
    and not yet done, each piece with the event that fires when it has left. ``nominal`` is the rate
    (bytes/s on the wire) the migration's interconnect times its pieces at; ``route`` the indices
    of the links it crosses; ``cap`` its own limit (None: none); ``channels`` its connections."""

    def __init__(self, fabric, route, nominal, cap=None, channels=1, name=""):
        self.fabric = fabric
        self.route = list(route)
        self.nominal = float(nominal)
        self.cap = cap
        self.channels = int(channels)
        self.name = name
        self.rate = 0.0                 # bytes/s on the wire now
        self.speed = 0.0                # rate / nominal: cycles of work done per cycle
        self.queued = 0                 # cycles of work handed over
        self.done = 0.0                 # cycles of work done
        self.pieces = []                # [(mark, event, on_done)], marks increasing
        self.t_last = fabric.env.now
        self.history = []               # [(time in cycles, rate bytes/s)] at each change of rate
        self.closed = False

    def push(self, cycles, on_done=None):
        """An event that fires when ``cycles`` more of work (at the nominal rate) have left after what
        is queued; ``on_done(t)`` is called then with the time in cycles."""
        f = self.fabric
        f.advance()
        ev = f.env.event()
        idle = not self.pieces
        self.queued += int(cycles)
        self.pieces.append((self.queued, ev, on_done))
        if idle:
            self.done = max(self.done, float(self.queued - int(cycles)))
            f.changed()
        return ev

    def set_cap(self, cap):
        """Change the stream's own rate limit (bytes/s, None: none); the fabric re-solves."""
        self.fabric.advance()
        self.cap = cap
        self.fabric.changed()

    @property
    def active(self):
        return bool(self.pieces) and not self.closed


class Fabric:
    """Links shared by the migrations of one SimPy environment, timed in cycles at ``clock``.

    ``links`` is a sequence of (name, bandwidth bytes/s). Each active stream (one with work queued)
    gets its max-min fair rate over its route (`max_min_rates`; with ``sharing`` 'simgrid', SimGrid's
    LV08 sharing, `shared_rates`, over the links' ``latencies``), re-solved whenever a stream starts,
    runs dry, closes or changes its cap. The re-solve waits until every event of the current
    instant has run (a stream that finishes a piece and queues the next at the same instant does
    not count as stopping). A stream alone on its links at its nominal rate finishes each piece at
    exactly the cycle the single-link `Interconnect` would.
    """

    def __init__(self, env, links, clock, sharing="equal", latencies=None):
        self.env = env
        self.clock = float(clock)
        self.names = [name for name, _ in links]
        self.capacity = [float(bw) for _, bw in links]
        self.nominal = list(self.capacity)
        self.sharing = sharing
        self.latencies = [0.0] * len(self.capacity) if latencies is None else [float(x) for x in latencies]
        self.streams = []
        self._pending = False
        self._wake_gen = 0
        self._last_key = None
        self.solves = 0
        self.t_last = env.now

    def index(self, name):
        return self.names.index(name)

    def stream(self, route, nominal, cap=None, channels=1, name=""):
        """A new stream over the links named in ``route``."""
        s = Stream(self, [self.index(r) for r in route], nominal, cap, channels, name)
        s.serial = self._serial = getattr(self, "_serial", 0) + 1
        self.streams.append(s)
        return s

    def close(self, stream):
        """The stream's migration has ended: its share goes to the others."""
        self.advance()
        stream.closed = True
        stream.pieces = []
        self.streams.remove(stream)
        if stream.rate:
            stream.history.append((self.env.now, 0.0))
        stream.rate = stream.speed = 0.0
        self.changed()

    def set_capacity(self, index, bandwidth):
        """Link ``index`` now carries ``bandwidth`` bytes/s (0: nothing, a stall or a drop)."""
        self.advance()
        self.capacity[index] = float(bandwidth)
        self._epoch = getattr(self, "_epoch", 0) + 1
        self.changed()

    # -- time -------------------------------------------------------------------------------------
    def advance(self):
        """Bring every stream's work done up to now."""
        now = self.env.now
        if now == self.t_last:
            return
        for s in self.streams:
            if s.pieces and s.speed > 0:
                s.done += (now - self.t_last) * s.speed
        self.t_last = now

    def changed(self):
        """Something a rate depends on changed: re-solve once the current instant's events have run."""
        if self._pending:
            return
        self._pending = True
        ev = self.env.event()
        ev.callbacks.append(self._resolve)
        ev.succeed()

    def _resolve(self, _ev):
        self._pending = False
        self.advance()
        active = [s for s in self.streams if s.active]
        key = [getattr(self, "_epoch", 0)] + [(s.serial, s.cap) for s in active]
        if key == self._last_key:  # the same streams with the same caps: the same rates
            self._schedule()
            return
        self._last_key = key
        if active:
            rates = shared_rates(self.sharing, self.capacity, [s.route for s in active], [s.channels for s in active],
                                 [s.cap for s in active], self.latencies, self.nominal)
        else:
            rates = []
        self.solves += 1
        now = self.env.now
        for s in self.streams:
            if not s.active and s.rate:
                s.rate = s.speed = 0.0
                s.history.append((now, 0.0))
        for s, r in zip(active, rates):
            if r != s.rate:
                s.history.append((now, r))
            s.rate = r
            # a stream with its nominal rate (up to rounding in the solver) keeps exact cycles
            s.speed = 1.0 if abs(r - s.nominal) <= 1e-12 * s.nominal else r / s.nominal
        self._schedule()

    def _schedule(self):
        """Wake at the next instant a piece of an active stream has left (rates as they stand)."""
        self._wake_gen += 1
        now = self.env.now
        nxt = math.inf
        for s in self.streams:
            if s.pieces and s.speed > 0:
                left = s.pieces[0][0] - s.done
                nxt = min(nxt, now + (math.ceil(left / s.speed * (1 - 1e-12)) if left > 0 else 0))
        if nxt == math.inf:
            return
        gen = self._wake_gen
        t = self.env.timeout(int(nxt - now))
        t.callbacks.append(lambda _e: self._wake(gen))

    def _wake(self, gen):
        if gen != self._wake_gen:
            return
        self.advance()
        now = self.env.now
        dry = False
        for s in list(self.streams):
            while s.pieces:
                mark, ev, on_done = s.pieces[0]
                if s.done < mark - 1e-6 * max(1.0, s.speed):
                    break
                s.pieces.pop(0)
                s.done = max(s.done, float(mark))
                if on_done is not None:
                    on_done(now)
                ev.succeed()
            if not s.pieces:
                dry = True
        if dry:
            self.changed()
        self._schedule()


class SharedInterconnect(Interconnect):
    """An `Interconnect` whose pieces leave over a `Stream` of a `Fabric` instead of a link of its own:
    each piece is timed as on the migration's own link (``transfer_cycles``: bytes, copy calls, first
    copies) and that work is done at the stream's share of the shared links, so a piece takes
    ``cycles x nominal / rate``. Alone on its route at its nominal rate it times every piece as
    `Interconnect` does. ``origin`` is the cycle of the fabric's clock at which this migration's
    clock reads 0 (its environment is an offset view of the fabric's)."""

    def __init__(self, *args, stream=None, origin=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream = stream
        self.origin = int(origin)
        self._last = None

    @classmethod
    def from_config(cls, env, memory, partner, kernels, link, quantum, clock, sync=None, stream=None, origin=0,
                    **options):
        chunk = max(1, int(link.bandwidth * quantum // memory.page_size))
        return cls(env, memory, partner, kernels, payload_rate(link), link.latency, link.per_copy, clock, chunk,
                   sync=sync, first_copy=link.first_copy, stream=stream, origin=origin, **options)

    def _left(self, t):
        """A piece left at fabric time ``t``."""
        here = t - self.origin
        self.last_arrival = here + self.latency_cycles
        if not self.stream.pieces:  # the last piece queued has left
            self.busy_until = here

    def _push(self, cycles):
        self.busy_until = BUSY
        self._last = self.stream.push(cycles, self._left)
        self.busy_cycles += cycles
        self.timeouts += 1
        return self._last

    def _send(self, pages, zeros, calls, nbytes=None, first=0):
        nbytes = self.wire_bytes(pages, zeros) if nbytes is None else int(nbytes)
        cycles = self.transfer_cycles(nbytes, calls, first)
        self.bytes_sent += nbytes
        self.pages_sent += pages
        self.zero_pages_sent += zeros
        self.calls += calls
        return self._push(cycles)

    def send_bytes(self, nbytes):
        if nbytes <= 0:
            return
        self.bytes_sent += int(nbytes)
        yield self._push(self.transfer_cycles(nbytes, 0))

    def drain(self):
        if self._last is not None and not self._last.triggered:
            yield self._last
        if self.last_arrival > self.env.now:
            self.timeouts += 1
            yield self.env.timeout(self.last_arrival - self.env.now)


BUSY = 1 << 62  # busy_until while a piece is on a shared link: its end is not known yet
