"""``sim.quantum: auto`` (sim/quantum.py): the rule on hand-computed cases, the runs it picks a coarser
step for against the same runs at the fixed 1 ms step, and the values it refuses.

What the rule promises: a write reaches the dirty log, and a pass's end or a decision is seen, at most
one quantum late, so each decision moves by at most about a quantum. On a run that is one to three
such shifts: the verdict and the stop reason are those of the 1 ms run, the pass count within one,
the total time and the downtime within ``SHIFTS`` quanta, the bytes sent within what the link carries
in ``SHIFTS`` quanta. The old code path (1 ms) is the reference.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from pagesync_model.config import load_config
from pagesync_model.policies import REGISTRY
from pagesync_model.results import format_table
from pagesync_model.sim.engine import Engine
from pagesync_model.sim.quantum import FLOOR, auto_quantum, nice_floor

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = 3

# 512 MiB machines on a 1 Gbit/s link: the link moves 30.5k pages/s, 1% of the 65536-page working set
# in 21 ms, so the policies' periods, not the page cap, set most steps.
BASE = ["memory.size=512MiB", "memory.kernel_size=64MiB", "workload.working_set=256MiB", "link.bandwidth=1Gbit/s",
        "cpus.count=4"]
QEMU = BASE + ["qemu.max_bandwidth=1Gbit/s"]
UNIFORM = ["workload.kind=uniform", "workload.rate=10k/s"]
CASES = {
    "qemu-converging": ("qemu-default.yaml", QEMU + ["workload.rate=5k/s"]),
    "qemu-not-converging": ("qemu-default.yaml", QEMU + UNIFORM + ["sim.time_limit=20s"]),
    "qemu-auto-converge": ("qemu-default.yaml", QEMU + UNIFORM + ["qemu.auto_converge=true", "sim.time_limit=60s"]),
    "stratus-threshold": ("stratus.yaml", BASE + ["workload.rate=5k/s", "stratus.threshold=20000"]),
    "stratus-uniform": ("stratus.yaml", BASE + ["workload.kind=uniform", "workload.rate=5k/s",
                                                "stratus.threshold=20000"]),
    "xen-legacy": ("xen-2005.yaml", BASE + ["xen.rate_limit=false"]),
    "xen-v2": ("xen-2005.yaml", BASE + ["policy=xen-v2", "xen.rate_limit=false"]),
}


def config(name, quantum):
    """The case at ``quantum``, run to its end: an early stop at steady state (sim.early_stop) ends a
    non-converging run where its detector's window happens to settle, which is not what this compares."""
    path, sets = CASES[name]
    return load_config(str(ROOT / "configs" / path), sets + [f"sim.quantum={quantum}", "sim.early_stop=false"])


@pytest.mark.parametrize("name", list(CASES))
def test_auto_agrees_with_the_1ms_run(name):
    fixed = Engine(config(name, "1ms"), backend="cython").run().to_dict()
    cfg = config(name, "auto")
    auto = Engine(cfg, backend="cython").run().to_dict()
    q = auto["quantum_s"]
    assert fixed["quantum_s"] == 1e-3 and q > FLOOR  # auto did pick a coarser step
    assert (auto["converged"], auto["stop_reason"]) == (fixed["converged"], fixed["stop_reason"])
    assert abs(auto["passes"] - fixed["passes"]) <= 1
    assert auto["total_time_s"] == pytest.approx(fixed["total_time_s"], abs=SHIFTS * q)
    if fixed["downtime_s"] is None:
        assert auto["downtime_s"] is None
    else:
        assert auto["downtime_s"] == pytest.approx(fixed["downtime_s"], abs=SHIFTS * q)
    assert auto["bytes_sent"] == pytest.approx(fixed["bytes_sent"], abs=SHIFTS * q * cfg.link.bandwidth)
    assert auto["lost_writes"] == fixed["lost_writes"]


def test_the_rule_by_hand():
    # qemu-converging: the 100 ms window / 10 = 10 ms; the downtime limit gives 30 ms, the link's page
    # cap 655.36 pages / (1.25e8 / 4096 pages/s) = 21.5 ms, the writes' 655.36 / 20k/s = 32.8 ms.
    q, why = auto_quantum(config("qemu-converging", "auto"), REGISTRY.get("qemu"))
    assert (q, why) == (0.01, "qemu's 100 ms window / 10")
    # stratus: the threshold's copy time 20000 x 4096 / 1.25e8 = 655 ms, / 10 = 65.5 ms; the link's page
    # cap, 21.5 ms, is the least: rounded down to 20 ms.
    q, why = auto_quantum(config("stratus-threshold", "auto"), REGISTRY.get("stratus"))
    assert q == 0.02 and why.startswith("link pages")
    # xen: a batch of 1024 pages of 4104 bytes at 1.25e8 B/s = 33.6 ms, / 10 = 3.36 ms -> 2 ms
    q, why = auto_quantum(config("xen-legacy", "auto"), REGISTRY.get("xen-legacy"))
    assert (q, why) == (0.002, "a xen batch's time / 10")
    # a 10 Gbit/s link over the same working set moves 1% of it in 2.1 ms; qemu's 300 ms downtime limit
    # with 10 ms... and a 1 GB/s writer: 655.36 / 244140 pages/s = 2.7 ms; a 5 ms downtime limit: 0.5 ms,
    # finer than the floor
    cfg = load_config(str(ROOT / "configs" / "qemu-default.yaml"),
                      QEMU + ["link.bandwidth=10Gbit/s", "qemu.downtime_limit=5ms", "sim.quantum=auto"])
    assert auto_quantum(cfg, REGISTRY.get("qemu")) == (FLOOR, "floor")
    assert [nice_floor(s) for s in (0.0347, 0.05, 0.0099, 0.2, 1.0)] == [0.02, 0.05, 0.005, 0.2, 1.0]


def test_operators_bound_the_step():
    # nova's schedule starts at downtime / steps = 500 ms / 10 = 50 ms: / 10 = 5 ms, below qemu's own 10 ms
    cfg = load_config(str(ROOT / "configs" / "qemu-default.yaml"), QEMU + [
        "sim.quantum=auto", "operator.kind=nova", "operator.downtime=500ms", "operator.downtime_steps=10"])
    assert auto_quantum(cfg, REGISTRY.get("qemu")) == (0.005, "nova's first downtime step / 10")


def test_phases_bound_the_step():
    cfg = load_config(str(ROOT / "configs" / "qemu-default.yaml"), QEMU + [
        "sim.quantum=auto", "workload.phases=[{duration: 40ms}, {duration: 1s}]"])
    assert auto_quantum(cfg, REGISTRY.get("qemu")) == (0.002, "workload phase / 10")


def test_explicit_steps_are_kept():
    cfg = config("xen-legacy", "7ms")
    assert Engine(cfg, backend="cython").quantum_s == 0.007


def test_text_summary_shows_the_step():
    r = Engine(config("stratus-threshold", "auto"), backend="cython").run()
    assert "quantum 20 ms)" in format_table(r)


def test_both_backends_agree():
    runs = [Engine(config("stratus-threshold", "auto"), backend=b).run().to_dict() for b in ("cython", "numpy")]
    for d in runs:
        d.pop("simulator"), d.pop("backend")
    assert runs[0] == runs[1]


@pytest.mark.parametrize("value, message", [
    ("fast", "sim.quantum: cannot read 'fast' as a duration"),
    ("Auto", "sim.quantum: cannot read 'Auto' as a duration"),
    ("0ms", "sim.quantum: must be > 0, got '0ms'"),
    ("2s", "sim.quantum: must be <= 1s, got '2s'"),
    ("-1ms", "sim.quantum: must be > 0"),
])
def test_bad_values_refused(value, message):
    out = subprocess.run([sys.executable, "-m", "pagesync_model", str(ROOT / "configs" / "stratus.yaml"),
                          "--set", f"sim.quantum={value}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_plan_refuses_auto_as_a_knob_value():
    out = subprocess.run([sys.executable, "-m", "pagesync_model", "plan", str(ROOT / "configs" / "stratus.yaml"),
                          "--target", "downtime<=100ms", "--vary", "sim.quantum", "--range", "1ms..auto"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr == "pagesync-sim: --range: sim.quantum: 'auto' is not a number to sweep or plan\n"
