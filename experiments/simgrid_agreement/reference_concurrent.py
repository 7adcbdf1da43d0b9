"""A stdlib fluid model of several idle-VM live migrations at once in SimGrid 3.32 (LV08, crosstraffic),
written from SimGrid's source, used to check results_concurrent.json (run_concurrent.py records its
prediction and error for every idle case).

What SimGrid does (read at simgrid/simgrid tag v3.32; SOURCES: experiments/reproductions/SOURCES.md (e)
for the single-migration part):
- An idle VM's migration (no migration speed, intensity 0: no stage 2) is three messages on its route:
  stage 1 of RAM bytes, an empty stage 3 (the VM is suspended during it: the downtime), and the
  receiver's 0-byte stage-4 acknowledgement (VmLiveMigration.cpp). Routes are symmetrical.
- A message first pays a latency phase of latency_factor x (sum of its route's latencies) during which
  it takes no bandwidth (src/surf/network_cm02.cpp: the variable's penalty is 0 until the latency is
  paid), then shares bandwidth.
- Sharing is a weighted max-min (the lmm solver): a flow's sharing penalty is its route's latency sum
  plus weight_S / bandwidth for every link of the route (network_cm02.cpp L431-438; weight_S = 20537
  for LV08); on a saturated link the flows' rates are in inverse proportion to their penalties.
- With crosstraffic, a flow also loads the links of its back route with 0.05 of its rate; on a
  symmetrical route that is the same links, so it consumes 1.05 x its rate on each of them. The rate
  the solver gives a flow is scaled by bandwidth_factor (0.97, `set_rate_factor`); all flows having the
  same factor, that is the same as a capacity of 0.97 x the link's bandwidth, as written here.
This models only those rules (no TCP-gamma bound: it does not bind on these platforms; no stage 2).
"""
from __future__ import annotations

LATF, BWF, WEIGHT_S, CROSS = 13.01, 0.97, 20537.0, 1.05


def _rates(active, links):
    """Weighted max-min by progressive filling: {flow: rate} for flows in their bandwidth phase."""
    rates, left = {}, dict(active)
    cap = {name: BWF * bw for name, (bw, _lat) in links.items()}
    while left:
        best = None
        for name in cap:
            users = [f for f in left if name in left[f]["route"]]
            if not users:
                continue
            x = cap[name] / sum(CROSS / left[f]["penalty"] for f in users)
            if best is None or x < best[0]:
                best = (x, users)
        x, users = best
        for f in users:
            rates[f] = x / left[f]["penalty"]
            for name in left[f]["route"]:
                cap[name] -= CROSS * rates[f]
            del left[f]
    return rates


def _rates_by(solver, active, links):
    """The same rates from another solver ``solver(capacities, routes, weights) -> rates`` of weighted
    max-min (e.g. pagesync_model.sim.interconnect.max_min_rates): a symmetrical route's crosstraffic is
    folded into the capacities (each flow takes 1.05 x its rate on every link it crosses), the
    penalties become weights (rates in inverse proportion to them)."""
    names = sorted({name for f in active.values() for name in f["route"]})
    index = {name: i for i, name in enumerate(names)}
    flows = list(active)
    rates = solver([BWF * links[name][0] / CROSS for name in names],
                   [[index[name] for name in active[f]["route"]] for f in flows],
                   [1.0 / active[f]["penalty"] for f in flows])
    return dict(zip(flows, rates))


def predict(links, routes, vms, solver=None):
    """``links`` {name: (bytes/s, s)}, ``routes`` [(src, dst, [link, ...])] (symmetrical), ``vms`` list of
    dicts with name, src, dst, ram (bytes) and offset (s, or None); ``solver`` another weighted max-min
    solver to share the links with (None: this module's). Returns {vm: {total_time, downtime,
    mig_start, mig_end}}."""
    table = {}
    for src, dst, route in routes:
        table[(src, dst)] = table[(dst, src)] = list(route)
    flows = {}
    for v in vms:
        route = table[(v["src"], v["dst"])]
        lat = sum(links[name][1] for name in route)
        penalty = lat + sum(WEIGHT_S / links[name][0] for name in route)
        start = v.get("offset") or 0.0
        flows[v["name"]] = {"route": set(route), "lat": LATF * lat, "penalty": penalty, "start": start,
                            "stage": 1, "phase": "latency", "until": start + LATF * lat, "bytes": float(v["ram"]),
                            "suspend": None, "end": None}
    t = 0.0
    while any(f["end"] is None for f in flows.values()):
        active = {n: f for n, f in flows.items() if f["end"] is None and f["phase"] == "bytes"}
        rates = _rates(active, links) if solver is None or not active else _rates_by(solver, active, links)
        # next event: a latency phase ends, or a flow's bytes run out
        nxt = min([f["until"] for f in flows.values() if f["end"] is None and f["phase"] == "latency"] +
                  [t + f["bytes"] / rates[n] for n, f in active.items()])
        for n, f in active.items():
            f["bytes"] -= rates[n] * (nxt - t)
        t = nxt
        for n, f in flows.items():
            if f["end"] is not None:
                continue
            done_latency = f["phase"] == "latency" and f["until"] <= t + 1e-12
            done_bytes = f["phase"] == "bytes" and f["bytes"] <= 1e-3
            if done_latency and f["stage"] == 1:
                f["phase"] = "bytes"
            elif done_bytes or (done_latency and f["stage"] > 1):
                if f["stage"] == 1:      # stage 3: the VM is suspended, an empty message
                    f["suspend"] = t
                    f.update(stage=3, phase="latency", until=t + f["lat"])
                elif f["stage"] == 3:    # resumed on the destination; the 0-byte acknowledgement
                    f["resume"] = t
                    f.update(stage=4, phase="latency", until=t + f["lat"])
                else:
                    f["end"] = t
    return {n: {"mig_start": f["start"], "mig_end": f["end"], "total_time": f["end"] - f["start"],
                "downtime": f["resume"] - f["suspend"]} for n, f in flows.items()}
