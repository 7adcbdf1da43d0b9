"""Device DMA bypasses the dirty bits: the oracle reports its writes as lost unless DMA is mirrored."""
import pytest

from conftest import BACKENDS, small_config
from pagesync_model.config import ConfigError
from pagesync_model.sim.engine import Engine

LOAD = ("workload.kind=hotcold", "dma.rate=50k/s")


def run(*overrides, backend="auto"):
    e = Engine(small_config(*LOAD, *overrides), backend=backend)
    return e, e.run().summary


@pytest.mark.parametrize("policy", ["stratus", "qemu"])
def test_unmirrored_dma_is_lost_and_mirrored_dma_is_not(policy, backend):
    e, lost = run(f"policy={policy}", backend=backend)
    assert e.machine.cpus.dma.writes > 1000 and lost["lost_writes"] > 0
    _, kept = run(f"policy={policy}", "dma.mirrored=true", backend=backend)
    assert kept["lost_writes"] == 0
    # the devices do not touch the dirty bits: the CPUs' side of the run is the same
    assert kept["workload_writes"] == lost["workload_writes"] and kept["passes"] == lost["passes"]


def test_no_dma_by_default():
    e, s = run("dma.rate=0/s")
    assert e.machine.cpus.dma is None and s["lost_writes"] == 0


def test_dma_confined_to_its_working_set():
    e, _ = run("dma.working_set=1MiB")
    m = e.machine.memory
    assert e.machine.cpus.dma.span == 256
    inside = m.dense_to_frames(__import__("numpy").arange(256))
    changed = (m.versions[m.user_base:] > 1).nonzero()[0] + m.user_base
    hot = m.dense_to_frames(__import__("numpy").arange(int(m.working_set_pages)))
    assert set(changed.tolist()) <= set(inside.tolist()) | set(hot.tolist())


@pytest.mark.skipif(len(BACKENDS) < 2, reason="the compiled backend is not built")
def test_identical_on_both_backends():
    a = run(backend="numpy")[1]
    b = run(backend="cython")[1]
    assert a == b


def test_dma_working_set_larger_than_the_workload_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        small_config(*LOAD, "dma.working_set=64MiB")
    assert str(err.value).startswith("dma.working_set: 64MiB is larger than the workload's 32MiB working set")
