"""Xen pre-copy live migration: ``xen-legacy`` (libxc xc_domain_save.c) and ``xen-v2`` (xc_sr_save.c).

Sources (read from the xen-project/xen history):
- legacy: tools/libxc/xc_domain_save.c, xc_domain_save() (Xen 3.x-4.5) and its ancestor
  xc_linux_save.c (Xen 2.0, Oct 2004 - Nov 2005, the code Clark et al. NSDI 2005 measured);
- v2: tools/libxc/xc_sr_save.c send_memory_live() / suspend_and_send_dirty() with the default
  simple_precopy_policy() (Xen 4.10+; tools/libs/guest/xg_sr_save.c since 4.14);
- hypervisor: xen/arch/x86/mm/paging.c paging_log_dirty_op(), which pauses the domain
  (domain_pause) around every CLEAN and PEEK and, for a CLEAN, resets the log-dirty bitmap and
  write-protects the guest again (clean_dirty_bitmap: shadow blow / p2m type change + TLB flush).

xen-legacy, round by round (xc_domain_save):
- log-dirty mode is enabled (every page write-protected, nothing dirty), ``to_send`` = every page;
- a round scans PFNs in increasing order (Xen >= 3.3; up to 3.2 ``permute()`` visited them in a
  pseudo-random 10-bit-rotated order to estimate the dirty rate better - not modelled). Before each
  batch of up to ``batch`` pages the log-dirty bitmap is PEEKed (read, not cleared) into ``to_skip``;
  a page in both ``to_send`` and ``to_skip`` was re-dirtied this round and is skipped: it is still
  marked in the log-dirty bitmap, so the next CLEAN returns it. The last round peeks nothing;
- after a live round: stop if (rate limiter on and at its maximum and this round sent more than the
  last), iter >= max_iters, sent + skipped < min_pages, or total sent > max_factor x memory pages;
  then (stopping: suspend the domain first) CLEAN -> the next ``to_send``, and print_stats() adapts the
  rate limit;
- the last round sends ``to_send`` (which holds the pages skipped in the last live round: the peek
  never clears them) with the domain suspended, then the tail (vcpu contexts, shared info, p2m frame
  list, the unmapped-PFN list), and the destination takes over.
The adaptive rate limiter (ratewrite() and print_stats() of the Xen 2.0-era code; ``#ifdef
ADAPTIVE_SAVE``, never defined, in 3.0-4.1; deleted in 4.2) is ``xen.rate_limit``, off by default as in
every released Xen 3.x/4.x. The "rate at max and sends grew" stop (RATE_IS_MAX()) was dead code
wherever the limiter was compiled out, so it is only evaluated when the limiter is on.

xen-v2 (send_memory_live with simple_precopy_policy): round 1 sends every page; then CLEAN and send
the dirty pages while fewer than ``v2_max_iterations`` rounds are done and the last CLEAN found at
least ``v2_threshold`` pages (4.10+: stop when < 50; 4.6 stopped when <= 50). A CLEAN that finds
fewer pages still has them sent live before the stop. No to_skip peek, no rate limiter, no 3x cap.

Wire format (both): 8 bytes per PFN entry plus the page (``link_options``); per batch a 4-byte count
(legacy) or a 16-byte PAGE_DATA record header (v2).

Mapping onto the machine: log-dirty ENABLE and every CLEAN pause the domain (paging_log_dirty_op:
domain_pause), harvest-and-clear every tracking entry and flush the TLBs - a brownout of the harvest's
cost. PEEKs read the dirty bits without clearing and take no time (the hypercall copies
p2m_size / 8 bytes of bitmap: microseconds; its domain pause is not modelled). The tracking entries
(shadow / EPT) and the log-dirty bitmap are hypervisor memory, not guest memory: outside the oracle.
"""
import numpy as np

from ..bounds import MAX_BANDWIDTH, MAX_BYTES, MAX_FRAMES, MAX_LATENCY, MAX_ROUNDS
from ..schema import BANDWIDTH, BOOL, DURATION, FRACTION, INT, SIZE, ConfigError, Field, Section
from ..sim import fused
from .base import PagePolicy, register
from .steady import Sample, SteadyState

LEGACY = "xen-legacy"
V2 = "xen-v2"

PFN_BYTES = 8                  # pfn_type[] entry (legacy, unsigned long) / pfn[] entry (v2, u64)
LEGACY_BATCH_HEADER = 4        # bytes: `int batch` before each batch's pfn_type[] (xc_domain_save)
V2_BATCH_HEADER = 16           # bytes: xc_sr_rhdr {type, length} + page_data_header {count, _res1}
RATE_TO_BTU = 781250           # us x Mbit/s: one burst slot lasts RATE_TO_BTU / mbit_rate us
BURST_BUDGET = 100 * 1024      # bytes granted per burst slot (ratewrite)
RATE_STEP_MBIT = 50            # print_stats: new limit = dirty rate + 50 Mbit/s
# libxl waits 60 s for the guest to suspend (tools/libs/light/libxl_dom_suspend.c: guest_timeout,
# libxl__ev_time_register_rel(..., 60*1000)), then fails the save with ERROR_GUEST_TIMEDOUT; xl migrate
# then ends "Migration failed, failed to suspend at sender." without resuming (the guest never stopped)
SUSPEND_TIMEOUT_S = 60.0

SECTION = Section("Xen pre-copy live migration (libxc xc_domain_save.c legacy, xc_sr_save.c v2).", dict(
    max_iters=Field(INT, 29, "legacy DEF_MAX_ITERS: live rounds (pages) after which the next round is the "
                             "stop-and-copy.", ge=1, le=MAX_ROUNDS),
    max_factor=Field(INT, 3, "legacy DEF_MAX_FACTOR: stop once more than this many times memory (in pages) "
                             "has been sent.", ge=1, le=MAX_ROUNDS),
    min_pages=Field(INT, 50, "legacy: stop when a live round sent plus skipped fewer than this many pages.",
                    ge=0, le=MAX_FRAMES),
    batch=Field(INT, 1024, "MAX_BATCH_SIZE: pages per batch (one to_skip peek and one batch header each).",
                ge=1, le=MAX_FRAMES),
    rate_limit=Field(BOOL, False, "legacy: the Xen 2.0-era adaptive rate limiter (ADAPTIVE_SAVE; off in "
                                  "released 3.x/4.x) and its rate-at-max stop."),
    start_rate=Field(BANDWIDTH, "100Mbit/s", "legacy START_MBIT_RATE: first round's rate limit (whole Mbit/s).",
                     gt=0, le=MAX_BANDWIDTH),
    max_rate=Field(BANDWIDTH, "500Mbit/s", "legacy MAX_MBIT_RATE: ceiling of the rate limit (whole Mbit/s).",
                   gt=0, le=MAX_BANDWIDTH),
    sender_cpu=Field(DURATION, "0us", "legacy with rate_limit: CPU time the sending daemon spends per MiB it "
                                      "sends, on a CPU it shares with the guest (Clark et al. 2005, 6.2: 12% CPU "
                                      "at 100 Mbit/s). Its writes wait for that CPU at sender_cpu_share. 0: free.",
                     ge=0, le=MAX_LATENCY),
    sender_cpu_share=Field(FRACTION, 1.0, "legacy with sender_cpu: the share of the shared CPU the daemon gets "
                                          "while the guest runs (the guest suspended, it gets all of it).", gt=0,
                           le=1),
    tail=Field(SIZE, "256KiB", "Bytes sent after the last page batch, domain suspended: vcpu contexts, shared "
                               "info, p2m frame list, unmapped-PFN list.", ge=0, le=MAX_BYTES),
    v2_max_iterations=Field(INT, 5, "v2 SPP_MAX_ITERATIONS: live rounds (the full one included) before the "
                                    "stop-and-copy.", ge=1, le=MAX_ROUNDS),
    v2_threshold=Field(INT, 50, "v2 SPP_TARGET_DIRTY_COUNT: stop when a CLEAN finds fewer dirty pages than "
                                "this.", ge=0, le=MAX_FRAMES),
))


def _mbit(bandwidth):
    """A bandwidth in bytes/s as libxc's whole Mbit/s (10^6 bit/s)."""
    return int(round(bandwidth * 8 / 1e6))


def check_rates(v, raw):
    """Cross-field check: libxc's rate limits are whole Mbit/s, the ceiling above the start."""
    for key in ("xen.start_rate", "xen.max_rate"):
        if _mbit(v[key]) < 1:
            raise ConfigError(key, f"must be at least 1Mbit/s (libxc counts whole Mbit/s), got '{raw[key]}'")
    if v["xen.sender_cpu"] > 0 and not v["xen.rate_limit"]:
        raise ConfigError("xen.sender_cpu", f"{raw['xen.sender_cpu']} is read at the rate limiter: it needs "
                                            "xen.rate_limit: true")
    if _mbit(v["xen.max_rate"]) < _mbit(v["xen.start_rate"]):
        raise ConfigError("xen.max_rate", f"must be >= xen.start_rate ({raw['xen.start_rate']}), "
                                          f"got '{raw['xen.max_rate']}'")


class _Xen(PagePolicy):
    """What both generations of the libxc save share."""
    # CLEAN without the TLB flush loses writes through cached dirty entries; copy-before-clear is not modelled
    variants = ("correct", "no-tlb-flush")
    sections = {"xen": SECTION}
    checks = (check_rates,)

    def tracking_outside(self, cfg):
        """Xen tracks writes in its shadow page tables (or EPT) and its log-dirty bitmap: hypervisor
        memory."""
        return True

    def link_options(self, cfg):
        """A migration stream: every page goes with its 8-byte PFN entry; zero pages are sent whole."""
        return {"page_header_bytes": PFN_BYTES}

    def time_scales(self, cfg):
        """A batch's time on the link: the batches' peeks decide what each round skips."""
        per_page = cfg.memory.page_size + PFN_BYTES
        return [("a xen batch's time", cfg.xen.batch * per_page / (cfg.link.bandwidth * cfg.link.efficiency))]


@register
class XenLegacy(_Xen):
    """xc_domain_save(): rounds with the to_skip peek, the legacy stop rules, the optional rate limiter."""
    name = LEGACY

    def scanner(self, machine):
        return save_legacy(machine)


@register
class XenV2(_Xen):
    """send_memory_live() with simple_precopy_policy()."""
    name = V2

    def scanner(self, machine):
        return save_v2(machine)


class RateLimiter:
    """The Xen 2.0-era adaptive rate limit: ratewrite()'s token bucket and print_stats()'s update.

    A slot of RATE_TO_BTU / mbit_rate us (integer) grants BURST_BUDGET bytes: 102400 B per 781250/R us
    is R x 2^20 bit/s. Every slot elapsed since the last grant is granted when a write overdraws the
    budget; otherwise the writer sleeps to the end of the next slot. The limit starts at
    ``start_mbit`` and only ever rises: after each round to the round's dirty rate + 50 Mbit/s when
    that rate exceeds it, capped at ``max_mbit``.
    """

    def __init__(self, e, start_mbit, max_mbit, cpu_per_mib=0.0, cpu_share=1.0):
        self.e = e
        self.mbit_rate = int(start_mbit)
        self.max_mbit = int(max_mbit)
        self.budget = 0
        self.last_put = None
        self.cpu_per_byte = cpu_per_mib / 2 ** 20  # s of the shared CPU per byte sent (xen.sender_cpu)
        self.cpu_share = cpu_share
        self.cpu_free_at = 0                    # cycles: when the daemon's CPU work so far is done
        self.cpu_from = None                    # cycles: the last write's release in this round (or None)
        self.guest_running = True               # false once the domain is suspended for the last round
        self.history = [self.mbit_rate]
        self.dirty_history = []

    @property
    def at_max(self):
        """RATE_IS_MAX(): the limit has reached MAX_MBIT_RATE."""
        return self.mbit_rate == self.max_mbit

    def write(self, nbytes):
        """Process step: ratewrite(nbytes) - wait until the bucket allows ``nbytes`` more. With
        ``xen.sender_cpu`` the daemon first does its CPU work for them, ``nbytes x sender_cpu`` of CPU at
        ``sender_cpu_share`` of the shared CPU (all of it while the guest is suspended), after the work
        for the bytes before, from the last write's release (it overlaps that batch's time on the link;
        the first write of a round starts it now), then the bucket: a sender slower than its limit falls
        behind it."""
        e = self.e
        if self.cpu_per_byte > 0:
            share = self.cpu_share if self.guest_running else 1.0
            start = e.now if self.cpu_from is None else max(self.cpu_free_at, self.cpu_from)
            self.cpu_free_at = start + e.cycles(int(nbytes) * self.cpu_per_byte / share)
            if self.cpu_free_at > e.now:
                yield e.wait(self.cpu_free_at - e.now)
        yield from self._bucket(nbytes)
        self.cpu_from = e.now

    def _bucket(self, nbytes):
        """Process step: ratewrite's token bucket."""
        e = self.e
        self.budget -= int(nbytes)
        if self.budget >= 0:
            return
        now = e.now
        if self.last_put is None:  # the first overdraw only starts the clock
            self.budget += BURST_BUDGET
            self.last_put = now
            return
        slot = self.slot_cycles()
        elapsed = (now - self.last_put) // slot
        self.budget += elapsed * BURST_BUDGET
        self.last_put += elapsed * slot
        if self.budget > 0:
            return
        more = (-self.budget) // BURST_BUDGET + 1  # nanosleep to each slot end until the budget is > 0
        self.budget += more * BURST_BUDGET
        self.last_put += more * slot
        yield e.wait(self.last_put - now)

    def slot_cycles(self):
        """The burst slot at the current limit, in cycles."""
        return max(1, self.e.cycles((RATE_TO_BTU // self.mbit_rate) * 1e-6))

    def update(self, dirty_count, wall_cycles):
        """print_stats(): dirty_Mbps from the CLEAN's dirty count over the ms since the last call."""
        e = self.e
        wall_ms = max(1, int(e.seconds(wall_cycles) * 1000))
        dirty_mbps = (int(dirty_count) * e.memory.page_size) // (wall_ms * (1000 // 8))
        self.dirty_history.append(dirty_mbps)
        self.cpu_from = None  # a CLEAN came between: the next round's first batch starts its CPU work then
        if dirty_mbps > self.mbit_rate:
            self.mbit_rate = min(dirty_mbps + RATE_STEP_MBIT, self.max_mbit)
        self.history.append(self.mbit_rate)


class Save:
    """The bitmaps and counters of one save: to_send, the to_skip peek and scratch words."""

    def __init__(self, e, header_bytes, limiter=None):
        self.e = e
        m = e.memory
        self.n = m.n_frames
        self.batch = int(e.cfg.xen.batch)
        self.header_bytes = header_bytes
        self.limiter = limiter
        self.to_send = e.new_bitmap()
        self.to_skip = e.new_bitmap()
        self.cand = e.new_bitmap()      # to_send & ~to_skip
        self.skipped = e.new_bitmap()   # to_send & to_skip
        self.scratch = e.new_bitmap()
        self.clean_count = 0
        self.batches = 0
        self.skipped_total = 0

    # -- log-dirty operations (paging_log_dirty_op) --------------------------------------------
    def log_dirty(self, bitmap, live):
        """Process step: ENABLE or CLEAN. The domain is paused (or already suspended); every tracking
        entry is read and cleared into ``bitmap`` (zeroed first) and the TLBs flushed, so the next write
        to any page faults again. Returns the Harvest; a live one is accounted as a brownout."""
        e = self.e
        if live:
            e.pause()
        bitmap.fill(0)
        h = e.sync(bitmap)
        yield e.wait(h.cycles)
        if live:
            e.end_brownout(h)
        return h

    def clean(self, live):
        """Process step: XEN_DOMCTL_SHADOW_OP_CLEAN into to_send; returns its dirty count."""
        h = yield from self.log_dirty(self.to_send, live)
        self.clean_count += 1
        return h, h.new_bits

    def peek(self, lo_word, hi_word):
        """XEN_DOMCTL_SHADOW_OP_PEEK of words [lo_word, hi_word) into to_skip (no clear, no time);
        ``cand`` and ``skipped`` are recomputed there."""
        self.to_skip[lo_word:hi_word] = 0
        self.e.peek(self.to_skip, lo_word * 64, min(self.n, hi_word * 64))
        ts, tk = self.to_send[lo_word:hi_word], self.to_skip[lo_word:hi_word]
        np.bitwise_and(ts, ~tk, out=self.cand[lo_word:hi_word])
        np.bitwise_and(ts, tk, out=self.skipped[lo_word:hi_word])

    # -- batches --------------------------------------------------------------------------------
    def next_batch(self, pos, peek):
        """(starts, lens, next_pos, skipped): the next batch of at most ``batch`` pages from PFN
        ``pos`` - the pages of to_send (not in a fresh to_skip peek when ``peek``) in increasing PFN
        order - and how many to_send pages it passed over as re-dirtied."""
        e, n, batch = self.e, self.n, self.batch
        if not peek:
            starts, lens, nxt = e.take_pages(self.to_send, pos, n, batch, clear=False)
            skipped = 0
        else:
            # One peek at this instant; its window grows until it holds a whole batch (xc_domain_save
            # peeks the whole bitmap: only the part the batch scans matters).
            e.catch_up()
            lo_w = pos // 64
            hi_w = lo_w
            width = max(1, -(-2 * batch // 64))
            n_words = len(self.to_send)
            while True:
                new_hi = min(n_words, hi_w + width)
                self.peek(hi_w, new_hi)
                hi_w = new_hi
                starts, lens, nxt = e.take_pages(self.cand, pos, min(n, hi_w * 64), batch, clear=False)
                if int(lens.sum()) >= batch or hi_w == n_words:
                    break
                width *= 2
        if peek:
            skipped = e.kernels.bitmap_popcount(self.skipped, pos, nxt)
        return starts, lens, nxt, skipped

    def send_round(self, peek):
        """Process step: one round over to_send in batches; returns (pages sent, pages skipped)."""
        e = self.e
        pos = sent = skipped = 0
        while pos < self.n:
            if fused.fusable(e) and not (self.limiter is not None and self.limiter.cpu_per_byte):
                # many batches per kernel call, as below (sim/fused.py); the sending daemon's CPU work
                # (xen.sender_cpu) lives in RateLimiter.write, which the kernel does not run
                pos, k, skip = yield from fused.xen_batches(e, self, pos, peek)
                sent += k
                skipped += skip
                continue
            starts, lens, pos, skip = self.next_batch(pos, peek)
            skipped += skip
            k = int(lens.sum())
            if k == 0:
                continue
            if self.limiter is not None:
                yield from self.limiter.write(k * e.memory.page_size)
            yield from e.send_bytes(self.header_bytes)
            yield from e.copy(starts, lens)
            self.batches += 1
            sent += k
        self.skipped_total += skipped
        return sent, skipped


def _legacy_stop(x, limiter, it, sent, skipped, sent_last, total_sent, n):
    """The stop test after a live round, in xc_domain_save's order; the rule's name or None."""
    if limiter is not None and sent > sent_last and limiter.at_max:
        return "rate-max-and-growing"
    if it >= x.max_iters:
        return "max-iters"
    if sent + skipped < x.min_pages:
        return "min-pages"
    if total_sent > n * x.max_factor:
        return "max-factor"
    return None


def save_legacy(e):
    """Process step: xc_domain_save()'s live loop, last round and tail."""
    x = e.cfg.xen
    n = e.memory.n_frames
    limiter = RateLimiter(e, _mbit(x.start_rate), _mbit(x.max_rate), x.sender_cpu, x.sender_cpu_share) \
        if x.rate_limit else None
    st = Save(e, LEGACY_BATCH_HEADER, limiter)

    rec = e.open_pass("full")
    h = yield from st.log_dirty(st.scratch, live=True)  # XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY
    brown, dirty_in = h.cycles, n
    e.kernels.bitmap_set_range(st.to_send, 0, n)        # memset(to_send, 0xff): round 1 sends everything
    t_stats = e.now                                  # print_stats(..., 0) starts its wall clock
    it, last_iter, sent_last, total_sent = 0, False, n, 0
    sent_hist, skip_hist = [], []
    reason, t_stop = None, None
    steady = SteadyState(min_span_s=0.0) if e.cfg.sim.early_stop else None  # rounds, not seconds
    while True:
        it += 1
        t_round = e.now
        sent, skipped = yield from st.send_round(peek=not last_iter)
        total_sent += sent
        sent_hist.append(sent)
        skip_hist.append(skipped)
        if last_iter:
            break
        e.close_pass(rec, dirty_in, brown)
        reason = _legacy_stop(x, limiter, it, sent, skipped, sent_last, total_sent, n)
        if steady is not None and not e.workload_settled():  # the window starts over once it is
            steady.samples.clear()
        elif reason is None and steady is not None and it > 1 and e.now > t_round:
            ps = e.memory.page_size
            steady.add(Sample(e.seconds(e.now), (sent + skipped) * ps, sent * ps / e.seconds(e.now - t_round),
                              (sent + skipped) / max(1, x.min_pages), e.pass_count, st.clean_count, e.bytes_sent,
                              e.pages_sent))
            # the rate limiter's own stop turns on a round sending more than the last: a coin toss
            if steady.steady() and limiter is None:
                projected = _legacy_projection(e, x, steady, it, total_sent, sent_hist, skip_hist)
                extra = dict(rounds=len(sent_hist), skipped_pages=st.skipped_total, skipped_per_round=skip_hist,
                             sent_per_round=sent_hist, xen_total_sent=total_sent, dirty_sync_count=st.clean_count,
                             batches=st.batches, expected_downtime_s=projected["downtime_s"], projected=projected)
                e.finish(False, "steady-state", None, **extra)
                return
        if reason:
            last_iter = True
            rec = e.open_pass("blackout")
            t_stop = e.now
            if not (yield from suspend_wait(e)):
                return
            e.pause()                                # suspend_and_state(): downtime starts
            if limiter is not None:
                limiter.guest_running = False        # the daemon has the CPU to itself (xen.sender_cpu)
            h, dirty_in = yield from st.clean(live=False)
            brown = 0
        else:
            rec = e.open_pass("pass")
            h, dirty_in = yield from st.clean(live=True)
            brown = h.cycles
        sent_last = sent
        if limiter is not None:
            limiter.update(dirty_in, e.now - t_stats)
            t_stats = e.now
    yield from _tail(e, x)
    e.close_pass(rec, dirty_in, 0)
    extra = dict(rounds=len(sent_hist), skipped_pages=st.skipped_total, skipped_per_round=skip_hist,
                 sent_per_round=sent_hist, xen_total_sent=total_sent, dirty_sync_count=st.clean_count,
                 batches=st.batches)
    if limiter is not None:
        extra.update(rate_history_mbit=limiter.history, dirty_rate_history_mbit=limiter.dirty_history)
    e.finish(reason == "min-pages", reason, t_stop, **extra)


def _legacy_projection(e, x, steady, it, total_sent, sent_hist, skip_hist):
    """Where a steady xen-legacy save would end: the rounds left until max-iters or max-factor at the
    steady round's pages and length, then the last round sending a round's dirty set (sent plus
    skipped: the peek never clears the skipped pages) at the live rounds' rate, and the tail."""
    w = steady.samples[1:]
    k = len(w)
    n = e.memory.n_frames
    per_round = sum(sent_hist[-k:]) / k
    dirty = sum(s + sk for s, sk in zip(sent_hist[-k:], skip_hist[-k:])) / k
    gap = (w[-1].t_s - steady.samples[0].t_s) / k
    rate = sum(s.rate for s in w) / k                       # page bytes per second of a live round
    left_iters = x.max_iters - it
    left_factor = max(1, int((n * x.max_factor - total_sent) // per_round) + 1) if per_round > 0 else left_iters
    left, reason = (left_iters, "max-iters") if left_iters <= left_factor else (left_factor, "max-factor")
    ps = e.memory.page_size
    downtime = (dirty * ps + x.tail) / rate
    p = steady.project(steady.samples[-1].t_s + left * gap)
    last_bytes = dirty * (ps + PFN_BYTES) + x.tail
    return {"stop_reason": reason, "stopped_at_s": e.seconds(e.now), "rounds": it + left + 1,
            "total_time_s": e.seconds(e.now) + left * gap + downtime, "downtime_s": downtime,
            "passes": p["passes"] + 1, "dirty_sync_count": p["dirty_sync_count"] + 1,
            "bytes_sent": int(p["bytes_sent"] + last_bytes), "pages_sent": int(round(p["pages_sent"] + dirty))}


def save_v2(e):
    """Process step: send_memory_live() with simple_precopy_policy(), then suspend_and_send_dirty()."""
    x = e.cfg.xen
    n = e.memory.n_frames
    st = Save(e, V2_BATCH_HEADER)

    rec = e.open_pass("full")
    h = yield from st.log_dirty(st.scratch, live=True)  # enable log-dirty
    brown = h.cycles
    e.kernels.bitmap_set_range(st.to_send, 0, n)
    iteration, dirty_count, x_ = 0, n, 0
    sent_hist = []
    while True:
        # simple_precopy_policy(): fewer than v2_threshold dirty, or v2_max_iterations rounds done
        stop = 0 <= dirty_count < x.v2_threshold or iteration >= x.v2_max_iterations
        x_ += 1
        sent = 0
        if dirty_count > 0:  # sent even when the policy just said STOP_AND_COPY
            sent, _ = yield from st.send_round(peek=False)
        sent_hist.append(sent)
        e.close_pass(rec, dirty_count, brown)
        if stop:
            reason = "v2-threshold"
            break
        iteration = x_
        if iteration >= x.v2_max_iterations:  # the policy asked again before the CLEAN
            reason = "v2-max-iterations"
            break
        rec = e.open_pass("pass")
        h, dirty_count = yield from st.clean(live=True)
        brown = h.cycles
    rec = e.open_pass("blackout")
    t_stop = e.now
    if not (yield from suspend_wait(e)):
        return
    e.pause()                                        # suspend_domain(): downtime starts
    _h, dirty_final = yield from st.clean(live=False)
    sent, _ = yield from st.send_round(peek=False)
    sent_hist.append(sent)
    yield from _tail(e, x)
    e.close_pass(rec, dirty_final, 0)
    e.finish(reason == "v2-threshold", reason, t_stop, rounds=len(sent_hist), skipped_pages=0,
             sent_per_round=sent_hist, dirty_sync_count=st.clean_count, batches=st.batches)


def suspend_wait(e):
    """Process step: the suspend request, before the domain stops. A guest that cannot suspend in time
    (a ``pause`` fault, sim/faults.py) runs until it does, its downtime counted from the request;
    after SUSPEND_TIMEOUT_S libxl gives up and the migration fails, the guest running on at the source
    (``stop_failed``). Returns whether the domain suspends."""
    late = e.pause_hold() if e.pause_hold is not None else 0.0
    if late >= SUSPEND_TIMEOUT_S:
        yield e.wait(e.cycles(SUSPEND_TIMEOUT_S))
        yield e.stop_failed(f"guest did not suspend, timed out after {SUSPEND_TIMEOUT_S:g} s")
        return False
    if late > 0:
        yield e.wait(e.cycles(late))
    return True


def _tail(e, x):
    """Process step: the records after the last page batch, then wait until they have arrived."""
    yield from e.send_bytes(x.tail)
    yield from e.drain()
