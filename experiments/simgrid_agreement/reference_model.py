"""Closed-form re-implementation of SimGrid 3.32's VM live-migration model.

Written from a description of SimGrid's source (the one that heads
pagesync_model/policies/simgrid.py), used only to check that the written
description reproduces SimGrid's own numbers (results.json).  Not part of pagesync-sim; stdlib only.

    from reference_model import predict
    predict(ram_mib=1024, host_speed=1e9, link_bw=125e6, link_lat=1e-4,
            mig_speed=125e6, intensity=0.5, network_model="LV08")
"""
from __future__ import annotations

MIG_TIMEOUT = 10_000_000.0  # s, hard-coded in MigrationTx
MAX_DOWNTIME = 0.03  # s, DirtyPageTrackingExt default, no setter
WORKING_SET_FRACTION = 0.9  # sg_vm_create_migratable
MODEL_FACTORS = {  # (bandwidth factor, latency factor)
    "LV08": (0.97, 13.01),
    "CM02": (1.0, 1.0),
}
TCP_GAMMA = 4194304.0  # network/TCP-gamma default


def effective_rate(link_bw, link_lat, mig_speed, network_model="LV08",
                   crosstraffic=True, sharing="SHARED", tcp_gamma=TCP_GAMMA):
    """Bytes/s a single migration flow gets once its latency has been paid."""
    bwf, _ = MODEL_FACTORS[network_model]
    # crosstraffic: the flow also uses 0.05 x its rate on the back route; on a
    # SHARED link used in both directions the two uses add up (weight 1.05).
    weight = 1.05 if (crosstraffic and sharing == "SHARED") else 1.0
    x = link_bw / weight  # LMM variable bound from the link constraint
    x = min(x, link_bw)  # route bandwidth bound (user bound)
    if mig_speed > 0:
        x = min(x, mig_speed / bwf)  # Comm::set_rate, pre-divided by the factor
    if link_lat > 0:
        x = min(x, tcp_gamma / (2.0 * link_lat))  # raw (unscaled) latency
    return bwf * x


def send_time(nbytes, link_bw, link_lat, mig_speed, network_model="LV08", **kw):
    _, latf = MODEL_FACTORS[network_model]
    rate = effective_rate(link_bw, link_lat, mig_speed, network_model, **kw)
    return link_lat * latf + nbytes / rate


def predict(ram_mib, host_speed, link_bw, link_lat, mig_speed, intensity,
            network_model="LV08", crosstraffic=True, sharing="SHARED"):
    kw = dict(crosstraffic=crosstraffic, sharing=sharing)

    def st(n):
        return send_time(n, link_bw, link_lat, mig_speed, network_model, **kw)

    ram = ram_mib * 1024 * 1024
    ws = int(ram * WORKING_SET_FRACTION)
    dp_rate = (mig_speed * intensity) / host_speed if host_speed != 0 else 1.0
    flops_per_s = host_speed  # 1 vCPU, 1 busy exec, alone on its PM

    def dirtied(duration):
        return min(int(flops_per_s * duration * dp_rate), ws)

    t1 = st(ram)
    t = t1
    timeout = MIG_TIMEOUT - t1
    bw = ram / t1
    thr = int(bw * MAX_DOWNTIME)
    rounds = 0
    remaining = 0
    if timeout >= 0:
        upd = dirtied(t1)
        remaining = upd
        prev = None
        while thr < remaining:
            d = st(upd)
            if d > timeout:
                # SimGrid 3.32 aborts (uncaught TimeoutException in the RX actor)
                return dict(completed=False, abort_time=MIG_TIMEOUT, rounds=rounds + 1,
                            stage1_time=t1)
            if prev == (upd, thr):
                # fixed point above the threshold: it will never converge; the
                # remaining rounds all last d until the 1e7 s timeout
                k = int(timeout // d)
                return dict(completed=False, abort_time=MIG_TIMEOUT, rounds=rounds + k + 1,
                            stage1_time=t1, fixed_point_bytes=upd, fixed_point_round_time=d)
            prev = (upd, thr)
            t += d
            timeout -= d
            rounds += 1
            bw = upd / d
            thr = int(bw * MAX_DOWNTIME)
            upd = dirtied(d)
            remaining = upd
    t3 = st(remaining)
    ack = st(0)  # 0-byte "__mig_stage4" control message dst -> src (issuer on src)
    return dict(completed=True, total_time=t + t3 + ack, downtime=t3, rounds=rounds,
                stage1_time=t1, stage3_bytes=remaining, migration_time_to_resume=t + t3)


if __name__ == "__main__":
    import json
    import sys

    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    num = {k: float(v) for k, v in args.items() if k not in ("network_model", "sharing")}
    num["ram_mib"] = int(num.get("ram_mib", 1024))
    print(json.dumps(predict(network_model=args.get("network_model", "LV08"),
                             sharing=args.get("sharing", "SHARED"),
                             **{k: v for k, v in num.items()}), indent=1))
