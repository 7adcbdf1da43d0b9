#!/usr/bin/env python3
"""Regenerate results.json: SimGrid's own live-migration numbers for a sweep.

    apt-get install -y libsimgrid-dev g++
    ./build.sh
    python3 run_sweep.py            # writes results.json, prints a markdown table

Each record = inputs + outputs of one `build/migrate` run (see migrate.cpp), plus
wall-clock seconds, plus the prediction of reference_model.py (the written model
of SimGrid's algorithm) and its relative error.  Runs are sequential and niced.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_model import predict  # noqa: E402

REF_KEYS = ("ram_mib", "host_speed", "link_bw", "link_lat", "mig_speed", "intensity", "network_model",
            "crosstraffic", "sharing")
BIN = os.path.join(HERE, "build", "migrate")

BASE = dict(ram_mib=1024, host_speed=1e9, link_bw=125e6, link_lat=1e-4, mig_speed=125e6,
            intensity=0.5, network_model="LV08", sharing="SHARED", crosstraffic=True)


def configs():
    out = []
    # main grid: 1 Gbit/s link, 100 us latency, mig speed = link nominal bandwidth
    for ram in (1024, 4096):
        for model in ("LV08", "CM02"):
            for inten in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):  # 1.0 never converges
                out.append(dict(BASE, ram_mib=ram, network_model=model, intensity=inten, group="grid"))
    # edge cases / model features, 1 GiB
    for model in ("LV08", "CM02"):
        out.append(dict(BASE, network_model=model, mig_speed=0.0, group="mig_speed_unset"))
        out.append(dict(BASE, network_model=model, mig_speed=100e6, group="mig_speed_below_link"))
        out.append(dict(BASE, network_model=model, sharing="SPLITDUPLEX", group="splitduplex_link"))
        out.append(dict(BASE, network_model=model, crosstraffic=False, group="crosstraffic_off"))
        out.append(dict(BASE, network_model=model, link_lat=0.01, group="latency_10ms"))
        out.append(dict(BASE, network_model=model, link_lat=0.05, intensity=0.1, group="latency_50ms_tcp_gamma"))
    out.append(dict(BASE, host_speed=2e9, group="host_speed_2e9"))
    # Non-converging runs only end at SimGrid's 1e7 s migration timeout (it then aborts).
    # That costs ~3 us of CPU per stage-2 round; runs needing more than ~1.5e7 rounds
    # (> ~45 s of CPU) are stopped at 2000 simulated seconds instead, by which time
    # stage 2 sits on its fixed point (same size every round, above the threshold).
    for c in out:
        ref = predict(**{k: c[k] for k in REF_KEYS})
        c["stop_at"] = 2001.0 if (not ref["completed"] and ref["rounds"] > 1.5e7) else -1.0
    return out


def run(c):
    cmd = ["nice", BIN, f"--ram-mib={c['ram_mib']}", f"--host-speed={c['host_speed']!r}",
           f"--bw={c['link_bw']!r}", f"--lat={c['link_lat']!r}", f"--mig-speed={c['mig_speed']!r}",
           f"--intensity={c['intensity']!r}", f"--sharing={c['sharing']}",
           f"--cfg=network/model:{c['network_model']}", f"--stop-at={c['stop_at']!r}"]
    if not c["crosstraffic"]:
        cmd.append("--cfg=network/crosstraffic:0")
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    rec = json.loads(p.stdout)
    rec["exit_code"] = p.returncode
    rec["wall_seconds"] = round(wall, 3)
    rec["group"] = c["group"]
    # the binary relative to the repository, so the record does not depend on where the checkout lies
    rec["command"] = " ".join([os.path.relpath(BIN, os.path.join(HERE, "..", ".."))] + cmd[2:])
    if rec["aborted"]:
        tail = [ln for ln in p.stderr.splitlines() if "Uncaught exception" in ln or "timeouted" in ln]
        rec["abort_reason"] = tail[:2]
    ref = predict(**{k: c[k] for k in REF_KEYS})
    rec["reference_model"] = ref
    if rec["completed"] and ref["completed"]:
        rec["ref_rel_err_total"] = abs(ref["total_time"] - rec["total_time"]) / rec["total_time"]
        rec["ref_rel_err_downtime"] = abs(ref["downtime"] - rec["downtime"]) / rec["downtime"] if rec["downtime"] else 0.0
        rec["ref_rounds_match"] = ref["rounds"] == rec["rounds"]
    else:
        rec["ref_completed_match"] = ref["completed"] == rec["completed"]
        st2 = [x for x in rec["send_timeline"] if x["stage"] == 2]
        if len(st2) >= 3:
            rec["last_stage2_bytes"] = st2[-2]["bytes"]
            rec["fixed_point_reached"] = st2[-2]["bytes"] == st2[-3]["bytes"]
            if "fixed_point_bytes" in ref:
                rec["ref_fixed_point_rel_err"] = abs(ref["fixed_point_bytes"] - st2[-2]["bytes"]) / st2[-2]["bytes"]
    return rec


def table(recs):
    rows = ["| group | model | RAM MiB | lat s | mig B/s | intensity | rounds | total s | downtime s | "
            "stage1 s | conv. | ref err total / downtime | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        g = r["group"]
        if r["completed"]:
            err = f"{r['ref_rel_err_total']:.1e} / {r['ref_rel_err_downtime']:.1e}"
            tot, dt = f"{r['total_time']:.6f}", f"{r['downtime']:.6f}"
        else:
            err = "both non-conv." if r.get("ref_completed_match") else "MISMATCH"
            if "ref_fixed_point_rel_err" in r:
                err += f" fixpt {r['ref_fixed_point_rel_err']:.1e}"
            if r["aborted"]:
                tot = f"abort @ +{r['sim_clock_at_exit'] - r['mig_start']:.4f}"
            else:
                tot = f"stopped @ {r['sim_clock_at_exit']:g} (fixpt {r.get('last_stage2_bytes', 0):.0f} B)"
            dt = "-"
        rows.append(f"| {g} | {r['network_model']} | {r['ram_mib']} | {r['link_lat']:g} | {r['mig_speed']:g} | "
                    f"{r['intensity']:g} | {r['rounds']} | {tot} | {dt} | {r['stage1_time']:.6f} | "
                    f"{'yes' if r['completed'] else 'NO'} | {err} | {r['wall_seconds']:.1f} |")
    return "\n".join(rows)


def main():
    if not os.path.exists(BIN):
        subprocess.run([os.path.join(HERE, "build.sh")], check=True)
    recs = []
    for c in configs():
        r = run(c)
        print(f"{r['group']:24s} {r['network_model']} ram={r['ram_mib']} i={r['intensity']} "
              f"completed={r['completed']} rounds={r['rounds']} total={r['total_time']:.6f} "
              f"downtime={r['downtime']:.6f} wall={r['wall_seconds']}s", file=sys.stderr, flush=True)
        recs.append(r)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(recs, f, indent=1)
        f.write("\n")
    print(table(recs))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table(json.load(open(os.path.join(HERE, "results.json")))))
    else:
        main()
