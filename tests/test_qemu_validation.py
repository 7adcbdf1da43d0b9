"""The qemu policy against real QEMU 10.0 migrations measured on this machine (experiments/qemu_validation).

CI does not run QEMU: this reads the committed measurements (runs/*.json), re-simulates each
configuration fed with what its median run achieved (compare.config_for) under several seeds, and
holds the simulator to the targets.

Where the model's own seeds agree (the same verdict, total times within 25%), the outcome is
deterministic and the targets are the issue's: the converged verdict of every measured run; total
time and transferred bytes within 10% of the measured median; dirty-sync-count within 2 of it.

Where they do not, the model says the outcome is chance: the dirty rate sits at the link rate and
the pages at each 100 ms sync hover just above the switch-over threshold, so convergence is a
first-passage event and QEMU's own repeats disagree (rand_near_dt100: 3 of 5 converged, after 28 to
46 s). A single run has no stable verdict there; the targets are then that the measured runs are a
plausible sample of the model's distribution (Fisher's exact test on the verdicts, Mann-Whitney on
the total times, both at the 5% level), that the medians of total time and bytes agree within 10%
(over 20 seeds), and that the level the pages hover at, and how much it moves from one sync to the
next, are the measured ones.

Downtime (QEMU's counter: source VM stop to the source's completion) is held within max(25%, 3 ms)
of the measured median in every configuration where QEMU converged. The stop's constants (its fixed
part, the loopback rate of the last copy, the destination's first touch of a page) and the guest's
layout are fitted on the calibration configurations only (compare.CALIBRATION); the others are
validation.

Targets the model does not meet yet are marked xfail(strict) with the reason, so they show in every
run and the marker fails the day they are met.
"""
import json
import statistics
from pathlib import Path

import pytest

from conftest import load_experiment
from pagesync_model.stats import fisher_exact, mann_whitney

HERE = Path(__file__).resolve().parents[1] / "experiments" / "qemu_validation"
C = load_experiment("qemu_validation", "compare")

RUNS = C.load_runs()
FEATURE_GROUPS = C.feature_runs(RUNS)   # issue 16's XBZRLE and post-copy runs: checked through features.json
GROUPS = {}
for _r in RUNS:
    if _r["config"] not in FEATURE_GROUPS:
        GROUPS.setdefault(_r["config"], []).append(_r)
CALIB = (C.nonzero_other_pages(RUNS), C.stop_calibration(RUNS), C.top_nonzero_pages(RUNS))
SEEDS = C.PRECOPY_SEEDS
KNOWN_MISSES = {  # (configuration, target) -> why the model misses it
    ("rand_near_dt100", "chance_medians"):
        "a first-passage knife edge: about half the seeds converge, so the 20-seed median flips between "
        "~45 s and the 60 s limit with a few pages of layout or the burst rate (13/20 seeds converged before "
        "the stop's calibration, 11/20 with it at the old loopback rate, 8/20 at the fitted 2.47 GB/s); "
        "the verdicts and times remain a plausible sample (Fisher, Mann-Whitney)",
}
# Issue 14's lab runs, measured on a quiet machine (runs/; 1-minute load 0.2-1.1; the earlier measurements,
# under load and at the lab's priority on a busy host, are kept in runs_loaded/ and not judged). The QEMU
# processes still waited on a run queue 0.03-0.48 s per second they ran: their own threads on 2 cores.
_DEBT = ("the dirtier with a 2000 ms backlog tolerance catches up after each 990 ms sleep at 99%, but "
         "only as fast as its 10 ms run slices allow under TCG (one run of the loaded set: 3329 writes/s at "
         "99%, ~3 us a write), and QEMU converged in 19.7-52.8 s (median 24.9, 17-50 syncs; at the lab's "
         "priority on a busy host 11.8-17.0, under load 14.3-20.7: the more CPU the dirtier gets, the later); "
         "the model's paced writer catches up all of it (its writes cost the CPU nothing but the dirty-bit "
         "updates), dirties faster than the link and never converges")
KNOWN_MISSES.update({
    ("autoconv_99_debt2000", "verdict"): _DEBT, ("autoconv_99_debt2000", "total_s"): _DEBT,
    ("autoconv_99_debt2000", "transferred_mib"): _DEBT, ("autoconv_99_debt2000", "dirty_sync_count"): _DEBT,
})
# Downtime targets the model misses, with the reason (strict: each fails the day it is met).
_TOP = ("the idle guest's stop carries fewer of its never-sent pages at the top of RAM than QEMU's (the "
        "model's window that reaches them sends part before the stop); what ends QEMU's window before them "
        "is not modelled (README, 'The simulator against these measurements')")
_SEQ_STOP = ("the quiet runs (no other load) stop for as long as those at the lab's priority on a busy host "
             "(12-26 ms, 14-20): not the host's load; the model's 9.4 ms is what seq_near's runs of 2026-11-27 "
             "(guest kernel 6.1.0-56, then -57) took, 7-11 ms: what the later runs' stops spend the extra 4-6 ms "
             "on is not found")
DOWNTIME_MISSES = {"idle_bw128": _TOP, "idle_bw32": _TOP, "idle_ws320": _TOP,
                   "autoconv_99_debt2000": _DEBT,
                   "seq_near_ctl": _SEQ_STOP + " (seq_near_ctl: 12-17 ms, median 14)",
                   "seq_near_spacer": _SEQ_STOP + " (seq_near_spacer: 11-27 ms, median 15)"}


def measured(name):
    return [C.measured(r) for r in GROUPS[name]]


# precopy.json holds the model on every pre-copy configuration (compare.py --precopy: each one's median
# run under SEEDS seeds, twice as many where they say the outcome is chance); the slow
# test_precopy_predictions_are_current re-simulates them.
PRECOPY = json.loads((HERE / "precopy.json").read_text())


def ensemble(name):
    """The model's seeds on configuration ``name``, as precopy.json holds them."""
    return PRECOPY["configs"][name]["predicted"]


def is_chance(name):
    return C.chance(ensemble(name))


def test_the_predictions_are_for_the_committed_runs():
    """precopy.json was computed from exactly the runs committed (a new lab run means rerunning
    compare.py --precopy), with the seeds the targets below assume."""
    assert PRECOPY["seeds"] == SEEDS
    assert {n: c["runs"] for n, c in PRECOPY["configs"].items()} == \
        {n: sorted(r["run_index"] for r in g) for n, g in GROUPS.items()}
    for name, c in PRECOPY["configs"].items():
        run = C.median_run(GROUPS[name])
        assert c["median_run"] == run["run_index"]
        # the simulator inputs (calibration, placement, the run's achieved rates) are today's
        assert c["config_sha256"] == C.config_digest(C.config_for(run, *CALIB)), f"{name}: rerun compare.py --precopy"
        assert len(c["predicted"]) == SEEDS * (2 if c["chance"] else 1)
        assert c["chance"] == C.chance(c["predicted"][:SEEDS])


@pytest.mark.slow
def test_precopy_predictions_are_current():
    """precopy.json is what compare.py --precopy computes from the committed runs (deterministic)."""
    assert C.precopy_predictions(RUNS) == PRECOPY


def test_the_measurements_cover_the_matrix():
    assert len(RUNS) >= 50
    for needed in ("idle", "rand_low", "rand_near", "rand_high", "seq_near", "autoconv_high", "idle_ws320",
                   "rand_near_ws320", "rand_near_dt100", "rand_high_dt1000"):
        assert needed in GROUPS and len(GROUPS[needed]) >= 3


def test_the_chance_configurations_are_the_ones_qemu_itself_could_not_repeat():
    """The model decides which outcomes are chance; the measurements agree: exactly the configurations
    whose 5 QEMU runs spread over more than 30% (or disagree on the verdict)."""
    # runs measured on a busy host (1-minute load >= 5 at migrate, issue 14's) spread with the load
    quiet = [n for n in GROUPS if statistics.median(r["host"]["loadavg_at_migrate"][0] for r in GROUPS[n]) < 5]
    spread = {n for n in quiet if len({m["converged"] for m in measured(n)}) > 1
              or max(m["total_s"] for m in measured(n)) / min(m["total_s"] for m in measured(n)) > 1.3}
    # autoconv_99_debt2000's quiet runs spread 19.7-52.8 s: QEMU could not repeat it, and the model's verdict
    # there is a known miss (it never converges), so it is not one of the model's chance configurations
    verdict_misses = {n for n, key in KNOWN_MISSES if key == "verdict"}
    assert spread & verdict_misses == {"autoconv_99_debt2000"}
    assert {n for n in GROUPS if is_chance(n)} == spread - verdict_misses == {"rand_near_dt100", "rand_high_dt1000"}


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_verdict(name):
    preds, meas = ensemble(name), measured(name)
    assert all(p["lost_writes"] in (0, None) for p in preds)
    if is_chance(name):
        k_m, k_p = sum(m["converged"] for m in meas), sum(p["converged"] for p in preds)
        assert fisher_exact(k_m, len(meas) - k_m, k_p, len(preds) - k_p) >= 0.05, (k_m, len(meas), k_p)
        return
    met = all(m["converged"] == preds[0]["converged"] for m in meas)
    if (name, "verdict") in KNOWN_MISSES:
        assert not met, f"{name}: the verdict is now right; remove it from KNOWN_MISSES"
        pytest.xfail(KNOWN_MISSES[(name, "verdict")])
    assert met


def _target(name, key, tol):
    if is_chance(name):
        pytest.skip(f"{name}: the model says the outcome is chance; see test_chance_*")
    m = measured(name)
    if not m[0]["converged"] and key == "total_s":
        pytest.skip("not converged: the total time is the time limit")
    want = statistics.median(x[key] for x in m)
    got = statistics.median(p[key] for p in ensemble(name))
    met = abs(got - want) <= tol if isinstance(tol, int) else abs(got - want) <= tol * abs(want)
    if (name, key) in KNOWN_MISSES:
        # strict: a known miss that is now met fails, so the list cannot go stale
        assert not met, f"{name} {key}: now within target ({got} vs {want}); remove it from KNOWN_MISSES"
        pytest.xfail(KNOWN_MISSES[(name, key)])
    assert met, (name, key, got, want)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_total_time_within_ten_percent(name):
    _target(name, "total_s", 0.10)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_transferred_within_ten_percent(name):
    _target(name, "transferred_mib", 0.10)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_dirty_sync_count_within_two(name):
    _target(name, "dirty_sync_count", 2)


@pytest.mark.parametrize("name", ["rand_near_dt100", "rand_high_dt1000"])
def test_chance_total_times_are_a_sample_of_the_models(name):
    """The measured times are a plausible sample of the model's, and the medians of total time and
    bytes (over the runs, over the seeds) within 10% of each other."""
    times_p = [p["total_s"] for p in ensemble(name)]
    times_m = [m["total_s"] for m in measured(name)]
    assert mann_whitney(times_m, times_p) >= 0.05, (sorted(times_m), sorted(times_p))
    met = True
    for key in ("total_s", "transferred_mib"):
        want = statistics.median(m[key] for m in measured(name))
        got = statistics.median(p[key] for p in ensemble(name))
        met = met and abs(got - want) <= 0.10 * want
        if (name, "chance_medians") not in KNOWN_MISSES:
            assert got == pytest.approx(want, rel=0.10), key
    if (name, "chance_medians") in KNOWN_MISSES:
        assert not met, f"{name}: the medians are now within 10%; remove it from KNOWN_MISSES"
        pytest.xfail(KNOWN_MISSES[(name, "chance_medians")])


def test_chance_the_pages_at_each_sync_hover_where_qemus_do():
    """rand_near_dt100 after 15 s: every 100 ms window starts with a sync, and its pages sit around
    1750, a few percent over the 1667-page threshold; convergence waits for a window that dips under.
    The level (median) within 1%, its window-to-window movement (std) within 25%."""
    level_m, level_p, step_m, step_p = [], [], [], []
    for r in GROUPS["rand_near_dt100"]:
        lv = C.measured_levels(r, after=15.0)
        level_m += lv
        step_m += [b - a for a, b in zip(lv, lv[1:])]
    for p in ensemble("rand_near_dt100"):
        lv = [n for t, n in p["sync_levels"] if t > 15.0]
        level_p += lv
        step_p += [b - a for a, b in zip(lv, lv[1:])]
    assert len(level_m) > 1000 and len(level_p) > 1000
    threshold = 6829056 / C.PAGE  # pages: the 100 ms downtime-limit at the measured 68.29 MB/s
    assert statistics.median(level_m) > threshold * 1.02 and statistics.median(level_p) > threshold * 1.02
    assert statistics.median(level_p) == pytest.approx(statistics.median(level_m), rel=0.01)
    assert statistics.pstdev(step_p) == pytest.approx(statistics.pstdev(step_m), rel=0.25)


@pytest.mark.parametrize("name", ["idle", "idle_bw32", "idle_bw128", "rand_near"])
def test_precopy_rate_is_the_one_measured(name):
    """The Mbit/s of a 100 ms period, measured (median over the runs' samples) and modelled (median over
    the seeds' last periods: about 1 period in 20 lasts 101 ms, in QEMU as in the model)."""
    m = statistics.median(x["mbps"] for x in measured(name))
    assert statistics.median(p["mbps"] for p in ensemble(name)) == pytest.approx(m, abs=4104 * 8 / 0.1 / 1e6)


def test_a_throttled_vcpu_stalls_the_stream_as_measured():
    """Under TCG a bitmap sync waits for each vCPU to reach its main loop, and a vCPU asleep in a 99%
    throttle (990 ms per 10 ms slice) gets there only when its sleep ends: autoconv_high's runs show
    ram.transferred standing still for 0.8-0.9 s after one or two syncs at 99%. The model (the syncs'
    waits, qemu.sync_waits_vcpus) stalls as often, 1 or 2 times a run, and as long (within 0.15 s,
    the polls' 100 ms grain and a wake-up); no configuration without auto-converge stalls on either
    side."""
    meas = [m["stalls"] for m in measured("autoconv_high")]
    pred = [p["stalls"] for p in ensemble("autoconv_high")]
    assert all(1 <= len(x) <= 2 for x in meas) and all(1 <= len(x) <= 2 for x in pred), (meas, pred)
    assert all(0.6 <= v <= 1.0 for x in meas + pred for v in x)
    flat = lambda lists: [v for x in lists for v in x]  # noqa: E731
    assert statistics.median(flat(pred)) == pytest.approx(statistics.median(flat(meas)), abs=0.15)
    for name, g in GROUPS.items():
        if not g[0]["inputs"]["auto_converge"]:
            assert not any(m["stalls"] for m in measured(name)), name
            assert not any(p["stalls"] for p in ensemble(name)), name


def test_the_dirtiers_backlog_tolerance_is_its_own():
    """The mapping's catch-up is the dirtier's: its dirty_max_debt_ms parameter where the run gives
    it, else the constant the program had before it was a parameter (200 ms, the default in
    guest/dirtier.c); the comparison is between the simulated writer's threshold and the code's."""
    import re
    src = (HERE / "guest" / "dirtier.c").read_text()
    default = int(re.search(r"max_debt_ms = (\d+)", src).group(1))
    assert default == 200
    from pagesync_model.config import config_from_dict
    for r in RUNS:
        want = r["inputs"].get("dirtier_max_debt_ms", default)
        cfg = config_from_dict(C.config_for(r, *CALIB))
        assert cfg.workload.catchup == pytest.approx(want / 1000)


def test_the_layout_is_the_decoded_placement():
    """Where the configurations with a captured stream put the working set is read from the capture
    (placement.json), not assumed: seq_near's first pass sends 0.1111 x 51892 = 5765 other non-zero
    pages before the working set's first page and 13070 more amid its last 1% (set at 99.5% of its
    32768 pages); the 160 MiB spacer splits it with 0.3582 x 51674 - 25% x 32772 = 10317 other pages
    between its quartiles 2 and 3 (set at 62.5%)."""
    from pagesync_model.config import config_from_dict
    from pagesync_model.memory import memory_regions
    want = {"seq_near": (5765, [(32604, 13070)]), "seq_near_spacer": (5762, [(20480, 10317)])}
    for name, (before, big) in want.items():
        p = C.PLACEMENTS[name]
        got_before, holes = C.layout_from_placement(p, 32768)
        assert got_before == pytest.approx(before, abs=2)
        (at, n), = [h for h in holes if h[1] > 5000]
        assert at == pytest.approx(big[0][0], abs=2) and n == pytest.approx(big[0][1], abs=3)
        if name in GROUPS:
            cfg = config_from_dict(C.config_for(GROUPS[name][0], *CALIB))
            r = memory_regions(cfg.memory.size, C.PAGE, 0)
            tables = (r.page_table_bytes + r.bitmap_bytes + r.module_stack_bytes) // C.PAGE
            assert cfg.memory.kernel_size // C.PAGE + tables == got_before
            assert len(cfg.memory.holes) == len(holes)


def test_the_measured_placement_brings_seq_near_within_five_percent():
    """seq_near's sequential writer at 0.9x the link is sensitive to how soon the first pass reaches
    its working set: with compare.py's old assumption (every other non-zero page but the top of RAM
    before it) the model was 9.6% short of the measured median; with the decoded placement it is
    within 5%."""
    import copy
    want = statistics.median(m["total_s"] for m in measured("seq_near"))
    run = C.median_run(GROUPS["seq_near"])
    placed = C.predicted(C.config_for(run, *CALIB))["total_s"]
    saved = C.PLACEMENTS.pop("seq_near")
    try:
        assumed = C.predicted(C.config_for(copy.deepcopy(run), *CALIB))["total_s"]
    finally:
        C.PLACEMENTS["seq_near"] = saved
    assert abs(placed - want) <= 0.05 * want < abs(assumed - want), (placed, assumed, want)


def test_no_tlb_flush_is_the_qemu_7_2_bug():
    """QEMU 7.2 under TCG cleared dirty bits without resetting the TLB's not-dirty state: guests
    crashed after switch-over. The no-tlb-flush variant loses the guest kernel's pages even on an idle
    guest, and the dirtier's too under load; the correct algorithm loses nothing."""
    from pagesync_model.config import config_from_dict
    from pagesync_model.sim.engine import simulate
    for name in ("idle", "rand_near"):
        cfg = config_from_dict(C.config_for(GROUPS[name][0], *CALIB))
        assert simulate(cfg).to_dict()["lost_writes"] == 0
        assert simulate(cfg, variant="no-tlb-flush").to_dict()["lost_writes"] > 0


def test_the_stop_is_fitted_on_calibration_runs_only():
    """Changing every validation run's downtime changes none of the fitted constants; changing a
    calibration run's does."""
    import copy
    base = C.stop_calibration(RUNS), C.top_nonzero_pages(RUNS), C.nonzero_other_pages(RUNS)
    moved = copy.deepcopy(RUNS)
    for r in moved:
        if r["config"] not in C.CALIBRATION and r["converged"]:
            r["final"]["downtime"] *= 3
            r["final"]["ram"]["downtime-bytes"] *= 2
            r["final"]["ram"]["normal"] += 1000
    assert (C.stop_calibration(moved), C.top_nonzero_pages(moved), C.nonzero_other_pages(moved)) == base
    for r in moved:
        if r["config"] == "rand_high_dt1000":
            r["final"]["downtime"] *= 3
    assert C.stop_calibration(moved)["rate_Bps"] != base[0]["rate_Bps"]
    assert set(C.CALIBRATION) - set(C.FEATURE_CALIBRATION) < set(GROUPS)
    assert len(set(GROUPS) - set(C.CALIBRATION)) >= 8


def test_the_fitted_stop_matches_the_labs_stops():
    """The fitted constants against what the calibration runs show by hand: the kfoot runs stop with
    (almost) nothing to send in 0-2 ms; rand_high_dt1000 sends 65 MiB in 26-32 ms; the idle runs'
    residual per page the destination never had is a few microseconds."""
    stop = CALIB[1]
    assert 0.0005 < stop["fixed_s"] < 0.002
    assert 2.2e9 < stop["rate_Bps"] < 2.8e9        # 68.4 MB in (28 - 1) ms = 2.53 GB/s
    assert 1e-6 < stop["first_touch_s"] < 4e-6


@pytest.mark.parametrize("name", sorted(n for n in GROUPS if any(r["converged"] for r in GROUPS[n])))
def test_downtime_within_a_quarter_or_3ms(name):
    """QEMU's downtime counter (median over the converged runs) against the model's (median over the
    seeds that converged): within max(25%, 3 ms)."""
    want = statistics.median(m["downtime_ms"] for m in measured(name) if m["downtime_ms"] is not None)
    stops = [p["downtime_ms"] for p in ensemble(name) if p["downtime_ms"] is not None]
    got = statistics.median(stops) if stops else None   # None: no seed converged
    met = got is not None and abs(got - want) <= C.downtime_bound(want)
    if name in DOWNTIME_MISSES:
        assert not met, f"{name}: downtime now within target ({got} vs {want}); remove it from DOWNTIME_MISSES"
        pytest.xfail(DOWNTIME_MISSES[name])
    assert met, (name, got, want)


@pytest.mark.parametrize("name", ["idle", "rand_near"])
def test_downtime_parts_add_up(name):
    """The parts of the blackout add up to it; QEMU's counter is the blackout less the destination's
    start; a guest whose last pages were all sent before has no first-touch part."""
    for p in ensemble(name):
        parts = p["downtime_parts_ms"]
        assert sum(parts.values()) == pytest.approx(p["downtime_ms"] + parts["dest_start"], abs=1e-9)
        assert (parts["dest_first_touch"] > 0) == (name == "idle")


# ------------------------------------------------------------------ issue 16: XBZRLE and post-copy
# features.json holds the model on these configurations (compare.py --features: each one's median run,
# 3 seeds; a post-copy run takes the simulator tens of seconds), with the constants fitted on the
# calibration configurations (compare.FEATURE_CALIBRATION: xbzrle_c256, pc_pass1); the others are
# validation. test_feature_predictions_are_current (slow) re-simulates them.
FEATURES = json.loads((HERE / "features.json").read_text())
# the runs features.json was computed from (the lab may have committed more since)
LISTED = [r for r in RUNS if r["config"] not in FEATURE_GROUPS
          or r["run_index"] in FEATURES["configs"].get(r["config"], {}).get("runs", [])]
# (configuration, target) -> why the model misses it (strict: each fails the day it is met)
_PC_AT2 = ("a switch 2 s after migrate, inside the first pass: the model's vCPU requests 21 pages against QEMU's "
           "7-14 (median 8, quiet; 7-31 at the lab's priority, 27 under load) for about the same blocked time "
           "(228 ms against 169-209), so each of QEMU's requests waits ~23 ms where pc_pass1's waited 8 and the "
           "model's wait 11: the socket buffers' backlog fitted on pc_pass1 (15.4 MB, 1.9 us a page) does not "
           "hold for a switch with a third of the first pass unsent; what makes QEMU's requests wait longer "
           "there is not found")
_PC_AT2_PREEMPT = ("a switch 2 s after migrate with postcopy-preempt: the model's guest requests 23949 pages against "
                   "QEMU's 13674-15464 (median 15434) for the same wait per request, so its push has a third fewer "
                   "pages left and ends early (6.4 s against 7.7-8.5 s); as in pc_at2 (21 requests against 8), "
                   "after a switch inside the first pass the model's vCPU faults more often than QEMU's. Not "
                   "found; one candidate is the dirtier's own time per write under TCG (~3 us): the model's paced "
                   "writer catches up every wait at no cost, QEMU's spends CPU time on it")
_XB_EDGE = ("near the edge of convergence (22000 writes/s against a 32 MiB cache, the pages at each sync "
            "hovering at the threshold): QEMU's quiet runs took 19.5-24.5 s with 118-163 syncs and 52-68 "
            "thousand XBZRLE pages (at the lab's priority 18.0-19.8 s, 101-121 syncs; under load 13.8-46 s); "
            "the model converges in 12.4-12.9 s after 50-56 syncs with 27-29 thousand: its passes fall under "
            "the threshold sooner, and what holds QEMU's at the edge twice as long is not found")
FEATURE_MISSES = {
    ("pc_at2", "postcopy_requests"): _PC_AT2,
    ("pc_at2_bw16_preempt", "total_s"): _PC_AT2_PREEMPT,
    ("xbzrle_c256", "downtime_ms"):
        "QEMU's quiet stops took 2-4 ms (median 3; 6-14 at the lab's priority on a busy host, 3-32 under load), "
        "the model's 9.3 ms: with the thread's time per page fitted on the third pass (8.7 us on the quiet runs, "
        "6.2 on the busy ones) its last pass leaves more pages to the stop than QEMU's",
    ("xbzrle_c32", "downtime_ms"):
        "QEMU's quiet stops took 10-17 ms (median 12; 11-22, median 18, at the lab's priority on a busy host), "
        "the model's 17.7 ms, most of it the XBZRLE hits of the stop at the 8.7 us per page fitted on "
        "xbzrle_c256's quiet third pass (the busy runs' 6.2 us gave 18 against 18): one time per page does not "
        "fit both the third pass of xbzrle_c256 and the stop of xbzrle_c32",
    ("xbzrle_c32", "total_s"): _XB_EDGE,
    ("xbzrle_c32", "transferred_mib"): _XB_EDGE,
    ("xbzrle_c32", "dirty_sync_count"): _XB_EDGE,
    ("xbzrle_c32", "xbzrle_pages"): _XB_EDGE,
}


def feature_measured(name):
    return [C.measured(r) for r in LISTED if r["config"] == name]


def feature_target(name, key, met):
    want = statistics.median(m[key] for m in feature_measured(name) if m[key] is not None)
    got = statistics.median(p[key] for p in FEATURES["configs"][name]["predicted"] if p[key] is not None)
    ok = met(want, got)
    if (name, key) in FEATURE_MISSES:
        assert not ok, f"{name} {key}: now within target ({got} vs {want}); remove it from FEATURE_MISSES"
        pytest.xfail(FEATURE_MISSES[(name, key)])
    assert ok, (name, key, got, want)


FEATURE_NAMES = sorted(FEATURES["configs"])


def test_issue_16_configurations_are_measured_and_predicted():
    assert set(FEATURE_NAMES) <= set(FEATURE_GROUPS)  # the lab may have added runs since features.json
    assert {"xbzrle_c256", "xbzrle_c32", "pc_pass1", "pc_pass1_bw16", "pc_at2", "pc_at2_bw16"} <= set(FEATURE_NAMES)
    assert all(len(g) >= 2 for g in FEATURE_GROUPS.values())
    assert all(p["lost_writes"] in (0, None) for c in FEATURES["configs"].values() for p in c["predicted"])


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_verdict(name):
    feature_target(name, "converged", lambda want, got: want == got)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_total_time_within_ten_percent(name):
    feature_target(name, "total_s", lambda want, got: abs(got - want) <= 0.10 * want)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_transferred_within_ten_percent(name):
    feature_target(name, "transferred_mib", lambda want, got: abs(got - want) <= 0.10 * want)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_dirty_sync_count_within_two(name):
    feature_target(name, "dirty_sync_count", lambda want, got: abs(got - want) <= 2)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_downtime_within_a_quarter_or_3ms(name):
    feature_target(name, "downtime_ms", lambda want, got: abs(got - want) <= C.downtime_bound(want))


@pytest.mark.parametrize("name", [n for n in FEATURE_NAMES if n.startswith("xbzrle")])
def test_xbzrle_pages_within_twenty_percent(name):
    feature_target(name, "xbzrle_pages", lambda want, got: C.feature_met("xbzrle_pages", want, got))


@pytest.mark.parametrize("name", [n for n in FEATURE_NAMES if n.startswith("pc_")])
@pytest.mark.parametrize("key", ["postcopy_requests", "blocktime_ms"])
def test_postcopy_requests_and_blocktime_within_a_factor_of_two(name, key):
    feature_target(name, key, lambda want, got: C.feature_met(key, want, got))


def test_a_random_writer_on_the_captures_kernel_takes_the_captured_placement():
    """The placement is the guest setup's, not the write pattern's (the dirtier populates and fills its
    working set before it writes): every run on the captures' guest kernel with seq_near's working set
    and no spacer takes seq_near's capture, the older runs (another kernel) none. A switch inside the first
    pass then leaves the other non-zero pages above the working set (the capture's 13070 amid its last 1%)
    for post-copy, and the model carries what QEMU carried (pc_at2, pc_at2_bw16: validation, within 10%
    of the measured median, test_feature_transferred_within_ten_percent)."""
    for r in RUNS:
        p = C.placement_for(r)
        i = r["inputs"]
        if r["config"] in C.PLACEMENTS:
            continue
        same = i.get("kernel") == C.PLACEMENTS["seq_near"]["kernel"] and i["working_set_mib"] == 128 \
            and not i.get("dirtier_spacer_mib")
        assert (p is C.PLACEMENTS["seq_near"]) == same, r["config"]
    assert C.placement_for(GROUPS["rand_near"][0]) is None
    assert C.placement_for(FEATURE_GROUPS["pc_at2"][0]) is C.PLACEMENTS["seq_near"]


def test_a_preempt_request_does_not_wait_behind_the_stream():
    """A request on the migration stream waits behind the socket buffers' backlog (pc_pass1, unlimited:
    5-44 ms, median 13, blocktime over requests; qemu.postcopy_socket_buffer and postcopy_fault_latency,
    fitted there) or for the next 100 ms window (pc_pass1_bw16: 43-64 ms); on postcopy-preempt's channel
    of its own 0.01-0.23 ms (pc_pass1_bw16_preempt). The model's preempt requests wait well under a
    millisecond too, and its stream's requests milliseconds (unlimited) and tens of them (16 MiB/s)."""
    def per_request(side, name):
        rows = feature_measured(name) if side == "measured" else FEATURES["configs"][name]["predicted"]
        return statistics.median(x["blocktime_ms"] / x["postcopy_requests"] for x in rows)
    assert 0.005 < per_request("measured", "pc_pass1_bw16_preempt") < 0.3
    assert per_request("predicted", "pc_pass1_bw16_preempt") < 0.3
    assert per_request("measured", "pc_pass1") > 5 and per_request("predicted", "pc_pass1") > 5
    assert per_request("measured", "pc_pass1_bw16") > 30 and per_request("predicted", "pc_pass1_bw16") > 30


def test_feature_constants_are_fitted_on_calibration_runs_only():
    """The XBZRLE thread time's target (the calibration runs' third pass, from QEMU's MIGRATION_PASS
    events) moves when a calibration run's events do, not when a validation run's do; the fitted time
    per page makes the model's third pass last as long (features.json holds both); the post-copy
    handling's inputs are checked by hand below."""
    import copy
    base = C.xbzrle_target(LISTED)
    assert base["xbzrle_pass3_runs"] == len(FEATURE_GROUPS["xbzrle_c256"])
    moved = copy.deepcopy(LISTED)
    for r in moved:
        if r["config"] == "xbzrle_c32":
            r["events"]["pass"] = [[t * 3, k] for t, k in r["events"]["pass"]]
    assert C.xbzrle_target(moved) == base
    for r in moved:
        if r["config"] == "xbzrle_c256":
            r["events"]["pass"] = [[t * 3, k] for t, k in r["events"]["pass"]]
    assert C.xbzrle_target(moved)["xbzrle_pass3_s"] == pytest.approx(3 * base["xbzrle_pass3_s"])
    cal = FEATURES["calibration"]
    assert cal["xbzrle_pass3_s"] == pytest.approx(base["xbzrle_pass3_s"])
    # the bisection's resolution: the bracket / 2**steps of time per page, over ~30000 pages in the pass
    assert cal["xbzrle_model_pass3_s"] == pytest.approx(cal["xbzrle_pass3_s"], rel=0.05)
    assert 0 < cal["xbzrle_encode_s"] < C.XBZRLE_FIT_MAX
    assert set(C.FEATURE_CALIBRATION) == {n for n, c in FEATURES["configs"].items() if c["set"] == "calibration"}


@pytest.mark.slow
def test_feature_predictions_are_current():
    """features.json is what compare.py --features computes from the committed runs (deterministic)."""
    assert json.loads(json.dumps(C.feature_predictions(LISTED))) == FEATURES


def test_postcopy_tail_by_hand():
    """The tail a run shows: the source hands the stream its last page between the polls at 3.1 s
    (remaining > 0) and 3.2 s (remaining 0), so at 3.15 s to within the polls; QEMU's MIGRATION event
    says completed at 3.3 s: 0.15 s. A run whose polls never see remaining fall to 0 in post-copy shows
    none."""
    fields = ["t", "status", "transferred", "remaining"]
    run = {"history_fields": fields,
           "history": [[3.0, "active", 1, 9], [3.1, "postcopy-active", 2, 8], [3.2, "postcopy-active", 3, 0],
                       [3.3, "postcopy-active", 3, 0], [3.4, "completed", 3, 0]],
           "events": {"status": [[0.0, "active"], [3.05, "postcopy-active"], [3.3, "completed"]]}}
    assert C.postcopy_tail_s(run) == pytest.approx(0.15)
    run["history"] = [h for h in run["history"] if h[0] != 3.1]
    assert C.postcopy_tail_s(run) is None
