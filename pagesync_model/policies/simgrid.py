"""SimGrid's VM live-migration model (SimGrid 3.32, src/plugins/vm/VmLiveMigration.cpp): ``simgrid``.

A fluid model computed directly: no pages are simulated, so there is no lost-write oracle. The
migration is SimGrid's MigrationTx actor, message by message, as read from SimGrid's source
(experiments/simgrid_agreement/ holds SimGrid's own output for 41 cases):

1. Stage 1 sends all RAM as one message; the measured bandwidth is RAM / (its duration, latency
   included) and the threshold is trunc(bandwidth x max_downtime).
2. Stage 2 sends what the VM dirtied during the previous send, min(trunc(flops x dp_rate), working
   set), one message per round, with dp_rate = mig_speed x intensity / host_speed (a VM running flat
   out dirties intensity x mig_speed bytes/s, whatever its host speed); bandwidth and threshold are
   re-measured from every send; rounds go on while the threshold is below the remaining bytes, with no
   cap other than the migration timeout.
3. Stage 3 suspends the VM and sends the rest: the downtime is that send (its latency included). The
   destination then sends a 0-byte acknowledgement, which ends ``sg_vm_migrate``.

A send of N bytes takes latf x L + N / rate (CM02-family flow: LV08 factors 0.97 / 13.01, CM02 1 / 1;
crosstraffic puts weight 1.05 on a shared link; the rate is capped by mig_speed and by the TCP window
gamma / 2L). SimGrid loops to the timeout and aborts when stage 2 cannot converge; here the rounds
are computed until their sizes repeat (a monotone integer sequence always ends on a fixed point), and
a fixed point above the threshold is reported as ``no-convergence`` with what SimGrid would do next
(``abort_at_s``, ``rounds_at_abort``) instead of looping 1e7 s worth of rounds.
"""
import math

from ..results import PassRecord
from ..bounds import MAX_BANDWIDTH, MAX_BYTES, MAX_SIM_TIME, MAX_STEP
from ..schema import BANDWIDTH, BOOL, CHOICE, DURATION, FLOAT, FRACTION, SIZE, Field, Kind, Section
from ..units import OutOfRange, parse_rate, shorten
from .base import FluidPolicy, register, single_rate_check

# network/model -> (bandwidth factor, latency factor) of SimGrid's CM02-family network models
MODEL_FACTORS = {"LV08": (0.97, 13.01), "CM02": (1.0, 1.0)}
NETWORK_MODELS = list(MODEL_FACTORS)
# With network/crosstraffic the flow also loads its back route with 0.05 x its rate; over one SHARED
# link both directions share one constraint, so the flow's weight on it is 1.05.
CROSSTRAFFIC_WEIGHT = 1.05
# Rounds computed before the closed-form non-convergence proof is tried (only a dirty rate within a
# hair of the flow rate needs that many rounds to reach its fixed point).
PROOF_AFTER = 100_000
MAX_FLOPS = 1e18         # an exaflop/s host: the fastest supercomputers as one host
MAX_TCP_WINDOW = 2**30   # TCP's largest window (a 16-bit window scaled by at most 2^14)


def _parse_flops(raw):
    for parse, kinds in ((FLOAT.parse, (int, float, str)), (parse_rate, str)):
        if isinstance(raw, kinds) and not isinstance(raw, bool):
            try:
                return parse(raw)
            except OutOfRange:
                raise
            except ValueError:
                pass
    raise ValueError(f"cannot read '{shorten(raw)}' as a speed in flop/s (a number such as 1e9 or a rate such as "
                     "1G/s)")


def _parse_intensity(raw):
    if isinstance(raw, str) and raw.strip() == "auto":
        return "auto"
    try:
        return FRACTION.parse(raw)
    except ValueError:
        raise ValueError(f"cannot read '{shorten(raw)}' as a dirty page intensity (a fraction such as 0.5, or auto)") \
            from None


def _intensity_check(value):
    if value != "auto" and not 0 <= value <= 1:
        return "must be in [0, 1] or auto"
    return None


FLOPS = Kind("flop/s", _parse_flops, "flop/s")
INTENSITY = Kind("fraction or auto", _parse_intensity)

SECTION = Section("SimGrid 3.32 VM live migration (VmLiveMigration.cpp), computed as a fluid model.", dict(
    host_speed=Field(FLOPS, "1G/s", "Source host speed in flop/s (cancels out for a busy 1-vCPU VM).", gt=0,
                     le=MAX_FLOPS),
    mig_speed=Field(BANDWIDTH, "0B/s", "Migration speed (sg_vm_set_migration_speed); 0 = unset: no rate cap "
                                      "and, as in SimGrid, nothing is dirtied.", ge=0,
                    le=MAX_BANDWIDTH),
    intensity=Field(INTENSITY, "auto", "Dirty page intensity: a flat-out VM dirties intensity x mig_speed "
                                       "bytes/s; auto = cpus.count x workload.rate x memory.page_size / "
                                       "mig_speed, capped at 1.", check=_intensity_check, check_doc="in [0, 1]"),
    working_set_fraction=Field(FRACTION, 0.9, "Share of memory.size that can be dirty "
                                              "(sg_vm_create_migratable: 0.9).", ge=0, le=1),
    max_downtime=Field(DURATION, "30ms", "Downtime the threshold aims at (hard-coded 30 ms in SimGrid).", gt=0,
                       le=MAX_STEP),
    network_model=Field(CHOICE, "LV08", "SimGrid network/model: LV08 (factors 0.97, 13.01) or CM02 (1, 1).",
                        choices=NETWORK_MODELS),
    crosstraffic=Field(BOOL, True, "network/crosstraffic on a SHARED link (weight 1.05); false also "
                                   "models a SPLITDUPLEX link."),
    tcp_gamma=Field(SIZE, "4MiB", "network/TCP-gamma: the TCP window caps the rate at gamma / (2 x "
                                  "link.latency).", gt=0,
                    le=MAX_TCP_WINDOW),
    ramsize=Field(SIZE, "0B", "RAM in bytes as sg_vm_set_ramsize takes it, any byte count (1e9 is not a whole "
                              "number of pages); 0B = memory.size.", ge=0, le=MAX_BYTES),
    timeout=Field(DURATION, "1e7s", "Migration timeout (hard-coded in MigrationTx); SimGrid aborts there.",
                  gt=0, le=MAX_SIM_TIME),
))


@register
class Simgrid(FluidPolicy):
    """SimGrid's VM live migration as the fluid model it is."""
    name = "simgrid"
    variants = ("correct",)  # no pages are simulated: the broken variants have nothing to break
    sections = {"simgrid": SECTION}
    checks = (single_rate_check("simgrid"),)

    def compute(self, cfg, seed):
        return compute(cfg, seed)


class Flow:
    """One SimGrid migration flow over the link: ``rate`` (bytes/s once the latency is paid) and
    ``latency_phase`` (seconds before the first byte moves).

    ``bandwidth`` (bytes/s) and ``latency`` (s) are the link's; ``mig_speed`` (bytes/s, 0 = unset) the
    Comm::set_rate cap; ``network_model`` a key of MODEL_FACTORS; ``crosstraffic`` whether the back
    route loads the same (SHARED) link; ``tcp_gamma`` the TCP window in bytes. Raises ValueError for an
    unknown network model.
    """

    def __init__(self, bandwidth, latency, mig_speed, network_model="LV08", crosstraffic=True,
                 tcp_gamma=4194304.0):
        try:
            bwf, latf = MODEL_FACTORS[network_model]
        except KeyError:
            raise ValueError(f"unknown network model '{network_model}' (choose from "
                             f"{', '.join(NETWORK_MODELS)})") from None
        weight = CROSSTRAFFIC_WEIGHT if crosstraffic else 1.0
        x = min(bandwidth / weight, bandwidth)
        if mig_speed > 0:
            # SimGrid divides the user rate by the bandwidth factor so that it is honoured exactly
            x = min(x, mig_speed / bwf)
        if latency > 0:
            # the TCP window bound uses the raw route latency, not the one scaled by latf
            x = min(x, tcp_gamma / (2.0 * latency))
        self.rate = bwf * x
        self.latency_phase = latf * latency

    def time(self, nbytes):
        """Seconds one message of ``nbytes`` takes (the latency phase first, then the transfer)."""
        return self.latency_phase + nbytes / self.rate


def resolve_intensity(cfg):
    """The dirty page intensity ``simgrid.intensity`` stands for: its value, or for ``auto`` the
    workload's dirty rate (cpus.count x workload.rate x memory.page_size) over mig_speed, capped at 1
    (0 when mig_speed is unset, since SimGrid then dirties nothing anyway)."""
    s = cfg.simgrid
    if s.intensity != "auto":
        return float(s.intensity)
    if s.mig_speed <= 0:
        return 0.0
    return min(1.0, cfg.cpus.count * cfg.workload.rate * cfg.memory.page_size / s.mig_speed)


def _cannot_converge(n, dirty_rate, flow, max_downtime, ws):
    """True when stage 2, now about to send ``n`` bytes, provably never gets under its threshold.

    Sizes follow n' = f(n) = min(trunc(dirty_rate x T(n)), ws), monotone toward the fixed point of the
    real-valued map, so every later size lies between ``n`` and that point. The threshold after a send
    of n is at most g(n) = n x max_downtime / T(n). h = g - f is concave where f is linear and
    increasing where f is capped, so its maximum on that interval is at an end, at the cap or where
    g' equals f'; if it is below -2 bytes there (truncation and rounding), no round ever stops.
    """
    lf, r, a, dt = flow.latency_phase, flow.rate, dirty_rate, max_downtime
    lam = a / r
    if lam < 1:
        limit = min(a * lf / (1 - lam), ws)
    elif a * lf > 0 or lam > 1:
        limit = ws
    else:
        limit = n
    margin = 2 + 1e-9 * ws
    lo, hi = max(0.0, min(n, limit) - margin), min(float(ws), max(n, limit) + margin)

    def h(x):
        t = lf + x / r
        g = x * dt / t if t > 0 else 0.0
        return g - min(a * t, ws)

    cap = (ws / a - lf) * r if a > 0 else math.inf
    points = [lo, hi, min(max(cap, lo), hi)]
    if a > 0 and lf > 0:
        best = math.sqrt(dt * r ** 3 * lf / a) - r * lf
        points.append(min(max(best, lo), min(hi, max(cap, lo))))
    return max(h(x) for x in points) < -margin


def _pages(nbytes, page_size):
    return -(-int(nbytes) // page_size)


def compute(cfg, seed):
    """SimGrid's migration of the VM described by ``cfg`` (simgrid.ramsize or memory.size = RAM, link.bandwidth and
    link.latency = the route, the ``simgrid`` section); ``seed`` is unused (the model is deterministic).
    Returns (summary, per_pass): 'full' is stage 1, each 'pass' a stage-2 round, 'blackout' stage 3.
    link.efficiency is not applied: SimGrid's bandwidth factor (0.97 for LV08) plays that part."""
    s = cfg.simgrid
    ps = cfg.memory.page_size
    ram = s.ramsize or cfg.memory.size
    ws = int(ram * s.working_set_fraction)
    intensity = resolve_intensity(cfg)
    flow = Flow(cfg.link.bandwidth, cfg.link.latency, s.mig_speed, s.network_model, s.crosstraffic, s.tcp_gamma)
    speed = s.host_speed
    dp_rate = (s.mig_speed * intensity) / speed
    max_downtime = s.max_downtime

    def dirtied(duration):
        # a busy 1-vCPU VM alone on its host runs at host_speed flop/s while stages 1 and 2 run
        return min(int(speed * duration * dp_rate), ws)

    records = []

    def send(kind, start, nbytes):
        d = flow.time(nbytes)
        pages = _pages(nbytes, ps)
        records.append(PassRecord(pass_=len(records), kind=kind, start_s=start, duration_s=d, dirty_pages=pages,
                                  pages_copied=pages, bytes=int(nbytes)))
        return d

    t1 = send("full", 0.0, ram)
    t = t1
    left = s.timeout - t1
    bw = ram / t1
    thr = int(bw * max_downtime)
    thresholds, bandwidths = [thr], [bw]
    rounds = 0
    remaining = 0
    stop_reason = "threshold"
    fixed_point = fixed_point_round = None
    rounds_at_abort = None
    extra = {}
    if left < 0:
        # stage 2 is skipped and stage 3 sends nothing: SimGrid drops the stage-1 dirt
        stop_reason = "stage1-timeout"
        extra["dropped_bytes"] = dirtied(t1)
    else:
        upd = remaining = dirtied(t1)
        prev = None
        while thr < remaining:
            d = flow.time(upd)
            if d > left:
                stop_reason, rounds_at_abort = "timeout", rounds + 1
                break
            if upd == prev or (rounds and rounds % PROOF_AFTER == 0
                               and _cannot_converge(upd, speed * dp_rate, flow, max_downtime, ws)):
                stop_reason = "no-convergence"
                if upd == prev:
                    fixed_point, fixed_point_round = upd, d
                # SimGrid keeps sending rounds of d until one outlasts the timeout
                rounds_at_abort = rounds + int(left // d) + 1 if upd == prev else None
                break
            prev = upd
            send("pass", t, upd)
            t += d
            left -= d
            rounds += 1
            bw = upd / d
            thr = int(bw * max_downtime)
            thresholds.append(thr)
            bandwidths.append(bw)
            upd = remaining = dirtied(d)
            if left <= 0:
                # xbt_assert(mig_timeout > 0) after a send: SimGrid aborts
                stop_reason, rounds_at_abort = "timeout", rounds
                break

    converged = stop_reason == "threshold"
    completes = stop_reason in ("threshold", "stage1-timeout")
    if completes:
        downtime = send("blackout", t, remaining)
        ack = flow.time(0)
        resume = t + downtime
        total = resume + ack
        expected = None
    else:
        downtime = ack = resume = None
        total = s.timeout if stop_reason == "timeout" else t
        expected = remaining / bw

    memory_pages = _pages(ram, ps)
    summary = {
        "converged": converged,
        "stop_reason": stop_reason,
        "downtime_s": downtime,
        "expected_downtime_s": expected,
        "total_time_s": total,
        "memory_pages": memory_pages,
        "page_size": ps,
        "model": "fluid",
        "rounds": rounds,
        "remaining_bytes": remaining,
        "dirty_sync_count": rounds + 1 if stop_reason != "stage1-timeout" else 0,
        "thresholds_bytes": thresholds,
        "bandwidths_Bps": bandwidths,
        "intensity": intensity,
        "dirty_rate_Bps": speed * dp_rate,
        "working_set_bytes": ws,
        "flow_rate_Bps": flow.rate,
        "latency_phase_s": flow.latency_phase,
        "stage1_s": t1,
        "resume_time_s": resume,
        "ack_s": ack,
        "fixed_point_bytes": fixed_point,
        "fixed_point_round_s": fixed_point_round,
        "abort_at_s": None if completes else s.timeout,
        "rounds_at_abort": rounds_at_abort,
        **extra,
    }
    return summary, records
