"""The machine's configuration fields, their defaults and the checks across them, and the
assembly of the whole schema from them and the registered policies' sections.

The machine (memory, CPUs, workload, DMA, tracking costs, link, simulation control) is declared
here as data on `CORE`. A policy declares its own sections next to its code (policies/base.py);
`build_schema` puts the two together. Defaults are written as a user would write them, each with
its source in the preset that uses it (configs/).
"""
from __future__ import annotations

from typing import Any, Mapping

from pagesync_model.bounds import (
    MAX_BANDWIDTH, MAX_BYTES, MAX_CLOCK, MAX_CPU_OP, MAX_CPUS, MAX_DMA_RATE, MAX_FRAMES, MAX_LATENCY, MAX_PAGE,
    MAX_PROCESSES, MAX_QUANTUM, MAX_SEED, MAX_SIM_TIME, MAX_STEP, MAX_TLB_ENTRIES, MAX_WRITE_RATE, MIN_CLOCK,
)
from pagesync_model.memory import memory_regions, placeable_user_pages
from pagesync_model.policies.base import VARIANTS
from pagesync_model.schema import (
    BANDWIDTH, BOOL, CHOICE, DURATION, FRACTION, FREQUENCY, INT, RATE, REQUIRED, SIZE, STR,
    ConfigError, Field, Kind, RawValues, Schema, Section, SectionList,
)
from pagesync_model.trace.format import TraceError
from pagesync_model import units
from pagesync_model.dirtyrate import parse_dirty_rate
from pagesync_model.units import UnitError, format_bytes
from pagesync_model.workloads import KINDS, kind_fields
from pagesync_model.workloads.replay import load_trace

__all__ = ["CORE", "WORKLOAD_KINDS", "LAYOUTS", "VARIANTS", "MAX_FRAMES", "build_schema"]

LAYOUTS: list[str] = ["contiguous", "scattered"]


def _parse_auto_bool(raw: Any) -> str:
    """'auto', 'true' or 'false' (YAML's true/false included)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str) and raw.strip().lower() in ("auto", "true", "false"):
        return raw.strip().lower()
    raise ValueError(f"cannot read {raw!r} as auto, true or false")


AUTO_BOOL = Kind("choice", _parse_auto_bool)   # a choice that also reads YAML's true and false

WORKLOAD_KINDS: list[str] = list(KINDS)
MIN_PAGE_SIZE = 4096

CORE = Schema(cycle_clock="cpus.clock")
POLICY_DOC = "Mirroring policy: which rules decide passes, copies and the final stop."


def build_schema(policies) -> Schema:
    """The whole schema: ``policy`` (one of the registered ``policies``, a policies.base.Registry; the
    first is the default), the machine's sections with each policy's sections placed before the core
    section it names (``section_before``) or after them all, then the machine's cross-field checks and
    the policies'. Raises ValueError for a section declared twice or a misplaced one."""
    schema = Schema(cycle_clock=CORE.cycle_clock)
    names = policies.names()
    schema.extend("", policy=Field(CHOICE, names[0], POLICY_DOC, choices=names))
    placed, after = {}, []
    for path, section, before in policies.sections():
        if before is not None and before not in CORE.root.members:
            raise ValueError(f"section '{path}' is to go before '{before}', which is not a core section")
        (placed.setdefault(before, []) if before else after).append((path, section))
    for name, member in CORE.root.members.items():
        for path, section in placed.get(name, []):
            schema.section(path, section.doc, **section.members)
        schema.section(name, member.doc, **member.members)
    for path, section in after:
        schema.section(path, section.doc, **section.members)
    for check in CORE.checks + policies.checks():
        schema.cross_check(check)
    return schema


def _page_size_check(value: int) -> str | None:
    if value < MIN_PAGE_SIZE or value & (value - 1):
        return "must be a power of two of at least 4KiB"
    return None


_HOLE = Section("Pages set between the user pages: written before the mirror starts, never by the workload.", dict(
    at=Field(SIZE, REQUIRED, "Where the hole goes, as the bytes of the user pages (the workload's working sets "
                             "in their order, then the zero pages) that lie before it.", ge=0, le=MAX_BYTES),
    size=Field(SIZE, REQUIRED, "The hole's non-zero pages.", gt=0, le=MAX_BYTES),
))

CORE.section(
    "memory", "Physical memory of the machine being mirrored.",
    size=Field(SIZE, REQUIRED, "Physical memory to mirror.", gt=0, le=MAX_BYTES),
    page_size=Field(SIZE, "4KiB", "Page size the dirty tracking works in.",
                    le=MAX_PAGE, check=_page_size_check, check_doc="power of two >= 4KiB"),
    kernel_size=Field(SIZE, "256MiB", "Kernel image and data mapped by the kernel page tables.", ge=0, le=MAX_BYTES),
    zero_fraction=Field(FRACTION, 0.0, "Share of memory holding all-zero pages at the start.", ge=0, lt=1),
    layout=Field(CHOICE, "scattered", "How the working set's pages spread over physical frames.",
                 choices=LAYOUTS),
    block=Field(SIZE, "2MiB", "scattered: physically contiguous unit of allocations (2MiB buddy/THP "
                              "blocks; the page size scatters single pages).", gt=0, le=MAX_PAGE),
    processes=Field(INT, 64, "User processes whose page tables the harvest walks in parallel.", ge=1, le=MAX_PROCESSES),
    sparse=Field(AUTO_BOOL, "auto", "Keep per-page state only for 2MiB blocks that were written or copied in "
                                    "part (same results, less memory, slower writes); auto: when memory is at "
                                    "least 1TiB and the working set at most a quarter of it.",
                 check_doc="`auto`, `true` or `false`"),
    holes=SectionList(_HOLE, "contiguous layout: runs of other non-zero pages (the rest of the system's, "
                             "never written during the mirror) between the user pages, so that a working "
                             "set can sit in pieces as a real one does (the QEMU lab decodes where its "
                             "guest's pages lie from a captured stream); the remaining user frames follow "
                             "the zero pages, as without holes.", item_name="hole"),
)

CORE.section(
    "cpus", "Processors running the workload and doing the harvest.",
    count=Field(INT, REQUIRED, "Number of CPUs.", ge=1, le=MAX_CPUS),
    clock=Field(FREQUENCY, "3GHz", "CPU clock; also converts durations given in cycles.", ge=MIN_CLOCK, le=MAX_CLOCK),
    tlb_entries=Field(INT, 1536, "Second-level TLB entries per CPU.", ge=1, le=MAX_TLB_ENTRIES),
    tlb_walk=Field(DURATION, "30cycles", "Page walk after a TLB miss.", ge=0, le=MAX_CPU_OP),
    dirty_update=Field(DURATION, "100cycles",
                       "Locked PTE update when the first write hits a clean PTE.", ge=0, le=MAX_CPU_OP),
)

def _dirty_rate_check(value: str) -> str | None:
    if not value:
        return None
    try:
        parse_dirty_rate(value, MIN_PAGE_SIZE)
    except UnitError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def _pattern_fields(working_set: bool = True) -> dict:
    """The fields that say where and when one group of CPUs writes (a workload, a phase, a group)."""
    f = dict(
        kind=Field(CHOICE, "uniform", "Write pattern over the working set.", choices=WORKLOAD_KINDS),
        rate=Field(RATE, REQUIRED, "Page writes per second per CPU (trace: ignored, the trace sets the pace; "
                                   "derived from workload.dirty_rate when that is given).",
                   gt=0, le=MAX_WRITE_RATE),
        working_set=Field(SIZE, REQUIRED, "Memory the workload writes to.", gt=0, le=MAX_BYTES),
        **kind_fields(),
    )
    if not working_set:
        del f["working_set"]
    return f


_PHASE = Section("One phase of a piecewise workload.", dict(
    duration=Field(DURATION, REQUIRED, "How long each CPU runs this phase.", gt=0, le=MAX_SIM_TIME),
    **_pattern_fields(False)))
_PHASES_DOC = ("Piecewise workload: phases run in order, each over the same working set; an item's missing "
               "keys take this section's values.")
_GROUP = Section("CPUs that run one workload.", dict(
    cpus=Field(INT, REQUIRED, "CPUs in the group (the groups take CPUs 0, 1, ... in order).", ge=1, le=MAX_CPUS),
    **_pattern_fields(),
    repeat=Field(BOOL, True, "phases: start over after the last phase (false: stay in the last one)."),
    phases=SectionList(_PHASE, _PHASES_DOC, inherit=True, item_name="phase")))

CORE.section(
    "workload", "The running workload's page writes.",
    **_pattern_fields(),
    dirty_rate=Field(STR, "", "The whole guest's dirty rate as QEMU's calc-dirty-rate measures it (distinct pages "
                              "dirtied per second over dirty_rate_window), e.g. 2GB/s, 500MiB/s, 100000pages/s; "
                              "workload.rate (per CPU) is derived from it (docs/usage.md). Empty: give workload.rate.",
                     check=_dirty_rate_check, check_doc="bandwidth or pages/s"),
    dirty_rate_file=Field(STR, "", "A dirty-rate report to take dirty_rate from, relative to the config file: "
                                   "QEMU query-dirty-rate JSON, virsh domstats --dirtyrate output, or KubeVirt's "
                                   "kubevirt_vmi_dirty_rate_bytes_per_second sample."),
    dirty_rate_window=Field(DURATION, "1s", "Window the dirty rate was measured over (QEMU's calc-time); a "
                                            "report's own calc-time takes its place.", gt=0, le=MAX_STEP),
    paced=Field(BOOL, False, "Writes are paced by a clock (a timer-driven writer): tracking costs come out of "
                             "its idle time, and CPU throttling delays its writes but it catches up, unless "
                             "one throttle sleep exceeds catchup."),
    catchup=Field(DURATION, "200ms", "paced: the longest backlog the writer catches up; a longer throttle "
                                     "sleep drops it and the writer runs at the throttled CPU's pace.", ge=0,
                    le=MAX_STEP),
    repeat=Field(BOOL, True, "phases: start over after the last phase (false: stay in the last one)."),
    phases=SectionList(_PHASE, _PHASES_DOC, inherit=True, item_name="phase"),
    groups=SectionList(_GROUP, "Per-CPU mixture: each group of CPUs runs its own workload on its own part "
                               "of memory (stacked in order); an item's missing keys take this section's "
                               "values.", inherit=True, item_name="group"),
)

CORE.section(
    "dma", "Device DMA into the working set: writes that bypass the CPUs' dirty bits.",
    rate=Field(RATE, "0/s", "Pages written by devices per second (0: no DMA).", ge=0, le=MAX_DMA_RATE),
    working_set=Field(SIZE, "0B", "Memory the devices write to, from the start of the working set "
                                  "(0: all of it).", ge=0, le=MAX_BYTES),
    mirrored=Field(BOOL, False, "Each DMA write also lands in the partner's copy (Stratus's PCI bridge); "
                                "false: such writes are lost unless a CPU also writes the page."),
)

CORE.section(
    "tracking", "Cost of harvesting hardware dirty bits (all CPUs stopped).",
    rendezvous=Field(DURATION, "5us", "IPIs and rendezvous to stop all CPUs.", ge=0, le=MAX_STEP),
    pte_scan=Field(DURATION, "2cycles", "Per PTE walked.", ge=0, le=MAX_CPU_OP),
    pte_harvest=Field(DURATION, "150cycles",
                      "Per dirty PTE: clear hardware dirty, set soft dirty, set the bitmap bit, invlpg.",
                      ge=0, le=MAX_CPU_OP),
    tlb_flush=Field(DURATION, "2us", "Final full TLB flush on each CPU.", ge=0, le=MAX_STEP),
    stop_cpus=Field(BOOL, True, "Harvests stop every CPU (the published module's rendezvous: a brownout); "
                                "false: the scan runs while the CPUs keep writing (a user-space controller "
                                "scanning /proc/PID/pagemap) and only the blackout stops them."),
    stop_scan=Field(DURATION, "0s", "stop_cpus false: cost of the blackout's stop and final scan (stopping every "
                                    "thread, one more scan); 0s = the cost of a harvest.", ge=0, le=MAX_STEP),
)

ROUTE_DERIVED = "route"


class _RouteField(Field):
    """A link field that may be left to link.route: its raw value ``route`` parses to None, which
    `_link_route` replaces by the value the route gives (or reports as missing without a route)."""

    def convert(self, raw: Any, path: str) -> Any:
        if raw == ROUTE_DERIVED:
            return None
        return super().convert(raw, path)


_HOP = Section("One link of a route.", dict(
    bandwidth=Field(BANDWIDTH, REQUIRED, "This link's bandwidth.", gt=0, le=MAX_BANDWIDTH),
    latency=Field(DURATION, "0s", "This link's one-way latency.", ge=0, le=MAX_LATENCY),
    name=Field(STR, "", "A label for the link (its name in the platform it comes from)."),
))

CORE.section(
    "link", "Interconnect to the partner.",
    bandwidth=_RouteField(BANDWIDTH, ROUTE_DERIVED, "Link bandwidth; `route` (the default): the bottleneck "
                                                    "of link.route, which must then be given.",
                          gt=0, le=MAX_BANDWIDTH),
    latency=_RouteField(DURATION, "2us", "One-way latency of a transfer; with link.route the sum of its links' "
                                         "latencies (leave it out, or `route`).", ge=0, le=MAX_LATENCY),
    per_copy=Field(DURATION, "5us", "Setup cost of one copy call (one range).", ge=0, le=MAX_LATENCY),
    first_copy=Field(DURATION, "0us", "Extra cost per page the first time the partner receives it (it allocates "
                                      "and faults in its copy).", ge=0, le=MAX_LATENCY),
    efficiency=Field(FRACTION, 1.0, "Payload share of the wire: 1 for DMA; 1448/1538 = 0.941 for TCP/IPv4 "
                                    "over Ethernet (1500-byte MTU, TCP timestamps, framing and gaps).",
                     gt=0, le=1),
    route=SectionList(_HOP, "A route of links crossed in order (a multi-hop path between two hosts): "
                            "link.bandwidth becomes the slowest link's and link.latency the sum of their "
                            "latencies, which is exact for one flow alone on the route.", item_name="link"),
)


@CORE.cross_check
def _link_route(v: dict[str, Any], raw: RawValues) -> None:
    """Reduce link.route to the one link the models read: ``v['link.bandwidth']`` becomes the
    bottleneck (slowest link) and ``v['link.latency']`` the summed latency. This check writes those two
    values, so it runs first of the checks that read the link."""
    route = v["link.route"]
    if not route:
        if v["link.bandwidth"] is None:
            raise ConfigError("link.bandwidth", "required value is missing (give it, or link.route)")
        if v["link.latency"] is None:
            raise ConfigError("link.latency", "`route` given without link.route: give a latency or a route")
        return
    if v["link.bandwidth"] is not None:
        raise ConfigError("link.bandwidth", f"{raw['link.bandwidth']} given beside link.route: give one "
                                            "or the other (the route's bottleneck is the link's bandwidth)")
    # a latency the config gave, even one equal to the default, would be silently replaced by the route's
    if "link.latency" in raw.given and v["link.latency"] is not None:
        raise ConfigError("link.latency", f"{raw['link.latency']} given beside link.route: the route's "
                                          "latency is the sum of its links' latencies")
    raw["link.latency"] = ROUTE_DERIVED  # the effective config (to_dict) says where it came from
    latency = sum(hop.latency for hop in route)
    if latency > MAX_LATENCY:
        raise ConfigError("link.route", f"the links' latencies add up to {latency:g}s, more than the "
                                        f"{MAX_LATENCY:g}s a link may take")
    v["link.bandwidth"] = min(hop.bandwidth for hop in route)
    v["link.latency"] = latency


def _parse_quantum(raw: Any) -> Any:
    if isinstance(raw, str) and raw.strip() == "auto":
        return "auto"
    try:
        return DURATION.parse(raw)
    except units.OutOfRange:
        raise
    except ValueError as exc:
        raise ValueError(f"{exc} (or auto)") from None


def _quantum_check(value: Any) -> str | None:
    if value == "auto":
        return None
    if not value > 0:
        return "must be > 0"
    if value > MAX_QUANTUM:
        return f"must be <= {DURATION.show(MAX_QUANTUM)}"
    return None


# named "duration" so a sweep or the planner can vary it as one (sweep/knobs.py refuses "auto" there)
QUANTUM = Kind("duration", _parse_quantum, "seconds", units.format_duration)

CORE.section(
    "sim", "Simulation control.",
    quantum=Field(QUANTUM, "1ms", "Time step in which writes are generated and applied in batches; auto: the "
                                  "coarsest of 1, 2, 5 x 10^k s (>= 1ms) within a tenth of the policy's and the "
                                  "workload's decision periods and moving <= 1% of the working set's pages "
                                  "(docs/model.md).", check=_quantum_check, check_doc="> 0, <= 1s, or auto"),
    seed=Field(INT, 1, "Random seed.", ge=0, le=MAX_SEED),
    warmup=Field(DURATION, "0s", "The workload runs this long before the mirror starts (warm TLBs and "
                                 "dirty bits, as on a machine that has been running).", ge=0, le=MAX_STEP),
    time_limit=Field(DURATION, "1h", "Simulated time after which the run is abandoned.", gt=0, le=MAX_SIM_TIME),
    early_stop=Field(BOOL, True, "Stop a run that cannot converge as soon as its dirty set and transfer rate are "
                                 "steady and no pending event (auto-converge step, operator action, phase "
                                 "change) can change the verdict: stop_reason steady-state, with the outcome "
                                 "projected to time_limit (qemu, xen-legacy); false: run on to the limit."),
    variant=Field(CHOICE, "correct",
                  "Algorithm variant; the others deliberately reintroduce an ordering or TLB bug.",
                  choices=VARIANTS),
)


# ---------------------------------------------------------------------------------------------
# checks across fields, in order; each names the most relevant path

@CORE.cross_check
def _memory_shape(v: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    size, page = v["memory.size"], v["memory.page_size"]
    if size % page:
        raise ConfigError("memory.size", f"{raw['memory.size']} is not a whole number of "
                                         f"{raw['memory.page_size']} pages")
    if size // page > MAX_FRAMES:
        raise ConfigError("memory.size", f"{raw['memory.size']} is {size // page} pages of "
                                         f"{raw['memory.page_size']}, more than the 2**32 frames supported "
                                         f"({format_bytes(MAX_FRAMES * page)})")
    for key in ("memory.block", "memory.kernel_size"):
        if v[key] % page:
            if raw[key] == CORE.lookup(key).default:
                # the value was left alone: the page size given is what no longer fits it
                raise ConfigError("memory.page_size", f"{raw['memory.page_size']} pages do not divide {key} "
                                                      f"({raw[key]}, its default): give {key} as a multiple "
                                                      f"of {raw['memory.page_size']}")
            raise ConfigError(key, f"{raw[key]} is not a whole number of {raw['memory.page_size']} pages")
    regions = memory_regions(size, page, v["memory.kernel_size"])
    if regions.user_bytes <= 0:
        raise ConfigError("memory.size", f"{raw['memory.size']} leaves no user memory beside the "
                                         f"{regions.describe()} (see memory.kernel_size)")


@CORE.cross_check
def _working_set_fits(v: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    page, ws = v["memory.page_size"], v["workload.working_set"]
    regions = memory_regions(v["memory.size"], page, v["memory.kernel_size"])
    if ws < page:
        raise ConfigError("workload.working_set", f"{raw['workload.working_set']} is smaller than one "
                                                  f"{raw['memory.page_size']} page")
    if ws > regions.user_bytes:
        raise ConfigError("workload.working_set",
                          f"{raw['workload.working_set']} is larger than the "
                          f"{format_bytes(regions.user_bytes)} of user memory ({raw['memory.size']} "
                          f"less {regions.describe()})")
    zero_bytes = int(v["memory.zero_fraction"] * regions.frames) * page
    if zero_bytes + ws > regions.user_bytes:
        raise ConfigError("memory.zero_fraction",
                          f"{raw['memory.zero_fraction']} of {raw['memory.size']} is "
                          f"{format_bytes(zero_bytes)} of zero pages, which beside the "
                          f"{raw['workload.working_set']} working set exceeds the "
                          f"{format_bytes(regions.user_bytes)} of user memory")
    _, placeable = placeable_user_pages(regions.user_bytes // page, v["memory.layout"], v["memory.block"] // page)
    if zero_bytes + ws > placeable * page:
        key = "workload.working_set" if zero_bytes == 0 else "memory.zero_fraction"
        raise ConfigError(key, f"{raw[key]}: the working set and zero pages need {format_bytes(zero_bytes + ws)}, "
                               f"more than the {format_bytes(placeable * page)} of the "
                               f"{format_bytes(regions.user_bytes)} of user memory that lie in whole "
                               f"{raw['memory.block']} blocks (memory.block), where the scattered layout "
                               "places pages")
    holes = v["memory.holes"]
    if not holes:
        return
    if v["memory.layout"] != "contiguous":
        raise ConfigError("memory.holes", f"holes need memory.layout: contiguous (got {raw['memory.layout']})")
    if v["memory.sparse"] == "true":
        raise ConfigError("memory.holes", "holes need dense memory (memory.sparse: false or auto)")
    last = -1
    for i, h in enumerate(holes):
        for key in ("at", "size"):
            if getattr(h, key) % page:
                raise ConfigError(f"memory.holes[{i}].{key}", f"{format_bytes(getattr(h, key))} is not a whole "
                                                              f"number of {raw['memory.page_size']} pages")
        if h.at <= last:
            raise ConfigError(f"memory.holes[{i}].at", "holes must be given in increasing order of at")
        if h.at > ws + zero_bytes:
            raise ConfigError(f"memory.holes[{i}].at", f"{format_bytes(h.at)} is past the "
                                                       f"{format_bytes(ws + zero_bytes)} of working set and "
                                                       "zero pages")
        last = h.at
    total = sum(h.size for h in holes)
    if zero_bytes + ws + total > regions.user_bytes:
        raise ConfigError("memory.holes", f"the holes' {format_bytes(total)} beside the working set and zero "
                                          f"pages exceed the {format_bytes(regions.user_bytes)} of user memory")


# ---------------------------------------------------------------------------------------------
# the workload's parts: groups, phases, traces

def _leaves(v: Mapping[str, Any]):
    """(path, section values, working-set bytes, CPUs) of every write pattern: the workload itself,
    its phases, its groups and their phases. ``section values`` maps field name -> typed value."""
    top = {k.rpartition(".")[2]: x for k, x in v.items() if k.rpartition(".")[0] == "workload"}
    if top["groups"]:
        for i, g in enumerate(top["groups"]):
            yield from _section_leaves(f"workload.groups[{i}]", dict(g.items()), g.working_set, g.cpus)
    else:
        yield from _section_leaves("workload", top, top["working_set"], v["cpus.count"])


def _section_leaves(path, sec, ws, ncpu):
    if sec["phases"]:
        for j, ph in enumerate(sec["phases"]):
            yield f"{path}.phases[{j}]", dict(ph.items()), ws, ncpu
    else:
        yield path, sec, ws, ncpu


def total_working_set(v: Mapping[str, Any]) -> int:
    """Bytes of memory the workload writes: its working set, or the sum of its groups'."""
    groups = v["workload.groups"]
    return sum(g.working_set for g in groups) if groups else v["workload.working_set"]


@CORE.cross_check
def _workload_parts(v: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    groups = v["workload.groups"]
    if groups and v["workload.phases"]:
        raise ConfigError("workload.phases", "give phases inside each group, not beside groups")
    if groups:
        ncpu = sum(g.cpus for g in groups)
        if ncpu != v["cpus.count"]:
            raise ConfigError("workload.groups", f"the groups have {ncpu} CPUs in all, cpus.count is "
                                                 f"{v['cpus.count']}")
        page = v["memory.page_size"]
        regions = memory_regions(v["memory.size"], page, v["memory.kernel_size"])
        total = total_working_set(v)
        zero_bytes = int(v["memory.zero_fraction"] * regions.frames) * page
        for i, g in enumerate(groups):
            if g.working_set < page:
                raise ConfigError(f"workload.groups[{i}].working_set", f"{g.to_dict()['working_set']} is "
                                  f"smaller than one {raw['memory.page_size']} page")
        if total + zero_bytes > regions.user_bytes:
            raise ConfigError("workload.groups", f"the groups' working sets add up to {format_bytes(total)}, "
                                                 f"which with {format_bytes(zero_bytes)} of zero pages exceeds "
                                                 f"the {format_bytes(regions.user_bytes)} of user memory")
    for path, sec, ws, ncpu in _leaves(v):
        if sec["kind"] != "trace":
            continue
        if not sec["trace"]:
            raise ConfigError(f"{path}.trace", "kind 'trace' needs a trace file")
        try:
            trace = load_trace(sec["trace"])
        except TraceError as exc:
            raise ConfigError(f"{path}.trace", str(exc)) from None
        page = v["memory.page_size"]
        if trace.page_size != page:
            raise ConfigError(f"{path}.trace", f"{sec['trace']} has {format_bytes(trace.page_size)} pages, "
                                               f"memory.page_size is {format_bytes(page)}")
        copies = 1 if sec["shared"] else ncpu
        need = trace.n_distinct * copies
        ws_path = path.split(".phases[")[0] + ".working_set"
        if ws // page < need:
            each = "" if copies == 1 else f" x {copies} CPUs with their own copy (see shared)"
            raise ConfigError(ws_path, f"{format_bytes(ws)} ({ws // page} pages) is smaller than the "
                                       f"{trace.n_distinct} distinct pages of {sec['trace']}{each}: "
                                       f"give at least {format_bytes(need * page)}")


@CORE.cross_check
def _dma_fits(v: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    if v["dma.rate"] > 0 and v["dma.working_set"] > total_working_set(v):
        raise ConfigError("dma.working_set", f"{raw['dma.working_set']} is larger than the workload's "
                                             f"{format_bytes(total_working_set(v))} working set")
