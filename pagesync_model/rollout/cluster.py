"""A cluster to roll through maintenance (``pagesync-sim rollout CLUSTER.yaml``, docs/evacuate.md).

`load_cluster(path)` reads CLUSTER.yaml into a `Cluster`: H hosts alike, each the host of a HOST.yaml
(`pagesync_model.evacuate`: its links, platform limit, order, listed VMs and drawn VMs), drained
``batch`` hosts at a time, the links named ``shared`` common to the hosts of a batch (the fabric),
the others each host's own. Each host is reduced to what the fluid model needs (rollout/fluid.py):
per VM its memory, dirty rate, route, link efficiency and latency, downtime limit (``qemu.
downtime_limit`` for a qemu VM, else ``analytic.downtime_limit``), ``analytic.max_rounds``, cap and
channels, its switch to post-copy (`postcopy_switch`) and the host's ``postcopy_recover``; a drawn
VM's size and dirty rate are drawn again for every host and seed
(``draw_host``). Problems are ConfigErrors naming the cluster file or the host file and where.

Faults: the ``faults`` and ``random_faults`` of CLUSTER.yaml (the same entries as HOST.yaml's, which
are taken too), each batch's drawn by `fault_plan`: times count from the batch's start; a fault on a
shared link is one for the batch, on a host's own link one for each host of the batch (a random one
drawn for each host), a reset one for the VM of that name on each host; random faults are drawn
with a generator seeded by (the fault's seed, the run's seed, the batch, the host).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field

from pagesync_model.config import ConfigError, parse_yaml, read_config_text
from pagesync_model.dirtyrate import parse_dirty_rate
from pagesync_model.schema import DURATION, INT, REQUIRED, STR, Field, Schema, SectionList

from ..evacuate.host import _FAULT, _RANDOM, HOST_SCHEMA, NAMES, host_from_dict, order_vms, random_faults
from ..sim.faults import Fault
from .fluid import FaultPlan, FluidGroup, FluidVm, Outage

__all__ = ["CLUSTER_SCHEMA", "Cluster", "load_cluster", "cluster_from_dict", "draw_host", "batch_groups",
           "fault_plan"]

MAX_HOSTS = 100_000

CLUSTER_SCHEMA = Schema()
CLUSTER_SCHEMA.section(
    "rollout", "A rolling maintenance: hosts drained a batch at a time, as a Monte Carlo over seeds.",
    name=Field(STR, "cluster", "A label for the cluster."),
    host=Field(STR, REQUIRED, "The HOST.yaml every host is (relative to this file); its drawn VMs are drawn "
                              "again for every host and seed."),
    hosts=Field(INT, REQUIRED, "How many hosts the cluster has.", ge=1, le=MAX_HOSTS),
    batch=Field(INT, 1, "Hosts drained at once; they share the shared links.", ge=1, le=MAX_HOSTS),
    maintenance=Field(DURATION, "0s", "Time a batch's hosts spend in maintenance after their drain, before the "
                                      "next batch starts.", ge=0, le=86400),
    retries=Field(INT, 1, "Times a VM whose migration failed is migrated again, after its batch's other "
                          "migrations.", ge=0, le=10),
    seeds=Field(INT, 10, "Monte Carlo runs (seed, seed + 1, ...).", ge=1, le=100_000),
    seed=Field(INT, 1, "The first run's seed.", ge=0, le=2**31 - 1),
)
CLUSTER_SCHEMA.extend("", shared=Field(NAMES, [], "The host's links that the hosts of a batch share (e.g. "
                                                  "[fabric]); the others are each host's own."))
CLUSTER_SCHEMA.extend("", faults=SectionList(_FAULT, "Faults at stated times from each batch's start (with the "
                                                     "host file's): on a shared link once per batch, on a "
                                                     "host's own link or VM on each host.", item_name="fault"))
CLUSTER_SCHEMA.extend("", random_faults=SectionList(_RANDOM, "Faults from rates (MTBF per link), drawn for each "
                                                             "(seed, batch, host) (with the host file's).",
                                                    item_name="fault rate"))


@dataclass
class Cluster:
    """A rollout, reduced to plain data (it travels to Dask workers): ``links`` [(name, bytes/s)],
    ``shared`` link names, ``listed`` the host's listed VMs as FluidVm (routes as link names),
    ``draw`` None or {count, sizes, working_set, dirty_range (bytes/s) or None, vm: FluidVm template},
    ``concurrency`` and ``order`` of each host."""
    name: str
    hosts: int
    batch: int
    maintenance: float
    retries: int
    seeds: int
    seed: int
    links: list
    shared: list
    listed: list
    draw: dict | None
    concurrency: int
    order: str
    source: str = "<dict>"
    faults: list = field(default_factory=list)          # sim/faults.py Fault
    random_faults: list = field(default_factory=list)   # sim/faults.py RandomFaults
    mss: int = 1448
    sharing: str = "equal"                              # host.sharing
    latencies: list = field(default_factory=list)       # each link's latency (s), as ``links``

    @property
    def batches(self):
        return -(-self.hosts // self.batch)

    def spec_hash(self):
        """A digest of everything a row depends on (resume refuses a journal of another cluster)."""
        from .. import __version__
        d = {k: v for k, v in asdict(self).items() if k not in ("seeds", "source")}
        return hashlib.sha256(json.dumps([d, __version__], sort_keys=True, default=str).encode()).hexdigest()[:16]


def postcopy_rule(cfg):
    """What decides a qemu VM's switch to post-copy, as plain data (None: it never switches):
    {round: the pre-copy round at whose end ``qemu.postcopy_switch`` after-precopy or sync N switches
    (the dirty-sync-count is 2 at the end of the first pass, round 0), at: ``postcopy_switch_time``,
    monitor: (operator.kind, completion_timeout, monitor_period) when the operator's completion
    timeout switches (``operator.on_timeout: postcopy``)}."""
    if cfg.policy != "qemu":
        return None
    q, o = cfg.qemu, cfg.operator
    rule = {}
    if q.postcopy_switch == "after-precopy":
        rule["round"] = 0
    elif q.postcopy_switch == "sync":
        rule["round"] = max(int(q.postcopy_switch_sync) - 2, 0)
    elif q.postcopy_switch == "time":
        rule["at"] = float(q.postcopy_switch_time)
    if o.kind in ("nova", "kubevirt") and o.on_timeout == "postcopy" and o.completion_timeout > 0:
        rule["monitor"] = (o.kind, float(o.completion_timeout), float(o.monitor_period))
    return rule or None


def postcopy_switch(rule, memory):
    """(postcopy_at s, postcopy_round) of a VM of ``memory`` bytes under ``rule`` (`postcopy_rule`).
    The operator's deadline is its monitor's (policies/operators.py `Monitor`: completion_timeout x
    the migration's GiB, nova max(GiB, 2) truncated to whole seconds, kubevirt ceil(bytes / 1e9)); it
    is seen at the first tick (every monitor_period from the start) past it, and nova acts on it at
    the tick after that."""
    if not rule:
        return None, None
    at = rule.get("at")
    if "monitor" in rule:
        kind, per_gib, period = rule["monitor"]
        if kind == "kubevirt":
            deadline = per_gib * math.ceil(memory / 1e9)
        else:
            deadline = int(per_gib * max(memory / 2**30, 2.0))
        seen = (math.floor(deadline / period) + 1) * period
        when = seen + period if kind == "nova" else seen
        at = when if at is None else min(at, when)
    return at, rule.get("round")


def _fluid_vm(v, route_names, recover=False):
    cfg = v.cfg
    limit = cfg.qemu.downtime_limit if cfg.policy == "qemu" else cfg.analytic.downtime_limit
    at, rnd = postcopy_switch(postcopy_rule(cfg), float(v.memory))
    return FluidVm(v.name, float(v.memory), float(v.dirty_bytes_s), list(route_names), float(cfg.link.efficiency),
                   float(cfg.link.latency), float(limit), int(cfg.analytic.max_rounds), v.cap, int(v.channels),
                   postcopy_at=at, postcopy_round=rnd, postcopy_recover=bool(recover))


def cluster_from_dict(data, source="<dict>"):
    """The Cluster of a CLUSTER.yaml tree. Raises ConfigError."""
    c = CLUSTER_SCHEMA.build(data, source=source)
    r = c.rollout
    here = os.path.dirname(source) if source != "<dict>" else "."
    hpath = os.path.normpath(os.path.join(here, r.host))
    try:
        tree = parse_yaml(read_config_text(hpath), hpath)
        host = host_from_dict(tree, hpath)
        h = HOST_SCHEMA.build(tree, source=hpath)
    except ConfigError as exc:
        raise ConfigError("rollout.host", f"{r.host}: {exc}", source) from None
    names = [n for n, _, _ in host.links]
    for s in c.shared:
        if s not in names:
            raise ConfigError("shared", f"unknown link '{s}' (the host's links: {', '.join(names)})", source)
    ndraw = h.draw.count
    listed = [_fluid_vm(v, v.route, host.postcopy_recover) for v in host.vms[:len(host.vms) - ndraw]]
    draw = None
    if ndraw:
        tmpl = host.vms[len(host.vms) - ndraw]
        rng = None
        if h.draw.dirty_rate:
            rng = [float(parse_dirty_rate(x, 4096)) for x in h.draw.dirty_rate]
        draw = {"count": ndraw, "sizes": [int(x) for x in h.draw.sizes], "working_set": h.draw.working_set,
                "dirty_range": rng, "vm": _fluid_vm(tmpl, tmpl.route, host.postcopy_recover),
                "postcopy": postcopy_rule(tmpl.cfg)}
    vm_names = [v.name for v in host.vms]
    if any(f.kind == "pause" for f in host.faults):
        raise ConfigError("rollout.host", f"{r.host}: a pause fault needs the page-level stop (pagesync-sim "
                                          "evacuate); the fluid model has none", source)
    faults = list(host.faults)
    for i, f in enumerate(c.faults):
        where = f"faults[{i}]"
        if f.kind == "pause":
            raise ConfigError(f"{where}.kind", "a pause fault needs the page-level stop (pagesync-sim evacuate); "
                                               "the fluid model has none", source)
        if f.kind == "reset":
            if f.vm not in vm_names:
                raise ConfigError(f"{where}.vm", f"unknown VM '{f.vm}' (the host's VMs: {', '.join(vm_names)})",
                                  source)
        elif f.link not in names:
            raise ConfigError(f"{where}.link", f"unknown link '{f.link}' (the host's links: {', '.join(names)})",
                              source)
        if f.kind == "loss" and not f.loss > 0:
            raise ConfigError(f"{where}.loss", "a loss fault needs a loss probability > 0", source)
        faults.append(Fault(f.kind, float(f.at), float(f.duration), link=f.link or None, vm=f.vm or None,
                            loss=float(f.loss)))
    randoms = list(host.random_faults) + random_faults(c.random_faults, names, source)
    return Cluster(r.name, r.hosts, min(r.batch, r.hosts), float(r.maintenance), r.retries, r.seeds, r.seed,
                   [(n, bw) for n, bw, _ in host.links], list(c.shared), listed, draw, host.concurrency, host.order,
                   source, faults, randoms, int(host.mss), host.sharing, [lat for _, _, lat in host.links])


def load_cluster(path):
    """Read and validate CLUSTER.yaml (and the HOST.yaml it names). Raises ConfigError."""
    name = os.fspath(path)
    return cluster_from_dict(parse_yaml(read_config_text(name), name), name)


@dataclass
class _Ordered:
    vm: FluidVm
    memory: float = 0.0
    dirty_bytes_s: float = 0.0


def draw_host(cluster, seed, host):
    """The VMs of host number ``host`` in run ``seed``, in the order they start: the listed VMs and
    the drawn ones, drawn with a generator seeded by (seed, host) as HOST.yaml's draw: states (sizes
    equally likely, dirty rate log-uniform)."""
    vms = [_Ordered(v, v.memory, v.dirty) for v in cluster.listed]
    d = cluster.draw
    if d:
        rng = random.Random(f"rollout:{seed}:{host}")
        t = d["vm"]
        for k in range(d["count"]):
            size = rng.choice(d["sizes"])
            dirty = t.dirty
            if d["dirty_range"]:
                lo, hi = d["dirty_range"]
                dirty = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            at, rnd = postcopy_switch(d.get("postcopy"), float(size))
            vm = dataclasses.replace(t, name=f"drawn-{k + 1}", memory=float(size), dirty=dirty, postcopy_at=at,
                                     postcopy_round=rnd)
            vms.append(_Ordered(vm, vm.memory, vm.dirty))
    return [o.vm for o in order_vms(vms, cluster.order)]


def _link_index(cluster, count):
    """{(None, name): index} for the shared links and {(host i, name): index} for each host's own, in
    the batch's order of link instances (the shared links once, then each host's others), and their
    capacities."""
    caps, index = [], {}
    for name, bw in cluster.links:
        if name in cluster.shared:
            index[(None, name)] = len(caps)
            caps.append(bw)
    for i in range(count):
        for name, bw in cluster.links:
            if name not in cluster.shared:
                index[(i, name)] = len(caps)
                caps.append(bw)
    return index, caps


def batch_latencies(cluster, count):
    """The latency (s) of each link instance of a batch of ``count`` hosts, as `batch_groups` orders them."""
    index, caps = _link_index(cluster, count)
    lat = dict(zip([n for n, _ in cluster.links], cluster.latencies or [0.0] * len(cluster.links)))
    out = [0.0] * len(caps)
    for (_h, name), i in index.items():
        out[i] = lat[name]
    return out


def batch_groups(cluster, hosts_vms, first_host):
    """The FluidGroups of the hosts of a batch (``hosts_vms[i]``: host ``first_host + i``'s VMs) and
    the batch's link capacities: each shared link once, every other link once per host."""
    index, caps = _link_index(cluster, len(hosts_vms))
    groups = []
    for i, vms in enumerate(hosts_vms):
        routed = []
        for v in vms:
            route = [index[(None, n)] if n in cluster.shared else index[(i, n)] for n in v.route]
            routed.append(dataclasses.replace(v, name=f"h{first_host + i}/{v.name}", route=route))
        groups.append(FluidGroup(routed, cluster.concurrency))
    return groups, caps


def _seed(*parts):
    return int(hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:15], 16)


def fault_plan(cluster, seed, batch, count):
    """The FaultPlan of batch ``batch`` of run ``seed`` with ``count`` hosts (None without faults),
    on the link instances of `batch_groups`."""
    if not cluster.faults and not cluster.random_faults:
        return None
    first = batch * cluster.batch
    index, _ = _link_index(cluster, count)

    def instances(name):
        if name in cluster.shared:
            return [(None, index[(None, name)])]
        return [(first + i, index[(i, name)]) for i in range(count)]

    fixed, randoms = [], []
    for f in cluster.faults:
        if f.kind == "reset":
            fixed += [Outage("reset", f.at, f.at + f.duration, None, f"h{first + i}/{f.vm}") for i in range(count)]
        else:
            fixed += [Outage(f.kind, f.at, f.at + f.duration, idx, None, f.loss) for _h, idx in instances(f.link)]
    for k, rf in enumerate(cluster.random_faults):
        for h, idx in instances(rf.link):
            randoms.append((dataclasses.replace(rf, seed=_seed("rollout-fault", rf.seed, k, seed, batch,
                                                               "shared" if h is None else h)), idx))
    return FaultPlan(fixed, randoms, cluster.mss)
