"""link.route: a route of links reduced by the tool to its bottleneck and summed latency."""
import subprocess
import sys
from pathlib import Path

import pytest

from pagesync_model.config import ConfigError, config_from_dict, load_config
from pagesync_model.sim.engine import simulate

ROOT = Path(__file__).resolve().parents[1]
BASE = {"policy": "simgrid", "memory": {"size": "64MiB", "kernel_size": "0B"}, "cpus": {"count": 1},
        "workload": {"rate": "1000/s", "working_set": "16MiB"},
        "simgrid": {"mig_speed": "100MB/s", "intensity": 0.2}}
ROUTE = [{"bandwidth": "40MB/s", "latency": "1ms"}, {"bandwidth": "10MB/s", "latency": "250us"},
         {"bandwidth": "25MB/s"}]


def build(link):
    return config_from_dict({**BASE, "link": link})


def test_route_is_its_bottleneck_and_summed_latency():
    cfg = build({"route": ROUTE})
    # by hand: slowest link 10 MB/s; latencies 1 ms + 250 us + 0 (default)
    assert cfg.link.bandwidth == 10e6
    assert cfg.link.latency == pytest.approx(1.25e-3, abs=1e-15)


def test_route_runs_as_the_hand_reduced_link():
    by_route = simulate(build({"route": ROUTE})).to_dict()
    by_hand = simulate(build({"bandwidth": "10MB/s", "latency": "1.25ms"})).to_dict()
    for key in ("total_time_s", "downtime_s", "rounds", "bytes_sent"):
        assert by_route[key] == by_hand[key], key


def test_route_survives_the_effective_config_round_trip():
    cfg = build({"route": ROUTE})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("link, path, needle", [
    ({"route": ROUTE, "bandwidth": "1GB/s"}, "link.bandwidth", "beside link.route"),
    ({"route": ROUTE, "latency": "5ms"}, "link.latency", "sum of its links' latencies"),
    ({"route": ROUTE, "latency": "2us"}, "link.latency", "beside link.route"),   # the default, but given
    ({"bandwidth": "1GB/s", "latency": "route"}, "link.latency", "without link.route"),
    ({}, "link.bandwidth", "required value is missing"),
    ({"route": [{"latency": "1ms"}]}, "link.route[0].bandwidth", "required value is missing"),
    ({"route": [{"bandwidth": "0B/s"}]}, "link.route[0].bandwidth", "must be > 0"),
    ({"route": [{"bandwidth": "1GB/s", "speed": 1}]}, "link.route[0].speed", "unknown key"),
    ({"route": [{"bandwidth": "1GB/s", "latency": "6s"}] * 2}, "link.route", "add up to 12s"),
    ({"route": "fast"}, "link.route", "expected a list of mappings"),
])
def test_bad_routes_are_named(link, path, needle):
    with pytest.raises(ConfigError) as err:
        build(link)
    assert err.value.path == path and needle in err.value.message, str(err.value)


def test_cli_refuses_a_bad_route_in_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    src = (ROOT / "experiments/reproductions/simgrid_cloud_migration/vm100.yaml").read_text()
    cfg.write_text(src.replace("link:\n", "link:\n  bandwidth: 1GB/s\n", 1))
    proc = subprocess.run([sys.executable, "-m", "pagesync_model", str(cfg)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "link.bandwidth" in proc.stderr and "beside link.route" in proc.stderr


def test_committed_preset_reads_the_platform_route():
    cfg = load_config(str(ROOT / "experiments/reproductions/simgrid_cloud_migration/vm1000.yaml"))
    # small_platform.xml: link 8 (8.158 MBps) is the slowest of links 8, 1, 0, 2, 3, 4; latencies
    # 270.544 + 514.433 + 59.904 + 136.931 + 514.433 + 479.78 us = 1976.025 us
    assert cfg.link.bandwidth == 8.158e6
    assert cfg.link.latency == pytest.approx(1976.025e-6, rel=1e-12)
