#!/usr/bin/env python3
"""Where the dirtier's working set sits in guest-physical memory and in the migration stream's order,
decoded from a captured stream (run_migration.py --capture FILE, read with qemu_stream.py).

    ./placement.py --name seq_near STREAM RUN.json >> placement.json   # one summary per placement

The summary (a small JSON object, one per captured run) is what is committed; the capture (~1 GB)
is not. Pages are guest-physical 4 KiB page numbers of "pc.ram" (the guest's RAM block). The first
pass is the stream's pc.ram pages up to the first time the page number goes down (QEMU's first pass
walks the dirty bitmap upwards from page 0 and every page is dirty at setup).
"""
import argparse
import json
import sys

import numpy as np

from qemu_stream import PAGE, parse

MIB_PAGES = (1 << 20) // PAGE


def extents(sorted_pages):
    """[first, last] of every run of consecutive page numbers."""
    if len(sorted_pages) == 0:
        return []
    cut = np.nonzero(np.diff(sorted_pages) != 1)[0]
    starts = np.concatenate(([0], cut + 1))
    ends = np.concatenate((cut, [len(sorted_pages) - 1]))
    return [[int(sorted_pages[s]), int(sorted_pages[e])] for s, e in zip(starts, ends)]


def summary(pages, ram_pages, bin_mib=16):
    ram = pages[pages["block"] == 0]
    down = np.nonzero(np.diff(ram["page"]) < 0)[0]
    first = ram[:down[0] + 1] if len(down) else ram
    normal = first[~first["zero"]]
    dirt = normal[normal["dirtier"]]
    dp = np.sort(dirt["page"])
    q = [0, 1, 5, 25, 50, 75, 95, 99, 100]
    # position of each of the dirtier's pages among the first pass's normal (non-zero) pages: what
    # fraction of the first pass's bytes on the wire goes before it
    pos = np.nonzero(normal["dirtier"])[0] / max(len(normal), 1)
    bins = np.arange(0, ram_pages + bin_mib * MIB_PAGES, bin_mib * MIB_PAGES)
    ext = extents(dp)
    ext_sizes = sorted((e[1] - e[0] + 1 for e in ext), reverse=True)
    return {
        "ram_pages": int(ram_pages),
        "first_pass": {
            "pages": int(len(first)), "normal": int(len(normal)), "zero": int(first["zero"].sum()),
            "dirtier": int(len(dirt)), "other_normal": int(len(normal) - len(dirt)),
            "sections": int(first["part"].max() - first["part"].min() + 1) if len(first) else 0,
        },
        "dirtier_page_percentiles": {str(p): int(np.percentile(dp, p, method="nearest"))
                                     for p in q} if len(dp) else None,
        "dirtier_stream_position_percentiles": {str(p): round(float(np.percentile(pos, p)), 4)
                                                for p in q} if len(pos) else None,
        "dirtier_extents": {"count": len(ext), "largest_pages": ext_sizes[:10]},
        "histogram_bin_mib": bin_mib,
        "dirtier_pages_per_bin": np.histogram(dp, bins)[0].tolist(),
        "other_normal_pages_per_bin": np.histogram(normal["page"][~normal["dirtier"]], bins)[0].tolist(),
        "all_sections": {"pages": int(len(ram)), "normal": int((~ram["zero"]).sum()),
                         "dirtier": int(ram["dirtier"].sum())},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stream")
    ap.add_argument("run", help="the JSON run_migration.py wrote for the captured run")
    ap.add_argument("--name", required=True, help="a name for this placement (e.g. the config)")
    a = ap.parse_args(argv)
    try:
        with open(a.run) as f:
            run = json.load(f)
        pages, _, blocks = parse(a.stream)
    except (OSError, ValueError) as e:
        print("placement.py: %s" % e, file=sys.stderr)
        return 2
    i = run["inputs"]
    f = run.get("final") or {}
    out = {"name": a.name, "config": run.get("config"), "timestamp": run.get("timestamp"),
           "kernel": i.get("kernel"), "kernel_cmdline": i.get("kernel_cmdline"),
           "working_set_mib": i.get("working_set_mib"), "spacer_mib": i.get("dirtier_spacer_mib", 0),
           "pattern": i.get("pattern"), "rate_requested_pages_s": i.get("rate_requested_pages_s"),
           "captured_run": {"status": f.get("status"), "total_time_ms": f.get("total-time"),
                            "dirty_sync_count": f.get("ram", {}).get("dirty-sync-count"),
                            "transferred": f.get("ram", {}).get("transferred"),
                            "loadavg_at_migrate": run["host"].get("loadavg_at_migrate")},
           **summary(pages, blocks[0][1] // PAGE)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
