"""Planner inputs: a whole-VM dirty rate (typed or read from QEMU / libvirt / KubeVirt reports) becomes
per-CPU writes, and a run measures the dirty rate it achieved the way QEMU's calc-dirty-rate does.

Independent truths: Monte-Carlo draws of uniform writers (numpy's generator, not the model's streams),
the closed form W (1 - exp(-n / W)), hand-computed sweeps, and the numbers written in the sample
reports (tests/data/dirtyrate/README.md says where each format comes from)."""
import copy
import math
from pathlib import Path

import numpy as np
import pytest

from pagesync_model.cli import main
from pagesync_model.config import ConfigError, config_from_dict, load_config
from pagesync_model.dirtyrate import (DirtyRateError, DirtyRateMeter, distinct_pages, parse_dirty_rate, parse_report,
                                      read_dirty_rate_file, writes_for_distinct)
from pagesync_model.sim.engine import simulate
from pagesync_model.units import UnitError

DATA = Path(__file__).parent / "data" / "dirtyrate"
MIB = 1 << 20

# a small guest on a slow link: the migration runs to its time limit with the guest running throughout
SMALL = {
    "policy": "qemu",
    "memory": {"size": "256MiB", "kernel_size": "16MiB", "zero_fraction": 0.0},
    "cpus": {"count": 2},
    "workload": {"kind": "uniform", "working_set": "64MiB", "paced": True},
    "link": {"bandwidth": "10Mbit/s"},
    "sim": {"time_limit": "3500ms"},
}


def small(**workload):
    tree = copy.deepcopy(SMALL)
    tree["workload"].update(workload)
    return tree


# -- units ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2GB/s", 2e9), ("500MiB/s", 500 * MIB), ("8Gbit/s", 1e9), ("100Mbps", 12.5e6), ("1 GiB/s", 1 << 30),
    ("100000pages/s", 100000 * 4096), ("25k pages/s", 25000 * 4096), ("1page/s", 4096),
])
def test_dirty_rate_units(text, expected):
    assert parse_dirty_rate(text, 4096) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text, hint", [("2 gigs/s", "pages/s"), ("2GB", "GB/s"), ("2", "needs a unit"),
                                        ("2gb/s", "did you mean 'Gb/s' or 'GB/s'")])
def test_dirty_rate_bad_units_get_a_hint(text, hint):
    with pytest.raises(UnitError) as err:
        parse_dirty_rate(text, 4096)
    assert hint in str(err.value) and "\n" not in str(err.value)


# -- the inversion, against Monte-Carlo writers -----------------------------------------------------

def _monte_carlo_distinct(writes, pages, hot=0, share=0.0, trials=40, seed=7):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        n = int(round(writes))
        if hot:
            is_hot = rng.random(n) < share
            targets = np.where(is_hot, rng.integers(0, hot, n), rng.integers(hot, pages, n))
        else:
            targets = rng.integers(0, pages, n)
        out.append(len(np.unique(targets)))
    return float(np.mean(out))


@pytest.mark.parametrize("distinct, pages", [(1000, 4096), (3000, 4096), (100, 100000), (60000, 65536)])
def test_uniform_inversion_matches_random_writers(distinct, pages):
    writes = writes_for_distinct(distinct, pages)
    assert writes >= distinct
    assert _monte_carlo_distinct(writes, pages) == pytest.approx(distinct, rel=0.01)


def test_hotcold_inversion_matches_random_writers():
    pages, hot, share = 20000, 200, 0.9
    for distinct in (150, 1000, 8000):
        writes = writes_for_distinct(distinct, pages, hot, share)
        assert _monte_carlo_distinct(writes, pages, hot, share) == pytest.approx(distinct, rel=0.01)


def test_closed_form_hand_case():
    # W(1 - exp(-n/W)) with n = W ln 2: exactly half the pages
    assert distinct_pages(4096 * math.log(2), 4096) == pytest.approx(2048, rel=1e-12)
    assert writes_for_distinct(2048, 4096) == pytest.approx(4096 * math.log(2), rel=1e-12)


def test_unreachable_distinct_rate_is_refused():
    with pytest.raises(DirtyRateError):
        writes_for_distinct(4096, 4096)
    with pytest.raises(DirtyRateError):     # only the hot pages are ever written
        writes_for_distinct(300, 1000, hot_pages=200, hot_share=1.0)


# -- the config -----------------------------------------------------------------------------------

def test_dirty_rate_becomes_per_cpu_writes():
    cfg = config_from_dict(small(dirty_rate="8MiB/s"))      # 2048 distinct pages/s of 16384
    total = -16384 * math.log1p(-2048 / 16384)
    assert cfg.workload.rate == pytest.approx(total / 2, rel=1e-12)
    # the effective config reloads to the same rate
    again = config_from_dict(cfg.to_dict())
    assert again.workload.rate == cfg.workload.rate


def test_sequential_and_fluid_policies_take_the_distinct_rate_as_writes():
    cfg = config_from_dict(small(kind="sequential", dirty_rate="1000pages/s"))
    assert cfg.workload.rate == pytest.approx(500)
    fluid = small(dirty_rate="1000pages/s")
    fluid["policy"] = "analytic"
    assert config_from_dict(fluid).workload.rate == pytest.approx(500)


@pytest.mark.parametrize("workload, path, words", [
    ({"dirty_rate": "65MiB/s"}, "workload.dirty_rate", "can hold only 16384"),
    ({"dirty_rate": "8MiB/s", "rate": "10k/s"}, "workload.rate", "not both"),
    ({"dirty_rate": "8MiB/s", "kind": "zipf"}, "workload.dirty_rate", "kind 'zipf'"),
    ({"dirty_rate": "8MiB/s", "kind": "sequential", "stride": 3}, "workload.dirty_rate", "stride"),
    ({"dirty_rate": "8MiB/s", "phases": [{"duration": "1s"}]}, "workload.dirty_rate", "phases"),
    ({"dirty_rate": "8MiB/s", "dirty_rate_file": "x.json"}, "workload.dirty_rate_file", "not both"),
    ({"dirty_rate": "0MiB/s"}, "workload.dirty_rate", "is 0"),
    ({"dirty_rate": "8 megs/s"}, "workload.dirty_rate", "unknown unit"),
])
def test_ambiguous_or_impossible_dirty_rates_are_refused(workload, path, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(small(**workload))
    assert err.value.path == path and words in str(err.value), str(err.value)


def test_later_layer_wins_between_rate_and_dirty_rate(tmp_path):
    base = tmp_path / "base.yaml"
    import yaml
    tree = small(rate="10k/s")
    base.write_text(yaml.safe_dump(tree))
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\nworkload: {dirty_rate: 8MiB/s}\n")
    assert load_config(child).workload.rate == pytest.approx(-16384 * math.log1p(-2048 / 16384) / 2)
    # --set over the file: either side replaces the other
    assert load_config(child, ["workload.rate=3k/s"]).workload.rate == 3000
    assert load_config(base, ["workload.dirty_rate=1000pages/s"]).workload.rate == \
        pytest.approx(-16384 * math.log1p(-1000 / 16384) / 2)
    with pytest.raises(ConfigError):
        load_config(base, ["workload.dirty_rate=1000pages/s", "workload.rate=1k/s"])


# -- reports --------------------------------------------------------------------------------------

def test_reports_in_each_format():
    m = read_dirty_rate_file(DATA / "qmp-page-sampling.json")
    assert (m.bytes_per_s, m.window_s) == (108 * MIB, 10.0) and "page-sampling" in m.source
    m = read_dirty_rate_file(DATA / "qmp-dirty-ring.json")
    assert (m.bytes_per_s, m.window_s) == (1907 * MIB, 0.5) and "dirty-ring" in m.source
    m = read_dirty_rate_file(DATA / "domstats-dirtyrate.txt")
    assert (m.bytes_per_s, m.window_s) == (4 * MIB, 1.0)
    m = read_dirty_rate_file(DATA / "kubevirt-metrics.txt")
    assert (m.bytes_per_s, m.window_s) == (54 * MIB, None)


@pytest.mark.parametrize("text, words", [
    ('{"status": "measuring", "calc-time": 1, "mode": "page-sampling"}', "not \"measured\""),
    ('{"status": "measured", "dirty-rate": -1, "calc-time": 1}', "dirty-rate"),
    ('{"status": "measured", "dirty-rate": 1.5, "calc-time": 1}', "whole number"),
    ('{"status": "measured", "dirty-rate": 10}', "calc-time"),
    ('{"status": "measured", "dirty-rate": 10, "calc-time": 1, "calc-time-unit": "hour"}', "calc-time-unit"),
    ('{"status": "measured", "dirty-rate": 10, "calc-time": 1, "speed": 1}', "unknown key 'speed'"),
    ('{"status": "measured", "dirty-rate": 10, "calc-time": 1, "vcpu-dirty-rate": [{"id": 0}]}', "vcpu-dirty-rate[0]"),
    ('{"status": "measured", "dirty-rate": NaN, "calc-time": 1}', "not valid JSON"),
    ('{"status": "measured", "dirty-rate": 10, "calc-time": 1', "not valid JSON"),
    ("Domain: 'a'\n  dirtyrate.calc_status=1\n", "not 2"),
    ("Domain: 'a'\n  dirtyrate.calc_status=2\n  dirtyrate.calc_period=1\n", "megabytes_per_second"),
    ("Domain: 'a'\n  dirtyrate.calc_status=2\n  dirtyrate.calc_period=1\n  dirtyrate.megabytes_per_second=x\n",
     "whole number"),
    ("Domain: 'a'\n  dirtyrate.calc_status=2\nDomain: 'b'\n", "more than one domain"),
    ("kubevirt_vmi_dirty_rate_bytes_per_second{name=\"a\"} 1\nkubevirt_vmi_dirty_rate_bytes_per_second{name=\"b\"} 2\n",
     "2 kubevirt_vmi_dirty_rate_bytes_per_second samples"),
    ("kubevirt_vmi_dirty_rate_bytes_per_second{name=\"a\"} +Inf\n", "not a finite number"),
    ("hello\n", "not a dirty-rate report"),
    ("", "empty"),
])
def test_malformed_reports_are_one_line_errors(text, words):
    with pytest.raises(DirtyRateError) as err:
        parse_report(text, "r")
    assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_report_file_in_a_config_relative_to_it(tmp_path):
    import shutil
    import yaml
    (tmp_path / "m").mkdir()
    shutil.copy(DATA / "domstats-dirtyrate.txt", tmp_path / "m" / "stats.txt")
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump(small(dirty_rate_file="m/stats.txt")))
    cfg = load_config(path)                  # 4 MiB/s = 1024 pages/s over 1 s
    assert cfg.workload.rate == pytest.approx(-16384 * math.log1p(-1024 / 16384) / 2)
    # the report's own window replaces the default one, and is recorded in the effective config
    shutil.copy(DATA / "qmp-dirty-ring.json", tmp_path / "m" / "stats.txt")   # 1907 MiB/s over 0.5 s
    with pytest.raises(ConfigError) as err:  # 244096 distinct pages per window on 16384: unreachable
        load_config(path)
    assert "can hold only 16384" in str(err.value)
    big = small(dirty_rate_file="m/stats.txt", working_set="2GiB")
    big["memory"]["size"] = "4GiB"
    path.write_text(yaml.safe_dump(big))
    cfg = load_config(path)
    assert cfg.workload.dirty_rate_window == 0.5
    ws = 2048 * 256
    assert cfg.workload.rate == pytest.approx(-ws * math.log1p(-1907 * 256 * 0.5 / ws) / 0.5 / 2)


def test_cli_bad_report_exit_2_one_line(tmp_path, capsys):
    import yaml
    (tmp_path / "r.json").write_text('{"status": "measured", "dirty-rate": "fast", "calc-time": 1}')
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump(small(dirty_rate_file="r.json")))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workload.dirty_rate_file" in err and "dirty-rate" in err


def test_cli_memory_rounding_notice(tmp_path, capsys):
    import yaml
    tree = small(dirty_rate="1000pages/s")
    tree["memory"]["size"] = "256MB"     # 62500 pages of 4 KiB: 256000000 is 62500 x 4096 exactly
    tree["memory"]["size"] = "250000001B"
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main([str(path), "--quiet", "--set", "sim.time_limit=100ms"]) == 0
    err = capsys.readouterr().err
    assert "notice: memory.size: 250000001B is not a whole number of 4KiB pages; rounded up to 250003456 bytes" in err


# -- the achieved dirty rate ----------------------------------------------------------------------

def test_meter_hand_computed():
    m = DirtyRateMeter(window_cycles=100, working_set_pages=1000)
    m.add(np.array([1, 2, 2, 3]), 10)
    m.add(np.array([3, 4]), 100)          # still window 0 (cycles 1..100)
    m.add(np.array([5, 5]), 101)          # window 1
    m.add(np.array([7]), 350)             # window 3: window 2 had no writes
    assert m.finish(399) == [4, 1, 0]     # window 3 is incomplete at 399
    assert m.stride == 1


def test_achieved_rate_of_a_sequential_sweep_hand_computed():
    # one CPU sweeping 4096 pages at 1000 writes/s: 1000 new pages in each 1 s window
    tree = small(kind="sequential", rate="1000/s")
    tree["cpus"]["count"] = 1
    tree["workload"]["working_set"] = "16MiB"
    r = simulate(config_from_dict(tree))
    assert r["achieved_dirty_rate_bytes_s"] == pytest.approx(1000 * 4096, rel=2e-3)


def test_achieved_rate_of_a_uniform_writer_matches_the_closed_form():
    # 2 CPUs x 3000 writes/s over 16384 pages: W (1 - exp(-6000/W)) distinct pages per second
    r = simulate(config_from_dict(small(rate="3000/s")))
    expected = 16384 * -math.expm1(-6000 / 16384) * 4096
    assert r["achieved_dirty_rate_bytes_s"] == pytest.approx(expected, rel=0.02)


def test_requested_dirty_rate_is_achieved_on_both_backends():
    cfg = config_from_dict(small(dirty_rate="10MiB/s"))
    a = simulate(cfg, backend="numpy")["achieved_dirty_rate_bytes_s"]
    b = simulate(cfg, backend="cython")["achieved_dirty_rate_bytes_s"]
    assert a == b
    assert a == pytest.approx(10 * MIB, rel=0.02)


def test_sampled_meter_estimates_a_large_working_set():
    # 2**20 pages: the meter samples 1 page in 16; 200000 uniform writes
    pages = 1 << 20
    m = DirtyRateMeter(window_cycles=10, working_set_pages=pages)
    assert m.stride == 16
    rng = np.random.default_rng(3)
    for w in range(3):
        m.add(rng.integers(0, pages, 200000), 10 * w + 5)
    counts = m.finish(30)
    assert np.mean(counts) == pytest.approx(pages * -math.expm1(-200000 / pages), rel=0.02)


@pytest.mark.parametrize("pages", [1 << 17, 1 << 20, 1 << 28])
def test_the_meters_sample_is_the_hashed_bucket(pages):
    # a frame is sampled when (frame x 0x9E3779B97F4A7C15 mod 2**64) >> 40 falls in bucket 0 of ``stride``:
    # the meter's vectorised filter against that rule in Python integers, frame by frame
    m = DirtyRateMeter(window_cycles=10, working_set_pages=pages)
    assert m.stride > 1 and m.stride & (m.stride - 1) == 0
    frames = np.random.default_rng(pages).integers(0, 1 << 42, 20000)
    want = [f for f in frames.tolist() if ((f * 0x9E3779B97F4A7C15) % (1 << 64) >> 40) % m.stride == 0]
    assert m._sample(frames).tolist() == want and 0 < len(want) < len(frames)
