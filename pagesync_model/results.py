"""Results: flat per-pass records plus a declared summary, as JSON, CSV and a readable table.

`Summary` declares the fields every policy reports and is built in one place for each kind of policy
(``Summary.page_level`` from the engine's counters, ``Summary.fluid`` from a model's fields); a
policy's own fields follow in ``extra``. Every result carries what is needed to reproduce it: the effective config, the seed, the kernel
backend, the variant and the package version. Only ``simulator`` (wall time and event counts of
the simulator itself) differs between two runs of the same config and seed.
"""
import csv
import dataclasses
import io
import json
from collections.abc import Mapping

PASS_FIELDS = ("pass", "kind", "start_s", "duration_s", "brownout_s", "dirty_pages", "pages_copied", "ranges",
               "bytes", "zero_pages", "overcopy_pages", "writes")


@dataclasses.dataclass
class PassRecord:
    """One copy pass. ``kind`` is 'full' (the initial copy of all memory), 'pass' (a recopy of the
    pages dirtied since the previous harvest, CPUs running) or 'blackout' (the final copy, CPUs
    stopped). ``dirty_pages`` is what the harvest that opened the pass found; ``ranges`` the copy
    calls; ``brownout_s`` how long the pass's harvest stopped the CPUs (0 for the blackout, whose
    stop is downtime); ``writes`` the workload's page writes during the pass."""
    pass_: int
    kind: str
    start_s: float
    duration_s: float = 0.0
    brownout_s: float = 0.0
    dirty_pages: int = 0
    pages_copied: int = 0
    ranges: int = 0
    bytes: int = 0
    zero_pages: int = 0
    overcopy_pages: int = 0
    writes: int = 0

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["pass"] = d.pop("pass_")
        return {k: d[k] for k in PASS_FIELDS}


# The document's key order for each kind of policy: what every committed result and test holds.
_PAGE_ORDER = ("policy", "passes", "converged", "stop_reason", "downtime_s", "brownout_s", "brownouts",
               "total_time_s", "bytes_sent", "pages_sent", "copies_per_page", "copy_calls", "zero_pages_sent",
               "slowdown", "lost_writes", "stale_frames", "workload_writes", "dirty_bit_sets", "tlb_flush_refills",
               "tracking_cycles", "memory_pages", "page_size", "dirty_sync_count", "normal_pages", "zero_pages",
               "expected_downtime_s", "throttle_pct", "achieved_dirty_rate_bytes_s")
_FLUID_HEAD = ("policy", "passes", "brownout_s", "brownouts", "bytes_sent", "pages_sent", "copies_per_page",
               "copy_calls", "zero_pages_sent", "normal_pages", "zero_pages", "throttle_pct", "slowdown",
               "lost_writes", "stale_frames", "workload_writes")
# What a fluid or closed-form model must compute (FluidPolicy.compute); the rest follows from its passes.
FLUID_REQUIRED = ("converged", "stop_reason", "downtime_s", "expected_downtime_s", "total_time_s", "memory_pages",
                  "page_size", "dirty_sync_count")


class SummaryError(ValueError):
    """A policy reported a summary without a field every result has."""


@dataclasses.dataclass
class Summary(Mapping):
    """What one mirror came to. Times in seconds, sizes in bytes; ``downtime_s`` is None without a
    cut-over; ``lost_writes`` (frames whose partner copy is stale at cut-over, ``stale_frames`` the
    first of them) is None when there is no oracle (no cut-over, or no pages simulated);
    ``dirty_bit_sets``, ``tlb_flush_refills`` and ``tracking_cycles`` only exist for page-level
    policies. ``extra`` holds the policy's own fields. As a Mapping it reads like the JSON document."""
    policy: str
    passes: int
    converged: bool
    stop_reason: str
    downtime_s: float | None
    expected_downtime_s: float | None
    total_time_s: float
    brownout_s: float
    brownouts: int
    bytes_sent: int
    pages_sent: int
    copies_per_page: float
    copy_calls: int
    zero_pages_sent: int
    normal_pages: int
    zero_pages: int
    slowdown: float
    lost_writes: int | None
    stale_frames: list
    workload_writes: int | None
    memory_pages: int
    page_size: int
    dirty_sync_count: int
    throttle_pct: list
    dirty_bit_sets: int | None = None
    tlb_flush_refills: int | None = None
    tracking_cycles: float | None = None
    achieved_dirty_rate_bytes_s: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    order: tuple = dataclasses.field(default=_PAGE_ORDER, repr=False)

    @classmethod
    def page_level(cls, policy, passes, counters, own):
        """The summary of a page-level run: ``counters`` holds every declared field the engine counts
        (``dirty_sync_count``, ``normal_pages``, ``zero_pages``, ``expected_downtime_s`` and
        ``throttle_pct`` are defaults a policy may restate), ``own`` the policy's fields from ``finish``,
        which take precedence."""
        values = dict(counters, policy=policy, passes=passes)
        extra = {}
        for k, v in own.items():
            if k in values or k in _DECLARED:
                values[k] = v
            else:
                extra[k] = v
        return cls(**values, extra=extra, order=_PAGE_ORDER)

    @classmethod
    def fluid(cls, policy, per_pass, fields):
        """The summary of a fluid or closed-form model: the transfer counted from its ``per_pass``
        records (no pages simulated: no brownouts, no zero pages, no version oracle) and its
        ``fields`` (FLUID_REQUIRED and its own, in its order). Raises SummaryError for a missing field."""
        missing = [k for k in FLUID_REQUIRED if k not in fields]
        if missing:
            raise SummaryError(f"the {policy} policy's summary lacks {', '.join(missing)}")
        pages_sent = sum(r.pages_copied for r in per_pass)
        values = {"policy": policy, "passes": len(per_pass), "brownout_s": 0.0, "brownouts": 0,
                  "bytes_sent": sum(r.bytes for r in per_pass), "pages_sent": pages_sent,
                  "copies_per_page": pages_sent / fields["memory_pages"], "copy_calls": len(per_pass),
                  "zero_pages_sent": 0, "normal_pages": pages_sent, "zero_pages": 0, "throttle_pct": [],
                  "slowdown": 0.0, "lost_writes": None, "stale_frames": [], "workload_writes": None,
                  "achieved_dirty_rate_bytes_s": None}    # no pages are simulated: none is measured
        extra = {}
        for k, v in fields.items():
            if k in _DECLARED:
                values[k] = v
            else:
                extra[k] = v
        return cls(**values, extra=extra, order=_FLUID_HEAD + tuple(k for k in fields if k not in _FLUID_HEAD)
                   + ("achieved_dirty_rate_bytes_s",))

    def to_dict(self):
        """The summary as the JSON document has it (declared fields, then the policy's own)."""
        d = {}
        for k in self.order:
            d[k] = self.extra[k] if k in self.extra else getattr(self, k)
        for k, v in self.extra.items():
            if k not in d:
                d[k] = v
        return d

    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self):
        return len(self.to_dict())


_DECLARED = {f.name for f in dataclasses.fields(Summary)} - {"extra", "order"}


@dataclasses.dataclass
class Result:
    """The outcome of one simulated mirror; ``to_dict`` is the JSON document."""
    summary: Summary
    per_pass: list
    meta: dict
    simulator: dict

    def to_dict(self):
        d = self.summary.to_dict()
        d.update(self.meta)
        d["per_pass"] = [r.as_dict() for r in self.per_pass]
        d["simulator"] = dict(self.simulator)
        return d

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False) + "\n"

    def to_csv(self):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=PASS_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in self.per_pass:
            w.writerow(r.as_dict())
        return buf.getvalue()

    def to_qemu(self):
        """The result as QEMU's query-migrate reply (QEMU 10.0 field names and units: times in ms,
        sizes in bytes, mbps in decimal Mbit/s), so operators can read it as they read QMP. ``ram``
        carries every member of QEMU's MigrationStats (tests/data/qemu/README.md): multifd-bytes and
        dirty-sync-missed-zero-copy are 0 (neither multifd nor zero-copy-send is modelled)."""
        d = self.to_dict()
        ms = lambda s: None if s is None else int(round(s * 1e3))  # noqa: E731
        total_ms = ms(d["total_time_s"])
        setup_ms = ms(d.get("setup_time_s") or 0.0)
        status = "completed" if d["converged"] else ("cancelled" if d["stop_reason"].startswith("abort") else "active")
        if d.get("postcopy_s"):
            status = "completed"
        transferred = d["bytes_sent"]
        ram = {
            "transferred": transferred,
            "remaining": d.get("remaining_bytes", 0) or 0,
            "total": d["memory_pages"] * d["page_size"],
            "duplicate": d["zero_pages"],
            "normal": d["normal_pages"],
            "normal-bytes": d["normal_pages"] * d["page_size"],
            "dirty-pages-rate": int(round(d.get("dirty_pages_rate") or 0)),
            "mbps": (transferred * 8 / max(1, total_ms - setup_ms) / 1e3) if d["converged"]
            else d.get("mbps_last_period", 0.0),
            "dirty-sync-count": d["dirty_sync_count"],
            "postcopy-requests": d.get("postcopy_requests", 0) or 0,
            "page-size": d["page_size"],
            "multifd-bytes": 0,                  # multifd is not modelled: one stream
            # QEMU's last period's rate; a policy without periods: the pages over the transfer time
            "pages-per-second": int(round(d["pages_per_second"] if d.get("pages_per_second") is not None
                                          else d["pages_sent"] / max(1e-3, (total_ms - setup_ms) / 1e3))),
            "precopy-bytes": d.get("precopy_bytes", transferred),
            "downtime-bytes": d.get("downtime_bytes", 0),
            "postcopy-bytes": d.get("postcopy_bytes", 0),
            "dirty-sync-missed-zero-copy": 0,    # zero-copy-send is not modelled: no sync can miss it
        }
        out = {"status": status, "total-time": total_ms, "setup-time": setup_ms}
        if d["converged"]:  # QEMU's counter stops on the source (without the destination's start)
            out["downtime"] = ms(d.get("qemu_downtime_s", d["downtime_s"]))
        else:
            out["expected-downtime"] = ms(d.get("expected_downtime_s"))
        if d["throttle_pct"]:
            out["cpu-throttle-percentage"] = d["throttle_pct"][-1][1]
        out["ram"] = ram
        if d.get("postcopy_vcpu_blocktime_s") is not None:  # the destination's, with postcopy-blocktime on
            out["postcopy-blocktime"] = ms(d["postcopy_blocktime_s"])
            out["postcopy-vcpu-blocktime"] = [ms(b) for b in d["postcopy_vcpu_blocktime_s"]]
        if "xbzrle" in d:
            x = d["xbzrle"]
            out["xbzrle-cache"] = {"cache-size": x["cache_entries"] * d["page_size"], "bytes": x["bytes"],
                                   "pages": x["pages"], "cache-miss": x["cache_miss"], "overflow": x["overflow"]}
        return out

    def __getitem__(self, key):
        return self.to_dict()[key]


def _qemu_json(result):
    return json.dumps(result.to_qemu(), indent=2) + "\n"


# The JSON documents ``--json-format`` may name: name -> (text of a Result, one-line description).
# A new format is a function of the Result and one line here.
JSON_FORMATS = {
    "pagesync": (Result.to_json, "the full result, default"),
    "qemu": (_qemu_json, "a QEMU query-migrate object"),
}


def _ms(s):
    return f"{s * 1e3:.3f}"


def _bytes(n):
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _lost(d):
    if d["lost_writes"] is None:
        if d.get("model") in ("fluid", "closed-form"):
            return f"n/a ({d['model']} model: no pages are simulated, so there is no version oracle)"
        return "n/a (no cut-over: the migration did not complete)"
    if d["lost_writes"]:
        return f"{d['lost_writes']}  STALE FRAMES e.g. {d['stale_frames'][:8]}"
    return "0  (partner equals source)"


# Why a run ended, in a planner's words: stop_reason -> (converged text, not-converged text); None: the
# reason alone. A policy's reason missing here is printed as it is.
_WHY = {
    "threshold": "the last harvest found fewer dirty pages than stratus.threshold",
    "last-pass": "the passes ran out (stratus.passes): the blackout was forced with the dirty pages left",
    "time-limit": "still copying at sim.time_limit: the dirty set never fitted the limit",
    "steady-state": "the dirty set and the transfer rate are steady, short of convergence, and nothing still due "
                    "can change that: stopped early (sim.early_stop)",
    "min-pages": "a live round sent fewer than xen.min_pages pages",
    "max-iters": "the live rounds ran out (xen.max_iters): stop-and-copy with the dirty pages left",
    "max-factor": "more than xen.max_factor times memory was sent: stop-and-copy with the dirty pages left",
    "rate-max-and-growing": "the rate limit reached its maximum and the round grew: stop-and-copy with the dirty "
                            "pages left",
    "v2-threshold": "a CLEAN found fewer than xen.v2_threshold dirty pages",
    "v2-max-iterations": "the live rounds ran out (xen.v2_max_iterations): stop-and-copy with the dirty pages left",
}


def _why(d):
    reason = d["stop_reason"]
    base = reason.split(" (", 1)[0]
    if base == "aborted":
        return f"the operator cancelled the migration ({reason[len('aborted ('):-1]}); the VM stays on the source"
    if reason == "threshold" and d["policy"] == "qemu":
        return "the pages left fitted the downtime limit at the measured bandwidth"
    if base == "postcopy":
        return "the operator switched to post-copy: the destination runs and pulls the pages it misses"
    return _WHY.get(reason, reason)


def _answer_lines(d):
    """The lines that answer "did it converge, and what downtime does it need?"."""
    lines = [("verdict", ("converged" if d["converged"] else "NOT converged") + ": " + _why(d))]
    expected, needed = d.get("expected_downtime_s"), d.get("needed_downtime_limit_s")
    if d["downtime_s"] is None and expected is not None:
        text = f"{expected * 1e3:.3f} ms (no cut-over; the policy's estimate at the end)"
        lines.append(("expected downtime", text))
    if needed is not None:
        limit = (d.get("config") or {}).get("qemu", {}).get("downtime_limit")
        lines.append(("needed downtime limit", f"{needed * 1e3:.3f} ms (the least pending / bandwidth at a sync "
                                               f"that decided{f'; the limit was {limit}' if limit else ''})"))
    proj = d.get("projected")
    if proj:
        lines.append(("projected at the end", f"{proj['stop_reason']} at {proj['total_time_s']:.3f} s: "
                                              f"{proj['passes']} passes, {_bytes(proj['bytes_sent'])} sent"
                                              + (f", downtime {proj['downtime_s'] * 1e3:.3f} ms"
                                                 if proj.get("downtime_s") is not None else "")
                                              + f" (stopped early at {proj['stopped_at_s']:.3f} s; "
                                                "sim.early_stop: false runs on)"))
    far = d.get("blackout_far_overcopy_pages")
    if d["converged"] and far:
        blackout = [r for r in d["per_pass"] if r["kind"] == "blackout"]
        copied = blackout[-1]["pages_copied"] if blackout else 0
        share = f" ({far / copied * 100:.1f} % of the {copied} pages it copied)" if copied else ""
        lines.append(("WARNING over-copy", f"the blackout merged far ranges to fit stratus.max_copyrange: {far} "
                                           f"clean pages copied{share}, which lengthened the downtime"))
    return lines


def format_table(result):
    """A readable per-pass table and summary (what the CLI prints)."""
    d = result.to_dict()
    head = ("pass", "kind", "start ms", "duration ms", "brownout ms", "dirty pages", "pages copied", "ranges",
            "bytes")
    rows = [(str(r["pass"]), r["kind"], _ms(r["start_s"]), _ms(r["duration_s"]), _ms(r["brownout_s"]),
             str(r["dirty_pages"]), str(r["pages_copied"]), str(r["ranges"]), _bytes(r["bytes"]))
            for r in d["per_pass"]]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    out = io.StringIO()
    out.write("  ".join(h.rjust(w) for h, w in zip(head, widths)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write("  ".join(c.rjust(w) for c, w in zip(row, widths)) + "\n")
    out.write("\n")
    if d["converged"]:
        verdict = f"converged ({d['stop_reason']})"
    else:
        verdict = f"NOT converged ({d['stop_reason']})"
    downtime = "n/a" if d["downtime_s"] is None else f"{d['downtime_s'] * 1e3:.3f} ms"
    lines = [
        ("policy", f"{d['policy']}  (variant {d['variant']}, backend {d['backend']}, seed {d['seed']}"
                   + (f", quantum {d['quantum_s'] * 1e3:g} ms" if d.get("quantum_s") is not None else "") + ")"),
        ("passes", f"{d['passes']}  {verdict}"),
        *_answer_lines(d),
        ("blackout (downtime)", downtime),
        ("brownouts", f"{d['brownout_s'] * 1e3:.3f} ms total in {d['brownouts']} harvests"),
        ("total mirror time", f"{d['total_time_s']:.3f} s"),
        ("sent", f"{_bytes(d['bytes_sent'])} in {d['pages_sent']} pages "
                 f"({d['copies_per_page']:.3f} copies per page of memory)"),
        ("workload slowdown", f"{d['slowdown'] * 100:.3f} % of CPU time lost to tracking"),
        ("lost writes", _lost(d)),
    ]
    if d.get("postcopy_vcpu_blocktime_s") is not None:
        per = ", ".join(f"{b * 1e3:.1f}" for b in d["postcopy_vcpu_blocktime_s"])
        lines.append(("post-copy", f"{d['postcopy_s']:.3f} s, {d['postcopy_requests']} page requests, blocktime "
                                   f"{d['postcopy_blocktime_s'] * 1e3:.1f} ms (all vCPUs at once; per vCPU: {per} ms)"))
    if d.get("achieved_dirty_rate_bytes_s") is not None:
        window = (d.get("config") or {}).get("workload", {}).get("dirty_rate_window", "1s")
        lines.append(("dirty rate achieved", f"{_bytes(d['achieved_dirty_rate_bytes_s'])}/s (distinct pages per "
                                             f"{window} window, as QEMU's calc-dirty-rate; mean)"))
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        out.write(f"{k.ljust(w)}  {v}\n")
    return out.getvalue()
