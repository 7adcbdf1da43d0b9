#!/usr/bin/env python3
"""Run the measurement matrix: each configuration --reps times, one migration
at a time, repetition-major (all configurations once, then again, ...) so that
host load drifts are spread over configurations. Each run writes
runs/<config>__r<rep>.json; existing files are skipped (resumable).

Base configuration: guest RAM 512 MiB, 1 vCPU TCG, working set 128 MiB,
max-bandwidth 64 MiB/s (= 16384 pages/s), downtime-limit 300 ms,
time limit 60 s.

    ./run_matrix.py --reps 5            # full matrix
    ./run_matrix.py --list              # show configurations
    ./run_matrix.py --only idle,rand_near --reps 1
    ./run_matrix.py --reps 5 --only xbzrle_c256,xbzrle_c32,pc_pass1,...   # the issue 16/14 runs

--list shows, for the configurations that carry it, whether the model is calibrated on them or
validated against them (the runs record it in their "model" field; the older configurations'
split is compare.py's CALIBRATION).
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = dict(ram=512, ws=128, rate=0, pattern="rand", max_bw=64,
            downtime_ms=300, auto_converge=False, limit=60)
# options that only some configurations set (run_migration.py's defaults otherwise); "feature" and
# "model_set" are metadata: which model feature a configuration checks and whether the model fits
# constants on it (calibration) or is judged on it (validation)
OPTIONAL = ["throttle_initial", "throttle_increment", "xbzrle", "xbzrle_cache", "postcopy",
            "postcopy_preempt", "max_postcopy_bw", "postcopy_after_passes", "postcopy_at",
            "max_debt_ms", "spacer_mib", "feature", "model_set"]
LINK_PAGES_S = 64 * 256  # 64 MiB/s in 4 KiB pages/s = 16384
XBZRLE_C32_RATE = 22000  # chosen by a short probe (README, "XBZRLE"): near the edge of convergence
SPACER_MIB = 160

MATRIX = [
    # name, overrides, description
    ("idle", dict(rate=0), "working set filled, no writes"),
    ("idle_ws320", dict(rate=0, ws=320), "idle, larger working set"),
    ("rand_low", dict(rate=4000), "random writes ~0.25x link"),
    ("rand_near", dict(rate=16000), "random writes ~1x link"),
    ("rand_high", dict(rate=32000), "random writes ~2x link"),
    ("seq_near", dict(rate=15000, pattern="seq"),
     "sequential writes ~0.9x link"),
    ("autoconv_high", dict(rate=32000, auto_converge=True),
     "random ~2x link with auto-converge (initial 20, increment 10)"),
    ("rand_near_ws320", dict(rate=16000, ws=320),
     "random ~1x link, 320 MiB working set"),
    ("rand_near_dt100", dict(rate=16000, downtime_ms=100),
     "random ~1x link, downtime-limit 100 ms"),
    ("rand_high_dt1000", dict(rate=32000, downtime_ms=1000),
     "random ~2x link, downtime-limit 1000 ms"),
    # the guest kernel's own dirtying: a 1 ms downtime-limit never converges, and every sync finds
    # what was written since the one 100 ms before (the link drains the bitmap each window)
    ("kfoot_idle", dict(rate=0, downtime_ms=1, limit=20),
     "idle, downtime-limit 1 ms: the guest kernel's pages per 100 ms"),
    ("kfoot_rand", dict(rate=16000, max_bw=128, downtime_ms=1, limit=20),
     "random ~0.5x link (128 MiB/s), downtime-limit 1 ms: all pages per 100 ms"),
    # rate-limiter calibration (run with --reps 3 --only idle_bw32,idle_bw128)
    ("idle_bw32", dict(rate=0, max_bw=32), "idle, max-bandwidth 32 MiB/s"),
    ("idle_bw128", dict(rate=0, max_bw=128), "idle, max-bandwidth 128 MiB/s"),
    # issue 16: XBZRLE at two cache / working-set ratios
    ("xbzrle_c256", dict(rate=32000, xbzrle=True, xbzrle_cache=256, feature="xbzrle",
                         model_set="calibration"),
     "random ~2x link, XBZRLE, cache 256 MiB (2x working set)"),
    ("xbzrle_c32", dict(rate=XBZRLE_C32_RATE, xbzrle=True, xbzrle_cache=32, feature="xbzrle",
                        model_set="validation"),
     "random, XBZRLE, cache 32 MiB (1/4 working set), rate near the edge of convergence"),
    # issue 16: post-copy on a workload that does not converge in pre-copy (rand_high)
    ("pc_pass1", dict(rate=32000, postcopy=True, postcopy_after_passes=1, feature="postcopy",
                      model_set="calibration"),
     "rand_high, post-copy after the first pass, post-copy bandwidth unlimited"),
    ("pc_pass1_bw16", dict(rate=32000, postcopy=True, postcopy_after_passes=1, max_postcopy_bw=16,
                           feature="postcopy", model_set="validation"),
     "rand_high, post-copy after the first pass, max-postcopy-bandwidth 16 MiB/s"),
    ("pc_at2", dict(rate=32000, postcopy=True, postcopy_at=2, feature="postcopy",
                    model_set="validation"),
     "rand_high, post-copy 2 s after migrate (within the first pass), unlimited"),
    ("pc_at2_bw16", dict(rate=32000, postcopy=True, postcopy_at=2, max_postcopy_bw=16,
                         feature="postcopy", model_set="validation"),
     "rand_high, post-copy 2 s after migrate (within the first pass), 16 MiB/s"),
    ("pc_pass1_bw16_preempt", dict(rate=32000, postcopy=True, postcopy_after_passes=1,
                                   max_postcopy_bw=16, postcopy_preempt=True, feature="postcopy",
                                   model_set="validation"),
     "as pc_pass1_bw16, postcopy-preempt on (requested pages on their own channel)"),
    # the preempt channel's handling of a request, fitted on a run of its own (issue 16)
    ("pc_pass1_bw32_preempt", dict(rate=32000, postcopy=True, postcopy_after_passes=1,
                                   max_postcopy_bw=32, postcopy_preempt=True, feature="postcopy",
                                   model_set="calibration"),
     "as pc_pass1_bw16_preempt, max-postcopy-bandwidth 32 MiB/s"),
    ("pc_at2_bw16_preempt", dict(rate=32000, postcopy=True, postcopy_at=2, max_postcopy_bw=16,
                                 postcopy_preempt=True, feature="postcopy", model_set="validation"),
     "as pc_at2_bw16, postcopy-preempt on"),
    # issue 14 item 3: the throttle at 99 %, the dirtier's backlog tolerance, the placement
    ("autoconv_99", dict(rate=32000, auto_converge=True, throttle_initial=60,
                         throttle_increment=20, feature="autoconverge_99",
                         model_set="calibration"),
     "random ~2x link, auto-converge initial 60, increment 20 (99 % at the 3rd step)"),
    ("autoconv_99_debt2000", dict(rate=32000, auto_converge=True, throttle_initial=60,
                                  throttle_increment=20, max_debt_ms=2000,
                                  feature="autoconverge_99", model_set="validation"),
     "as autoconv_99, dirtier backlog tolerance 2000 ms instead of 200"),
    ("seq_near_ctl", dict(rate=15000, pattern="seq", feature="placement", model_set="calibration"),
     "seq_near again, the same day, kernel and load as seq_near_spacer (its reference)"),
    ("seq_near_spacer", dict(rate=15000, pattern="seq", spacer_mib=SPACER_MIB,
                             feature="placement", model_set="validation"),
     "as seq_near, a %d MiB zero-filled spacer mapped before the working set" % SPACER_MIB),
]


def args_for(cfg):
    a = ["--ram", cfg["ram"], "--ws", cfg["ws"], "--rate", cfg["rate"],
         "--pattern", cfg["pattern"], "--max-bw", cfg["max_bw"],
         "--downtime-ms", cfg["downtime_ms"], "--limit", cfg["limit"]]
    if cfg["auto_converge"]:
        a.append("--auto-converge")
    for k in OPTIONAL:
        v = cfg.get(k)
        if v is None or v is False:
            continue
        a.append("--" + k.replace("_", "-"))
        if v is not True:
            a.append(v)
    return [str(x) for x in a]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--outdir", default=os.path.join(HERE, "runs"))
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    only = set(x for x in a.only.split(",") if x)
    todo = [(n, dict(BASE, **o), d) for n, o, d in MATRIX
            if not only or n in only]
    if a.list:
        for n, cfg, d in todo:
            print("%-20s %-11s %-50s %s" % (n, cfg.get("model_set") or "-", d,
                                            " ".join(args_for(cfg))))
        return 0
    os.makedirs(a.outdir, exist_ok=True)
    t_start = time.time()
    for rep in range(a.reps):
        for name, cfg, _ in todo:
            out = os.path.join(a.outdir, "%s__r%d.json" % (name, rep))
            if os.path.exists(out):
                continue
            cmd = [sys.executable, os.path.join(HERE, "run_migration.py"),
                   "--config", name, "--run-index", str(rep),
                   "--out", out] + args_for(cfg)
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True)
            sys.stdout.write("[%6.0fs] %s (%.0fs)\n" % (
                time.time() - t_start, p.stderr.strip().splitlines()[-1]
                if p.stderr.strip() else "rc=%d" % p.returncode,
                time.time() - t))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
