"""Results: flat per-pass records plus a summary, as JSON, CSV and a readable table.

Every result carries what is needed to reproduce it: the effective config, the seed, the kernel
backend, the variant and the package version. Only ``simulator`` (wall time and event counts of
the simulator itself) differs between two runs of the same config and seed.
"""
import csv
import dataclasses
import io
import json

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


@dataclasses.dataclass
class Result:
    """The outcome of one simulated mirror; ``to_dict`` is the JSON document."""
    summary: dict
    per_pass: list
    meta: dict
    simulator: dict

    def to_dict(self):
        d = dict(self.summary)
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
        sizes in bytes, mbps in decimal Mbit/s), so operators can read it as they read QMP."""
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
            "dirty-sync-count": d["dirty_sync_count"],
            "dirty-pages-rate": int(round(d.get("dirty_pages_rate") or 0)),
            "mbps": (transferred * 8 / max(1, total_ms - setup_ms) / 1e3) if d["converged"]
            else d.get("mbps_last_period", 0.0),
            "page-size": d["page_size"],
            "precopy-bytes": d.get("precopy_bytes", transferred),
            "downtime-bytes": d.get("downtime_bytes", 0),
            "postcopy-bytes": d.get("postcopy_bytes", 0),
        }
        out = {"status": status, "total-time": total_ms, "setup-time": setup_ms}
        if d["converged"]:
            out["downtime"] = ms(d["downtime_s"])
        else:
            out["expected-downtime"] = ms(d.get("expected_downtime_s"))
        if d["throttle_pct"]:
            out["cpu-throttle-percentage"] = d["throttle_pct"][-1][1]
        out["ram"] = ram
        if d.get("postcopy_s") is not None:
            ram["postcopy-requests"] = d.get("postcopy_faults", 0)
        if "xbzrle" in d:
            x = d["xbzrle"]
            out["xbzrle-cache"] = {"cache-size": x["cache_entries"] * d["page_size"], "bytes": x["bytes"],
                                   "pages": x["pages"], "cache-miss": x["cache_miss"], "overflow": x["overflow"]}
        return out

    def __getitem__(self, key):
        return self.to_dict()[key]


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
        ("policy", f"{d['policy']}  (variant {d['variant']}, backend {d['backend']}, seed {d['seed']})"),
        ("passes", f"{d['passes']}  {verdict}"),
        ("blackout (downtime)", downtime),
        ("brownouts", f"{d['brownout_s'] * 1e3:.3f} ms total in {d['brownouts']} harvests"),
        ("total mirror time", f"{d['total_time_s']:.3f} s"),
        ("sent", f"{_bytes(d['bytes_sent'])} in {d['pages_sent']} pages "
                 f"({d['copies_per_page']:.3f} copies per page of memory)"),
        ("workload slowdown", f"{d['slowdown'] * 100:.3f} % of CPU time lost to tracking"),
        ("lost writes", _lost(d)),
    ]
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        out.write(f"{k.ljust(w)}  {v}\n")
    return out.getvalue()
