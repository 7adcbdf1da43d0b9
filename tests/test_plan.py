"""The inverse planner: closed-form answers from the analytic policy, a monotonic engine case, the
refusals (unreachable, already met), target parsing, and the CLI."""
import math

import pytest
import yaml

from conftest import small_config
from pagesync_model.cli import main
from pagesync_model.config import config_from_dict
from pagesync_model.sim.engine import simulate
from pagesync_model.sweep.knobs import Knob
from pagesync_model.sweep.planner import PlanError, Target, plan

# the analytic policy with one live round: the stop-and-copy sends M x lambda, lambda = D / R, so the
# downtime is M x D / R^2 + latency and the boundary of 'downtime <= T' is closed-form
ANALYTIC = {"policy": "analytic", "memory": {"size": "8GiB"}, "cpus": {"count": 4},
            "workload": {"rate": "20k/s", "working_set": "4GiB"},
            "link": {"bandwidth": "10Gbit/s", "latency": "50us", "efficiency": 0.9},
            "analytic": {"rounds": 1}}
M, N, W, P, LAT, EFF = 8 << 30, 4, 20e3, 4096, 50e-6, 0.9


def evaluator(data):
    return lambda overrides: simulate(config_from_dict(data, overrides)).summary


@pytest.mark.parametrize("limit", [0.1, 0.02])
def test_analytic_bandwidth_boundary_is_closed_form(limit):
    expected = math.sqrt(M * N * W * P / (limit - LAT)) / EFF  # link.bandwidth in bytes/s
    knob = Knob("link.bandwidth")
    r = plan(evaluator(ANALYTIC), Target.parse(f"downtime<={limit * 1e3:g}ms"), knob, 1.25e8, 5e10, tol=1e-3)
    assert r.field == "downtime_s" and r.threshold == pytest.approx(limit) and r.log
    assert r.other < expected <= r.value  # the answer meets the target, the other end of the bracket does not
    assert r.value / r.other - 1 <= 1e-3
    assert len(r.runs) <= 2 + math.ceil(math.log2(math.log(400) / 1e-3)) + 1
    assert all(run.met == (run.value >= expected) for run in r.runs)


def test_analytic_rate_boundary_linear():
    limit = 0.2
    r_link = 1.25e9 * EFF
    expected = (limit - LAT) * r_link ** 2 / (M * N * P)  # workload.rate per CPU, writes/s
    r = plan(evaluator(ANALYTIC), Target.parse("downtime <= 200ms"), Knob("workload.rate"), 1e3, 5e3, tol=1e-4)
    assert not r.log
    assert r.value <= expected < r.other and (r.other - r.value) <= 1e-4 * r.value


def test_engine_boundary_on_a_monotonic_case():
    # the full copy dominates the total time, and it falls as the link gets faster
    data = small_config().to_dict()
    target = Target.parse("total_time<=150ms")
    r = plan(evaluator(data), target, Knob("link.bandwidth"), 1e8, 1e10, tol=0.02)
    good = simulate(config_from_dict(data, [Knob("link.bandwidth").override(r.value)])).summary
    bad = simulate(config_from_dict(data, [Knob("link.bandwidth").override(r.other)])).summary
    assert good["total_time_s"] <= 0.15 < bad["total_time_s"]
    assert r.value > r.other and r.value / r.other - 1 <= 0.02
    # 64 MiB at the boundary rate takes most of the 150 ms
    assert 64 * 2 ** 20 / r.value == pytest.approx(0.15, rel=0.25)


def test_int_knob_stops_at_adjacent_values():
    # one CPU gives 0.556 s of downtime, n CPUs n times that: 8 fit in 5 s, 9 do not
    r = plan(evaluator(ANALYTIC), Target.parse("downtime<=5s"), Knob("cpus.count"), 1, 64, tol=1e-6)
    assert (r.value, r.other) == (8, 9) and isinstance(r.value, int)


def test_refusals():
    knob = Knob("link.bandwidth")
    with pytest.raises(PlanError, match="unreachable in range"):
        plan(evaluator(ANALYTIC), Target.parse("downtime<=1us"), knob, 1.25e8, 1.25e9)
    with pytest.raises(PlanError, match="already met at both ends"):
        plan(evaluator(ANALYTIC), Target.parse("downtime<=1h"), knob, 1.25e8, 1.25e9)


@pytest.mark.parametrize("text, field, value", [
    ("downtime<=100ms", "downtime_s", 0.1), ("total_time_s < 2s", "total_time_s", 2.0),
    ("bytes_sent<=4GiB", "bytes_sent", 4 * 2.0 ** 30), ("slowdown<1%", "slowdown", 0.01),
    ("passes>=3", "passes", 3.0),
])
def test_targets_read_units_of_their_field(text, field, value):
    summary = simulate(small_config()).summary
    t = Target.parse(text)
    assert t.field(summary) == field and t.threshold(field) == pytest.approx(value)


def test_bad_targets():
    with pytest.raises(PlanError, match="cannot read 'downtime=100ms'"):
        Target.parse("downtime=100ms")
    with pytest.raises(PlanError, match="not a numeric summary field"):
        Target.parse("speed<=1").field({"downtime_s": 1.0})
    with pytest.raises(PlanError, match="downtime_s"):
        Target.parse("downtime<=100 parsecs").threshold("downtime_s")


def test_cli_prints_the_runs_and_the_answer(tmp_path, capsys):
    cfg = tmp_path / "a.yaml"
    cfg.write_text(yaml.safe_dump(ANALYTIC))
    assert main(["plan", str(cfg), "--target", "downtime<=100ms", "--vary", "link.bandwidth",
                 "--range", "1Gbit/s..400Gbit/s", "--tol", "0.01", "--csv", str(tmp_path / "runs.csv")]) == 0
    out = capsys.readouterr().out
    expected = math.sqrt(M * N * W * P / (0.1 - LAT)) / EFF * 8 / 1e9
    assert "link.bandwidth = " in out and "(at least) meets downtime <= 100ms" in out and "log bisection" in out
    answer = float(out.split("link.bandwidth = ")[1].split("Gbit/s")[0])
    assert answer == pytest.approx(expected, rel=0.015)
    assert len((tmp_path / "runs.csv").read_text().splitlines()) > 3


@pytest.mark.parametrize("argv, message", [
    (["--target", "downtime<=1us"], "plan: target downtime <= 1us is unreachable in range"),
    (["--target", "downtime<=1h"], "already met at both ends"),
    (["--vary", "link.bandwith"], "did you mean 'link.bandwidth'"),
    (["--vary", "memory.layout"], "--vary: 'memory.layout' is a choice, not a number"),
    (["--range", "1Gbit/s-4Gbit/s"], "--range: expected LO..HI"),
    (["--range", "1Gbit/s..4 gigs"], "cannot read '4 gigs' as a bandwidth"),
    (["--target", "downtime<<1ms"], "--target: cannot read"),
])
def test_cli_refusals_are_one_line_exit_2(tmp_path, capsys, argv, message):
    cfg = tmp_path / "a.yaml"
    cfg.write_text(yaml.safe_dump(ANALYTIC))
    opts = {"--target": "downtime<=100ms", "--vary": "link.bandwidth", "--range": "1Gbit/s..4Gbit/s"}
    opts[argv[0]] = argv[1]
    args = ["plan", str(cfg)] + [x for kv in opts.items() for x in kv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plan_refuses_a_range_whose_end_is_beyond_the_machine(tmp_path):
    """The cost guard holds for plan too: 8 TiB at the top of the range is refused before any probe,
    naming the end and the --force hint."""
    import subprocess
    import sys
    import yaml
    from conftest import SMALL
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "memory": {**SMALL["memory"], "sparse": False}}))  # per-frame state
    p = subprocess.run([sys.executable, "-m", "pagesync_model", "plan", str(cfg), "--target", "downtime<=100ms",
                        "--vary", "memory.size", "--range", "64MiB..8TiB"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "memory.size=8TiB" in lines[0] and "--force" in lines[0], p.stderr
