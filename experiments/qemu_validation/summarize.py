#!/usr/bin/env python3
"""Summarize runs/*.json into a markdown table (one row per configuration).

    ./summarize.py            # table to stdout
    ./summarize.py --runs     # one line per run as well
    ./summarize.py --dir runs_loaded   # another folder (runs_loaded: the runs measured under host load)

Medians over the runs of a configuration; "spread" is min-max. For runs
cancelled at the time limit the statistics come from the last query-migrate
reply that had them (field last_with_stats) and total time is the limit.
"""
import glob
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["idle", "idle_ws320", "rand_low", "rand_near", "rand_high",
         "seq_near", "autoconv_high", "rand_near_ws320", "rand_near_dt100",
         "rand_high_dt1000", "idle_bw32", "idle_bw128", "xbzrle_c256", "xbzrle_c32",
         "pc_pass1", "pc_pass1_bw16", "pc_at2", "pc_at2_bw16", "pc_pass1_bw16_preempt",
         "pc_pass1_bw32_preempt", "pc_at2_bw16_preempt", "autoconv_99",
         "autoconv_99_debt2000", "seq_near_ctl", "seq_near_spacer"]


def load(pattern):
    runs = []
    for p in sorted(glob.glob(pattern)):
        with open(p) as f:
            runs.append(json.load(f))
    return runs


def stats_of(r):
    f = r.get("final") or {}
    if "ram" not in f and r.get("last_with_stats"):
        f = r["last_with_stats"]
    return f


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs, fmt="%.0f"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return (fmt + "–" + fmt) % (min(xs), max(xs))


def fmt(x, f="%.0f"):
    return "-" if x is None else f % x


def main():
    show_runs = "--runs" in sys.argv
    folder = sys.argv[sys.argv.index("--dir") + 1] if "--dir" in sys.argv[:-1] else "runs"
    runs = load(os.path.join(HERE, folder, "*.json"))
    by = {}
    for r in runs:
        by.setdefault(r["config"], []).append(r)
    names = [n for n in ORDER if n in by] + sorted(set(by) - set(ORDER))
    print("| config | max-bw MiB/s | ws MiB | rate req (achieved) pages/s | pattern | dt-limit ms"
          " | AC | runs | converged | total-time s (min–max) | downtime ms"
          " (min–max) | setup ms | transferred MiB (min–max) | normal pages"
          " | duplicate pages | dirty-sync-count (min–max) | mbps final | mbps active"
          " | load1 at start | set | xbzrle pages | xbzrle cache-miss | post-copy requests"
          " | blocktime ms (min–max) | QEMU wait share src/dst % (max) |")
    print("|" + "---|" * 25)
    for n in names:
        rs = by[n]
        i = rs[0]["inputs"]
        ok = [r for r in rs if r.get("converged")]
        tt = [(stats_of(r).get("total-time") / 1000.0)
              if r.get("converged") else i["time_limit_s"] for r in rs]
        dt = [stats_of(r).get("downtime") for r in ok]
        st = [stats_of(r).get("setup-time") for r in rs]
        tr = [stats_of(r).get("ram", {}).get("transferred", 0) / 2**20
              for r in rs]
        nm = [stats_of(r).get("ram", {}).get("normal") for r in rs]
        dp = [stats_of(r).get("ram", {}).get("duplicate") for r in rs]
        sc = [stats_of(r).get("ram", {}).get("dirty-sync-count") for r in rs]
        mb = [stats_of(r).get("ram", {}).get("mbps") for r in rs]
        mba = [med([h[6] for h in r["history"] if h[1] == "active" and h[6]])
               for r in rs]
        ach = [r.get("guest_rate", {}).get("achieved_during_migration_pages_s")
               for r in rs]
        la = [r["host"].get("loadavg_at_migrate", [None])[0] for r in rs]
        xp = [stats_of(r).get("xbzrle-cache", {}).get("pages") for r in rs]
        xm = [stats_of(r).get("xbzrle-cache", {}).get("cache-miss") for r in rs]
        pr = [stats_of(r).get("ram", {}).get("postcopy-requests") for r in rs]
        bt = [(r.get("postcopy") or {}).get("postcopy_blocktime_ms") for r in rs]
        ws = [[(r["host"].get(k) or {}).get("wait_share") for k in ("src_qemu_schedstat", "dst_qemu_schedstat")]
              for r in rs]
        ws_s = ("%s/%s (%s)" % (fmt(med([w[0] * 100 for w in ws if w[0] is not None]), "%.1f"),
                                fmt(med([w[1] * 100 for w in ws if w[1] is not None]), "%.1f"),
                                fmt(max(x * 100 for w in ws for x in w if x is not None), "%.1f"))
                if any(x is not None for w in ws for x in w) else "-")
        pc = i.get("postcopy")
        mset = (rs[0].get("model") or {}).get("set") or "-"
        alive = all(r.get("dest_check", {}).get("alive_and_writing")
                    for r in ok)
        conv = "%d/%d%s" % (len(ok), len(rs), "" if alive else " (dst check failed)")
        tt_s = "%s (%s)" % (fmt(med(tt), "%.2f"), rng(tt, "%.2f"))
        if len(ok) < len(rs):
            tt_s += " [limit %gs]" % i["time_limit_s"]
        print("| %s | %g | %d | %d (%s) | %s | %d | %s | %d | %s | %s | %s (%s) | %s |"
              " %s (%s) | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                  n, i["max_bandwidth_mib_s"], i["working_set_mib"], i["rate_requested_pages_s"],
                  fmt(med(ach)), i["pattern"], i["downtime_limit_ms"],
                  "on" if i["auto_converge"] else "off", len(rs), conv, tt_s,
                  fmt(med(dt)), rng(dt), fmt(med(st)), fmt(med(tr), "%.1f"),
                  rng(tr, "%.1f"), fmt(med(nm)), fmt(med(dp)), fmt(med(sc)),
                  rng(sc), fmt(med(mb), "%.1f"), fmt(med(mba), "%.1f"),
                  fmt(med(la), "%.2f"), mset, fmt(med(xp)), fmt(med(xm)),
                  fmt(med(pr)) if pc else "-",
                  "%s (%s)" % (fmt(med(bt)), rng(bt)) if pc else "-", ws_s))
    if show_runs:
        print()
        for n in names:
            for r in sorted(by[n], key=lambda r: r["run_index"]):
                f = stats_of(r)
                ram = f.get("ram", {})
                pcr = r.get("postcopy") or {}
                print("%s#%d status=%s total=%s downtime=%s transferred=%.1fMiB"
                      " syncs=%s throttle=%s achieved=%s load=%s%s%s" % (
                          n, r["run_index"], (r.get("final") or {}).get("status"),
                          f.get("total-time"), f.get("downtime"),
                          ram.get("transferred", 0) / 2**20,
                          ram.get("dirty-sync-count"),
                          f.get("cpu-throttle-percentage"),
                          fmt(r.get("guest_rate", {}).get(
                              "achieved_during_migration_pages_s")),
                          r["host"].get("loadavg_at_migrate"),
                          " xbzrle_pages=%s cache_miss=%s" % (
                              f["xbzrle-cache"].get("pages"), f["xbzrle-cache"].get("cache-miss"))
                          if "xbzrle-cache" in f else "",
                          " switch=%s@%s active@%s requests=%s blocktime=%s" % (
                              pcr.get("trigger"), pcr.get("start_cmd_t"),
                              pcr.get("postcopy_active_t"), ram.get("postcopy-requests"),
                              pcr.get("postcopy_blocktime_ms")) if pcr else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
