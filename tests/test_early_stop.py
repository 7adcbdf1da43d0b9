"""Knowing early (sim.early_stop): a run stopped in steady state gives the verdict, the expected
downtime and the totals that running on to the end gives (the full run, sim.early_stop: false, is the
truth), and a run with an event still due that changes the verdict is not stopped early."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pagesync_model.config import load_config
from pagesync_model.sim.engine import simulate

ROOT = Path(__file__).resolve().parents[1]
QEMU = str(ROOT / "configs" / "qemu-default.yaml")
XEN = str(ROOT / "configs" / "xen-2005.yaml")
# a 1 GiB guest whose 46 MiB hot set is rewritten faster than QEMU's 128 MiB/s carries it
HOT = ["memory.size=1GiB", "workload.working_set=384MiB", "workload.hot_fraction=0.12", "workload.rate=150k/s",
       "sim.time_limit=40s"]
NOT_CONVERGING = {
    "hot": (QEMU, HOT),
    "hotter": (QEMU, HOT[:3] + ["workload.rate=250k/s", "sim.time_limit=40s"]),
    "uniform": (QEMU, ["memory.size=1GiB", "workload.kind=uniform", "workload.working_set=128MiB",
                       "workload.rate=100k/s", "sim.time_limit=40s"]),
    "nova-steps-done": (QEMU, HOT + ["operator.kind=nova", "operator.downtime_delay=0s", "operator.downtime=400ms"]),
    "xen-max-iters": (XEN, ["xen.rate_limit=false", "xen.max_factor=20", "workload.rate=60k/s", "xen.max_iters=60"]),
}


def run(path, overrides, early):
    return simulate(load_config(path, list(overrides) + [f"sim.early_stop={'true' if early else 'false'}"])).to_dict()


@pytest.mark.parametrize("name", NOT_CONVERGING)
def test_early_stop_gives_the_verdict_and_totals_of_running_on(name):
    path, overrides = NOT_CONVERGING[name]
    early, full = run(path, overrides, True), run(path, overrides, False)
    assert early["stop_reason"] == "steady-state" and not early["converged"]
    p = early["projected"]
    assert p["stopped_at_s"] == early["total_time_s"] < 0.8 * full["total_time_s"]
    assert p["stop_reason"] == full["stop_reason"] and not full["converged"]
    # the projection extrapolates noisy counters: within a few per cent of the full run
    assert p["total_time_s"] == pytest.approx(full["total_time_s"], rel=0.01)
    assert p["bytes_sent"] == pytest.approx(full["bytes_sent"], rel=0.02)
    assert p["pages_sent"] == pytest.approx(full["pages_sent"], rel=0.02)
    assert p["passes"] == pytest.approx(full["passes"], rel=0.03, abs=1)
    assert p["dirty_sync_count"] == pytest.approx(full["dirty_sync_count"], rel=0.03, abs=1)
    if full["policy"] == "qemu":
        # QEMU's expected downtime is one period's estimate: steady within the detector's 10 % spread
        assert early["expected_downtime_s"] == pytest.approx(full["expected_downtime_s"], rel=0.05)
        assert p["expected_downtime_s"] == pytest.approx(full["expected_downtime_s"], rel=0.05)
        assert early["needed_downtime_limit_s"] == pytest.approx(full["needed_downtime_limit_s"], rel=0.05)
    else:  # xen-legacy still cuts over at max-iters: its projected downtime against the real one
        assert p["downtime_s"] == pytest.approx(full["downtime_s"], rel=0.05)
        assert early["expected_downtime_s"] == p["downtime_s"]


def test_the_needed_downtime_limit_converges_when_set():
    """Independent check by simulation: with downtime_limit at the reported need the run converges."""
    d = run(QEMU, HOT, True)
    need = d["needed_downtime_limit_s"]
    assert need > 0.3  # the limit in force was 300 ms
    again = run(QEMU, HOT + [f"qemu.downtime_limit={need * 1.01 * 1e3:.3f}ms"], True)
    assert again["converged"] and again["stop_reason"] == "threshold"


# each of these changes the verdict of HOT after the point where HOT alone is steady (~20 s in)
PENDING = {
    "auto-converge": HOT + ["qemu.auto_converge=true"],
    "nova-timeout": HOT + ["operator.kind=nova", "operator.completion_timeout=30s", "sim.time_limit=120s"],
    "kubevirt-timeout": HOT + ["operator.kind=kubevirt", "operator.completion_timeout=15s"],
    "phase-change": HOT + ["workload.repeat=false", "workload.phases=[{duration: 25s}, {duration: 1s, rate: 5k/s}]"],
}


@pytest.mark.parametrize("name", PENDING)
def test_a_pending_event_that_changes_the_verdict_is_waited_for(name):
    early, full = run(QEMU, PENDING[name], True), run(QEMU, PENDING[name], False)
    assert full["stop_reason"] not in ("time-limit", "steady-state")  # the event did change the verdict
    assert early["stop_reason"] == full["stop_reason"] and early["converged"] == full["converged"]
    assert early["total_time_s"] == full["total_time_s"] and early["bytes_sent"] == full["bytes_sent"]


def test_early_stop_off_runs_to_the_limit():
    d = run(QEMU, HOT, False)
    assert d["stop_reason"] == "time-limit" and "projected" not in d and d["total_time_s"] >= 40
    assert d["config"]["sim"]["early_stop"] is False


def test_rate_limited_xen_is_not_stopped_early():
    """The rate limiter's stop (a round sending more than the last at the maximum rate) is a coin toss
    each round: no projection can name the round, so such a save runs to its end."""
    d = run(XEN, [], True)
    assert d["stop_reason"] == "rate-max-and-growing"


def _pty_run(args):
    """Run the CLI with stderr on a pseudo-terminal; the terminal is drained while it runs (a full pty
    buffer would block the writer)."""
    import threading
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "pagesync_model", *args], stdout=subprocess.PIPE, stderr=slave,
                         env=env, cwd=ROOT)
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:  # EIO once the child's side is closed
                return
            if not b:
                return
            chunks.append(b)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = p.stdout.read()
    p.wait(timeout=600)
    reader.join(timeout=60)
    os.close(master)
    return p.returncode, out.decode(), b"".join(chunks).decode()


def test_progress_on_a_terminal_only_and_the_run_is_unchanged(tmp_path):
    args = [QEMU, *sum((["--set", o] for o in HOT + ["sim.early_stop=false"]), [])]
    rc, out, err = _pty_run(args + ["--json", str(tmp_path / "a.json")])
    assert rc == 0 and "simulated " in err and " passes, last harvest " in err
    assert "simulated " not in out  # the summary on stdout carries no progress
    piped = subprocess.run([sys.executable, "-m", "pagesync_model", *args, "--json", "-"], capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert piped.returncode == 0 and piped.stderr == ""
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads(piped.stdout)
    for d in (a, b):
        del d["simulator"]
    assert a == b


def test_an_early_stop_is_the_same_on_both_backends():
    from conftest import BACKENDS
    path, overrides = NOT_CONVERGING["xen-max-iters"]
    out = []
    for b in BACKENDS:
        d = simulate(load_config(path, overrides), backend=b).to_dict()
        assert d["stop_reason"] == "steady-state"
        out.append({k: v for k, v in d.items() if k not in ("backend", "simulator")})
    assert all(o == out[0] for o in out)
