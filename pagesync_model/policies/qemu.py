"""QEMU/KVM pre-copy live migration, as QEMU 10.0's migration thread does it: ``qemu``.

Sources (QEMU 10.0.2, migration/): migration.c (migration_thread, migration_iteration_run,
migration_update_counters, migration_rate_limit, migration_completion), ram.c (ram_save_setup,
ram_state_pending_estimate/exact, ram_save_iterate, migration_bitmap_sync,
migration_trigger_throttle, save_zero_page, save_xbzrle_page), cpu-throttle.c, page_cache.c.

The thread, modelled turn by turn:
- setup: every page starts dirty in the migration bitmap; bitmap sync #1 (finds nothing new).
- each loop turn: every 100 ms (BUFFER_DELAY) the period's bandwidth is measured,
  ``threshold = bandwidth x downtime-limit``, ``expected-downtime = dirty bytes at the last sync /
  bandwidth``, and the rate-limit window restarts. If the window's quota (max-bandwidth / 10) is not
  used up: pending = pages left in the migration bitmap; if pending < threshold, sync the bitmap
  (the "exact" pending, the source of almost every iteration sync); if pending == 0 or < threshold,
  complete; otherwise send pages from where the scan left off (wrapping around RAM) until the quota
  is used, 50 ms passed (MAX_WAIT) or the bitmap is empty. A used-up quota sleeps to the window end.
- a sync fetches-and-clears the dirty log into the migration bitmap (new bits only count once),
  flushes the TLBs (KVM's remote flush; TCG's tlb_reset_dirty), and closes a >= 1 s period:
  auto-converge's trigger (dirtied bytes > 50% of transferred bytes, every second such period
  throttles: 20%, then +10% up to 99%), and dirty-pages-rate.
- completion: the VM stops (downtime starts), a last sync, every remaining page and the device
  state go out without rate limit, the destination takes over.
Zero pages are detected and sent as an 8-byte header plus one byte ("duplicate"); normal pages as
the header plus 4096 bytes. XBZRLE (optional) keeps a direct-mapped cache of sent pages and sends a
delta for a re-sent page found in it, after the first full round.
A throttled vCPU runs (1 - pct) of each 10 ms slice: the CPUs' run fraction is 1 - pct.
"""
import numpy as np

from ..kernels.dtypes import INDEX_DTYPE
from ..bounds import MAX_BANDWIDTH, MAX_BYTES, MAX_DOWNTIME, MAX_LATENCY, MAX_SIM_TIME, MAX_STEP
from ..schema import BANDWIDTH, BOOL, CHOICE, DURATION, FRACTION, INT, SIZE, ConfigError, Field, Section
from ..memory import run_frames
from ..sim import fused
from .base import PagePolicy, register
from .operators import SECTION as OPERATOR_SECTION, Monitor, operator_runs_over_qemu
from .operators import time_scales as operator_time_scales
from .steady import Sample, SteadyState
BUFFER_DELAY = 0.1     # s: the counters' and the rate limit's period (migration.h)
MAX_WAIT = 0.05        # s: one ram_save_iterate call works at most this long (ram.c)
THROTTLE_PERIOD = 1.0  # s: a sync closes a dirty-rate period only after this long (ram.c)
THROTTLE_SLICE = 0.010  # s: CPU_THROTTLE_TIMESLICE_NS, a throttled vCPU's run between sleeps (cpu-throttle.c)
FORCED_SYNC = 5.0      # s: auto-converge's responsive-throttle timer (cpu-throttle.c, QEMU >= 9.2)
PAGE_HEADER = 8        # bytes: offset | flags (save_page_header)
ZERO_PAGE_BODY = 1     # byte: the fill value after a zero page's header
XBZRLE_HEADER = 3      # bytes: encoding flag + 16-bit length after the page header
FLUSH_BYTES = 32 * (PAGE_HEADER + 4096)  # the byte counter moves only when the stream flushes its 64 iovecs
                       # (32 pages): a window carries (floor(quota / FLUSH_BYTES) + 1) flushes; measured here
                       # 273.16, 546.33 and 1082.14 Mbit/s at 32, 64 and 128 MiB/s, as this predicts

SECTION = Section("QEMU/KVM pre-copy migration (QEMU 10.0 migration thread).", dict(
    rules=Field(CHOICE, "current", "Rule set of the migration thread: current (QEMU 10) or 1.6 (QEMU 1.6, "
                                   "commit 7ca1dfad: 100 ms windows of max_bandwidth / 10, its auto-converge "
                                   "and 30 ms vCPU sleeps; see policies/qemu16.py). QEMU 1.6's own defaults "
                                   "were max_bandwidth 32MiB/s and downtime_limit 30ms: give them.",
                choices=["current", "1.6"]),
    downtime_limit=Field(DURATION, "300ms", "downtime-limit: switch over when the rest fits in this at the "
                                            "measured bandwidth.", gt=0, le=MAX_DOWNTIME),
    max_bandwidth=Field(BANDWIDTH, "128MiB/s", "max-bandwidth: pre-copy rate limit (QEMU's default MAX_THROTTLE).",
                        gt=0, le=MAX_BANDWIDTH),
    setup=Field(DURATION, "1ms", "setup-time: bitmap allocation and starting the dirty log.", ge=0,
                le=MAX_STEP),
    # What a stop costs besides the last pages (the blackout's parts, reported in ``downtime_parts``;
    # sources in docs/policies.md).
    vm_stop=Field(DURATION, "1ms", "Stopping the source VM (vm_stop_force_state: pause every vCPU, drain and "
                                   "flush the block devices, state-change notifiers). Default: the fixed part "
                                   "of the QEMU lab's stops with nothing left to send (~1 ms).", ge=0,
                  le=MAX_STEP),
    device_state=Field(SIZE, "100KiB", "Device and CPU state sent with the VM stopped, after the last pages "
                                       "(qemu_savevm_state_complete_precopy_non_iterable), at the link rate.",
                       ge=0, le=MAX_BYTES),
    dest_first_touch=Field(DURATION, "0us", "Per page the destination receives for the first time in the "
                                            "stop: it faults in and zero-fills its copy before writing it "
                                            "(pre-copy's rate limit hides this cost). QEMU lab (TCG, 4 KiB "
                                            "pages, loopback): ~2.5us.", ge=0, le=MAX_LATENCY),
    stop_cleanup=Field(DURATION, "0ms", "Work done with the VM stopped after the state is sent. 0 since QEMU "
                                        "commit 19310760 (2017: stopping dirty logging in "
                                        "qemu_savevm_state_cleanup took ~300 ms on a 24 GB guest, moved to the "
                                        "next vm_start).", ge=0, le=MAX_STEP),
    handshake_round_trips=Field(INT, 0, "Link round trips the source waits for before it counts the stop done "
                                        "(0: QEMU pre-copy without return-path; 1: return-path, the "
                                        "destination's SHUT after it loaded the state).", ge=0, le=1000),
    dest_start=Field(DURATION, "1ms", "Starting the VM on the destination (process_incoming_migration_bh: "
                                      "activate block devices, vm_start). Part of the guest's blackout, not of "
                                      "QEMU's downtime counter, which stops on the source.", ge=0, le=MAX_STEP),
    wakeup_delay=Field(DURATION, "50us", "Mean delay (exponential) of the migration thread's wake-up after its "
                                         "rate-limit sleep. QEMU's clock counts whole ms, so a late wake-up makes "
                                         "a 101 ms period: ~5% of periods on the measuring host.", ge=0,
                       le=MAX_LATENCY),
    zero_page_test=Field(DURATION, "0us", "qemu.rules 1.6 only: migration-thread time per all-zero page it sends "
                                          "(is_zero_page reads the whole page before sending a header and one "
                                          "byte; a page that is not zero is told after its first 128 bytes, not "
                                          "charged). 0: free.", ge=0, le=MAX_LATENCY),
    auto_converge=Field(BOOL, False, "auto-converge capability: throttle the vCPUs when the guest dirties "
                                     "faster than the link sends."),
    throttle_initial=Field(INT, 20, "cpu-throttle-initial (percent).", ge=1, le=99),
    throttle_increment=Field(INT, 10, "cpu-throttle-increment (percent).", ge=1, le=99),
    throttle_max=Field(INT, 99, "max-cpu-throttle (percent).", ge=1, le=99),
    sync_waits_vcpus=Field(BOOL, False, "TCG (the QEMU lab's accelerator): every bitmap sync ends by waiting for "
                                        "each vCPU to reach its main loop (physmem.c tcg_log_global_after_sync: "
                                        "run_on_cpu), and a vCPU asleep in an auto-converge throttle gets there "
                                        "only when its sleep of pct/(1-pct) x 10 ms ends: the migration stream "
                                        "stalls up to 990 ms at 99%. KVM has no such wait (false)."),
    throttle_trigger=Field(INT, 50, "throttle-trigger-threshold: percent of transferred bytes the dirtied "
                                    "bytes must exceed.", ge=1, le=100),
    xbzrle=Field(BOOL, False, "xbzrle capability: delta-compress re-sent pages found in the cache."),
    xbzrle_cache=Field(SIZE, "64MiB", "xbzrle-cache-size (direct-mapped, a power of two of pages).", gt=0,
                       le=MAX_BYTES),
    xbzrle_delta=Field(CHOICE, "exponential", "A re-sent page's encoded delta size: drawn from a distribution "
                                              "(fixed, uniform, exponential, of mean xbzrle_delta_mean), or from "
                                              "the writes to the page since it was cached (writes: each write "
                                              "changes one word, of xbzrle_word_bytes in the encoding).",
                       choices=["fixed", "uniform", "exponential", "writes"]),
    xbzrle_word_bytes=Field(INT, 11, "xbzrle_delta writes: encoded bytes per changed 8-byte word (its zero-run "
                                     "and nonzero-run lengths as varints, ~2 + 1 bytes, then the 8 bytes).",
                            ge=1, le=4096),
    xbzrle_encode=Field(DURATION, "0us", "Migration-thread time per page encoded against the cache (a hit: copy "
                                         "the page, xbzrle_encode_buffer, copy it back into the cache).", ge=0,
                        le=MAX_LATENCY),
    xbzrle_cache_copy=Field(DURATION, "0us", "Migration-thread time per page a miss inserts into the cache "
                                             "(cache_insert's page copy).", ge=0, le=MAX_LATENCY),
    xbzrle_delta_mean=Field(FRACTION, 0.05, "Mean encoded delta size as a share of the page (>= one page "
                                            "overflows and is sent whole).", gt=0, le=1),
    xbzrle_unchanged=Field(FRACTION, 0.0, "Share of re-sent pages whose contents did not change (empty "
                                          "delta: nothing sent).", ge=0, le=1),
    postcopy_switch=Field(CHOICE, "off", "When the operator issues migrate-start-postcopy (postcopy-ram on): off, "
                                         "after-precopy (libvirt's --postcopy-after-precopy: once the first pass "
                                         "is done, dirty-sync-count 2), sync (at dirty-sync-count "
                                         "postcopy_switch_sync) or time (postcopy_switch_time after the start). "
                                         "It takes effect at the migration thread's next iteration.",
                          choices=["off", "after-precopy", "sync", "time"]),
    postcopy_switch_sync=Field(INT, 2, "postcopy_switch sync: the dirty-sync-count that triggers the switch.", ge=1,
                               le=1_000_000),
    postcopy_switch_time=Field(DURATION, "5s", "postcopy_switch time: seconds after the migration starts.", ge=0,
                               le=MAX_SIM_TIME),
    max_postcopy_bandwidth=Field(BANDWIDTH, "0B/s", "max-postcopy-bandwidth: the rate limit after the switch (0: "
                                                    "unlimited, QEMU's default). Requested pages bypass it but "
                                                    "count in its windows.", ge=0, le=MAX_BANDWIDTH),
    postcopy_fault_latency=Field(DURATION, "0us", "Per post-copy page request on the migration stream, the wait "
                                                  "besides the link: the destination's userfaultfd fault and "
                                                  "request, the source's return-path thread queueing it, placing it "
                                                  "and waking the vCPU, and the pages the stream's socket buffers "
                                                  "hold ahead of it unless postcopy_socket_buffer models them "
                                                  "(added to each wait). With postcopy_preempt the "
                                                  "page comes on its own channel: postcopy_preempt_request_time "
                                                  "instead.", ge=0,
                                 le=MAX_STEP),
    postcopy_page_time=Field(DURATION, "0us", "Destination's time to place one page received after the switch "
                                              "(UFFDIO_COPY and its bookkeeping, one page at a time): the "
                                              "post-copy stream goes no faster than one page per this.", ge=0,
                             le=MAX_LATENCY),
    postcopy_socket_buffer=Field(SIZE, "0B", "Bytes the migration stream's socket buffers hold after a post-copy "
                                             "switch (postcopy_page_time > 0): the source's thread runs ahead "
                                             "of the destination's placement by up to this much, a page it "
                                             "handed the socket arrives only when the destination has placed "
                                             "everything before it (a vCPU faulting on it requests it and waits: "
                                             "the source skips a page no longer dirty), a requested page queues "
                                             "behind it all, and the source completes when the destination has "
                                             "placed the last page (its SHUT on the return path). 0: the source "
                                             "keeps the destination's pace.", ge=0, le=MAX_BYTES),
    postcopy_complete=Field(DURATION, "0us", "The destination's end of a post-copy migration once its last page "
                                             "is placed (savevm.c postcopy_ram_listen_thread: the main thread's "
                                             "load event, postcopy_ram_incoming_cleanup, then the SHUT on the "
                                             "return path that the source's completion waits for): the source "
                                             "completes this much (and one latency) later.", ge=0, le=MAX_STEP),
    postcopy_preempt=Field(BOOL, False, "postcopy-preempt capability: requested pages go on a channel of their own "
                                        "instead of queueing behind the background push."),
    postcopy_preempt_request_time=Field(DURATION, "0us", "With postcopy_preempt, per page request the wait besides "
                                                         "the page's trip: the destination's fault thread reading the "
                                                         "fault and writing the request, the source's return-path "
                                                         "thread sending the page on the preempt channel, the "
                                                         "destination's preempt thread placing it and waking the "
                                                         "vCPU (added to each wait).", ge=0, le=MAX_STEP),
    vcpus=Field(INT, 0, "vCPUs the model's CPUs stand for (0: one each; else the CPUs are split evenly among them): "
                        "a post-copy fault blocks every CPU of its vCPU, and blocktime is per vCPU.", ge=0,
                le=4096),
))


# The migration thread's other rule sets (``qemu.rules`` besides "current"): name -> (cross-field
# check, scanner), each registered by its own module (qemu16.py), so that this one imports none of them.
RULE_SETS = {}


def register_rules(name, check, scan):
    """Make ``qemu.rules: name`` run ``scan(machine)`` as the scanner, its config checked by ``check``."""
    RULE_SETS[name] = (check, scan)


def _rules_check(v, raw):
    """Cross-field check of ``qemu.rules``: the chosen rule set's own."""
    rules = RULE_SETS.get(v.get("qemu.rules"))
    if rules is not None:
        rules[0](v, raw)


def _zero_test_check(v, raw):
    """Cross-field check: the zero-test cost is modelled only under QEMU 1.6's rules (qemu16.py)."""
    if v["qemu.zero_page_test"] > 0 and v.get("qemu.rules") != "1.6":
        raise ConfigError("qemu.zero_page_test", f"{raw['qemu.zero_page_test']} is modelled only under qemu.rules "
                                                 "\"1.6\"")


def _postcopy_check(v, raw):
    """Cross-field check of the post-copy settings: QEMU 1.6 had no post-copy (2.5 added it), and
    ``qemu.vcpus`` cannot exceed the CPUs it groups."""
    if v["qemu.postcopy_switch"] != "off" and v.get("qemu.rules") == "1.6":
        raise ConfigError("qemu.postcopy_switch", "post-copy is not modelled under qemu.rules \"1.6\" (QEMU 2.5 "
                                                  "added it)")
    if v["qemu.vcpus"] > v["cpus.count"]:
        raise ConfigError("qemu.vcpus", f"{v['qemu.vcpus']} vCPUs for {v['cpus.count']} CPUs (cpus.count): each "
                                        "vCPU needs at least one CPU")


@register
class Qemu(PagePolicy):
    """QEMU's migration thread, with the operator layer (nova, kubevirt, ovirt) that may run it."""
    name = "qemu"
    # ``no-tlb-flush`` is QEMU 7.2's TCG bug: dirty bits cleared at a sync without resetting the TCG TLB's
    # not-dirty state ("physmem: Fix migration dirty bitmap coherency with TCG memory access", 9.0).
    variants = ("correct", "no-tlb-flush")
    sections = {"operator": OPERATOR_SECTION, "qemu": SECTION}
    checks = (operator_runs_over_qemu, _rules_check, _postcopy_check, _zero_test_check)

    def tracking_outside(self, cfg):
        """KVM tracks writes in its EPT (or shadow) entries and a log bitmap: hypervisor memory, not
        guest RAM."""
        return True

    def link_options(self, cfg):
        """A migration stream: every page carries an 8-byte header; a zero page is header + 1 byte."""
        return {"page_header_bytes": PAGE_HEADER, "zero_page_bytes": ZERO_PAGE_BODY}

    def scanner(self, machine):
        rules = RULE_SETS.get(machine.cfg.qemu.rules)
        return rules[1](machine) if rules is not None else scanner(machine)

    def time_scales(self, cfg):
        """The downtime limit (the last pass's length), the 100 ms bandwidth and rate-limit window,
        with auto-converge its 1 s dirty-rate period, and the operator's monitor period and least
        downtime step."""
        out = operator_time_scales(cfg) + [("qemu.downtime_limit", cfg.qemu.downtime_limit), ("qemu's 100 ms window", BUFFER_DELAY)]
        if cfg.qemu.auto_converge:
            out.append(("auto-converge's period", THROTTLE_PERIOD))
        return out


def window_quota(max_bandwidth):
    """Bytes a 100 ms window carries at ``max_bandwidth`` bytes/s: the quota, overshot to the next
    stream flush."""
    return (int(max_bandwidth * BUFFER_DELAY // FLUSH_BYTES) + 1) * FLUSH_BYTES


class Xbzrle:
    """The XBZRLE page cache (page_cache.c) and the wire size of each page sent through it."""

    def __init__(self, cfg, memory, seed):
        q = cfg.qemu
        entries = max(1, q.xbzrle_cache // memory.page_size)
        self.entries = 1 << (entries.bit_length() - 1)  # cache_init rounds down to a power of two
        self.tags = np.full(self.entries, -1, dtype=INDEX_DTYPE)
        self.age = np.zeros(self.entries, dtype=np.int64)
        self.kind, self.mean, self.unchanged = q.xbzrle_delta, q.xbzrle_delta_mean, q.xbzrle_unchanged
        self.cached = np.zeros(self.entries, dtype=np.int64)  # the cached copy's version (writes so far)
        self.word_bytes = q.xbzrle_word_bytes
        self.encode_s, self.copy_s = q.xbzrle_encode, q.xbzrle_cache_copy
        self.key = np.uint64(np.random.SeedSequence([seed, 0x7862]).generate_state(1, np.uint64)[0])
        self.page_size = memory.page_size
        self.started = False
        self.pages = self.bytes = self.cache_miss = self.overflow = self.skipped = 0
        self.encoded = self.inserted = 0   # pages encoded against the cache, pages copied into it
        self.cpu_s = 0.0                   # migration-thread seconds owed for them, not yet spent
        self.thread_s = 0.0                # and spent

    def _uniform(self, frames, versions, salt):
        z = (frames.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + versions.astype(np.uint64)
             * np.uint64(0xBF58476D1CE4E5B9) + self.key + np.uint64(salt))
        z ^= z >> np.uint64(31)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(29)
        return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)

    def write_delta(self, writes):
        """Encoded bytes of pages written ``writes`` times since their cached copy, each write one
        8-byte word at a uniformly random place (the lab's dirtier): the expected number of distinct
        words changed, W (1 - (1 - 1/W)^k) of the page's W, at ``xbzrle_word_bytes`` each (what an
        unchanged page costs, 0 bytes, is QEMU's skip)."""
        words = self.page_size // 8
        changed = words * -np.expm1(writes.astype(np.float64) * np.log1p(-1.0 / words))
        return np.floor(changed * self.word_bytes).astype(np.int64)

    def take_cpu(self):
        """Migration-thread seconds owed for the encoding and cache copies since the last call."""
        owed, self.cpu_s = self.cpu_s, 0.0
        self.thread_s += owed
        return owed

    def wire_bytes(self, frames, versions, sync_count, last_stage):
        """Bytes for sending non-zero ``frames`` (their current ``versions``); updates the cache."""
        ps = self.page_size
        if not self.started or len(frames) == 0:
            return len(frames) * (PAGE_HEADER + ps)
        slot = frames & (self.entries - 1)
        hit = self.tags[slot] == frames
        # a miss inserts the page unless the slot holds another page that is still fresh
        fresh = (self.tags[slot] >= 0) & (self.age[slot] + 2 > sync_count)
        insert = ~hit & ~fresh & (not last_stage)
        self.tags[slot[insert]] = frames[insert]
        self.age[slot[insert | hit]] = sync_count
        n_hit, n_insert = int(hit.sum()), int(insert.sum())
        self.encoded += n_hit
        self.inserted += n_insert
        self.cpu_s += n_hit * self.encode_s + n_insert * self.copy_s
        if self.kind == "writes":
            delta = self.write_delta(versions[hit] - self.cached[slot[hit]])
        else:
            u = self._uniform(frames[hit], versions[hit], 1)
            if self.kind == "fixed":
                frac = np.full(len(u), self.mean)
            elif self.kind == "uniform":
                frac = u * 2 * self.mean
            else:
                frac = -np.log1p(-u) * self.mean
            delta = np.floor(frac * ps).astype(np.int64)
        delta[self._uniform(frames[hit], versions[hit], 2) < self.unchanged] = 0
        if not last_stage:  # the cache keeps the copy just sent (a hit's is updated after encoding)
            self.cached[slot[insert | hit]] = versions[insert | hit]
        over = delta >= ps
        n_skip = int((delta == 0).sum())
        n_over = int(over.sum())
        n_delta = len(delta) - n_skip - n_over
        misses = len(frames) - len(delta)
        self.cache_miss += misses
        self.overflow += n_over
        self.skipped += n_skip
        self.pages += n_delta  # save_xbzrle_page counts a page sent as a delta; a skipped one returns first
        xbytes = int(delta[(delta > 0) & ~over].sum()) + n_delta * (PAGE_HEADER + XBZRLE_HEADER)
        self.bytes += xbytes
        return xbytes + (misses + n_over) * (PAGE_HEADER + ps)


class Migration:
    """The migration thread's state (MigrationState and RAMState fields that matter here)."""

    def __init__(self, e):
        self.e = e
        self.q = e.cfg.qemu
        self.ms = 1e-3 * e.clock
        m = e.memory
        self.n, self.ps = m.n_frames, m.page_size
        self.bitmap = e.new_bitmap()
        e.kernels.bitmap_set_range(self.bitmap, 0, self.n)
        self.remaining = self.n                 # migration_dirty_pages
        self.cursor = 0
        self.sync_count = 0
        self.dirty_period = 0                   # num_dirty_pages_period
        self.time_last_sync = 0
        self.bytes_xfer_prev = 0
        self.dirty_bytes_last_sync = self.n * self.ps
        self.dirty_pages_rate = 0.0
        self.high_cnt = 0
        self.throttle = 0
        self.throttle_history = []
        self.throttle_tick = None               # cycles: the throttle timer's next tick (None: not throttling)
        self.sleep_end = 0                      # cycles: when the vCPUs' current throttle sleep ends
        self.sync_waits = []                    # [t (s), s]: each throttled sync's wait for a sleeping vCPU
        self.threshold = 0.0                    # bytes; 0 until the first period ends
        self.bandwidth = 0.0                    # bytes per ms over the last period
        self.expected_downtime = self.q.downtime_limit  # shown until a real estimate exists
        self.mbps = 0.0
        self.pages_per_second = 0.0
        self.period_pages = 0
        self.period_start = 0                   # iteration_start_time, in whole ms
        self.periods = {}                       # period length (ms) -> how many
        self.rng = np.random.default_rng(np.random.SeedSequence([e.seed, 0x716D75]))
        self.period_bytes = 0
        self.window_bytes = 0
        self.next_forced_tick = None
        self.sync_count_at_tick = 0
        self.xbzrle = Xbzrle(e.cfg, m, e.seed) if self.q.xbzrle else None
        self.last_stage = False
        self.precopy_bytes = 0
        self.downtime_limit = self.q.downtime_limit    # migrate-set-parameters may change it
        self.monitor = Monitor(e.cfg, self.n * self.ps) if e.cfg.operator.kind != "none" else None
        if self.monitor and self.monitor.initial_downtime() is not None:
            self.downtime_limit = self.monitor.initial_downtime()
        self.paused_at = None
        self.postcopy = None
        self.in_postcopy = False
        self.start_postcopy = None              # why migrate-start-postcopy was issued, once it was
        self._quota = window_quota(self.q.max_bandwidth)  # the config is immutable
        self.needed_downtime = None             # least pending / bandwidth at a deciding sync (s)
        self.steady = SteadyState() if e.cfg.sim.early_stop else None

    # -- counters and rate limit --------------------------------------------------------------
    def now_ms(self):
        """qemu_clock_get_ms(QEMU_CLOCK_REALTIME): whole milliseconds."""
        return int(self.e.now // self.ms)

    def update_counters(self):
        """migration_update_counters: once per >= 100 ms period, measured in whole ms."""
        e = self.e
        now = self.now_ms()
        if now < self.period_start + BUFFER_DELAY * 1e3:
            return
        transferred = e.bytes_sent - self.period_bytes
        spent_ms = now - self.period_start
        self.periods[spent_ms] = self.periods.get(spent_ms, 0) + 1
        self.bandwidth = transferred / spent_ms
        self.threshold = self.bandwidth * self.downtime_limit * 1e3
        self.mbps = transferred * 8 / (spent_ms / 1e3) / 1e6
        # pages-per-second: pages transferred (normal and zero) in the period over its length
        self.pages_per_second = (e.pages_sent - self.period_pages) / (spent_ms / 1e3)
        self.period_pages = e.pages_sent
        if self.dirty_pages_rate and transferred > 10000 and self.bandwidth > 0:
            self.expected_downtime = self.dirty_bytes_last_sync / self.bandwidth / 1e3
        self.period_start = now
        self.period_bytes = self.window_bytes = e.bytes_sent

    def rate_limit_sleep(self):
        """Process step: migration_rate_limit's sleep: ``period start + 100 - now`` whole ms from now
        (qemu_sem_timedwait), and the host wakes the thread a little late."""
        e = self.e
        wait_ms = max(0, self.period_start + int(BUFFER_DELAY * 1e3) - self.now_ms())
        late = self.rng.exponential(self.q.wakeup_delay) if self.q.wakeup_delay > 0 else 0.0
        yield e.wait(max(1, int(round((wait_ms * 1e-3 + late) * e.clock))))

    def quota(self):
        """Bytes a 100 ms window carries: the max-bandwidth quota, overshot to the next stream flush."""
        return self._quota

    def rate_exceeded(self):
        return self.e.bytes_sent - self.window_bytes >= self.quota()

    def postcopy_due(self):
        """Why the operator issues migrate-start-postcopy now (``qemu.postcopy_switch``), or None. It
        sets a flag the migration thread reads at its next iteration (qmp_migrate_start_postcopy wakes
        nothing): the scanner checks this at the top of a turn, so a sync's count is seen one turn late."""
        q, e = self.q, self.e
        kind = q.postcopy_switch
        if kind == "after-precopy" and self.sync_count >= 2:
            return "after-precopy"
        if kind == "sync" and self.sync_count >= q.postcopy_switch_sync:
            return f"dirty-sync-count {q.postcopy_switch_sync}"
        if kind == "time" and e.now >= e.cycles(q.postcopy_switch_time):
            return f"at {q.postcopy_switch_time:g} s"
        return None

    # -- knowing early -----------------------------------------------------------------------------
    def note_decision(self, pending):
        """A sync that decided whether to complete found ``pending`` bytes: the downtime limit that would
        have completed here is pending / bandwidth."""
        if self.bandwidth > 0:
            need = pending / (self.bandwidth * 1e3)
            if self.needed_downtime is None or need < self.needed_downtime:
                self.needed_downtime = need

    def settled(self, pending, limit):
        """Record this deciding sync; True when the run is in steady state short of convergence and no
        event still due before ``limit`` (cycles) can change that."""
        e = self.e
        if self.threshold <= 0 or self.bandwidth <= 0:
            return False
        if self.change_due(limit):  # the window starts over once nothing is due any more
            self.steady.samples.clear()
            return False
        self.steady.add(Sample(e.seconds(e.now), pending, self.bandwidth * 1e3, pending / self.threshold,
                               e.pass_count + 1, self.sync_count, e.bytes_sent, e.pages_sent))
        return self.steady.steady()

    def change_due(self, limit):
        """Whether something still due before ``limit`` (cycles) may change the verdict: an auto-converge
        step, an operator's downtime step, timeout or schedule, the workload's phase change or trace."""
        e = self.e
        if self.q.auto_converge and self.throttle < self.q.throttle_max:
            return True
        if self.q.postcopy_switch != "off":  # a switch to post-copy is still to come
            return True
        if self.paused_at is not None or not e.workload_settled():
            return True
        mon = self.monitor
        if mon is not None:
            now, end = e.seconds(e.now), e.seconds(limit)
            if mon.pending_action or (mon.deadline is not None and mon.deadline < end):
                return True
            if any(now <= t < end and d != self.downtime_limit for t, d in mon.steps):
                return True
            if mon.kind == "kubevirt" and mon.o.progress_timeout > 0:
                return True
            if mon.schedule:
                return True
        return False

    def projection(self, limit):
        """What the run would report at the time limit ``limit`` (cycles), had it gone on."""
        e = self.e
        p = self.steady.project(e.seconds(limit))
        return {"stop_reason": "time-limit", "stopped_at_s": e.seconds(e.now), "total_time_s": e.seconds(limit),
                "passes": p["passes"], "dirty_sync_count": p["dirty_sync_count"], "bytes_sent": p["bytes_sent"],
                "pages_sent": p["pages_sent"], "expected_downtime_s": p["dirty_bytes"] / p["rate"]}

    # -- the dirty bitmap ----------------------------------------------------------------------
    def harvest_log(self):
        """The bitmap sync's harvest (migration_bitmap_sync_range), shared by every rule set: counts the
        sync and the newly dirty pages; returns the Harvest."""
        self.sync_count += 1
        h = self.e.sync(self.bitmap)
        self.remaining += h.new_bits
        self.dirty_period += h.new_bits
        self.dirty_bytes_last_sync = self.remaining * self.ps
        return h

    def sync(self, waits=True):
        """Process step: migration_bitmap_sync. With ``qemu.sync_waits_vcpus`` (TCG) the harvest is
        followed by a wait for every vCPU to reach its main loop (memory_global_after_dirty_log_sync ->
        tcg_log_global_after_sync -> run_on_cpu), which a vCPU asleep in a throttle reaches only at its
        sleep's end; the period and auto-converge are judged after that wait (ram.c takes end_time
        there). ``waits`` false: a sync run outside the migration thread (the forced sync timer)."""
        e = self.e
        h = self.harvest_log()
        if waits and self.q.sync_waits_vcpus and not self.last_stage:
            left = self.vcpu_sleep_left()
            if self.throttle_tick is not None:
                self.sync_waits.append([round(e.seconds(e.now), 6), round(e.seconds(left), 6)])
            if left > 0:
                yield e.wait(left)
        now = e.now
        if now > self.time_last_sync + THROTTLE_PERIOD * e.clock:
            self.trigger_throttle()
            period_ms = (now - self.time_last_sync) / self.ms
            self.dirty_pages_rate = self.dirty_period * 1000 / period_ms
            self.time_last_sync = now
            self.dirty_period = 0
            self.bytes_xfer_prev = e.bytes_sent
        yield e.wait(e.log_sync_cost())
        return h.new_bits

    def vcpu_sleep_left(self):
        """Cycles from now until the vCPUs end the throttle sleep they are in (0: awake or not throttled).

        cpu-throttle.c: the throttle timer ticks every 10 ms / (1 - pct) and each tick queues on every
        vCPU a sleep of 10 ms x pct / (1 - pct) (cpu_throttle_thread: a kick does not end it, only the
        VM's stop does); the vCPU runs the 10 ms between the sleep's end and the next tick. The ticks
        since the last call all ran at today's percentage: it changes only in ``trigger_throttle``,
        which brings the timer up to date first."""
        if self.throttle_tick is None:
            return 0
        e, p = self.e, self.throttle / 100
        now = e.now
        if now >= self.throttle_tick:
            period = e.cycles(THROTTLE_SLICE / (1 - p))
            last = self.throttle_tick + (now - self.throttle_tick) // period * period
            self.sleep_end = last + e.cycles(THROTTLE_SLICE * p / (1 - p))
            self.throttle_tick = last + period
        return max(0, self.sleep_end - now)

    def trigger_throttle(self):
        """migration_trigger_throttle (auto-converge)."""
        if not self.q.auto_converge or self.last_stage:
            return
        self.vcpu_sleep_left()  # the timer's ticks so far ran at the old percentage
        bytes_xfer = self.e.bytes_sent - self.bytes_xfer_prev
        bytes_dirty = self.dirty_period * self.ps
        if bytes_dirty > bytes_xfer * self.q.throttle_trigger / 100:
            self.high_cnt += 1
            if self.high_cnt >= 2:
                self.high_cnt = 0
                if self.throttle == 0:
                    self.throttle = self.q.throttle_initial
                    self.throttle_tick = self.e.now  # cpu_throttle_set starts the timer with a tick now
                else:
                    self.throttle = min(self.throttle + self.q.throttle_increment, self.q.throttle_max)
                self.e.throttle(self.throttle / 100)
                self.throttle_history.append([round(self.e.seconds(self.e.now), 6), self.throttle])

    def next_pages(self, budget):
        """(starts, lens) of at most ``budget`` dirty pages from the cursor on, cleared from the
        bitmap, wrapping around RAM once; the first wrap starts XBZRLE."""
        e = self.e
        parts_s, parts_l, got = [], [], 0
        for _ in range(2):
            s, ln, cut = e.take_pages(self.bitmap, self.cursor, self.n, budget - got)
            if not parts_s and cut < self.n and len(s):  # budget met before the end of RAM: one take
                self.cursor = cut
                return s, ln
            if len(s):
                parts_s.append(s)
                parts_l.append(ln)
                got += int(ln.sum())
                self.cursor = cut if cut < self.n else 0
                if cut >= self.n and self.xbzrle:
                    self.xbzrle.started = True
                if got >= budget:
                    break
            else:
                self.cursor = 0  # complete round
                if self.xbzrle:
                    self.xbzrle.started = True
            if got >= budget or self.remaining - got <= 0:
                break
        if not parts_s:
            return np.empty(0, INDEX_DTYPE), np.empty(0, INDEX_DTYPE)
        return np.concatenate(parts_s), np.concatenate(parts_l)

    def send(self, starts, lens):
        """Process step: send pages; with XBZRLE, non-zero pages found in the cache go as deltas."""
        self.remaining -= int(lens.sum())
        if self.xbzrle is None or not self.xbzrle.started or self.in_postcopy:  # no XBZRLE in post-copy
            yield from self.e.copy(starts, lens)
        else:
            yield from self.e.copy(starts, lens, encode=self.xbzrle_bytes)
            owed = self.xbzrle.take_cpu()
            if owed > 0:  # the thread encoded and copied those pages itself: its time, not the link's
                yield self.e.wait(self.e.cycles(owed))

    def xbzrle_bytes(self, starts, lens, zeros):
        """Wire bytes of one piece: zero pages as header + 1 byte, the others through the XBZRLE cache."""
        frames = run_frames(starts, lens)
        versions = self.e.memory.read_versions(frames)
        nz = versions != 0
        return zeros * (PAGE_HEADER + ZERO_PAGE_BODY) + self.xbzrle.wire_bytes(frames[nz], versions[nz],
                                                                                self.sync_count, self.last_stage)


def scanner(e):
    """Process role: QEMU's migration thread on machine ``e``."""
    mig = Migration(e)
    q = mig.q
    limit = e.cycles(e.cfg.sim.time_limit)
    rec = e.open_pass("full")
    yield e.wait(e.cycles(q.setup))
    setup_s = e.seconds(e.now)
    yield from mig.sync()  # ram_init_bitmaps: sync #1
    mig.period_start = mig.now_ms()
    mig.period_bytes = mig.window_bytes = e.bytes_sent
    mig.time_last_sync = e.now
    if q.auto_converge:
        mig.next_forced_tick = e.now + e.cycles(FORCED_SYNC)
    found = mig.n
    next_tick = e.now
    while True:
        mig.update_counters()
        if mig.monitor and e.now >= next_tick:
            next_tick = e.now + e.cycles(e.cfg.operator.monitor_period)
            downtime, action = mig.monitor.tick(e.seconds(e.now), mig.sync_count, mig.remaining * mig.ps,
                                                mig.downtime_limit)
            if downtime is not None:
                mig.downtime_limit = downtime
            if action:
                what, why = action.split(":")
                if what == "abort":  # migrate_cancel: the VM keeps running on the source
                    e.close_pass(rec, found)
                    e.finish(False, f"aborted ({why})", None, **report(e, mig, setup_s))
                    return
                if what == "pause":  # the guest is paused; pre-copy goes on until it converges
                    e.pause()
                    mig.paused_at = e.now
                if what == "postcopy":  # migrate-start-postcopy: seen at the thread's next iteration
                    mig.start_postcopy = mig.start_postcopy or why
        if mig.start_postcopy is None:
            mig.start_postcopy = mig.postcopy_due()
        if q.auto_converge and e.now >= mig.next_forced_tick:
            if mig.sync_count == mig.sync_count_at_tick and mig.sync_count > 1:
                yield from mig.sync(waits=False)  # the timer's callback, not the migration thread
            mig.sync_count_at_tick = mig.sync_count
            mig.next_forced_tick += e.cycles(FORCED_SYNC)
        if not mig.rate_exceeded():
            pending = mig.remaining * mig.ps
            exact = None
            if pending < mig.threshold:
                exact = yield from mig.sync()  # ram_state_pending_exact
                pending = mig.remaining * mig.ps
            if exact is not None:
                mig.note_decision(pending)
            if pending == 0 or pending < mig.threshold:
                yield from complete(e, mig, rec, found, setup_s, exact or 0)
                return
            if mig.start_postcopy is not None:  # migration_iteration_run: after the completion check
                yield from postcopy(e, mig, rec, found, setup_s, mig.start_postcopy, exact or 0)
                return
            if exact is not None:  # the sync opened another pass over the bitmap
                e.close_pass(rec, found)
                if mig.steady is not None and mig.settled(pending, limit):
                    out = report(e, mig, setup_s)
                    out["projected"] = mig.projection(limit)
                    e.finish(False, "steady-state", None, **out)
                    return
                rec = e.open_pass("pass")
                found = exact
            yield from iterate(e, mig)
        if e.now >= limit:
            e.close_pass(rec, found)
            e.finish(False, "time-limit", None, **report(e, mig, setup_s))
            return
        if mig.rate_exceeded():
            yield from mig.rate_limit_sleep()


def iterate(e, mig):
    """Process step: ram_save_iterate: send until the quota is used, 50 ms pass or the bitmap empties."""
    t0 = e.now
    per_page = PAGE_HEADER + mig.ps
    # the turn's pieces and the CPUs' steps between them in compiled calls (sim/fused.py), same results
    if fused.qemu_fusable(e, mig) and (yield from fused.qemu_iterate(e, mig, t0, per_page, MAX_WAIT * e.clock)):
        return
    while not mig.rate_exceeded() and mig.remaining > 0 and e.now - t0 < MAX_WAIT * e.clock:
        left = mig.quota() - (e.bytes_sent - mig.window_bytes)
        budget = max(1, min(e.chunk_pages, int(left) // per_page))
        starts, lens = mig.next_pages(budget)
        if len(starts) == 0:
            break
        yield from mig.send(starts, lens)


class StopClock:
    """The blackout's parts: seconds spent in each step of the stop (``downtime_parts``)."""

    def __init__(self, e, since=None):
        self.e, self.t, self.parts = e, e.now, {}
        if since is not None and since < e.now:  # paused by the operator: pre-copy went on meanwhile
            self.parts["paused_precopy"] = e.seconds(e.now - since)

    def mark(self, name):
        self.parts[name] = self.parts.get(name, 0.0) + self.e.seconds(self.e.now - self.t)
        self.t = self.e.now

    def wait(self, name, seconds):
        """Process step: a fixed part of the stop."""
        if seconds > 0:
            yield self.e.wait(self.e.cycles(seconds))
        self.mark(name)

    def total(self):
        return sum(self.parts.values())


def stop_tail(e, q, clock):
    """Process step: after the state is sent: the cleanup done inside the stop and the handshake the
    source waits for; returns QEMU's downtime counter (s), then starts the destination."""
    yield from clock.wait("stop_cleanup", q.stop_cleanup)
    yield from clock.wait("handshake", e.request_time(0) * q.handshake_round_trips)
    source = clock.total()
    yield from clock.wait("dest_start", q.dest_start)
    return source


def complete(e, mig, rec, found, setup_s, exact):
    """Process step: migration_completion: stop, last sync, send the rest unthrottled, switch over.

    The blackout is timed part by part (``downtime_parts``): stopping the vCPUs, the last sync, the
    last pages, the destination's first touch of pages it never had, the device state, a cleanup
    inside the stop, the handshake, the destination's start. ``qemu_downtime_s`` is QEMU's own
    counter (stop to the source's completion: without the destination's start).
    The blackout record's dirty pages are those the deciding exact sync and the last sync found."""
    q = mig.q
    e.close_pass(rec, found)
    t_stop = e.now if mig.paused_at is None else mig.paused_at
    mig.precopy_bytes = e.bytes_sent
    rec = e.open_pass("blackout")
    clock = StopClock(e, mig.paused_at)
    late = e.pause_hold() if mig.paused_at is None and e.pause_hold is not None else 0.0
    if late > 0:  # a vCPU that does not exit in time (sim/faults.py): the guest runs until it does
        yield from clock.wait("vm_stop_hold", late)
    e.pause()
    mig.last_stage = True
    e.throttle(0.0)
    yield from clock.wait("vm_stop", q.vm_stop)
    new = yield from mig.sync()
    clock.mark("last_sync")
    starts, lens = e.all_runs(mig.bitmap)
    fresh = e.new_to_partner(starts, lens) if q.dest_first_touch > 0 else 0
    if len(starts):
        yield from mig.send(starts, lens)
    yield from e.drain()
    clock.mark("pages")
    yield from clock.wait("dest_first_touch", fresh * q.dest_first_touch)
    yield from e.send_bytes(q.device_state)
    yield from e.drain()
    clock.mark("device_state")
    source = yield from stop_tail(e, q, clock)
    e.close_pass(rec, new + exact)
    e.finish(True, "threshold", t_stop, **report(e, mig, setup_s), downtime_parts=clock.parts,
             qemu_downtime_s=source, dest_first_touch_pages=fresh)


def postcopy(e, mig, rec, found, setup_s, why, exact=0):
    """Process step: postcopy_start, then the post-copy phase. The source stops; a last sync
    (ram_postcopy_send_discard_bitmap); the device state goes; the destination runs the guest's
    workload (``Destination``) and requests every page it touches that has not arrived, while the
    source's migration thread serves the requests and pushes the rest (``postcopy_push``). Downtime is
    the source-side stop (QEMU's definition)."""
    q = mig.q
    e.close_pass(rec, found)
    t_stop = e.now
    mig.precopy_bytes = e.bytes_sent
    rec = e.open_pass("blackout")
    clock = StopClock(e)
    late = e.pause_hold() if e.pause_hold is not None else 0.0
    if late > 0:  # a vCPU that does not exit in time (sim/faults.py): the guest runs until it does
        yield from clock.wait("vm_stop_hold", late)
    e.pause()
    e.throttle(0.0)
    mig.last_stage = True
    yield from clock.wait("vm_stop", q.vm_stop)
    new = yield from mig.sync()          # ram_postcopy_send_discard_bitmap
    clock.mark("last_sync")
    yield from e.send_bytes(q.device_state)
    yield from e.drain()
    clock.mark("device_state")
    source = yield from stop_tail(e, q, clock)
    e.close_pass(rec, new + exact)
    t_run = e.now
    downtime_bytes = e.bytes_sent - mig.precopy_bytes
    rec = e.open_pass("postcopy")
    mig.in_postcopy = True
    dest = Destination(e, mig)
    e.spawn(dest.run())
    yield from postcopy_push(e, mig, dest)
    yield from e.drain()
    if dest.backlog or q.postcopy_complete > 0:
        # the destination places what the socket still holds, ends its side (qemu.postcopy_complete), and its
        # SHUT comes back on the return path
        end = max(e.now, dest.placed_at) + e.cycles(q.postcopy_complete) + dest.latency
        if end > e.now:
            yield e.wait(end - e.now)
    dest.done = True
    e.close_pass(rec, 0)
    out = report(e, mig, setup_s)
    total, per_vcpu = dest.blocktime()
    out.update(downtime_s=e.seconds(t_run - t_stop), postcopy_s=e.seconds(e.now - t_run),
               postcopy_faults=dest.faults, postcopy_requests=dest.requests,
               postcopy_blocktime_s=e.seconds(total), postcopy_vcpu_blocktime_s=[e.seconds(b) for b in per_vcpu],
               postcopy_writes=dest.writes,
               postcopy_bytes=e.bytes_sent - mig.precopy_bytes - downtime_bytes,
               downtime_bytes=downtime_bytes, precopy_bytes=mig.precopy_bytes, downtime_parts=clock.parts,
               qemu_downtime_s=source)
    e.finish(True, f"postcopy ({why})", t_stop, **out)


def postcopy_push(e, mig, dest):
    """Process step: the source's migration thread after the switch (ram_save_iterate in post-copy).
    A requested page goes first (get_queued_page before find_dirty_block) but on the same stream as the
    push, so it leaves behind what the push already handed to the socket (one link chunk here); with
    postcopy-preempt the destination's requests are served on their own channel (``Destination``) and
    this thread only pushes. The push keeps to max-postcopy-bandwidth in 100 ms windows. A request wakes
    the thread from an idle sleep (an urgent request) and inside RAM's iterate it goes even past the
    quota (``|| postcopy_has_request``), but once the window's quota is used up
    qemu_savevm_state_iterate returns before RAM's iterate is called: the request waits for the next
    window."""
    q = mig.q
    window = e.cycles(BUFFER_DELAY)
    quota = window_quota(q.max_postcopy_bandwidth) if q.max_postcopy_bandwidth > 0 else None
    win_start, win_bytes = e.now, e.bytes_sent
    per_page = PAGE_HEADER + mig.ps
    while True:
        if quota is not None and e.now >= win_start + window:
            win_start, win_bytes = e.now, e.bytes_sent
        exceeded = quota is not None and e.bytes_sent - win_bytes >= quota
        ready = dest.take_requests(e.now) if not exceeded else []
        if len(ready):
            t0 = e.now
            yield from e.copy(ready, np.ones(len(ready), dtype=INDEX_DTYPE))
            if dest.backlog:
                dest.arrived(ready, dest.queue_placement(len(ready), e.now))
                yield from dest.hold()
            else:
                yield from placed(e, t0, len(ready) * dest.place)
                dest.arrived(ready, e.now + dest.latency)
            continue
        if mig.remaining > 0 and not exceeded:
            left = e.chunk_pages if quota is None else (quota - (e.bytes_sent - win_bytes)) // per_page
            starts, lens = mig.next_pages(max(1, min(e.chunk_pages, int(left))))
            if len(starts):
                t0 = e.now
                yield from mig.send(starts, lens)
                if dest.backlog:  # in the socket: each page arrives when the destination has placed it
                    pages = np.repeat(starts, lens) + (np.arange(int(lens.sum()))
                                                       - np.repeat(np.cumsum(lens) - lens, lens))
                    dest.arrived(pages, dest.queue_placement(len(pages), e.now))
                    yield from dest.hold()
                else:
                    yield from placed(e, t0, int(lens.sum()) * dest.place)
                continue
        if mig.remaining <= 0 and not dest.queue:
            return
        # idle: asleep until the window ends (rate limited) or a request becomes visible (urgent; but a
        # used-up quota still holds it: qemu_savevm_state_iterate returns before RAM's iterate)
        wake = [] if exceeded else [dest.next_request()]
        if quota is not None and (mig.remaining > 0 or exceeded):
            wake.append(win_start + window)
        due = min(wake)
        dest.source, dest.held = "asleep", exceeded
        if due == float("inf"):
            yield dest.urgent
        else:
            yield e.first_of([e.wait(max(1, int(due) - e.now)), dest.urgent])
        dest.source = "sending"


def placed(e, t0, cycles):
    """Process step: the sender held back by the destination placing what it sent since ``t0`` (the
    socket fills when the destination is slower than the link)."""
    if e.now - t0 < cycles:
        yield e.wait(cycles - (e.now - t0))


class Destination:
    """The destination's vCPUs after a post-copy switch. They run the guest's workload, the same object
    the source's CPUs ran (groups, phases, paced writers: its state goes on where the source left it),
    one quantum at a time. A write to a page that has not arrived faults: the vCPU (every CPU of it,
    ``qemu.vcpus``) stops until the page arrives, and its writes from the fault on are replayed then; a
    paced writer catches up the time it lost when that was at most ``workload.catchup`` (as the lab's
    dirtier does). A fault on a page not yet requested sends a request over the return path (one link
    latency); the source serves it (``postcopy_push``), or with postcopy-preempt the page comes back on
    its own channel at once. Blocktime, as QEMU's postcopy-blocktime: per vCPU the sum of its waits
    (fault to arrival), and in total the time during which every vCPU was waiting."""

    def __init__(self, e, mig):
        self.e, self.mig = e, mig
        cfg = e.cfg
        self.ncpu = cfg.cpus.count
        self.nv = mig.q.vcpus or self.ncpu
        self.vcpu_of = (np.arange(self.ncpu) * self.nv) // self.ncpu
        self.paced, self.catchup = cfg.workload.paced, e.cycles(cfg.workload.catchup)
        self.latency = e.cycles(e.request_time(0) / 2)
        self.preempt = mig.q.postcopy_preempt
        # the wait besides the link: on the migration stream its socket buffers ahead of the page and the
        # threads on the way; on postcopy-preempt's channel of its own only the threads on the way
        self.handling = e.cycles(mig.q.postcopy_preempt_request_time if self.preempt
                                 else mig.q.postcopy_fault_latency)
        self.place = e.cycles(mig.q.postcopy_page_time)
        # the socket buffers' backlog (qemu.postcopy_socket_buffer): pages placed one after another, in the
        # order they were handed to the stream, from ``placed_at`` on (cycles: the last one placed)
        self.buffer_pages = int(mig.q.postcopy_socket_buffer) // (PAGE_HEADER + mig.ps)
        self.backlog = self.buffer_pages > 0 and self.place > 0
        self.placed_at = float(e.now)
        inf = float("inf")
        self.blocked_until = np.zeros(self.nv)   # cycles; inf while the page waited for is not sent
        self.waiting = np.full(self.nv, -1, dtype=np.int64)  # the page each vCPU waits for
        self.fault_at = np.zeros(self.nv)
        self.fault_end = np.zeros(self.nv)       # the end of the quantum the fault fell in
        self.owed = np.zeros(self.ncpu)          # cycles a paced writer catches up when it runs again
        self.pend_f = np.empty(0, dtype=INDEX_DTYPE)  # writes from a fault on, replayed (CPU-major)
        self.pend_c = np.empty(0, dtype=np.int64)
        self.arrival = np.zeros(mig.n)          # a requested page's arrival (cycles; inf until sent)
        self.asked = np.zeros(mig.n, dtype=bool)  # pages requested
        self.queue = []                          # (visible at the source, page), in request order
        self.intervals = [[] for _ in range(self.nv)]
        self.faults = self.requests = self.writes = 0
        self.urgent = e.signal()
        self.source = "sending"                  # the source's thread: sending, or asleep (rate limit, idle)
        self.held = False                        # asleep with the window's quota used up: requests wait
        self.done = False
        self._inf = inf

    # -- the source's side ---------------------------------------------------------------------------
    def take_requests(self, now):
        """The requested pages that have reached the source by ``now`` (in order), off the queue."""
        k = 0
        while k < len(self.queue) and self.queue[k][0] <= now:
            k += 1
        ready, self.queue = self.queue[:k], self.queue[k:]
        return np.array([p for _, p in ready], dtype=INDEX_DTYPE)

    def next_request(self):
        return self.queue[0][0] if self.queue else self._inf

    def arrived(self, pages, at):
        """``pages`` reach the destination at ``at`` (cycles; one time, or one per page): the vCPUs waiting
        for them run again then."""
        self.arrival[pages] = at
        waiting = self.waiting[self.waiting >= 0]
        if not len(waiting):
            return
        for p in np.intersect1d(pages, waiting).tolist():
            for v in np.flatnonzero(self.waiting == p).tolist():
                self.release(v, float(self.arrival[p]) + self.handling)

    def queue_placement(self, n, sent):
        """Arrivals (cycles) of ``n`` pages handed to the stream by ``sent``: they reach the destination one
        latency later and are placed one after another, after every page handed before them."""
        start = max(self.placed_at, sent + self.latency)
        arr = start + self.place * np.arange(1, n + 1, dtype=np.float64)
        if n:
            self.placed_at = float(arr[-1])
        return arr

    def hold(self):
        """Process step: the source's thread blocks while the socket buffers are full (more than
        ``buffer_pages`` pages not yet placed)."""
        over = self.placed_at - self.e.now - self.buffer_pages * self.place
        if over > 0:
            yield self.e.wait(over)

    def release(self, v, at):
        self.blocked_until[v] = at
        self.waiting[v] = -1
        self.intervals[v].append((self.fault_at[v], at))
        lost = at - self.fault_end[v]
        if self.paced and lost > 0 and at - self.fault_at[v] <= self.catchup:
            self.owed[self.vcpu_of == v] += lost

    # -- the destination's side ----------------------------------------------------------------------
    def run(self):
        """Process role: the destination's vCPUs, one quantum at a time, until the source is done."""
        e = self.e
        t = e.now
        while not self.done:
            self.step(t, t + e.quantum)
            t += e.quantum
            yield e.wait(t - e.now)

    def missing(self, frames, times):
        """Which writes find their page absent: still in the source's bitmap, or requested and not
        arrived by the write's time."""
        bm = self.mig.bitmap
        out = ((bm[frames >> 6] >> (frames & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)
        return out | (self.arrival[frames] > times)

    def step(self, t0, t1):
        """The vCPUs' writes in [t0, t1) cycles. Each vCPU runs from the later of t0 and the arrival of
        the page it waited for, its CPUs' writes (those held since a fault first) spread evenly over
        that time; at a write to an absent page it faults, and when the page's arrival is known and
        falls before t1 it goes on from there, its remaining writes spread over what is left."""
        e = self.e
        start = np.maximum(self.blocked_until, t0)            # per vCPU; inf: still waiting
        runs = start < t1
        runs_c = runs[self.vcpu_of]
        a = start[self.vcpu_of]
        run = np.where(runs_c, t1 - a + self.owed, 0.0)
        self.owed[runs_c] = 0.0
        counts = np.zeros(self.ncpu, dtype=INDEX_DTYPE)
        frames = np.array(e.guest_writes(run, counts), dtype=INDEX_DTYPE)
        cpu = np.repeat(np.arange(self.ncpu), counts)
        if len(self.pend_c):                                   # held writes go first, in their CPU's order
            held = ~runs_c[self.pend_c]
            frames = np.concatenate([self.pend_f[~held], frames])
            cpu = np.concatenate([self.pend_c[~held], cpu])
            order = np.argsort(cpu, kind="stable")
            frames, cpu = frames[order], cpu[order]
            self.pend_f, self.pend_c = self.pend_f[held], self.pend_c[held]
        if not len(frames):
            return
        n_c = np.bincount(cpu, minlength=self.ncpu)
        rank = np.arange(len(cpu)) - np.repeat(np.cumsum(n_c) - n_c, n_c)
        ac = a[cpu]
        times = ac + (rank + 0.5) / n_c[cpu] * (t1 - ac)
        v_of = self.vcpu_of[cpu]
        keep = []
        for v in np.unique(v_of).tolist():
            sel = np.flatnonzero(v_of == v)
            f, c, t = frames[sel], cpu[sel], times[sel]
            order = np.argsort(t, kind="stable")
            f, c, t = f[order], c[order], t[order]
            while len(f):
                miss = self.missing(f, t)
                if not miss.any():
                    self.writes += len(f)
                    break
                k = int(np.argmax(miss))
                self.writes += k
                at = self.fault(v, int(f[k]), t[k], t1)
                f, c = f[k:], c[k:]
                if at >= t1:                                   # waits past this quantum: held
                    keep.append((f, c))
                    break
                t = at + (np.arange(len(f)) + 0.5) / len(f) * (t1 - at)
        if keep:
            self.pend_f = np.concatenate([self.pend_f] + [f for f, _ in keep])
            self.pend_c = np.concatenate([self.pend_c] + [c for _, c in keep])
            order = np.argsort(self.pend_c, kind="stable")
            self.pend_f, self.pend_c = self.pend_f[order], self.pend_c[order]

    def fault(self, v, page, t, quantum_end):
        """vCPU ``v`` faults on ``page`` at ``t`` (cycles): it waits for the page, which it requests
        unless it already did; returns the arrival (cycles; inf while the source has not sent it)."""
        e, mig = self.e, self.mig
        self.faults += 1
        self.waiting[v] = page
        self.fault_at[v] = t
        self.fault_end[v] = quantum_end
        self.blocked_until[v] = self._inf
        bm = mig.bitmap
        sent = not (int(bm[page >> 6]) >> (page & 63)) & 1
        if not self.asked[page] and sent and self.backlog:
            # handed to the socket already, not placed yet: the request goes, the source skips a page no
            # longer dirty (get_queued_page_not_dirty) and the vCPU waits for the backlog to reach it
            self.asked[page] = True
            self.requests += 1
        elif not self.asked[page]:
            self.asked[page] = True
            self.requests += 1
            bm[page >> 6] &= ~(np.uint64(1) << np.uint64(page & 63))  # the source sends it now, not the push
            mig.remaining -= 1
            one = (np.array([page], dtype=INDEX_DTYPE), np.ones(1, dtype=INDEX_DTYPE))
            seen = t + self.latency                            # the request reaches the source
            busy = e.link_busy_until()
            if self.preempt:  # its own channel: the page, then its trip back
                e.copy_aside(*one)
                self.arrival[page] = seen + e.cycles((PAGE_HEADER + mig.ps) / e.link_rate()) + self.latency
            elif (self.source == "sending" and seen <= busy) or (self.source == "asleep" and busy <= seen
                                                                  and not self.held):
                # the thread takes it at its next page (after what it handed the socket already), or
                # wakes for it (an urgent request): it is known now when the page leaves
                left = e.copy_at(*one, max(seen, busy))
                self.arrival[page] = (self.queue_placement(1, left)[0] if self.backlog
                                      else left + self.latency + self.place)
            else:
                self.arrival[page] = self._inf
                self.queue.append((seen, page))
                if not self.urgent.triggered:
                    self.urgent.succeed()
                    self.urgent = e.signal()
        at = self.arrival[page]
        if at != self._inf:
            at = max(at, t) + self.handling
            self.release(v, at)
        return at

    def blocktime(self):
        """(total, per vCPU) blocktime in cycles (``all_blocked``)."""
        return all_blocked(self.intervals)


def all_blocked(intervals):
    """QEMU's blocktime from each vCPU's waits ``intervals[v] = [(start, end), ...]`` (disjoint per
    vCPU): (the time during which every vCPU was waiting at once: postcopy-blocktime, and each vCPU's
    sum of waits: postcopy-vcpu-blocktime)."""
    per = [sum(b - a for a, b in iv) for iv in intervals]
    if len(intervals) == 1:
        return per[0], per
    edges = sorted([(a, 1) for iv in intervals for a, _ in iv] + [(b, -1) for iv in intervals for _, b in iv])
    total, down, since = 0, 0, 0
    for t, d in edges:
        if down == len(intervals):
            total += t - since
        down += d
        since = t
    return total, per


def report(e, mig, setup_s):
    """The policy's own result fields (QEMU's query-migrate counters)."""
    converged = mig.last_stage
    out = {
        "dirty_sync_count": mig.sync_count,
        "normal_pages": e.pages_sent - e.zero_pages_sent,
        "zero_pages": e.zero_pages_sent,
        "expected_downtime_s": None if converged else mig.expected_downtime,
        "needed_downtime_limit_s": mig.needed_downtime,
        "downtime_limit_history": mig.monitor.history if mig.monitor else [],
        "throttle_pct": mig.throttle_history,
        "setup_time_s": setup_s,
        "dirty_pages_rate": mig.dirty_pages_rate,
        "mbps_last_period": mig.mbps,
        "pages_per_second": mig.pages_per_second,
        "threshold_bytes": mig.threshold,
        "remaining_bytes": 0 if converged else mig.remaining * mig.ps,
        "precopy_bytes": mig.precopy_bytes if converged else e.bytes_sent,
        "downtime_bytes": e.bytes_sent - mig.precopy_bytes if converged else 0,
    }
    if mig.q.sync_waits_vcpus:
        out["sync_vcpu_waits"] = mig.sync_waits  # [t (s), wait (s)] per sync while the vCPUs were throttled
    if mig.xbzrle is not None:
        x = mig.xbzrle
        out["xbzrle"] = {"pages": x.pages, "bytes": x.bytes, "cache_miss": x.cache_miss, "overflow": x.overflow,
                         "skipped": x.skipped, "cache_entries": x.entries}
        if x.encode_s or x.copy_s:  # the thread's time for them (only when it is modelled: old results hold)
            out["xbzrle"].update(encoded=x.encoded, inserted=x.inserted, thread_s=x.thread_s)
    return out
