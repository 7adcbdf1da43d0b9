"""QEMU 1.6's migration rules (commit 7ca1dfad, June 2013, "Force auto-convergence of live migration"):
``qemu.rules: "1.6"``.

Read in QEMU's tree at that commit (experiments/reproductions/SOURCES.md, section (d)): migration.c
(migration_thread), arch_init.c (migration_bitmap_sync, ram_save_iterate, ram_save_pending,
check_guest_throttling, mig_sleep_cpu), savevm.c (qemu_file_rate_limit). How they differ from the
default rules (qemu.py, QEMU 10):

- Rate limit: a 100 ms window carries ``max_bandwidth / 10`` bytes; the window is exceeded once the
  bytes written in it are *more than* the quota (the last page may overshoot).
- Loop: if the window is not exceeded, ``pending`` = pages left x page size; if pending < max_size the
  dirty bitmap is synced and pending recounted; if pending != 0 and pending >= max_size one iterate
  step runs, otherwise the VM stops and everything left goes out unthrottled. ``max_size`` starts at
  0 (the first turns always iterate).
- Every >= 100 ms (whole ms, checked after the step): bandwidth = bytes in the window // ms (integer
  division, bytes/ms), ``max_size = bandwidth x downtime_limit``, expected downtime = dirty bytes rate
  / bandwidth (when both are known).
- An iterate step sends pages in bitmap order until the window's quota is exceeded, more than 50 ms
  pass (MAX_WAIT) or no dirty page is left, then an 8-byte end-of-section marker.
- A sync closing a period of more than 1000 ms: with auto-converge, when the previous period's dirty
  pages rate is not 0 and the pages newly dirtied in the period x page size exceed half the RAM bytes
  sent in it, ``dirty_rate_high_cnt++ > 4`` (post-increment: the 6th such period, counted
  cumulatively) turns the throttle on for good and resets the count; then the period's dirty pages
  rate is pages x 1000 // ms.
- The throttle: while the migration thread sends pages, each time more than 40 ms (whole ms) have passed
  since the last throttle, every vCPU is made to sleep 30 ms. The first check only records the time.
  The vCPUs therefore sleep 30 ms of every 41 while pages are being sent, and not at all while the
  thread syncs or sleeps out a window.
- Completion: stop, one last sync, send the rest and the device state without rate limit.
- Costs of the thread's own work (optional, default free): ``qemu.zero_page_test`` per all-zero page
  sent (is_zero_page reads the whole page); the sync's walk of every page of RAM under the big lock
  (migration_bitmap_sync: memory_region_test_and_clear_dirty per page) is the machine's log-sync cost,
  ``tracking.pte_scan`` per page. The thread holds the big lock only in the sync and the completion,
  not while it sends (migration_thread calls qemu_savevm_state_iterate without it); a vCPU releases it
  for its 30 ms sleep (mig_sleep_cpu) and a KVM vCPU does not hold it while it runs guest code, so the
  lock adds no wait the model lacks.

Not modelled under these rules (refused by the config check): XBZRLE, the operator layer, the
cpu-throttle percentages of later QEMU (``throttle_*``), which 1.6 does not have.
"""
from ..schema import ConfigError
from .qemu import PAGE_HEADER, SECTION, Migration, StopClock, register_rules, report, stop_tail

RULES = ["current", "1.6"]
WINDOW_MS = 100        # BUFFER_DELAY (migration.c)
MAX_WAIT_MS = 50       # MAX_WAIT (arch_init.c)
PERIOD_MS = 1000       # a sync closes a dirty-rate period after more than this (arch_init.c)
THROTTLE_EVERY_MS = 40  # check_guest_throttling: throttle again after more than this
THROTTLE_SLEEP = 0.030  # s: mig_sleep_cpu's g_usleep(30*1000)
HIGH_COUNT = 4         # dirty_rate_high_cnt++ > 4
EOS_BYTES = 8          # RAM_SAVE_FLAG_EOS after each iterate step
# the throttle fields of later QEMU, which 1.6 does not have
LATER_FIELDS = ("throttle_initial", "throttle_increment", "throttle_max", "throttle_trigger")


def rules_check(v, raw):
    """Cross-field check: refuse what ``qemu.rules: "1.6"`` would silently ignore."""
    if v.get("policy") != "qemu" or v.get("qemu.rules") != "1.6":
        return
    why = "is not modelled under qemu.rules \"1.6\" (QEMU 1.6's auto-converge has no such setting)"
    if v["qemu.xbzrle"]:
        raise ConfigError("qemu.xbzrle", "XBZRLE is not modelled under qemu.rules \"1.6\"")
    if v["operator.kind"] != "none":
        raise ConfigError("operator.kind", f"'{v['operator.kind']}' is not modelled under qemu.rules \"1.6\"")
    if v["qemu.sync_waits_vcpus"]:
        raise ConfigError("qemu.sync_waits_vcpus", "TCG's sync wait for a throttled vCPU is not modelled under "
                                                   "qemu.rules \"1.6\" (its vCPUs sleep 30 ms on their own)")
    for name in LATER_FIELDS:
        if raw[f"qemu.{name}"] != SECTION.members[name].default:
            raise ConfigError(f"qemu.{name}", f"{raw[f'qemu.{name}']} {why}")


class Migration16(Migration):
    """The 1.6 migration thread's state on top of the common one (bitmap, cursor, counters)."""

    def __init__(self, e):
        super().__init__(e)
        self.max_size = 0                  # bytes; migration_thread's max_size
        self.bandwidth = 0                 # bytes per ms, integer
        self.expected_downtime = None
        self.sync_start_ms = None          # migration_bitmap_sync's static start_time
        self.throttle_on = False           # mig_throttle_on
        self.throttle_on_at = None
        self.throttle_t0 = None            # check_guest_throttling's static t0
        self.sleeps = 0

    def update_counters(self):
        """migration_thread's 100 ms bookkeeping."""
        e = self.e
        now = self.now_ms()
        if now < self.period_start + WINDOW_MS:
            return
        transferred = e.bytes_sent - self.period_bytes
        spent_ms = now - self.period_start
        self.periods[spent_ms] = self.periods.get(spent_ms, 0) + 1
        self.bandwidth = transferred // spent_ms
        self.max_size = int(self.bandwidth * self.downtime_limit * 1e3)
        self.mbps = transferred * 8 / (spent_ms / 1e3) / 1e6
        dirty_bytes_rate = self.dirty_pages_rate * self.ps
        if dirty_bytes_rate and transferred > 10000 and self.bandwidth > 0:
            self.expected_downtime = dirty_bytes_rate / self.bandwidth / 1e3
        self.period_start = now
        self.period_bytes = self.window_bytes = e.bytes_sent

    def quota(self):
        return int(self.q.max_bandwidth) // (1000 // WINDOW_MS)

    def rate_exceeded(self):
        return self.e.bytes_sent - self.window_bytes > self.quota()

    def sync(self):
        """Process step: migration_bitmap_sync at 1.6, with its auto-converge trigger."""
        e = self.e
        h = self.harvest_log()
        if self.sync_start_ms is None:
            self.sync_start_ms = self.now_ms()
        yield e.wait(e.log_sync_cost())
        end_ms = self.now_ms()
        if end_ms > self.sync_start_ms + PERIOD_MS:
            if self.q.auto_converge:
                xfer_now = e.bytes_sent
                if self.dirty_pages_rate and self.dirty_period * self.ps > (xfer_now - self.bytes_xfer_prev) // 2:
                    count = self.high_cnt
                    self.high_cnt += 1
                    if count > HIGH_COUNT and not self.last_stage:
                        if not self.throttle_on:
                            self.throttle_on_at = e.seconds(e.now)
                        self.throttle_on = True
                        self.high_cnt = 0
                self.bytes_xfer_prev = xfer_now
            else:
                self.throttle_on = False
            self.dirty_pages_rate = self.dirty_period * 1000 // (end_ms - self.sync_start_ms)
            self.sync_start_ms = end_ms
            self.dirty_period = 0
        return h.new_bits

    def check_throttling(self):
        """check_guest_throttling: every vCPU sleeps 30 ms once more than 40 ms passed since the last time."""
        if not self.throttle_on or self.last_stage:
            return
        now = self.e.now
        if self.throttle_t0 is None:
            self.throttle_t0 = now
            return
        if int((now - self.throttle_t0) // self.ms) > THROTTLE_EVERY_MS:
            self.throttle_t0 = now
            self.sleeps += 1
            self.e.env.process(self._sleep_vcpus())

    def _sleep_vcpus(self):
        """Process role: mig_sleep_cpu on every vCPU (queued with async_run_on_cpu: no waiting)."""
        e = self.e
        e.pause()
        yield e.wait(e.cycles(THROTTLE_SLEEP))
        if not self.last_stage:  # the VM stopped for completion meanwhile: it stays stopped
            e.resume()


def scanner(e):
    """Process role: QEMU 1.6's migration thread on machine ``e``."""
    mig = Migration16(e)
    q = mig.q
    limit = e.cycles(e.cfg.sim.time_limit)
    rec = e.open_pass("full")
    yield e.wait(e.cycles(q.setup))
    setup_s = e.seconds(e.now)
    yield from mig.sync()  # ram_save_setup: every page already pending; one sync
    mig.period_start = mig.now_ms()
    mig.period_bytes = mig.window_bytes = e.bytes_sent
    found = mig.n
    while True:
        if not mig.rate_exceeded():
            pending = mig.remaining * mig.ps
            exact = None
            if pending < mig.max_size:
                exact = yield from mig.sync()  # ram_save_pending
                pending = mig.remaining * mig.ps
            if not (pending and pending >= mig.max_size):
                yield from complete(e, mig, rec, found, setup_s, exact or 0)
                return
            if exact is not None:  # the sync opened another pass over the bitmap
                e.close_pass(rec, found)
                rec = e.open_pass("pass")
                found = exact
            yield from iterate(e, mig)
        if e.now >= limit:
            e.close_pass(rec, found)
            e.finish(False, "time-limit", None, **own_fields(e, mig, setup_s))
            return
        mig.update_counters()
        if mig.rate_exceeded():
            wait_ms = max(0, mig.period_start + WINDOW_MS - mig.now_ms())
            yield e.wait(max(1, int(round(wait_ms * mig.ms))))


def iterate(e, mig):
    """Process step: ram_save_iterate at 1.6: send until the quota is exceeded, more than 50 ms pass or
    the bitmap is empty; the throttle check runs as pages go; then the end-of-section marker."""
    t0 = e.now
    per_page = PAGE_HEADER + mig.ps
    while not mig.rate_exceeded() and mig.remaining > 0:
        left = mig.quota() - (e.bytes_sent - mig.window_bytes)
        budget = max(1, min(e.chunk_pages, int(left) // per_page + 1))
        starts, lens = mig.next_pages(budget)
        if len(starts) == 0:
            break
        zeros = e.zero_pages_sent
        yield from mig.send(starts, lens)
        yield from zero_test(e, mig, e.zero_pages_sent - zeros)
        mig.check_throttling()
        if int((e.now - t0) // mig.ms) > MAX_WAIT_MS:
            break
    yield from e.send_bytes(EOS_BYTES)


def zero_test(e, mig, zeros):
    """Process step: the migration thread's zero test of the ``zeros`` all-zero pages it just sent
    (ram_save_block -> is_zero_page -> buffer_find_nonzero_offset reads each whole page), at
    ``qemu.zero_page_test`` per page; the thread does it itself, so nothing else moves meanwhile."""
    cost = mig.q.zero_page_test
    if cost > 0 and zeros > 0:
        yield e.wait(e.cycles(zeros * cost))


def complete(e, mig, rec, found, setup_s, exact):
    """Process step: the stop and qemu_savevm_state_complete at 1.6: stop, last sync, the rest and the
    device state unthrottled, then the same fixed parts of the stop as today's rules (qemu.py:
    ``complete``; ``downtime_parts``). Downtime runs from the stop to the end."""
    q = mig.q
    e.close_pass(rec, found)
    t_stop = e.now
    mig.precopy_bytes = e.bytes_sent
    rec = e.open_pass("blackout")
    clock = StopClock(e)
    e.pause()
    mig.last_stage = True
    yield from clock.wait("vm_stop", q.vm_stop)
    new = yield from mig.sync()
    clock.mark("last_sync")
    starts, lens = e.all_runs(mig.bitmap)
    if len(starts):
        zeros = e.zero_pages_sent
        yield from mig.send(starts, lens)
        yield from zero_test(e, mig, e.zero_pages_sent - zeros)
    clock.mark("pages")
    yield from e.send_bytes(q.device_state)
    yield from e.drain()
    clock.mark("device_state")
    source = yield from stop_tail(e, q, clock)
    e.close_pass(rec, new + exact)
    e.finish(True, "threshold", t_stop, **own_fields(e, mig, setup_s), downtime_parts=clock.parts,
             qemu_downtime_s=source)


def own_fields(e, mig, setup_s):
    """The common query-migrate counters, with 1.6's expected downtime (dirty bytes rate / bandwidth)
    and when its throttle came on."""
    out = report(e, mig, setup_s)
    if not mig.last_stage:
        out["expected_downtime_s"] = mig.expected_downtime
    out["threshold_bytes"] = mig.max_size
    out["throttle_on_s"] = mig.throttle_on_at
    out["throttle_sleeps"] = mig.sleeps
    return out


register_rules("1.6", rules_check, scanner)
