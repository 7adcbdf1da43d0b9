"""The copy loop (sim/fused.py, kernel ``copy_loop``) gives the results of the piece-by-piece path.

Each case runs twice in one process, with ``fused.ENABLED`` off (every piece a SimPy event, every CPU
step ``Cpus.advance_to``: the path the equivalence digests were made with) and on, and the whole result
documents (per-pass records, totals, lost writes, the achieved dirty rate, the event counts) must be
equal. The cases make the loop stop where it must: other processes' events (a progress ticker every
50 ms), the dirty-rate meter's windows (short windows), first-copy costs, a hot/cold workload; ``stratus``
copies bitmap runs and all of memory through it; ``xen`` runs a round's batches (peek, choice, header and
pieces) through the kernel ``xen_batches``.
"""
import json

import pytest

from pagesync_model.config.loader import load_config
from pagesync_model.kernels import get_backend
from pagesync_model.sim import fused
from pagesync_model.sim.engine import Engine

SMALL = ["memory.size=256MiB", "memory.kernel_size=16MiB", "sim.time_limit=6s", "workload.working_set=96MiB",
         "memory.processes=20", "cpus.count=4", "workload.rate=20k/s", "stratus.threshold=3000",
         "link.bandwidth=2Gbit/s"]
XEN = ["memory.size=256MiB", "memory.kernel_size=16MiB", "sim.time_limit=6s", "workload.working_set=64MiB",
       "memory.processes=10", "link.bandwidth=2Gbit/s"]
CASES = {
    "stratus": ("stratus.yaml", SMALL),
    "stratus-windows": ("stratus.yaml", SMALL + ["workload.dirty_rate_window=0.02s", "link.first_copy=2us"]),
    "stratus-hotcold-outside": ("stratus.yaml", SMALL + ["workload.kind=hotcold", "stratus.tracking_outside=true",
                                                         "stratus.stop=after-copy"]),
    "stratus-auto": ("stratus.yaml", SMALL + ["sim.quantum=auto", "link.per_copy=3us"]),
    # a blackout of many pieces over far-apart ranges (a threshold of most of the working set): with the
    # CPUs stopped the copy loop runs the pieces, its CPU steps only moving time
    "stratus-long-blackout": ("stratus.yaml", SMALL + ["stratus.threshold=20000", "stratus.passes=1", "stratus.max_copyrange=8"]),
    # a round of xen batches (1024 pages each, several link pieces) goes through xen_batches, with the
    # rate limiter (xen-2005.yaml's) and without
    "xen-legacy": ("xen-2005.yaml", XEN),
    "xen-legacy-short": ("xen-2005.yaml", XEN[:2] + ["sim.time_limit=1.5s", "workload.working_set=32MiB"] + XEN[4:]),
    "xen-legacy-no-limiter": ("xen-2005.yaml", XEN + ["xen.rate_limit=false", "workload.kind=hotcold"]),
    "xen-v2-windows": ("xen-2005.yaml", XEN + ["policy=xen-v2", "workload.dirty_rate_window=0.05s"]),
}


def _run_engine(cfg, backend, enabled, progress, monkeypatch, kernels):
    """The result document (without wall times), the calls of ``kernels`` and the progress calls."""
    monkeypatch.setattr(fused, "ENABLED", enabled)
    engine = Engine(cfg, backend=backend)
    calls = []
    for kernel in kernels:
        real = getattr(engine.kernels, kernel)
        monkeypatch.setattr(engine.kernels, kernel, lambda *a, real=real: calls.append(1) or real(*a))
    seen = []
    d = engine.run((lambda *p: seen.append(p)) if progress else None).to_dict()
    for key in ("wall_s", "simulated_s_per_wall_s"):
        d.get("simulator", {}).pop(key, None)
    return json.dumps(d, sort_keys=True, default=str), len(calls), seen


def _run(name, backend, enabled, progress, monkeypatch):
    config, sets = CASES[name]
    return _run_engine(load_config(f"configs/{config}", sets), backend, enabled, progress, monkeypatch,
                       ("copy_loop", "xen_batches"))


def _need_cython():
    try:
        get_backend("cython")
    except Exception:
        pytest.skip("compiled kernels not built")


@pytest.mark.parametrize("progress", [False, True], ids=["alone", "ticker"])
@pytest.mark.parametrize("name", list(CASES))
def test_copy_loop_same_result(name, progress, monkeypatch):
    _need_cython()
    old, old_calls, old_seen = _run(name, "cython", False, progress, monkeypatch)
    new, new_calls, new_seen = _run(name, "cython", True, progress, monkeypatch)
    assert old_calls == 0 and new_calls > 0, "the loop ran only when enabled"
    assert new == old
    assert new_seen == old_seen


@pytest.mark.parametrize("name", ["stratus-windows", "xen-legacy-short"])
def test_copy_loop_same_result_numpy(name, monkeypatch):
    old, _, _ = _run(name, "numpy", False, True, monkeypatch)
    new, calls, _ = _run(name, "numpy", True, True, monkeypatch)
    assert calls > 0 and new == old


@pytest.mark.parametrize("name", ["stratus-windows", "xen-legacy", "xen-legacy-no-limiter"])
def test_piece_by_piece_fallback_mid_copy(name, monkeypatch):
    # When the loop cannot go on after a wait (another process stopped or throttled the CPUs), the copy
    # continues a piece at a time (fused._python_pieces): forced here on every other check.
    _need_cython()
    old, _, _ = _run(name, "cython", False, True, monkeypatch)
    real, flip = fused.fusable, [1]   # the first check passes, the re-check after the first wait fails

    def every_other(m):
        flip[0] += 1
        return real(m) and flip[0] % 2 == 0
    monkeypatch.setattr(fused, "fusable", every_other)
    new, calls, _ = _run(name, "cython", True, True, monkeypatch)
    assert calls > 0 and flip[0] > 10
    assert new == old


# QEMU's migration thread: each pre-copy turn (ram_save_iterate) in qemu_turn calls (fused.qemu_iterate)
QEMU = ["memory.size=256MiB", "memory.kernel_size=16MiB", "sim.time_limit=2s", "workload.working_set=96MiB",
        "workload.kind=uniform", "workload.rate=150k/s", "link.bandwidth=2Gbit/s", "qemu.max_bandwidth=2Gbit/s",
        "sim.early_stop=false"]
QEMU_CASES = {
    "qemu": QEMU,
    "qemu-rate-limit": QEMU + ["qemu.max_bandwidth=64MiB/s", "workload.kind=hotcold"],
    "qemu-auto-converge": QEMU + ["qemu.auto_converge=true", "sim.time_limit=4s"],
    "qemu-xbzrle": QEMU + ["qemu.xbzrle=true"],
    "qemu-windows": QEMU + ["workload.dirty_rate_window=0.02s", "link.first_copy=2us", "link.per_copy=3us",
                            "sim.quantum=auto"],
    "qemu-nova": QEMU + ["operator.kind=nova", "operator.monitor_period=0.3s"],
}


def _run_qemu(name, backend, enabled, progress, monkeypatch, extra=()):
    cfg = load_config("configs/qemu-default.yaml", QEMU_CASES[name] + list(extra))
    return _run_engine(cfg, backend, enabled, progress, monkeypatch, ("qemu_turn",))


@pytest.mark.parametrize("name, progress", [(name, False) for name in QEMU_CASES] + [("qemu", True),
                                                                                   ("qemu-xbzrle", True)])
def test_qemu_turn_same_result(name, progress, monkeypatch):
    _need_cython()
    old, old_calls, old_seen = _run_qemu(name, "cython", False, progress, monkeypatch)
    new, new_calls, new_seen = _run_qemu(name, "cython", True, progress, monkeypatch)
    assert old_calls == 0 and new_calls > 0, "the turn ran in the kernel only when enabled"
    assert new == old
    assert new_seen == old_seen


def test_qemu_turn_same_result_numpy(monkeypatch):
    short = ["sim.time_limit=0.6s"]
    old, _, _ = _run_qemu("qemu-windows", "numpy", False, True, monkeypatch, short)
    new, calls, _ = _run_qemu("qemu-windows", "numpy", True, True, monkeypatch, short)
    assert calls > 0 and new == old


def test_qemu_turn_python_fallback_mid_turn(monkeypatch):
    # When the kernel cannot go on after a wait, the rest of the turn goes piece by piece (qemu.iterate's
    # loop): forced here on every other check.
    _need_cython()
    old, _, _ = _run_qemu("qemu-windows", "cython", False, True, monkeypatch)
    real, flip = fused.qemu_fusable, [1]

    def every_other(m, mig):
        flip[0] += 1
        return real(m, mig) and flip[0] % 2 == 0
    monkeypatch.setattr(fused, "qemu_fusable", every_other)
    new, calls, _ = _run_qemu("qemu-windows", "cython", True, True, monkeypatch)
    assert calls > 0 and flip[0] > 10
    assert new == old
