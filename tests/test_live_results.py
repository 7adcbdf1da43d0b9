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
import statistics
from pathlib import Path

import numpy as np
import pytest

from conftest import load_experiment
from pagesync_model.stats import fisher_exact, mann_whitney

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "experiments" / "live_mirror"
R = load_experiment("live_mirror", "run")

FOLDER = R.LOADED
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


def test_the_blackout_model_comes_from_the_calibration_runs_only():
    """The constants the predictions use are those fitted on the calibration runs (refitted here from
    their committed measurements), none of which is a judged target's."""
    bm = R.blackout_model(CALIBRATION["runs"])
    assert bm == CALIBRATION["model"]
    commands = {tuple(run["live"]["command"][1:]) for r in RESULTS.values() for run in r["runs"]}
    for run in CALIBRATION["runs"]:
        assert run["live"]["verified"] and tuple(run["live"]["command"][1:]) not in commands
        assert "host_load" in run["live"]
    assert len({run["size_mib"] for run in CALIBRATION["runs"]}) >= 3
    for r in RESULTS.values():
        assert r["blackout_model"] == bm


def test_the_waits_form_is_chosen_on_the_calibration_runs():
    """The blackout model's form the simulations use (waits) is the one with the smaller leave-one-out
    error on the calibration runs; recomputed here by hand from their raw measurements: the constant is
    the median of (downtime - copy - final scans) / the controller's mean wait for a CPU in its passes."""
    bm = CALIBRATION["model"]
    loo = bm["loo_median_abs_error"]
    assert loo["waits"] <= loo["stretch"]
    ratios, waits = [], []
    for run in CALIBRATION["runs"]:
        d = run["live"]
        bl, sc = d["live"]["per_pass"][-1], d["live"]["sched"]["passes"]
        scan = [p["scan_s"] for p in d["live"]["per_pass"][1:] if p["scan_s"] > 0][-1]
        ratios.append(bl["final_scan_s"] / scan)
        waits.append((d, scan, sc["runqueue_s"] / sc["slices"]))
    ratio = statistics.median(ratios)
    assert bm["scan_ratio"] == pytest.approx(ratio, rel=1e-9)
    k = statistics.median((d["downtime_s"] - d["per_pass"][-1]["pages_copied"] * 4096 / run["costs"]["bandwidth_Bps"]
                           - ratio * scan) / w for (d, scan, w), run in zip(waits, CALIBRATION["runs"]))
    assert bm["waits"] == pytest.approx(k, rel=1e-9)


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
        assert c == run["costs"], case
        for model in ("waits", "stretch"):
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


# Verdicts the model gets wrong, each with its reason as measured.
VERDICT_MISSES = {
    ("python-dict", "at-once"): "the trace, recorded in a separate run on the same busy host, writes about "
                                "twice the pages per pass the mirrored program wrote (first re-copy pass: live "
                                "3786-5212, simulated 7800-9885): 4 of 5 runs converged live, 0 of 5 simulated",
    ("python-dict", "after-copy"): "the trace writes about twice the pages per pass the mirrored program wrote "
                                   "(first re-copy pass: live 2818-4804, simulated 7469-10033): 5 of 5 runs "
                                   "converged live, 1 of 5 simulated",
}


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
    ("writer-5k", "at-once"): "the third pass, reached by 3 runs, finds tens of pages (live 37-141, simulated "
                              "48-141), where one wake of the library's thread (8 pages) is 15%: median error +17%",
    ("writer-40k", "after-copy"): "the fifth pass's median error is +20%: one run's simulated fifth pass "
                                  "found the whole buffer written "
                                  "(16396 pages simulated, 13686 live)",
    ("python-dict", "at-once"): "the trace, recorded in a separate run on the same busy host, writes about twice "
                                "the pages per pass the mirrored program wrote (first re-copy pass: live 3786-5212, "
                                "simulated 7800-9885; median error +81%)",
    ("python-dict", "after-copy"): "the trace writes about twice the pages per pass the mirrored program wrote "
                                   "(first re-copy pass: live 2818-4804, simulated 7469-10033)",
    ("sqlite3", "at-once"): "the trace is replayed at the pace of separate runs with the live library, which on "
                            "this busy host took 10.6-12.6 s and gave time scales 0.4-1.2: the simulated mirror "
                            "starts further into the inserts (full copy live 2455-3456 pages, simulated "
                            "3456-11017) and its first re-copy pass finds 1363-11017 pages against 604-1094 live",
    ("sqlite3", "after-copy"): "as at-once: the replay's pace from separate runs on the busy host (time scales "
                               "0.4-1.2); first re-copy pass simulated 6922-12946 pages, live 769-2246",
    ("redis", "after-copy"): "the blackout's own pass finds 9-63 pages, depending on whether it meets one of "
                             "redis's bursts of about 50 pages (live 11 pages in 3 of 5 runs, simulated 9-25 in 4): "
                             "median error -18%",
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


# Blackouts the model misses by more than 25%, each with its reason as measured (the host's load is in
# every run's ``host_load`` and ``live.sched``).
BLACKOUT_MISSES = {
    ("writer-5k", "at-once"): "on the busy host (load 5.2-5.8) the blackout is mostly waits for a CPU: live "
                              "8.3-38.1 ms, single runs' errors -52% to +94%; this median of five lands at +51%",
    ("writer-5k", "after-copy"): "on the busy host (load 5.3-5.9) the controller's mean wait for a CPU in the "
                                 "passes ranged 1.5-11.1 ms and the blackouts 6.0-21.2 ms, single runs' errors "
                                 "-32% to +284%: this median of five lands at +97%",
    ("writer-40k", "at-once"): "the blackout copies thousands of pages and waits for the CPU meanwhile (load "
                               "6.2-7.3): live 14.8-215.4 ms, single runs' errors -63% to +149%; the median of "
                               "five lands at -62%",
    ("writer-200k", "at-once"): "the blackout copies the whole buffer (16395 pages) with the target stopped, at "
                                "11.7-19.7 us a page, against 15.8-28.2 us in the passes, where the target writing "
                                "200k pages/s holds a CPU of the busy host (load 7.5-8.0): the passes' copy cost "
                                "makes the median of five +27%",
    ("writer-200k", "after-copy"): "as at-once: the blackout's copy at 9.9-19.2 us a page with the target stopped, "
                                   "the passes' 13.9-23.7 us with it writing: +33%",
    ("python-dict", "at-once"): "the simulated runs copy about twice the pages (the trace's, see PASS_MISSES) "
                                "and 0 of 5 converge against 4 of 5 live: the median lands at +73%",
    ("python-dict", "after-copy"): "the simulated runs copy about twice the pages (see PASS_MISSES): the median "
                                   "lands at +94%",
    ("redis", "after-copy"): "live blackouts 5.8-27.6 ms on the busy host (load 7.3-7.5) with a wait for a CPU of "
                             "7.3-18.8 ms per scheduling in the passes, single runs' errors +28% to +411%: the "
                             "median of five lands at +144%",
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
