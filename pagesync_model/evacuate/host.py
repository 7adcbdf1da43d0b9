"""A host to drain: its VMs, the links their migrations cross, and the platform's concurrency limit
and order (``pagesync-sim evacuate HOST.yaml``, docs/evacuate.md).

`load_host(path)` reads HOST.yaml into a `Host`: every VM's config is built and validated here
(listed VMs: a config file with overrides; drawn VMs: a config file with a memory size and a dirty
rate drawn from a stated, seeded distribution), each VM's ``link`` becomes its route of the host's
links, and every problem is a ConfigError naming the host file's path ('vms[2].set: ...') or the VM
and its own config's path ('vms[2] (db-1): memory.size: ...').

Platform limits, as read in each project's documentation or tree:
- ``nova``: ``[DEFAULT] max_concurrent_live_migrations``, default 1, 0 = unlimited (Nova's option
  definition, nova/conf/compute.py); ``nova host-evacuate-live`` starts the host's servers in turn
  (its ``--max-servers`` bounds how many at once). No bandwidth limit by default.
- ``kubevirt``: ``parallelOutboundMigrationsPerNode`` 2 and ``parallelMigrationsPerCluster`` 5;
  ``bandwidthPerMigration`` 0 = unlimited (OKD 4.22 "Configuring live migration"; 64Mi in releases
  up to OpenShift 4.7, whose docs give 64Mi). A node's drain is bounded by both counts.
- ``ovirt``: VDSM's ``max_outgoing_migrations`` (3 for 1 GbE links in oVirt's VDSM configuration
  page; 5 before oVirt 3.3), taken as min(max_outgoing_migrations, cores) by VDSM (clientIF);
  ``migration_max_bandwidth`` 32 MiB/s per migration (the same page).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from pagesync_model import units
from pagesync_model.config import ConfigError, config_from_dict, load_tree, parse_yaml, read_config_text
from pagesync_model.dirtyrate import parse_dirty_rate
from pagesync_model.policies import REGISTRY
from pagesync_model.sim.faults import KINDS as FAULT_KINDS, Fault, RandomFaults
from pagesync_model.schema import (REQUIRED, BANDWIDTH, BOOL, CHOICE, DURATION, FRACTION, INT, SIZE, STR, Field, Kind, Schema, Section,
                                   SectionList)

__all__ = ["PLATFORMS", "ORDERS", "Host", "HostVm", "load_host", "host_from_dict", "order_vms", "HOST_SCHEMA"]

PLATFORMS = {
    # name: (per-host concurrency, per-cluster concurrency, bandwidth per migration (bytes/s, 0 = none))
    "none": (0, 0, 0.0),
    "nova": (1, 0, 0.0),
    "kubevirt": (2, 5, 0.0),
    "ovirt": (3, 0, 32 * 2**20),
}
ORDERS = ["as-listed", "largest-first", "smallest-first", "least-dirty-first"]
# policies whose source's stop is modelled under a pause fault (sim/faults.py)
PAUSE_POLICIES = ("qemu", "xen-legacy", "xen-v2", "stratus")
MAX_VMS = 4096


def _mapping(raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a mapping of config keys to values, such as {{memory.size: 8GiB}}, got "
                         f"'{units.shorten(raw)}'")
    for k in raw:
        if not isinstance(k, str):
            raise ValueError(f"expected config keys such as memory.size, got '{units.shorten(k)}'")
    return dict(raw)


def _names(raw: Any) -> Any:
    if not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"expected a list of link names, got '{units.shorten(raw)}'")
    return list(raw)


def _sizes(raw: Any) -> Any:
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"expected a list of memory sizes such as [16GiB, 64GiB], got '{units.shorten(raw)}'")
    out = []
    for x in raw:
        v = units.parse_size(x)
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"expected positive memory sizes, got '{units.shorten(x)}'")
        out.append(v)
    return out


def _rate_range(raw: Any) -> Any:
    if raw in ("", None):
        return None
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ValueError(f"expected [low, high] dirty rates such as [10MB/s, 500MB/s], got '{units.shorten(raw)}'")
    lo, hi = (parse_dirty_rate(x, 4096) for x in raw)
    if not 0 < lo <= hi:
        raise ValueError(f"expected 0 < low <= high, got '{units.shorten(raw)}'")
    return [raw[0], raw[1]]


MAPPING = Kind("mapping", _mapping)
NAMES = Kind("list of link names", _names)
SIZES = Kind("list of sizes", _sizes)
RATES = Kind("[low, high] dirty rates", _rate_range)

HOST_SCHEMA = Schema()
HOST_SCHEMA.section(
    "host", "The host drained and the platform that drains it.",
    name=Field(STR, "host", "A label for the host."),
    platform=Field(CHOICE, "none", "Whose limits apply: none, nova, kubevirt or ovirt (docs/evacuate.md).",
                   choices=list(PLATFORMS)),
    concurrency=Field(INT, -1, "Migrations out of the host at once (nova max_concurrent_live_migrations, kubevirt "
                               "parallelOutboundMigrationsPerNode, ovirt max_outgoing_migrations); 0 = unlimited, "
                               "-1 = the platform's default.", ge=-1, le=MAX_VMS),
    cluster_concurrency=Field(INT, -1, "kubevirt parallelMigrationsPerCluster (-1 = its default 5; 0 = none).",
                              ge=-1, le=MAX_VMS),
    cores=Field(INT, 0, "ovirt: the host's cores (VDSM allows at most this many outgoing migrations); 0 = no "
                        "bound.", ge=0, le=1 << 20),
    bandwidth_per_migration=Field(STR, "", "Each migration's own rate limit on the wire (kubevirt "
                                           "bandwidthPerMigration, ovirt migration_max_bandwidth), e.g. 64MiB/s; "
                                           "0 = none; empty = the platform's default."),
    order=Field(CHOICE, "as-listed", "Which VMs go first: as-listed, largest-first (memory), smallest-first, "
                                     "least-dirty-first (dirty rate).", choices=ORDERS),
    max_downtime=Field(DURATION, "0s", "The most downtime any VM may have (evacuate --plan; 0 = no bound).",
                       ge=0, le=3600),
    seed=Field(INT, 1, "Seed of the VMs' write streams (VM i gets seed + i unless it states its own).",
               ge=0, le=2**31 - 1),
    retries=Field(INT, 0, "How many times the operator starts a migration again after a fault made it fail in "
                          "pre-copy (a stratus resync always starts over).", ge=0, le=1000),
    retry_delay=Field(DURATION, "0s", "Wait after the fault has cleared before starting again.", ge=0, le=3600),
    postcopy_recover=Field(BOOL, False, "A post-copy whose link drops pauses and recovers when the link is back "
                                        "(QEMU postcopy-recover); false: the guest is lost."),
    mss=Field(SIZE, "1448B", "TCP segment payload, for the throughput a lossy link leaves (Mathis).", gt=0,
              le=65536),
    sharing=Field(CHOICE, "equal", "How a link is shared between the streams crossing it: equal (max-min fair per "
                                   "connection) or simgrid (SimGrid's LV08: shares in inverse proportion to each "
                                   "route's latency + 20537 B / bandwidth per link, crosstraffic, bandwidth factor "
                                   "0.97, TCP-gamma bound; docs/evacuate.md).", choices=["equal", "simgrid"]),
    operator=Field(CHOICE, "platform", "platform: a qemu VM whose config runs no operator gets the platform's "
                                       "monitor (operator.kind = the platform); config: each VM keeps its own.",
                   choices=["platform", "config"]),
)
_LINK = Section("One link the host's migrations cross.", dict(
    name=Field(STR, "", "The link's name, used in routes."),
    bandwidth=Field(BANDWIDTH, REQUIRED, "Its bandwidth.", gt=0),
    latency=Field(DURATION, "0s", "Its one-way latency.", ge=0, le=1),
))
HOST_SCHEMA.extend("", links=SectionList(_LINK, "The links (source NIC, fabric, destination NIC, ...).",
                                         item_name="link"))
HOST_SCHEMA.extend("", route=Field(NAMES, [], "The links every VM's migration crosses, in order (a VM may "
                                              "give its own)."))
HOST_SCHEMA.extend("", defaults=Field(MAPPING, {}, "Config overrides applied to every VM before its own (e.g. "
                                                   "{sim.quantum: auto, memory.sparse: true})."))
_VM = Section("A VM (or several alike) on the host.", dict(
    name=Field(STR, "", "Its name (default: vmN); with count > 1, name-1, name-2, ..."),
    config=Field(STR, "", "Its config file, relative to the host file."),
    set=Field(MAPPING, {}, "Overrides of its config, {key: value}."),
    count=Field(INT, 1, "How many VMs alike (each its own seed).", ge=1, le=MAX_VMS),
    route=Field(NAMES, [], "Its route (empty: the host's)."),
    bandwidth=Field(STR, "", "Its own rate limit on the wire (empty: the host's bandwidth_per_migration)."),
    channels=Field(INT, 1, "Connections of its migration (QEMU multifd channels): its share of a shared link "
                           "is that many flows'.", ge=1, le=256),
    seed=Field(INT, -1, "Its write streams' seed (-1: the host's seed + its index).", ge=-1, le=2**31 - 1),
))
HOST_SCHEMA.extend("", vms=SectionList(_VM, "The listed VMs.", item_name="vm"))
_FAULT = Section("A fault at a stated time (pagesync_model/sim/faults.py).", dict(
    kind=Field(CHOICE, REQUIRED, "stall, drop, loss (links), reset (a VM's destination) or pause (a VM's source "
                                 "cannot stop its vCPUs in time).",
               choices=list(FAULT_KINDS)),
    at=Field(DURATION, REQUIRED, "When it starts, from the drain's start.", ge=0, le=1e7),
    duration=Field(DURATION, REQUIRED, "How long it lasts (reset: until the destination is back).", ge=0, le=1e7),
    link=Field(STR, "", "The link (stall, drop, loss)."),
    vm=Field(STR, "", "The VM whose destination resets (reset) or whose vCPUs do not stop (pause)."),
    loss=Field(FRACTION, 0.0, "Packet loss probability (loss).", ge=0, lt=1),
))
_RANDOM = Section("Faults at seeded random times on one link.", dict(
    kind=Field(CHOICE, REQUIRED, "stall, drop or loss.", choices=["stall", "drop", "loss"]),
    link=Field(STR, REQUIRED, "The link."),
    mtbf=Field(DURATION, REQUIRED, "Mean time between failures (exponential, from the end of the previous "
                                   "one).", gt=0, le=1e9),
    duration=Field(DURATION, REQUIRED, "How long each lasts.", ge=0, le=1e7),
    loss=Field(FRACTION, 0.0, "Packet loss probability (loss).", ge=0, lt=1),
    seed=Field(INT, 1, "Seed of the times.", ge=0, le=2**31 - 1),
))
HOST_SCHEMA.extend("", faults=SectionList(_FAULT, "Faults at stated times.", item_name="fault"))
HOST_SCHEMA.extend("", random_faults=SectionList(_RANDOM, "Faults from rates (MTBF per link), seeded.",
                                                 item_name="fault rate"))
HOST_SCHEMA.section(
    "draw", "VMs drawn from a distribution (besides or instead of the listed ones).",
    count=Field(INT, 0, "How many VMs to draw.", ge=0, le=MAX_VMS),
    config=Field(STR, "", "The config each drawn VM starts from, relative to the host file."),
    sizes=Field(SIZES, [], "Memory sizes drawn from, equally likely."),
    working_set=Field(FRACTION, 0.0, "The working set as a share of the drawn size (0: the config's).",
                      ge=0, le=1),
    dirty_rate=Field(RATES, "", "[low, high]: workload.dirty_rate drawn log-uniformly (empty: the config's)."),
    seed=Field(INT, 1, "Seed of the draw.", ge=0, le=2**31 - 1),
)


@dataclass
class HostVm:
    """One VM of the host: ``cfg`` its validated config (its link is its route's bottleneck and summed
    latency), ``route`` link names, ``cap`` bytes/s on the wire (None: none), ``channels``, ``seed`` its
    own seed (None: the host's seed + ``index``, its place in the listing), ``memory`` bytes,
    ``dirty_bytes_s`` the rate least-dirty-first sorts by (`dirty_bytes_s`)."""
    name: str
    cfg: Any
    route: list
    cap: Optional[float]
    channels: int
    seed: Optional[int]
    index: int
    memory: int
    dirty_bytes_s: float


@dataclass
class Host:
    """A host to drain, as `run_host` takes it."""
    name: str
    platform: str
    concurrency: int            # the effective limit of migrations at once (0: none)
    order: str
    max_downtime: float         # 0: none
    links: list                 # [(name, bandwidth bytes/s, latency s)]
    vms: list = field(default_factory=list)
    seed: int = 1
    source: str = "<dict>"
    faults: list = field(default_factory=list)          # sim/faults.py Fault
    random_faults: list = field(default_factory=list)   # sim/faults.py RandomFaults
    retries: int = 0
    retry_delay: float = 0.0
    postcopy_recover: bool = False
    mss: int = 1448
    sharing: str = "equal"

    def with_(self, concurrency=None, order=None):
        """The same host with another concurrency limit or order (for planning)."""
        return dataclasses.replace(self, concurrency=self.concurrency if concurrency is None else int(concurrency),
                                   order=self.order if order is None else order)


def effective_concurrency(h) -> int:
    """The platform's bound on migrations out of this host at once (0: none)."""
    node, cluster, _ = PLATFORMS[h.platform]
    node = node if h.concurrency < 0 else h.concurrency
    limits = [node]
    if h.platform == "kubevirt":
        limits.append(cluster if h.cluster_concurrency < 0 else h.cluster_concurrency)
    if h.platform == "ovirt" and h.cores:
        limits.append(h.cores)
    limits = [x for x in limits if x > 0]
    return min(limits) if limits else 0


def _bandwidth(text, path, default):
    if text == "":
        return default
    try:
        v = units.parse_bandwidth(text)
    except units.UnitError as exc:
        raise ConfigError(path, str(exc)) from None
    if v < 0:
        raise ConfigError(path, f"must be >= 0, got '{text}'")
    return float(v)


def _override(key, value):
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={text}"


def dirty_bytes_s(cfg) -> float:
    """The VM's dirty rate for ordering: its workload.dirty_rate when given, else the bytes of page
    writes its CPUs issue per second (an upper bound of its distinct pages)."""
    w = cfg.workload
    if w.dirty_rate:
        return parse_dirty_rate(w.dirty_rate, cfg.memory.page_size)
    return cfg.cpus.count * w.rate * cfg.memory.page_size


def _vm_config(where, label, path, sets, route_links, source):
    """The validated config of one VM: ``path``'s tree, the overrides ``sets`` (in order), its link
    replaced by ``route_links``. Raises ConfigError naming ``where`` and the VM."""
    try:
        tree = load_tree(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}.config", str(exc), source) from None
    link = dict(tree.get("link") or {}) if isinstance(tree.get("link"), Mapping) else {}
    for key in ("bandwidth", "latency", "route"):
        link.pop(key, None)
    link["route"] = [{"name": n, "bandwidth": f"{bw!r}B/s", "latency": f"{lat!r}s"} for n, bw, lat in route_links]
    tree["link"] = link
    overrides = [_override(k, v) for k, v in sets]
    for k, _ in sets:
        if k.startswith("link.") and k.split(".")[1] in ("bandwidth", "latency", "route"):
            raise ConfigError(f"{where}.set", f"{k}: a VM's link is its route of the host's links (set route)",
                              source)
    try:
        cfg = config_from_dict(tree, overrides, source=path)
    except ConfigError as exc:
        raise ConfigError(f"{where} ({label})", str(exc), source) from None
    if REGISTRY.get(cfg.policy).kind != "page":
        raise ConfigError(f"{where} ({label})", f"policy {cfg.policy} is a fluid model: a host's VMs run "
                                                "page-level policies (they share links page by page)", source)
    return cfg


def host_from_dict(data: Any, source: str = "<dict>") -> Host:
    """The Host of a HOST.yaml tree (paths relative to ``source``'s directory). Raises ConfigError."""
    h = HOST_SCHEMA.build(data, source=source)
    here = os.path.dirname(source) if source != "<dict>" else "."
    links = []
    for i, ln in enumerate(h.links):
        name = ln.name or f"link{i}"
        if name in [n for n, _, _ in links]:
            raise ConfigError(f"links[{i}].name", f"'{name}' names two links", source)
        links.append((name, float(ln.bandwidth), float(ln.latency)))
    if not links:
        raise ConfigError("links", "required value is missing (at least one link: the source NIC)", source)
    by_name = {n: (n, bw, lat) for n, bw, lat in links}

    def route_of(names, path):
        names = names or list(h.route) or [n for n, _, _ in links]
        for n in names:
            if n not in by_name:
                raise ConfigError(path, f"unknown link '{n}' (the host's links: {', '.join(by_name)})", source)
        return [by_name[n] for n in names]

    route_of(h.route, "route")
    default_cap = _bandwidth(h.host.bandwidth_per_migration, "host.bandwidth_per_migration",
                             PLATFORMS[h.host.platform][2])
    defaults = list(h.defaults.items())
    platform_operator = h.host.operator == "platform" and h.host.platform != "none"
    vms = []

    def add(where, label, cfg_path, sets, route, cap, channels, seed):
        full = os.path.normpath(os.path.join(here, cfg_path))
        cfg = _vm_config(where, label, full, defaults + sets, route, source)
        if platform_operator and cfg.policy == "qemu" and cfg.operator.kind == "none":
            cfg = _vm_config(where, label, full, defaults + [("operator.kind", h.host.platform)] + sets, route,
                             source)
        index = len(vms)
        vms.append(HostVm(label, cfg, [n for n, _, _ in route], cap or None, channels, None if seed < 0 else seed,
                          index, cfg.memory.size, dirty_bytes_s(cfg)))

    for i, vm in enumerate(h.vms):
        where = f"vms[{i}]"
        if not vm.config:
            raise ConfigError(f"{where}.config", "required value is missing (the VM's config file)", source)
        route = route_of(vm.route, f"{where}.route")
        cap = _bandwidth(vm.bandwidth, f"{where}.bandwidth", default_cap)
        for k in range(vm.count):
            base = vm.name or f"vm{len(vms)}"
            label = base if vm.count == 1 else f"{base}-{k + 1}"
            add(where, label, vm.config, list(vm.set.items()), route, cap, vm.channels,
                vm.seed if vm.seed < 0 else vm.seed + k)
    d = h.draw
    if d.count:
        if not d.config:
            raise ConfigError("draw.config", "required value is missing (the config each drawn VM starts from)",
                              source)
        if not d.sizes:
            raise ConfigError("draw.sizes", "required value is missing (memory sizes to draw from)", source)
        rng = random.Random(d.seed)
        route = route_of([], "route")
        for k in range(d.count):
            size = rng.choice(d.sizes)
            sets = [("memory.size", f"{size}B")]
            if d.working_set:
                sets.append(("workload.working_set", f"{int(size * d.working_set)}B"))
            if d.dirty_rate:
                lo, hi = (parse_dirty_rate(x, 4096) for x in d.dirty_rate)
                rate = math.exp(rng.uniform(math.log(lo), math.log(hi)))
                sets.append(("workload.dirty_rate", f"{rate:.0f}B/s"))
            add("draw", f"drawn-{k + 1}", d.config, sets, route, default_cap, 1, -1)
    if not vms:
        raise ConfigError("vms", "the host has no VMs (list some under vms: or draw some under draw:)", source)
    if len(vms) > MAX_VMS:
        raise ConfigError("vms", f"{len(vms)} VMs: at most {MAX_VMS}", source)
    clocks = {float(v.cfg.cpus.clock) for v in vms}
    if len(clocks) > 1:
        odd = next(v for v in vms if float(v.cfg.cpus.clock) != float(vms[0].cfg.cpus.clock))
        raise ConfigError("vms", f"{odd.name}: cpus.clock {units.format_frequency(odd.cfg.cpus.clock)} differs "
                                 f"from {vms[0].name}'s {units.format_frequency(vms[0].cfg.cpus.clock)}: the VMs "
                                 "of one host share its clock", source)
    names = {v.name for v in vms}
    faults = []
    for i, f in enumerate(h.faults):
        where = f"faults[{i}]"
        if f.kind == "reset":
            if f.vm not in names:
                raise ConfigError(f"{where}.vm", f"unknown VM '{f.vm}' (a reset names the VM whose destination "
                                                 "resets)", source)
        elif f.kind == "pause":
            if f.vm not in names:
                raise ConfigError(f"{where}.vm", f"unknown VM '{f.vm}' (a pause names the VM whose source cannot "
                                                 "pause in time)", source)
            cfg = next(v.cfg for v in vms if v.name == f.vm)
            if cfg.policy not in PAUSE_POLICIES or (cfg.policy == "qemu" and cfg.qemu.rules != "current"):
                what = f"{cfg.policy} (rules {cfg.qemu.rules})" if cfg.policy == "qemu" else cfg.policy
                raise ConfigError(f"{where}.vm", f"'{f.vm}' runs {what}: a pause fault is modelled for qemu "
                                                 f"(rules current), {', '.join(PAUSE_POLICIES[1:])} only", source)
        elif f.link not in by_name:
            raise ConfigError(f"{where}.link", f"unknown link '{f.link}' (the host's links: {', '.join(by_name)})",
                              source)
        if f.kind == "loss" and not f.loss > 0:
            raise ConfigError(f"{where}.loss", "a loss fault needs a loss probability > 0", source)
        faults.append(Fault(f.kind, f.at, f.duration, link=f.link or None, vm=f.vm or None, loss=f.loss))
    randoms = random_faults(h.random_faults, by_name, source)
    return Host(h.host.name, h.host.platform, effective_concurrency(h.host), h.host.order, h.host.max_downtime,
                links, vms, h.host.seed, source, faults, randoms, h.host.retries, h.host.retry_delay,
                h.host.postcopy_recover, int(h.host.mss), h.host.sharing)


def random_faults(items, links, source) -> list:
    """The RandomFaults of a file's ``random_faults`` list (HOST.yaml's or CLUSTER.yaml's), each on one of
    the host's ``links`` (names); ConfigError naming the item at fault."""
    out = []
    for i, f in enumerate(items):
        if f.link not in links:
            raise ConfigError(f"random_faults[{i}].link", f"unknown link '{f.link}' (the host's links: "
                                                          f"{', '.join(links)})", source)
        if f.kind == "loss" and not f.loss > 0:
            raise ConfigError(f"random_faults[{i}].loss", "a loss fault needs a loss probability > 0", source)
        out.append(RandomFaults(f.kind, f.link, float(f.mtbf), float(f.duration), float(f.loss), f.seed))
    return out


def load_host(path) -> Host:
    """Read and validate HOST.yaml. Raises ConfigError."""
    name = os.fspath(path)
    return host_from_dict(parse_yaml(read_config_text(name), name), name)


def order_vms(vms, order):
    """The VMs in the order their migrations start (stable: ties keep the listed order)."""
    if order == "largest-first":
        return sorted(vms, key=lambda v: -v.memory)
    if order == "smallest-first":
        return sorted(vms, key=lambda v: v.memory)
    if order == "least-dirty-first":
        return sorted(vms, key=lambda v: v.dirty_bytes_s)
    return list(vms)
