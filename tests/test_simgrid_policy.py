"""The ``simgrid`` policy against SimGrid 3.32's own output (experiments/simgrid_agreement/results.json),
plus small cases worked out by hand."""
import json
import math
from pathlib import Path

import pytest

from pagesync_model.config import ConfigError, config_from_dict
from pagesync_model.policies import simgrid
from pagesync_model.sim.engine import simulate

RESULTS = json.loads((Path(__file__).resolve().parents[1] / "experiments" / "simgrid_agreement" /
                      "results.json").read_text())
COMPLETED = [r for r in RESULTS if r["completed"]]
NOT_COMPLETED = [r for r in RESULTS if not r["completed"]]
REL = 1e-3


def _id(r):
    return f"{r['group']}-{r['network_model']}-{r['ram_mib']}MiB-I{r['intensity']}"


def config_for(r, **simgrid_overrides):
    """The pagesync-sim config of one SimGrid run: RAM -> memory.size, the one link -> link.*, the VM
    and the network model -> simgrid.*. A SPLITDUPLEX link carries no crosstraffic weight."""
    section = {"host_speed": r["host_speed"], "mig_speed": f"{r['mig_speed']}B/s", "intensity": r["intensity"],
               "network_model": r["network_model"], "tcp_gamma": f"{r['tcp_gamma']}B",
               "crosstraffic": bool(r["crosstraffic"]) and r["link_sharing"] == "SHARED",
               "max_downtime": f"{r['max_downtime']}s"}
    section.update(simgrid_overrides)
    return config_from_dict({
        "policy": "simgrid",
        "memory": {"size": f"{r['ram_bytes']}B", "kernel_size": "4MiB"},
        "cpus": {"count": 1},
        # unused by simgrid (its intensity is given): present because the schema requires them
        "workload": {"rate": "1k/s", "working_set": "1MiB"},
        "link": {"bandwidth": f"{r['link_bw']}B/s", "latency": f"{r['link_lat']}s"},
        "simgrid": section,
    })


def run(cfg):
    return simulate(cfg).to_dict()


def test_the_committed_results_cover_both_outcomes():
    assert len(RESULTS) == 41
    assert len(COMPLETED) >= 25 and len(NOT_COMPLETED) >= 5


@pytest.mark.parametrize("rec", COMPLETED, ids=_id)
def test_agrees_with_simgrid(rec):
    d = run(config_for(rec))
    assert d["converged"] and d["stop_reason"] == "threshold"
    assert d["rounds"] == rec["rounds"]
    assert d["total_time_s"] == pytest.approx(rec["total_time"], rel=REL)
    assert d["downtime_s"] == pytest.approx(rec["downtime"], rel=REL)
    assert d["stage1_s"] == pytest.approx(rec["stage1_time"], rel=REL)
    assert d["per_pass"][-1]["bytes"] == pytest.approx(rec["stage3_bytes"], rel=REL, abs=16)
    assert d["bytes_sent"] == pytest.approx(rec["bytes_sent_total"], rel=REL)
    assert [p["kind"] for p in d["per_pass"]] == ["full"] + ["pass"] * rec["rounds"] + ["blackout"]


@pytest.mark.parametrize("rec", NOT_COMPLETED, ids=_id)
def test_reports_not_converged_where_simgrid_gives_up(rec):
    d = run(config_for(rec))
    assert not d["converged"] and d["stop_reason"] == "no-convergence"
    assert d["downtime_s"] is None and d["expected_downtime_s"] > 0
    assert d["abort_at_s"] == 1e7
    # the fixed point SimGrid's stage 2 settled on (its flops are differences of large doubles: a few
    # hundred bytes of 5.7 MB apart at most)
    assert d["fixed_point_bytes"] == pytest.approx(rec["last_stage2_bytes"], rel=1e-4)
    if rec["aborted"]:
        # SimGrid ran to its 1e7 s timeout: the same count of stage-2 sends by then
        assert d["rounds_at_abort"] == rec["rounds"]
    else:
        # stopped by the driver at 2000 s into the migration: as many rounds of the fixed point by then
        at_stop = d["rounds"] + (rec["stop_at"] - rec["mig_start"] - d["total_time_s"]) / d["fixed_point_round_s"]
        assert rec["rounds"] == pytest.approx(at_stop, abs=2)


def test_agreement_figures():
    """Max relative errors over all completed runs, the figures the README quotes."""
    total = max(abs(run(config_for(r))["total_time_s"] / r["total_time"] - 1) for r in COMPLETED)
    down = max(abs(run(config_for(r))["downtime_s"] / r["downtime"] - 1) for r in COMPLETED)
    assert total < 1e-6 and down < 1e-4


# -- small cases by hand ----------------------------------------------------------------------------

BASE = {
    "policy": "simgrid",
    "memory": {"size": "1GiB", "kernel_size": "4MiB"},
    "cpus": {"count": 1},
    "workload": {"rate": "1k/s", "working_set": "1MiB"},
    "link": {"bandwidth": "1Gbit/s", "latency": "100us"},
    "simgrid": {"mig_speed": "125MB/s", "intensity": 0},
}


def small(**simgrid_section):
    data = json.loads(json.dumps(BASE))
    data["simgrid"].update(simgrid_section)
    return config_from_dict(data)


def test_flow_factors_lv08_and_cm02():
    # 1 Gbit/s = 125e6 B/s; crosstraffic on a shared link: weight 1.05, so x = 125e6 / 1.05.
    lv08 = simgrid.Flow(125e6, 1e-4, 125e6, "LV08")
    assert lv08.rate == pytest.approx(0.97 * 125e6 / 1.05, rel=1e-15)        # 115 476 190.48 B/s
    assert lv08.latency_phase == pytest.approx(13.01e-4, rel=1e-15)          # 1.301 ms
    cm02 = simgrid.Flow(125e6, 1e-4, 125e6, "CM02")
    assert cm02.rate == pytest.approx(125e6 / 1.05, rel=1e-15)               # 119 047 619.05 B/s
    assert cm02.latency_phase == pytest.approx(1e-4, rel=1e-15)
    # without crosstraffic LV08 is capped by mig_speed / 0.97: the user rate is honoured exactly
    assert simgrid.Flow(125e6, 1e-4, 125e6, "LV08", crosstraffic=False).rate == pytest.approx(0.97 * 125e6)
    assert simgrid.Flow(125e6, 1e-4, 100e6, "LV08").rate == pytest.approx(100e6)
    # 50 ms: the TCP window bound 4 MiB / 0.1 s binds
    assert simgrid.Flow(125e6, 0.05, 125e6, "CM02").rate == pytest.approx(4194304 / 0.1)
    # 1 GiB over LV08: 1.301 ms + 1073741824 / 115476190.48 = 9.299684 s (SimGrid: 9.299683805773197)
    assert lv08.time(1 << 30) == pytest.approx(9.299683805773197, rel=1e-12)
    with pytest.raises(ValueError, match="unknown network model 'XX'"):
        simgrid.Flow(125e6, 1e-4, 125e6, "XX")


@pytest.mark.parametrize("model, latf, bwf", [("LV08", 13.01, 0.97), ("CM02", 1.0, 1.0)])
def test_intensity_zero_has_no_stage_2(model, latf, bwf):
    d = run(small(network_model=model))
    lat = 1e-4
    t1 = latf * lat + (1 << 30) / (bwf * 125e6 / 1.05)
    assert d["converged"] and d["rounds"] == 0 and d["dirty_sync_count"] == 1
    assert d["downtime_s"] == pytest.approx(latf * lat, rel=1e-9)            # a 0-byte stage 3
    assert d["total_time_s"] == pytest.approx(t1 + 2 * latf * lat, rel=1e-12)  # + stage 3 + ack
    assert [p["kind"] for p in d["per_pass"]] == ["full", "blackout"]
    assert d["per_pass"][0]["pages_copied"] == d["memory_pages"] == 262144
    assert d["per_pass"][1]["bytes"] == 0
    assert d["lost_writes"] is None and d["model"] == "fluid"


def test_mig_speed_unset_dirties_nothing():
    d = run(small(mig_speed="0B/s", intensity=0.5))
    assert d["rounds"] == 0 and d["dirty_rate_Bps"] == 0
    # and the flow runs at the link rate, not a user rate: LV08 0.97 x 125e6 / 1.05
    assert d["flow_rate_Bps"] == pytest.approx(0.97 * 125e6 / 1.05)


def test_one_round_by_hand():
    # CM02, no crosstraffic, no latency: rate = 125e6 B/s exactly, T(N) = N / 125e6.
    # RAM 1 GiB: stage 1 takes 8.589934592 s; bw = 125e6, threshold = (uint64)(bw x 0.03), which in
    # doubles is 3 749 999 B after stage 1 (0.03 is not exact) and 3 750 000 B after round 1.
    # intensity 0.01: dirty rate 1.25e6 B/s, so stage 1 dirtied trunc(1.25e6 x 8.589934592) = 10 737 418 B
    # (< working set 966 367 641 B): round 1 sends it in 0.085899344 s, during which 107 374 B are dirtied,
    # under the threshold: stage 3 sends 107 374 B in 0.000858992 s.
    cfg = config_from_dict({**BASE, "link": {"bandwidth": "125MB/s", "latency": "0s"},
                            "simgrid": {"mig_speed": "125MB/s", "intensity": 0.01, "network_model": "CM02",
                                        "crosstraffic": False}})
    d = run(cfg)
    assert d["rounds"] == 1 and d["converged"]
    assert [p["bytes"] for p in d["per_pass"]] == [1 << 30, 10737418, 107374]
    assert d["thresholds_bytes"] == [3749999, 3750000]
    assert d["downtime_s"] == pytest.approx(107374 / 125e6, rel=1e-12)
    assert d["total_time_s"] == pytest.approx(((1 << 30) + 10737418 + 107374) / 125e6, rel=1e-12)
    assert d["dirty_sync_count"] == 2 and d["passes"] == 3


def test_host_speed_cancels_out():
    a = run(small(intensity=0.5, host_speed="1G/s"))
    b = run(small(intensity=0.5, host_speed=3e8))
    assert a["rounds"] == b["rounds"] == 9
    assert a["total_time_s"] == pytest.approx(b["total_time_s"], rel=1e-9)


def test_intensity_auto_comes_from_the_workload():
    # 1 CPU x 15258.7890625 writes/s x 4 KiB = 62.5 MB/s = 0.5 x 125 MB/s
    data = json.loads(json.dumps(BASE))
    data["workload"]["rate"] = "15258.7890625/s"
    data["simgrid"]["intensity"] = "auto"
    d = run(config_from_dict(data))
    assert d["intensity"] == 0.5 and d["rounds"] == 9
    # capped at 1
    data["workload"]["rate"] = "1M/s"
    assert run(config_from_dict(data))["intensity"] == 1.0


@pytest.mark.parametrize("bad, message", [
    ("1.5", "simgrid.intensity: must be in [0, 1] or auto, got '1.5'"),
    ("often", "simgrid.intensity: cannot read 'often' as a dirty page intensity"),
])
def test_bad_intensity_is_refused_with_its_path(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        small(intensity=bad)


def test_a_short_timeout_aborts_in_stage_2():
    d = run(small(intensity=0.9, timeout="20s"))            # LV08 at 0.9 cannot converge anyway
    assert not d["converged"] and d["stop_reason"] == "timeout"
    assert d["total_time_s"] == 20.0 and d["downtime_s"] is None
    # the last estimate: what is left over the bandwidth measured on the last send
    assert d["expected_downtime_s"] == pytest.approx(d["remaining_bytes"] / d["bandwidths_Bps"][-1])
    assert d["expected_downtime_s"] > 0.03
    assert sum(p["duration_s"] for p in d["per_pass"]) <= 20.0


def test_stage_1_longer_than_the_timeout_drops_its_dirt():
    d = run(small(intensity=0.5, timeout="5s"))              # stage 1 takes 9.3 s
    assert not d["converged"] and d["stop_reason"] == "stage1-timeout"
    assert d["rounds"] == 0 and d["per_pass"][-1]["bytes"] == 0
    assert d["downtime_s"] == pytest.approx(13.01e-4)
    assert d["dropped_bytes"] == math.floor(0.5 * 125e6 * d["stage1_s"])


@pytest.mark.parametrize("rec", [r for r in RESULTS if r["group"] == "grid"], ids=_id)
def test_the_closed_form_proof_never_fires_on_a_run_that_converges(rec, monkeypatch):
    """Trying the non-convergence proof from the first round changes no verdict and no completed run."""
    want = run(config_for(rec))
    monkeypatch.setattr(simgrid, "PROOF_AFTER", 1)
    got = run(config_for(rec))
    assert got["converged"] == want["converged"]
    if want["converged"]:
        assert got["rounds"] == want["rounds"] and got["total_time_s"] == want["total_time_s"]
    else:
        assert got["stop_reason"] == "no-convergence"


def test_cannot_converge_by_hand():
    # LV08 with the link's rate and intensity 0.9: the plateau n* = a Lf / (1 - a/r) = 5.68 MB is above
    # the threshold there (0.03 x 5.68e6 / (1.301e-3 + 5.68e6 / 1.155e8) = 3.37 MB)
    flow = simgrid.Flow(125e6, 1e-4, 125e6, "LV08")
    assert simgrid._cannot_converge(5.7e6, 0.9 * 125e6, flow, 0.03, 966367641)
    # CM02 at 0.9 converges (101 rounds): no proof possible from the same size
    flow = simgrid.Flow(125e6, 1e-4, 125e6, "CM02")
    assert not simgrid._cannot_converge(5.7e6, 0.9 * 125e6, flow, 0.03, 966367641)


def test_the_preset_reproduces_its_simgrid_run():
    from pagesync_model.config import load_config
    rec = next(r for r in COMPLETED if r["group"] == "grid" and r["network_model"] == "CM02"
               and r["ram_mib"] == 1024 and r["intensity"] == 0.5)
    d = run(load_config(Path(__file__).resolve().parents[1] / "configs" / "simgrid.yaml"))
    assert d["intensity"] == 0.5 and d["rounds"] == rec["rounds"] == 8
    assert d["total_time_s"] == pytest.approx(rec["total_time"], rel=1e-6)
    assert d["downtime_s"] == pytest.approx(rec["downtime"], rel=1e-6)


def test_qemu_view():
    q = simulate(small(intensity=0.5)).to_qemu()
    assert q["status"] == "completed" and q["ram"]["dirty-sync-count"] == 10
    q = simulate(small(intensity=0.9)).to_qemu()
    assert q["status"] == "active" and q["expected-downtime"] > 30
    assert q["ram"]["remaining"] > 0
