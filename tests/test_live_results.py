"""The live mirror against the simulator, from the committed measurements (experiments/live_mirror):
real targets, each mirrored live 5 times with each stop rule (at-once, after-copy), and each time
a separately recorded trace of the same command replayed by the stratus policy with the copy costs
that live run measured in its passes and the blackout model fitted on separate calibration runs (the
C writer alone at several sizes: no judged target is among them). The quick suite re-simulates one
run of each target and stop rule from its committed trimmed trace (the slow suite every run), checks
that the committed simulations are what the model gives, and holds them to the targets:

- the converged verdict right;
- dirty pages per pass within 15% (the median over the runs of each simulated run's error against
  its live run);
- the blackout within 25% (medians over the runs), its cost not taken from the judged run.

Where the verdict is chance (the live runs or the simulated ones disagree: sqlite3's last passes find
a few hundred pages either side of the 256-page threshold) the live runs must be a plausible sample
of the simulated ones (Fisher's exact test on the verdicts, and Mann-Whitney on a pass's counts where
they spread over more than 30% on both sides, at the 5% level).
"""
import functools
import os
import statistics
from pathlib import Path

import numpy as np
import pytest

from conftest import load_experiment
from pagesync_model.stats import fisher_exact, mann_whitney

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "experiments" / "live_mirror"
R = load_experiment("live_mirror", "run")

FOLDER = R.OUT  # the quiet campaign (the loaded one, in R.LOADED, is checked at the end of this file)
RESULTS = {(r["name"], r["stop"]): r for r in R.load_results(FOLDER)}
CALIBRATION = R.load_calibration(FOLDER)
# the targets measured in the committed campaign (experiments/live_mirror/README.md says which of the
# experiment's targets were not, and why)
NAMES = [n for n in R.ORDER if (n, "at-once") in RESULTS]
CASES = [(name, stop) for name in NAMES for stop in R.STOPS]
IDS = [f"{n}-{s}" for n, s in CASES]


def simulated(case):
    """The committed simulations of a case's runs (``test_the_committed_simulations_are_what_the_model_gives``
    re-simulates one run of each case, the slow suite every run)."""
    return [run["sim"] for run in RESULTS[case]["runs"]]


@functools.lru_cache(maxsize=None)
def resimulated(case, i):
    r = RESULTS[case]
    return R.simulate_run(r["runs"][i], r["library"], r["blackout_model"], FOLDER)


def live(case):
    return [run["live"] for run in RESULTS[case]["runs"]]


def _xfail(misses):
    return [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=misses[c])) if c in misses else c
            for c in CASES]


def verdicts_are_chance(name):
    return len({d["converged"] for d in simulated(name)}) > 1


def test_every_target_four_or_more_runs_with_each_stop_rule_all_verified():
    assert NAMES and sorted(RESULTS) == sorted(CASES)
    for case in CASES:
        assert len(RESULTS[case]["runs"]) >= 4
        for d in live(case):
            assert d["verified"] and d["lost_writes"] == 0, case
            assert d["config"]["stratus"]["stop"] == case[1]
            assert d["passes"] == len(d["per_pass"]) and d["per_pass"][0]["kind"] == "full"
            assert d["per_pass"][-1]["kind"] == "blackout"
            # the deciding scan's count decides the verdict: the blackout's own (at once), or that of the
            # pass copied before the stop (after-copy)
            deciding = d["per_pass"][-1 if case[1] == "at-once" else -2]
            assert d["converged"] == (deciding["dirty_pages"] < R.THRESHOLD)
            # the host's load, recorded with every run
            assert 0 < d["host_load"]["cpu_busy_share"] <= 1 and d["host_load"]["loadavg_1min_before"] >= 0


def _same_fit(got, committed, where="fit"):
    """``got`` (refitted here) is ``committed`` to the last few bits: least squares and numpy's sums round
    differently on another CPU or numpy build, so floats agree within 1e-12, everything else exactly."""
    if isinstance(committed, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(committed), where
        for k in committed:
            _same_fit(got[k], committed[k], f"{where}.{k}")
    elif isinstance(committed, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(committed), where
        for i, (g, c) in enumerate(zip(got, committed)):
            _same_fit(g, c, f"{where}[{i}]")
    elif isinstance(committed, float):
        assert got == pytest.approx(committed, rel=1e-12, abs=1e-300), where
    else:
        assert got == committed, where


def test_same_fit_tells_rounding_from_a_different_fit():
    _same_fit({"a": [1.0, 2], "b": {"c": 0.1 + 0.2}}, {"a": [1.0, 2], "b": {"c": 0.3}})
    for wrong in ({"a": [1.0, 3], "b": {"c": 0.3}}, {"a": [1.0 + 1e-9, 2], "b": {"c": 0.3}},
                  {"a": [1.0, 2], "b": {}}):
        with pytest.raises(AssertionError):
            _same_fit(wrong, {"a": [1.0, 2], "b": {"c": 0.3}})


def test_the_blackout_model_comes_from_the_calibration_runs_only():
    """The constants the predictions use are those fitted on the calibration runs (refitted here from
    their committed measurements), none of which is a judged target's."""
    bm = R.blackout_model(CALIBRATION["runs"], CALIBRATION["contended_runs"])
    _same_fit(bm, CALIBRATION["model"])
    commands = {tuple(run["live"]["command"][1:]) for r in RESULTS.values() for run in r["runs"]}
    for run in CALIBRATION["runs"] + CALIBRATION["contended_runs"]:
        assert run["live"]["verified"] and tuple(run["live"]["command"][1:]) not in commands
        assert "host_load" in run["live"]
    assert len({run["size_mib"] for run in CALIBRATION["runs"]}) >= 3
    for r in RESULTS.values():
        _same_fit(r["blackout_model"], bm)


def test_the_quiet_calibration_runs_were_quiet_and_the_contended_ones_were_not():
    """The calibration runs the model is fitted on waited for a CPU far less than the contended ones it
    is also checked on (run-queue wait as a share of CPU time of the controller, receiver and target)."""
    quiet = [r["live"]["host_load"]["measured"]["all"]["wait_share"] for r in CALIBRATION["runs"]]
    hot = [r["live"]["host_load"]["measured"]["all"]["wait_share"] for r in CALIBRATION["contended_runs"]]
    assert len(hot) == len(quiet) and max(quiet) < min(hot)


def test_the_form_is_chosen_on_calibration_runs_and_fitted_by_hand():
    """The blackout model's form the simulations use is the one whose larger error (leave-one-out on the
    quiet calibration runs; on the contended calibration runs, fitted on the quiet ones) is smallest; its
    constants recomputed here by hand from the raw measurements: the final scans' median ratio to the
    deciding scan, and the least-squares line (closed form) of what is left against the pages mirrored."""
    bm = CALIBRATION["model"]
    worst = {k: max(bm["loo_median_abs_error"][k], bm["contended_median_abs_error"][k]) for k in R.FORMS}
    assert worst[bm["form"]] == min(worst.values())
    assert bm["form"] == "mirrored"
    ratios, rows = [], []
    for run in CALIBRATION["runs"]:
        d = run["live"]
        bl = d["live"]["per_pass"][-1]
        scan = [p["scan_s"] for p in d["live"]["per_pass"][1:] if p["scan_s"] > 0][-1]
        ratios.append(bl["final_scan_s"] / scan)
        copy = d["per_pass"][-1]["pages_copied"] * 4096 / run["costs"]["bandwidth_Bps"]
        rows.append((bl["mirrored_pages"], d["downtime_s"] - copy, scan))
    ratio = statistics.median(ratios)
    xs = [x for x, _, _ in rows]
    ys = [y - ratio * sc for _, y, sc in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    m = bm["forms"]["mirrored"]
    assert m["scan_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert m["per_page_mirrored_s"] == pytest.approx(slope, rel=1e-6)
    assert m["stop_s"] == pytest.approx(my - slope * mx, rel=1e-6)


def test_a_runs_inputs_do_not_hold_its_blackout():
    """What the prediction takes from a judged run (its copy costs, its deciding scan, the contention
    of its passes) is measured before the stop: changing every time the blackout measured leaves it
    unchanged."""
    import copy
    for case in CASES:
        run = RESULTS[case]["runs"][0]
        bm = RESULTS[case]["blackout_model"]
        d = copy.deepcopy(run["live"])
        d["downtime_s"] *= 7
        bl = d["live"]["per_pass"][-1]
        for k in ("final_scan_s", "prep_s", "send_s", "ack_s", "stop_wait_s"):
            bl[k] *= 7
        d["live"]["sched"]["blackout"] = {"cpu_s": 1.0, "runqueue_s": 9.0}
        c = R.fitted_costs(d)
        assert c == R.fitted_costs(run["live"]), case
        _same_fit(c, run["costs"], str(case))
        for model in R.FORMS:
            assert (R.predicted_blackout_costs(d, c, bm, model)
                    == R.predicted_blackout_costs(run["live"], run["costs"], bm, model))


def _check_resimulated(case, i):
    run, d = RESULTS[case]["runs"][i], resimulated(case, i)
    assert R.dirty(d) == R.dirty(run["sim"])
    assert d["downtime_s"] == pytest.approx(run["sim"]["downtime_s"], rel=1e-9)
    assert d["lost_writes"] == 0 and d["converged"] == run["sim"]["converged"]


def test_copy_costs_of_equal_passes_come_from_their_send_times():
    """Re-copy passes of one size (a writer rewriting its whole buffer) give no line: the send times
    measured in them stand in (hand-computed), not a slope fitted through noise."""
    recs = [{"kind": "full", "pages_copied": 1000, "start_s": 0.0, "duration_s": 0.1},
            {"kind": "pass", "pages_copied": 500, "start_s": 0.2}, {"kind": "pass", "pages_copied": 501, "start_s": 0.31},
            {"kind": "pass", "pages_copied": 500, "start_s": 0.40}, {"kind": "blackout", "pages_copied": 10, "start_s": 0.5}]
    lp = [{"send_s": s, "scan_s": 0.001} for s in (0.05, 0.04, 0.04, 0.04, 0.001)]
    c = R.fitted_costs({"per_pass": recs, "live": {"per_pass": lp}})
    assert c["bandwidth_Bps"] == pytest.approx(4096 * 1501 / 0.12)
    assert c["pass_overhead_s"] == pytest.approx(0.06)  # median of 0.07, 0.05, 0.06
    assert c["first_copy_s"] == pytest.approx((0.2 - 0.06) / 1000 - 0.12 / 1501)
    # passes of different sizes: the least-squares line through their scan-to-scan times
    recs[2]["pages_copied"], recs[3]["pages_copied"] = 1000, 250
    c = R.fitted_costs({"per_pass": recs, "live": {"per_pass": lp}})
    per_page, fixed = np.polyfit([500, 1000, 250], [0.11, 0.09, 0.10], 1)
    assert 4096 / c["bandwidth_Bps"] == pytest.approx(max(per_page, 1e-9))
    assert c["pass_overhead_s"] == pytest.approx(max(0.0, fixed))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_committed_simulations_are_what_the_model_gives(case):
    """One run of each case re-simulated from its committed trace, costs and the calibrated model."""
    _check_resimulated(case, 0)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_committed_simulation_is_what_the_model_gives(case):
    for i in range(1, len(RESULTS[case]["runs"])):
        _check_resimulated(case, i)


# Verdicts the model gets wrong, each with its reason as measured (none in the quiet campaign: python-dict's
# verdicts, 5/5 and 4/5 converged live against 2/5 and 1/5 simulated, are a plausible sample by Fisher's test).
VERDICT_MISSES = {}


@pytest.mark.parametrize("case", _xfail(VERDICT_MISSES), ids=IDS)
def test_verdict(case):
    k_l = sum(d["converged"] for d in live(case))
    k_s = sum(d["converged"] for d in simulated(case))
    n = len(live(case))
    if verdicts_are_chance(case) or 0 < k_l < n:
        assert fisher_exact(k_l, n - k_l, k_s, n - k_s) >= 0.05, (k_l, k_s)
    else:
        assert k_l == k_s


def _passes(case):
    """(pass number, [(live, simulated) counts of the runs where both reached it], live counts, simulated
    counts) for the passes at least 3 runs reached on both sides."""
    lv, sm = [R.dirty(d) for d in live(case)], [R.dirty(d) for d in simulated(case)]
    out = []
    for k in range(max(map(len, lv + sm))):
        pairs = [(x[k], y[k]) for x, y in zip(lv, sm) if len(x) > k and len(y) > k]
        if len(pairs) >= 3:
            out.append((k + 1, pairs, [x[k] for x in lv if len(x) > k], [y[k] for y in sm if len(y) > k]))
    return out


# Passes the model misses by more than 15%, each with its reason as measured.
PASS_MISSES = {
    ("writer-40k", "after-copy"): "the sixth pass, a few hundred pages, is over-predicted: live 377-564, simulated "
                                  "436-674, median error +20% (every other pass within 14%)",
    ("python-dict", "at-once"): "the trace, recorded in a separate run, writes more pages per pass than the mirrored "
                                "program did: second pass live 587-2085, simulated 1243-2755 (median error +130%), and "
                                "the later passes +142% to +179%",
    ("python-dict", "after-copy"): "as at-once: the separately recorded trace writes more per pass (second pass live "
                                   "482-1231, simulated 1320-2805; median errors +71% to +206%)",
    ("sqlite3", "at-once"): "the trace is replayed at the pace of separate runs with the live library (time scales "
                            "0.68-1.02): the simulated mirror starts further into the inserts, its full copy 9391-12470 "
                            "pages against 5087-6954 live, and its first re-copy pass 2824-11828 against 1124-1547",
    ("sqlite3", "after-copy"): "as at-once (time scales 0.70-0.92): full copy simulated 10942-14480 pages, live "
                               "4824-7680; first re-copy pass simulated 8496-14480, live 1071-2216",
    ("redis", "after-copy"): "the deciding pass found one of redis's bursts of about 50 pages in every live run "
                             "(63-64 pages) and in 2 of 5 simulated ones (61; 9 in the others): median error -86%",
}


@pytest.mark.parametrize("case", _xfail(PASS_MISSES), ids=IDS)
def test_dirty_pages_per_pass_within_15_percent(case):
    """Each simulated run predicts its live run (same costs, same start; the trace from another run of
    the program): the median of the runs' relative errors within 15% in every pass. Where the verdict
    is chance and a pass's counts spread by more than 30% on both sides, the live counts must be a
    plausible sample of the simulated ones instead."""
    chance = verdicts_are_chance(case) or 0 < sum(d["converged"] for d in live(case)) < len(live(case))
    passes = _passes(case)
    assert passes
    for k, pairs, a, b in passes:
        if chance and max(a) > 1.3 * min(a) and max(b) > 1.3 * min(b):
            assert mann_whitney(a, b) >= 0.05, (case, k, a, b)
            continue
        err = statistics.median((s - v) / v for v, s in pairs)
        assert abs(err) <= 0.15, (case, k, err, pairs)


# Blackouts the model misses by more than 25%, each with its reason as measured (the host's load and the
# measured processes' run-queue wait are in every run's ``host_load``).
BLACKOUT_MISSES = {
    ("sqlite3", "at-once"): "the SIGSTOP waited 1.8-4.2 ms for the target's threads in 3 of 5 runs (0.14-0.31 ms in "
                            "every calibration run; 1.8-7.4 ms in 16 of the 60 judged runs), and the run-queue "
                            "wait of the measured processes was 42-48% of their CPU time (calibration 22-39%): live "
                            "7.2-17.5 ms, simulated 5.6-17.2 ms, the median of five at -32%",
    ("redis", "at-once"): "the host was busier than in the calibration runs: redis-benchmark's clients share the 2 "
                          "cores and the measured processes waited 58-82% of their CPU time for a CPU (calibration "
                          "22-39%); every step of the blackout took longer (stop wait median 0.47 ms against 0.19, "
                          "the send of 11-63 pages 1.15 ms): live 5.5-9.4 ms, simulated 4.2-10.5 ms, median -34%",
}


@pytest.mark.parametrize("case", _xfail(BLACKOUT_MISSES), ids=IDS)
def test_blackout_within_25_percent(case):
    """The blackout's median over the runs, its cost predicted from the calibrated model (never from
    the judged run's blackout) and the run's passes."""
    want = statistics.median(d["downtime_s"] for d in live(case))
    got = statistics.median(d["downtime_s"] for d in simulated(case))
    assert abs(got - want) <= 0.25 * want, (want, got)


def test_readme_table_is_results_md():
    table = (HERE / "results.md").read_text().strip()
    assert table in (HERE / "README.md").read_text()


# The campaign measured under load (results/loaded/: 1-minute load 4.6-8.0, the measured processes at
# the host's ordinary priority), kept as measured, and re-simulated with the blackout model fitted on the
# quiet calibration runs: the contention test (what a model fitted on a quiet host predicts on a busy one).
LOADED = {(r["name"], r["stop"]): r for r in R.load_results(R.LOADED)}


def test_the_loaded_campaign_is_kept_whole():
    assert sorted(LOADED) == sorted(CASES)
    for case, r in LOADED.items():
        assert len(r["runs"]) == 5
        for run in r["runs"]:
            assert run["live"]["verified"] and run["live"]["host_load"]["loadavg_1min_before"] >= 4
            assert "sim_quiet_model" in run


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_loaded_runs_simulated_with_the_quiet_model_are_what_it_gives(case):
    r = LOADED[case]
    run = r["runs"][0]
    d = R.simulate_run(run, r["library"], CALIBRATION["model"], R.LOADED)
    assert R.dirty(d) == R.dirty(run["sim_quiet_model"])
    assert d["downtime_s"] == pytest.approx(run["sim_quiet_model"]["downtime_s"], rel=1e-9)


def test_compressed_traces_read_back_as_written(tmp_path):
    """A committed trace (xz) decompressed is the trace written: compress it again, read both."""
    from pagesync_model.trace.format import read_trace
    r = RESULTS[CASES[0]]["runs"][0]
    plain = R.plain_trace(FOLDER / r["trace"])
    again = tmp_path / "again.npz.xz"
    R.store_trace(plain, again)
    a, b = read_trace(plain), read_trace(R.plain_trace(again))
    assert np.array_equal(a.pages, b.pages) and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(a.t_end_ns, b.t_end_ns) and a.n_distinct == b.n_distinct


def test_sched_sampler_sums_threads_and_survives_processes_that_vanish():
    """The per-run scheduler accounting: a child that burns CPU in two threads is counted with both
    threads' CPU time (against the kernel's own total for the process, read before it exits); a process
    that is gone, or never was, reads as nothing rather than failing the run."""
    import subprocess
    import sys
    import time
    prog = ("import threading, time\n"
            "def burn():\n    t = time.thread_time()\n    while time.thread_time() - t < 0.1: pass\n"
            "th = threading.Thread(target=burn); th.start(); burn(); th.join()\n"
            "import sys; sys.stdout.write('done\\n'); sys.stdout.flush(); time.sleep(0.5)\n")
    p = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, text=True)
    s = R.SchedSampler(p.pid, 2 ** 22 + 7)  # a receiver pid that does not exist
    assert p.stdout.readline() == "done\n"
    time.sleep(3 * R.SAMPLE_S)
    with open(f"/proc/{p.pid}/stat") as f:
        utime, stime = (int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    p.wait()
    out = s.stop()
    total = (utime + stime) / os.sysconf("SC_CLK_TCK")
    # each thread burns 0.1 s of its own CPU time (thread_time: process_time would let the two threads stop
    # together at 0.1 s of the process's); the last 10 ms of each may be missed
    assert out["controller"]["threads"] == 2 and out["controller"]["cpu_s"] >= 0.18
    assert out["controller"]["cpu_s"] == pytest.approx(total, abs=0.05)
    assert out["receiver"] == {"cpu_s": 0, "runqueue_s": 0, "slices": 0, "threads": 0, "wait_share": 0.0, "nice": []}
    assert out["target"]["threads"] == 0
    assert R.read_schedstat(2 ** 22 + 7) == ({}, None)


def test_the_stop_latency_measurement_is_whole_and_its_summaries_are_its_own():
    """results/stop_latency.json (a separate measurement of how long a SIGSTOP takes each target, not
    used by the model): every target and the calibration writer probed, each summary recomputed from
    its raw probes."""
    import json
    d = json.loads((R.OUT / "stop_latency.json").read_text())
    assert sorted(d["targets"]) == sorted(["calibration-writer", *NAMES])
    for name, t in d["targets"].items():
        lat = t["stop_s"]
        assert len(lat) == d["probes"] and all(0 < x < 5 for x in lat)
        assert t["median_s"] == pytest.approx(statistics.median(lat))
        assert t["mean_s"] == pytest.approx(statistics.fmean(lat))
        assert t["over_1_5ms"] == sum(x > 1.5e-3 for x in lat)
