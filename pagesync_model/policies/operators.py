"""The operator layer that clouds put on top of QEMU: downtime schedules, timeouts and what to do then.

A monitor samples the migration every ``operator.monitor_period`` and may raise QEMU's
downtime-limit or end the migration. Sources (read in each project's tree):
- ``nova``: OpenStack Nova's libvirt driver (nova/virt/libvirt/migration.py downtime_steps,
  update_downtime, should_trigger_timeout_action; driver.py _live_migration_data_gb and
  _live_migration_monitor): data_gb = max(RAM GiB, 2); downtime steps (t_i, d_i) =
  (i * int(delay * data_gb), int(D/S + (D - D/S) * i/S)), i = 0..S, the step in force being the last
  with elapsed > t_i; completion timeout = int(timeout * data_gb), then abort or force-complete
  (post-copy when permitted, else pause the guest and keep copying), acted on at the next tick.
- ``kubevirt``: KubeVirt's migration monitor (live-migration-source.go): data = ceil(bytes / 1e9);
  deadline = completionTimeoutPerGiB * data; "progress" = remaining data fell since the previous
  400 ms sample, abort after progressTimeout without it; past the deadline abort, or with workload
  disruption allowed switch to post-copy (or pause and double the deadline).
- ``ovirt``: vdsm's MonitorThread running oVirt's "Minimal downtime" policy: downtime 100 ms at
  start; every 10 s, if a new memory iteration (QEMU dirty-sync-count) was seen, the head item of
  the schedule runs when its limit is below the iterations since monitoring began:
  1 -> 150 ms, 2 -> 200, 3 -> 300, 4 -> 400, 6 -> 500, then abort (limit -1).
"""
import math

from ..bounds import MAX_DOWNTIME, MAX_ROUNDS, MAX_SIM_TIME, MAX_STEP
from ..schema import CHOICE, DURATION, INT, ConfigError, Field, Section

KINDS = ["none", "nova", "kubevirt", "ovirt"]
OVIRT_MINIMAL_DOWNTIME = {"init": 0.100, "stalling": [(1, 0.150), (2, 0.200), (3, 0.300), (4, 0.400), (6, 0.500),
                                                      (-1, "abort")]}

SECTION = Section("The management layer over QEMU (qemu policy only): downtime schedule and timeouts.", dict(
    kind=Field(CHOICE, "none", "Whose monitor runs the migration: none (plain QEMU), nova, kubevirt or ovirt.",
               choices=KINDS),
    monitor_period=Field(DURATION, "500ms", "How often the monitor samples the migration.", gt=0,
                         le=MAX_STEP),
    downtime=Field(DURATION, "500ms", "nova: live_migration_downtime, the last and largest step.", gt=0,
                   le=MAX_DOWNTIME),
    downtime_steps=Field(INT, 10, "nova: live_migration_downtime_steps.", ge=1, le=MAX_ROUNDS),
    downtime_delay=Field(DURATION, "75s", "nova: live_migration_downtime_delay, per GiB of data.", ge=0,
                         le=MAX_STEP),
    completion_timeout=Field(DURATION, "0s", "Completion timeout per GiB of data (0 = none).", ge=0,
                             le=MAX_SIM_TIME),
    progress_timeout=Field(DURATION, "0s", "Abort after this long without progress (0 = none).", ge=0,
                           le=MAX_SIM_TIME),
    on_timeout=Field(CHOICE, "abort", "At the completion timeout: abort, pause the guest and keep copying, "
                                      "or switch to post-copy.", choices=["abort", "pause", "postcopy"]),
))


def operator_runs_over_qemu(v, raw):
    """Cross-field check: an operator's monitor needs the qemu policy."""
    if v["operator.kind"] != "none" and v["policy"] != "qemu":
        raise ConfigError("operator.kind", f"'{v['operator.kind']}' manages QEMU migrations: it needs "
                                           f"policy: qemu (this config's policy is '{v['policy']}')")


def time_scales(cfg):
    """[(what, seconds)]: the operator's monitor period and the smallest downtime-limit it sets (for
    ``sim.quantum: auto``); none without an operator."""
    o = cfg.operator
    if o.kind == "none":
        return []
    out = [("operator.monitor_period", o.monitor_period)]
    if o.kind == "nova":
        out.append(("nova's first downtime step", int(o.downtime * 1e3 / o.downtime_steps) / 1e3))
    elif o.kind == "ovirt":
        out.append(("ovirt's initial downtime", OVIRT_MINIMAL_DOWNTIME["init"]))
    return out


class Monitor:
    """One operator's monitor over a QEMU migration; ``tick`` returns an action or None."""

    def __init__(self, cfg, memory_bytes):
        o = cfg.operator
        self.o = o
        self.kind = o.kind
        gib = memory_bytes / 2**30
        if self.kind == "kubevirt":
            self.data_gb = math.ceil(memory_bytes / 1e9)
        else:
            self.data_gb = max(gib, 2.0)
        self.deadline = o.completion_timeout * self.data_gb if o.completion_timeout > 0 else None
        if self.kind == "nova" and self.deadline is not None:
            self.deadline = int(self.deadline)
        self.steps = []
        if self.kind == "nova":
            delay = int(o.downtime_delay * self.data_gb)
            d_ms = o.downtime * 1e3
            base = d_ms / o.downtime_steps
            offset = (d_ms - base) / o.downtime_steps
            self.steps = [(delay * i, int(base + offset * i) / 1e3) for i in range(o.downtime_steps + 1)]
        self.schedule = [list(x) for x in OVIRT_MINIMAL_DOWNTIME["stalling"]] if self.kind == "ovirt" else []
        self.initial_iteration = None
        self.last_iteration = None
        self.last_remaining = None
        self.last_progress = 0.0
        self.pending_action = None
        self.paused = False
        self.history = []

    def initial_downtime(self):
        """The downtime-limit the monitor sets when it starts, or None to keep QEMU's."""
        if self.kind == "ovirt":
            return OVIRT_MINIMAL_DOWNTIME["init"]
        return None

    def tick(self, elapsed, sync_count, remaining_bytes, downtime):
        """Sample at ``elapsed`` seconds since the start; returns (new downtime or None, action or None)."""
        new_downtime, action = None, None
        if self.kind == "nova":
            if self.pending_action:  # force-complete is queued and runs at the next tick
                action, self.pending_action = self.pending_action, None
                return None, action
            if self.deadline is not None and elapsed > self.deadline:
                if self.o.on_timeout == "abort":
                    return None, "abort:completion-timeout"
                self.pending_action = self.o.on_timeout + ":completion-timeout"
                self.deadline = None
            past = [d for t, d in self.steps if elapsed > t]
            if past and past[-1] != downtime:
                new_downtime = past[-1]
        elif self.kind == "kubevirt":
            if self.last_remaining is None or remaining_bytes < self.last_remaining:
                self.last_progress = elapsed
            self.last_remaining = remaining_bytes
            if self.deadline is not None and elapsed > self.deadline and not self.paused:
                if self.o.on_timeout == "postcopy":
                    return None, "postcopy:completion-timeout"
                if self.o.on_timeout == "pause":
                    self.paused = True
                    self.deadline *= 2
                    return None, "pause:completion-timeout"
                return None, "abort:completion-timeout"
            if self.o.progress_timeout > 0 and elapsed - self.last_progress > self.o.progress_timeout:
                return None, "abort:progress-timeout"
        elif self.kind == "ovirt":
            if self.initial_iteration is None:
                self.initial_iteration = self.last_iteration = sync_count
            elif sync_count > self.last_iteration:
                self.last_iteration = sync_count
                n = sync_count - self.initial_iteration
                if self.schedule and self.schedule[0][0] < n:
                    _, what = self.schedule.pop(0)
                    if what == "abort":
                        return None, "abort:convergence-schedule"
                    new_downtime = what
        if new_downtime is not None:
            self.history.append([round(elapsed, 6), round(new_downtime * 1e3, 3)])
        return new_downtime, action
