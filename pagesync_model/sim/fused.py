"""Copying while the CPUs write, many quanta per kernel call (``copy_loop``).

While a scanner only copies runs at the link's rate and the CPUs only write (no other process has an
event due, the CPUs are neither stopped nor throttled, no DMA), what happens is fixed: before each copy
piece the CPU steps due by its start (one a quantum after the last, as the ``cpus`` process ticks, then
one to the piece's start, as the scanner's ``catch_up``), then the piece is read and timed on the link.
``copy_loop`` runs that sequence in one call up to the first piece that would start at or after the
next event of any other process (the *horizon*), then the scanner waits for its last piece as
``Interconnect.copy`` would. Results are the same as the piece-by-piece path (tests/test_fused.py, and
``tests/test_equivalence.py`` on both backends); ``ENABLED = False`` turns it off.

The ``cpus`` process is not told: its next tick is still queued, and when it fires the CPUs are already
up to date, so it does nothing but schedule the next, as after any scanner's catch-up. A CPU step the
kernel cannot take (one entering a new window of the dirty-rate meter, or whose writes might overflow
the meter's buffer) is taken by ``Cpus.advance_to`` between two calls.
"""
import math

import numpy as np
import simpy

from ..kernels.dtypes import (COPY_LOOP_DONE, COPY_LOOP_FIELDS, COPY_LOOP_PY_TICK, INDEX_DTYPE, QEMU_TURN_FIELDS,
                              QEMU_TURN_OVER, QEMU_TURN_PY_PIECE, QEMU_TURN_PY_TICK, XEN_BATCH_FIELDS)
from ..memory import Partner
from .interconnect import Interconnect

ENABLED = True
RUN_CAP = 1 << 16
_F = {name: i for i, name in enumerate(COPY_LOOP_FIELDS)}
_LINK = ("busy_until", "last_arrival", "bytes_sent", "pages_sent", "zero_pages_sent", "calls", "busy_cycles", "timeouts")
_CPUS = ("t_done", "running_cycles", "writes", "walks", "dirty_sets", "flush_refills")


def fusable(m):
    """Whether machine ``m``'s next copy pieces can run in ``copy_loop`` now (the CPUs running or stopped, as
    in a blackout: stopped CPUs' steps only move time)."""
    c = m.cpus
    return (ENABLED and c._fast is not None and c.throttle == 0 and c.dma is None
            and getattr(c, "pending", None) is not None and type(m.env) is simpy.Environment
            and type(m.link) is Interconnect and type(m.partner) is Partner and hasattr(m.kernels, "copy_loop"))


def horizon(env, pending):
    """The first cycle at which an event other than the CPUs' next tick (``pending``) is due."""
    h = math.inf
    for entry in env._queue:
        if entry[0] < h and entry[3] is not pending:
            h = entry[0]
    return (1 << 62) if h == math.inf else int(math.ceil(h))


class _Loop:
    """The arrays one machine's copy loop keeps between calls."""

    def __init__(self, m):
        c, link = m.cpus, m.link
        self.state = np.zeros(len(COPY_LOOP_FIELDS), dtype=INDEX_DTYPE)
        self.fstate = np.zeros(1)
        self.runs_s = np.empty(RUN_CAP, dtype=INDEX_DTYPE)
        self.runs_l = np.empty(RUN_CAP, dtype=INDEX_DTYPE)
        self.xstate = np.zeros(len(XEN_BATCH_FIELDS), dtype=INDEX_DTYPE)
        self.link_i = np.zeros(4, dtype=INDEX_DTYPE)
        self.link_f = np.zeros(4)
        wl = c._fast
        # the most writes one CPU step of at most a quantum can issue (rate_step: floor(run x rate + carry))
        self.frames_bound = c.ncpu * (int(float(m.quantum) * wl.rate_per_cycle) + 2)

    def read_link(self, m):
        """The link's stream format and timing as they stand (read at each copy's start)."""
        link = m.link
        zpb = -1 if link.zero_page_bytes is None else int(link.zero_page_bytes)
        self.link_i[:] = (m.memory.page_size, link.page_header_bytes, zpb, link.latency_cycles)
        self.link_f[:] = (link.bandwidth, link.per_copy, link.first_copy, link.clock)


def copy(m, starts=None, lens=None, bitmap=None):
    """Process step: copy runs ``[starts[i], starts[i] + lens[i])`` (each non-empty), or with ``bitmap``
    every maximal run of its set bits (test-and-clear, a link chunk at a time), as ``Interconnect.copy``
    and ``Machine.copy_bitmap_runs`` do; returns the all-zero pages copied. The caller checked ``fusable``."""
    loop = m.__dict__.get("_copy_loop")
    if loop is None:
        loop = m._copy_loop = _Loop(m)
    loop.read_link(m)
    st, k, link, c, env = loop.state, m.kernels, m.link, m.cpus, m.env
    st[:] = 0
    use_bitmap = bitmap is not None
    if use_bitmap:
        hi = m.memory.n_frames
    else:
        hi = 0
        bitmap = m.memory.bitmap
        nr = len(starts)
        loop.runs_s[:nr] = starts
        loop.runs_l[:nr] = lens
        st[_F["nruns"]] = nr
    zeros = 0
    chunk = link.chunk_pages
    checked = True  # the caller checked fusable(m); after a wait it is checked again
    while True:
        if not checked and not fusable(m):
            done, z = yield from _python_pieces(m, loop, bitmap, hi, use_bitmap)
            zeros += z
            if done:
                return zeros
            continue
        checked = False
        wl, mem, meter = c._fast, m.memory, c.meter
        st[_START] = (env.now, 1, 0, 0)
        _load_into(st, loop.fstate, link, c, _COUNTERS)
        frames = wl._buffer(loop.frames_bound)
        h = horizon(env, c.pending)
        _run_kernel(lambda mbuf, meter_on: k.copy_loop(
            st, loop.fstate, bitmap, hi, use_bitmap, loop.runs_s, loop.runs_l, loop.link_i, loop.link_f,
            m.partner.versions, h, meter._end if meter is not None else (1 << 62), m.quantum, chunk,
            *_cpu_args(c, wl, mem, frames, mbuf, meter_on)), st, loop.fstate, link, c, _CL_LAYOUT)
        zeros += int(st[_F["copy_zeros"]])
        st[_F["copy_zeros"]] = 0
        wake = int(st[_F["now"]])
        if st[_F["pieces"]]:
            yield env.timeout(wake - env.now)
        if st[_F["status"]] == COPY_LOOP_DONE:
            return zeros


_EMPTY = np.empty(0, dtype=INDEX_DTYPE)


_START = np.array([_F["now"], _F["admit"], _F["pieces"], _F["copy_zeros"]])
_LINK_AT = [(name, _F[name]) for name in _LINK]
_CPUS_AT = [(name, _F[name]) for name in _CPUS]
_COUNTERS = np.array([_F[name] for name in _LINK + _CPUS])
_CL_LAYOUT = (_F, _COUNTERS, _LINK_AT, _CPUS_AT, COPY_LOOP_PY_TICK)  # copy_loop's and xen_batches' state


def _run_kernel(call, st, fstate, link, c, layout):
    """``call(mbuf, meter_on)`` (copy_loop, qemu_turn or xen_batches; ``st`` its state, ``layout`` its field
    indices, counters' indices and CPU-step-for-Python status) with the meter's buffer, its counters written back to the link and the CPUs after each call;
    a CPU step the kernel leaves to Python (the meter's window or buffer) goes through Cpus.advance_to,
    then the kernel goes on. Returns at any other stop."""
    F, counters, link_at, cpus_at, py_tick = layout
    meter = c.meter
    while True:
        meter_on = meter is not None and meter._on
        mbuf = meter._buf if meter_on and meter._buf is not None else _EMPTY
        st[F["meter_fill"]] = meter._fill if meter_on else 0
        call(mbuf, meter_on)
        _store_from(st, fstate, link, c, link_at, cpus_at)
        if meter_on:
            meter._fill = int(st[F["meter_fill"]])
        if st[F["status"]] != py_tick:
            return
        c.advance_to(int(st[F["next_tick"]]))
        _load_into(st, fstate, link, c, counters)


def _cpu_args(c, wl, mem, frames, mbuf, meter_on):
    """The kernels' arguments of the CPU steps, from ``paced`` on."""
    return (c.paced, wl.rate_per_cycle, wl.carry, c.debt, c._avail, c._writes, wl.keys, wl.counters, wl.hot_span,
            wl.hot_threshold, wl.span, mem.user_base, mem.mult, mem.blocks, mem.block, frames, c._bounds, mem.pte,
            mem.versions, c.tlb_tag, c.tlb_flags, mem.pt_base, mem.ptes_per_pt, c._counts, c.walk_cycles,
            c.dirty_cycles, c._extra, mbuf, meter_on, c.stopped)


def _python_pieces(m, loop, bitmap, hi, use_bitmap):
    """Process step: one piece (or the extraction that ends the copy) the piece-by-piece way, for when
    the copy loop cannot run (another process stopped or throttled the CPUs). Returns (done, zeros)."""
    st, link = loop.state, m.link
    if st[_F["nruns"]] == 0:
        pos = int(st[_F["pos"]])
        if not use_bitmap or pos >= hi:
            return True, 0
        nr, _pages, nxt = m.kernels.bitmap_extract_runs(bitmap, pos, hi, link.chunk_pages, True, loop.runs_s,
                                                        loop.runs_l)
        st[_F["pos"]] = nxt
        if nr == 0:
            st[_F["pos"]] = hi
            return True, 0
        st[_F["nruns"]], st[_F["run_i"]], st[_F["run_off"]] = nr, 0, 0
    i, off, nr = int(st[_F["run_i"]]), int(st[_F["run_off"]]), int(st[_F["nruns"]])
    split = off > 0
    p_s, p_l, pages = [], [], 0
    while pages < link.chunk_pages and i < nr:
        take = min(int(loop.runs_l[i]) - off, link.chunk_pages - pages)
        p_s.append(int(loop.runs_s[i]) + off)
        p_l.append(take)
        pages += take
        off += take
        if off == loop.runs_l[i]:
            i, off = i + 1, 0
    st[_F["run_i"]], st[_F["run_off"]] = i, off
    if i >= nr:
        st[_F["nruns"]] = 0
    p_s = np.array(p_s, dtype=INDEX_DTYPE)
    p_l = np.array(p_l, dtype=INDEX_DTYPE)
    link.sync()
    first = link._first(p_s, p_l)
    zeros = link.partner.receive(link.kernels, link.memory, p_s, p_l)
    yield link._send(pages, zeros, len(p_s) - (1 if split else 0), None, first)
    return (st[_F["nruns"]] == 0 and not use_bitmap), zeros


_X = {name: i for i, name in enumerate(XEN_BATCH_FIELDS)}


def xen_batches(m, save, pos, peek):
    """Process step: ``Save.send_round``'s batches from PFN ``pos`` (policies/xen.py), many per ``xen_batches``
    kernel call: each batch's start (with ``peek`` the scanner's catch-up and the to_skip peek), its choice,
    the rate limiter's sleep (``save.limiter``, whose state is kept in step), its header on the link and its
    pieces, as the batch-by-batch path does them. Returns
    (pos, sent, skipped) when the round is over (pos = n) or, at a batch's start, when the loop cannot go on
    (``fusable`` turned false after a wait: the caller goes on batch by batch); a batch under way then is
    finished piece by piece. ``save.batches`` counts the batches done. The caller checked ``fusable``."""
    loop = m.__dict__.get("_copy_loop")
    if loop is None:
        loop = m._copy_loop = _Loop(m)
    st, xs, k, c, env = loop.state, loop.xstate, m.kernels, m.cpus, m.env
    st[:] = 0
    xs[:] = 0
    st[_F["pos"]] = pos
    n = m.memory.n_frames
    lim = save.limiter
    if lim is not None:
        xs[_X["slot"]] = lim.slot_cycles()
    sent = skipped = 0
    checked = True
    while True:
        if not checked and not fusable(m):
            if xs[_X["header_due"]]:  # the batch under way: its header (after the limiter's sleep), its pieces
                xs[_X["header_due"]] = 0
                yield from m.send_bytes(save.header_bytes)
            while st[_F["nruns"]]:
                yield from _python_pieces(m, loop, None, 0, False)
            if xs[_X["pending"]]:
                save.batches += 1
                sent += int(xs[_X["pending"]])
            return int(st[_F["pos"]]), sent, skipped
        checked = False
        loop.read_link(m)
        wl, mem, meter = c._fast, m.memory, c.meter
        st[_START] = (env.now, 1, 0, 0)
        xs[_X["waits"]] = 0
        _load_into(st, loop.fstate, m.link, c, _COUNTERS)
        if lim is not None:
            xs[_X["budget"]], xs[_X["last_put"]] = lim.budget, lim.last_put or 0
            xs[_X["has_put"]] = lim.last_put is not None
        frames = wl._buffer(loop.frames_bound)
        h = horizon(env, c.pending)
        _run_kernel(lambda mbuf, meter_on: k.xen_batches(
            st, loop.fstate, xs, save.to_send, save.to_skip, save.cand, save.skipped, save.batch, save.header_bytes,
            peek, loop.runs_s, loop.runs_l, loop.link_i, loop.link_f, m.partner.versions, h,
            meter._end if meter is not None else (1 << 62), m.quantum, m.link.chunk_pages,
            *_cpu_args(c, wl, mem, frames, mbuf, meter_on)), st, loop.fstate, m.link, c, _CL_LAYOUT)
        save.batches += int(xs[_X["batches"]])
        sent += int(xs[_X["sent"]])
        skipped += int(xs[_X["skipped"]])
        m.waits += int(xs[_X["limiter_waits"]])       # the limiter's sleeps are Machine.wait calls
        xs[_X["batches"]] = xs[_X["sent"]] = xs[_X["skipped"]] = xs[_X["limiter_waits"]] = 0
        if lim is not None:
            lim.budget = int(xs[_X["budget"]])
            lim.last_put = int(xs[_X["last_put"]]) if xs[_X["has_put"]] else None
        if xs[_X["waits"]]:
            yield env.timeout(int(st[_F["now"]]) - env.now)
        if st[_F["status"]] == COPY_LOOP_DONE:
            return n, sent, skipped


# -- QEMU's migration-thread turn (policies/qemu.py ``iterate``) in ``qemu_turn`` calls ----------------------

_T = {name: i for i, name in enumerate(QEMU_TURN_FIELDS)}
_T_COUNTERS = np.array([_T[name] for name in _LINK + _CPUS])
_T_LINK_AT = [(name, _T[name]) for name in _LINK]
_T_CPUS_AT = [(name, _T[name]) for name in _CPUS]
_T_LAYOUT = (_T, _T_COUNTERS, _T_LINK_AT, _T_CPUS_AT, QEMU_TURN_PY_TICK)


def qemu_fusable(m, mig):
    """Whether the pre-copy turn of QEMU's migration thread ``mig`` (policies/qemu.py ``Migration``) on
    machine ``m`` can run in ``qemu_turn`` now: the copy loop's conditions, before XBZRLE's first wrap,
    outside post-copy."""
    return (fusable(m) and hasattr(m.kernels, "qemu_turn") and not mig.in_postcopy
            and (mig.xbzrle is None or not mig.xbzrle.started) and mig.n == m.memory.n_frames
            and mig.bitmap.shape == m.memory.bitmap.shape)


class _Turn(_Loop):
    """The arrays one machine's ``qemu_turn`` calls keep between calls."""

    def __init__(self, m):  # not _Loop's: the copy loop's run buffers are not needed here
        c = m.cpus
        self.state = np.zeros(len(QEMU_TURN_FIELDS), dtype=INDEX_DTYPE)
        self.fstate = np.zeros(1)
        self.cap = len(m._run_starts)  # Machine.take_pages's buffer: a take stops at this many runs
        self.runs_s = np.empty(2 * self.cap, dtype=INDEX_DTYPE)
        self.runs_l = np.empty(2 * self.cap, dtype=INDEX_DTYPE)
        self.link_i = np.zeros(4, dtype=INDEX_DTYPE)
        self.link_f = np.zeros(4)
        self.frames_bound = c.ncpu * (int(float(m.quantum) * c._fast.rate_per_cycle) + 2)


def qemu_iterate(m, mig, t0, per_page, max_wait):
    """Process step: ram_save_iterate's turn (policies/qemu.py ``iterate``, which checked ``qemu_fusable``)
    from now, begun at cycle ``t0``, in ``qemu_turn`` calls: the pieces and the CPU steps between them run
    in the kernel until the turn is over or the next piece would start at or after another process's
    next event (then the thread waits for its last piece and goes on). Reads and updates ``mig.cursor``,
    ``mig.remaining`` and ``mig.xbzrle.started``. Returns True when the turn is over; False when the rest
    of it must go piece by piece from now (the CPUs were stopped or throttled meanwhile, or XBZRLE started
    with the piece just sent)."""
    turn = m.__dict__.get("_qemu_turn")
    if turn is None:
        turn = m._qemu_turn = _Turn(m)
    turn.read_link(m)
    st, k, link, c, env = turn.state, m.kernels, m.link, m.cpus, m.env
    st[:] = 0
    st[_T["cursor"]], st[_T["remaining"]] = mig.cursor, mig.remaining
    quota, window = int(mig.quota()), int(mig.window_bytes)
    chunk = link.chunk_pages
    checked = True  # the caller checked qemu_fusable; after a wait it is checked again
    while True:
        if not checked and not qemu_fusable(m, mig):
            return False
        checked = False
        wl, mem, meter = c._fast, m.memory, c.meter
        st[_T["now"]], st[_T["admit"]], st[_T["pieces"]] = env.now, 1, 0
        _load_into(st, turn.fstate, link, c, _T_COUNTERS)
        frames = wl._buffer(turn.frames_bound)
        h = horizon(env, c.pending)
        _run_kernel(lambda mbuf, meter_on: k.qemu_turn(
            st, turn.fstate, mig.bitmap, mig.n, turn.cap, turn.runs_s, turn.runs_l, turn.link_i, turn.link_f,
            m.partner.versions, h, meter._end if meter is not None else (1 << 62), m.quantum, chunk, t0, max_wait,
            window, quota, per_page, mig.xbzrle is not None, *_cpu_args(c, wl, mem, frames, mbuf, meter_on)),
            st, turn.fstate, link, c, _T_LAYOUT)
        mig.cursor, mig.remaining = int(st[_T["cursor"]]), int(st[_T["remaining"]])
        if st[_T["wrapped"]] and mig.xbzrle is not None:
            mig.xbzrle.started = True  # Migration.next_pages: the first wrap starts XBZRLE
        status, wake = int(st[_T["status"]]), int(st[_T["now"]])
        if status == QEMU_TURN_PY_PIECE:  # the wrap's piece goes through XBZRLE: Migration.send at its time
            nr = int(st[_T["nruns"]])
            starts, lens = turn.runs_s[:nr].copy(), turn.runs_l[:nr].copy()
            if wake > env.now:
                yield env.timeout(wake - env.now)
            yield from mig.send(starts, lens)
            return False
        if st[_T["pieces"]]:
            yield env.timeout(wake - env.now)
        if status == QEMU_TURN_OVER:
            return True


def _load_into(st, fstate, link, c, at):
    """Copy the link's and the CPUs' counters into a kernel's state (field indices ``at``)."""
    st[at] = [getattr(link, name) for name in _LINK] + [getattr(c, name) for name in _CPUS]
    fstate[0] = c.tracking_cycles


def _store_from(st, fstate, link, c, link_at, cpus_at):
    """Write a kernel's counters back to the link and the CPUs."""
    v = st.tolist()
    for name, i in link_at:
        setattr(link, name, v[i])
    for name, i in cpus_at:
        setattr(c, name, v[i])
    c.tracking_cycles = float(fstate[0])
