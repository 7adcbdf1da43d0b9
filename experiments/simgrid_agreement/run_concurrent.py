#!/usr/bin/env python3
"""Regenerate results_concurrent.json: SimGrid's own numbers for several live migrations at once.

    apt-get install -y libsimgrid-dev g++
    ./build.sh
    python3 run_concurrent.py          # writes results_concurrent.json, prints a markdown table
    python3 run_concurrent.py --table  # reprints the table from results_concurrent.json

Every case runs `build/migrate_many` (see migrate_many.cpp) on a platform given link by link. The
"small_platform" cases use the hosts, links and routes of SimGrid's examples/platforms/small_platform.xml
that the migrations cross (read at simgrid/simgrid 12a63c78; identical at tag v3.32), so the first four
cases are SimGrid's cloud-migration example itself and are checked against its .tesh output (printed to
the millisecond). The "lan" cases are migrate.cpp's two-host platform (1 Gbit/s, 100 us) with busy VMs.
Runs are sequential and niced.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_concurrent import predict  # noqa: E402

BIN = os.path.join(HERE, "build", "migrate_many")
OUT = os.path.join(HERE, "results_concurrent.json")

# small_platform.xml: host speeds (flop/s), links (bytes/s, s: "MBps" is 10^6 B/s), routes (symmetrical)
SMALL_HOSTS = {"Fafard": 76.296e6, "Tremblay": 98.095e6, "Bourassa": 48.492e6, "Jupiter": 76.296e6,
               "Ginette": 48.492e6}
SMALL_LINKS = {"0": (41.279125e6, 59.904e-6), "1": (34.285625e6, 514.433e-6), "2": (118.6825e6, 136.931e-6),
               "3": (34.285625e6, 514.433e-6), "4": (10.099625e6, 479.78e-6), "5": (27.94625e6, 278.066e-6),
               "6": (41.279125e6, 59.904e-6), "7": (11.618875e6, 189.98e-6), "8": (8.158e6, 270.544e-6),
               "9": (7.20975e6, 1.461517e-3)}
SMALL_ROUTES = [("Tremblay", "Fafard", ["4", "3", "2", "0", "1", "8"]), ("Fafard", "Bourassa", ["8", "6", "7"]),
                ("Tremblay", "Jupiter", ["9"]), ("Fafard", "Ginette", ["8", "1", "0", "2", "5"])]
LAN = dict(hosts={"src": 1e9, "src2": 1e9, "dst": 1e9, "dst2": 1e9},
           links={"link": (125e6, 1e-4), "link2": (125e6, 1e-4)},
           routes=[("src", "dst", ["link"]), ("src", "dst2", ["link2"]), ("src2", "dst", ["link"])])

# SimGrid's s4u-cloud-migration.tesh (12a63c78 = v3.32): "VMx migrated: Fafard->DST in T s"
TESH = {
    "tesh_1000MB": {"VM0": 132.766},
    "tesh_100MB": {"VM0": 13.346},
    "tesh_two_same_dest": {"VM0": 265.454, "VM1": 265.454},
    "tesh_two_diff_dest": {"VM0": 265.436, "VM1": 216.509},
}


def vm(name, src, dst, ram, mig_speed=None, intensity=None, offset=None):
    return dict(name=name, src=src, dst=dst, ram=ram, mig_speed=mig_speed, intensity=intensity, offset=offset)


def cases():
    small = dict(platform="small_platform", hosts=SMALL_HOSTS, links=SMALL_LINKS, routes=SMALL_ROUTES)
    out = [
        dict(small, name="tesh_1000MB", vms=[vm("VM0", "Fafard", "Tremblay", 1e9)]),
        dict(small, name="tesh_100MB", vms=[vm("VM0", "Fafard", "Tremblay", 1e8)]),
        dict(small, name="tesh_two_same_dest",
             vms=[vm("VM0", "Fafard", "Tremblay", 1e9), vm("VM1", "Fafard", "Tremblay", 1e9)]),
        dict(small, name="tesh_two_diff_dest",
             vms=[vm("VM0", "Fafard", "Tremblay", 1e9), vm("VM1", "Fafard", "Bourassa", 1e9)]),
        # beyond the example: unequal sizes (the survivor speeds up), three at once, a late start,
        # a lone Fafard->Bourassa run, and two migrations that share no link
        dict(small, name="single_to_bourassa", vms=[vm("VM1", "Fafard", "Bourassa", 1e9)]),
        dict(small, name="two_same_dest_unequal",
             vms=[vm("VM0", "Fafard", "Tremblay", 1e9), vm("VM1", "Fafard", "Tremblay", 1e8)]),
        dict(small, name="two_diff_dest_unequal",
             vms=[vm("VM0", "Fafard", "Tremblay", 1e9), vm("VM1", "Fafard", "Bourassa", 1e8)]),
        dict(small, name="three_mixed",
             vms=[vm("VM0", "Fafard", "Tremblay", 5e8), vm("VM1", "Fafard", "Tremblay", 5e8),
                  vm("VM2", "Fafard", "Bourassa", 5e8)]),
        dict(small, name="two_same_dest_staggered",
             vms=[vm("VM0", "Fafard", "Tremblay", 1e9), vm("VM1", "Fafard", "Tremblay", 1e9, offset=50.0)]),
        dict(small, name="single_tremblay_to_jupiter", vms=[vm("VM2", "Tremblay", "Jupiter", 1e8)]),
        dict(small, name="disjoint_routes",
             vms=[vm("VM0", "Fafard", "Tremblay", 1e9), vm("VM2", "Tremblay", "Jupiter", 1e8)]),
    ]
    lan = dict(platform="lan", **LAN)
    gib = float(2 ** 30)
    for inten in (0.0, 0.3):
        out.append(dict(lan, name=f"lan_single_busy_i{inten}",
                        vms=[vm("VM0", "src", "dst", gib, mig_speed=125e6, intensity=inten)]))
        out.append(dict(lan, name=f"lan_two_same_link_busy_i{inten}",
                        vms=[vm("VM0", "src", "dst", gib, mig_speed=125e6, intensity=inten),
                             vm("VM1", "src", "dst", gib, mig_speed=125e6, intensity=inten)]))
        # two source hosts, one link: only the network is shared (on one host the VMs share its CPU too)
        out.append(dict(lan, name=f"lan_two_hosts_one_link_busy_i{inten}",
                        vms=[vm("VM0", "src", "dst", gib, mig_speed=125e6, intensity=inten),
                             vm("VM1", "src2", "dst", gib, mig_speed=125e6, intensity=inten)]))
        out.append(dict(lan, name=f"lan_two_links_busy_i{inten}",
                        vms=[vm("VM0", "src", "dst", gib, mig_speed=125e6, intensity=inten),
                             vm("VM1", "src", "dst2", gib, mig_speed=125e6, intensity=inten)]))
    return out


def command(c):
    cmd = ["nice", BIN]
    cmd += [f"--host={h}:{s!r}" for h, s in c["hosts"].items()]
    cmd += [f"--link={n}:{bw!r}:{lat!r}" for n, (bw, lat) in c["links"].items()]
    cmd += [f"--route={s}:{d}:{','.join(ls)}" for s, d, ls in c["routes"]]
    for v in c["vms"]:
        spec = f"{v['name']}:{v['src']}:{v['dst']}:{v['ram']!r}"
        if v["mig_speed"] is not None:
            spec += f":{v['mig_speed']!r}:{v['intensity']!r}"
            if v["offset"] is not None:
                spec += f":{v['offset']!r}"
        elif v["offset"] is not None:
            spec += f":-1:0:{v['offset']!r}"
        cmd.append(f"--vm={spec}")
    return cmd


def run(c):
    cmd = command(c)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rec = json.loads(p.stdout)
    rec["case"] = c["name"]
    rec["platform"] = c["platform"]
    rec["wall_s"] = round(time.time() - t0, 3)
    rec["command"] = " ".join(cmd[1:]).replace(BIN, "build/migrate_many")
    rec["printed"] = [line for line in p.stderr.splitlines() if "migrated:" in line]
    if c["name"] in TESH:
        rec["tesh"] = TESH[c["name"]]
    if all(not v["intensity"] for v in c["vms"]):  # idle VMs: reference_concurrent.py applies
        ref = predict(c["links"], c["routes"], c["vms"])
        for v in rec["vms"]:
            q = ref[v["name"]]
            v["reference"] = q
            v["reference_rel_err_total"] = q["total_time"] / v["total_time"] - 1
            v["reference_rel_err_downtime"] = q["downtime"] / v["downtime"] - 1
    return rec


def table(records):
    lines = ["| case | VM | route | RAM B | start s | total s | downtime s | rounds | tesh s | ref err total / downtime |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for v in r["vms"]:
            tesh = r.get("tesh", {}).get(v["name"])
            lines.append(f"| {r['case']} | {v['name']} | {v['src']}->{v['dst']} | {v['ram_bytes']:.3g} | "
                         f"{v['mig_start']:.3f} | {v['total_time']:.6f} | {v['downtime']:.6f} | {v['rounds']} | "
                         f"{'' if tesh is None else f'{tesh:.3f}'} | "
                         + (f"{v['reference_rel_err_total']:.1e} / {v['reference_rel_err_downtime']:.1e} |"
                            if "reference" in v else "- |"))
    return "\n".join(lines)


def main():
    if "--table" in sys.argv[1:]:
        print(table(json.load(open(OUT))["records"]))
        return
    records = [run(c) for c in cases()]
    bad = [(r["case"], v["name"], v["total_time"], r["tesh"][v["name"]]) for r in records if "tesh" in r
           for v in r["vms"] if round(v["total_time"], 3) != r["tesh"][v["name"]]]
    data = {"about": "SimGrid's own outputs for concurrent live migrations (experiments/simgrid_agreement/"
                     "run_concurrent.py); tesh = SimGrid's s4u-cloud-migration.tesh where the case is the example",
            "records": records}
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(table(records))
    if bad:
        print("differs from the tesh:", bad, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
