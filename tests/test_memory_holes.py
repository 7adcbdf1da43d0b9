"""``memory.holes``: runs of other non-zero pages between the user pages (contiguous layout), so that a
working set can sit in pieces, as the QEMU lab's guest's does (experiments/qemu_validation/placement.json).
Checked against a naive frame-by-frame walk of the layout."""
import numpy as np
import pytest

from conftest import BACKENDS
from pagesync_model.config import config_from_dict
from pagesync_model.schema import ConfigError
from pagesync_model.sim.engine import Engine

VM = {"policy": "qemu",
      "memory": {"size": "64MiB", "kernel_size": "1MiB", "zero_fraction": 0.2, "processes": 1,
                 "layout": "contiguous", "holes": [{"at": "4MiB", "size": "2MiB"}, {"at": "20MiB", "size": "1MiB"}]},
      "cpus": {"count": 1, "clock": "3GHz"},
      "workload": {"kind": "sequential", "rate": "2k/s", "working_set": "16MiB"},
      "link": {"bandwidth": "1GB/s", "latency": "20us", "per_copy": "0us"},
      "qemu": {"max_bandwidth": "32MiB/s"}, "sim": {"quantum": "1ms", "time_limit": "10s"}}
W, HOLES = 4096, {1024: 512, 5120: 256}   # pages: 16 MiB working set; holes at 4 MiB (2 MiB) and 20 MiB (1 MiB)


def naive_frames(user_base, n):
    """Frame of each dense index 0..n-1, walking memory one frame at a time and stepping over each hole
    when its index comes."""
    out, f = [], user_base
    for i in range(n):
        f += HOLES.get(i, 0)
        out.append(f)
        f += 1
    return np.array(out)


def engine(*over, backend="auto"):
    return Engine(config_from_dict(VM, over), backend=backend)


def test_dense_indices_step_over_the_holes_as_a_naive_walk_does():
    m = engine().machine.memory
    n = W + m.zero_pages
    assert m.dense_to_frames(np.arange(n)).tolist() == naive_frames(m.user_base, n).tolist()
    # before any write: the zero pages are exactly the zero_pages dense indices after the working set
    zero = np.flatnonzero(m.versions == 0)
    assert zero.tolist() == naive_frames(m.user_base, n)[W:].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_writer_never_touches_a_hole_and_the_hole_is_sent_as_normal_pages(backend):
    e = engine(backend=backend)
    m = e.machine.memory
    ub = m.user_base
    hole_frames = np.r_[ub + 1024:ub + 1024 + 512, ub + 512 + 5120:ub + 512 + 5120 + 256]
    d = e.run().to_dict()
    assert d["converged"] and d["lost_writes"] == 0
    assert (m.versions[hole_frames] == 1).all()                       # non-zero, never written
    # every write landed on the working set's frames, where the naive walk puts them: the sweep's first
    # pages (fewer writes than pages here, so each written once)
    written = np.flatnonzero(m.versions[ub:] > 1) + ub
    assert 0 < len(written) == d["workload_writes"] < W
    assert written.tolist() == naive_frames(ub, len(written)).tolist()
    assert len(written) > 1024 + 10                                   # the sweep crossed the first hole
    # QEMU sends every non-zero page in full at least once: the holes' too
    assert d["normal_pages"] >= m.n_frames - m.zero_pages


def test_both_backends_alike():
    a, b = (engine(backend=k).run().to_dict() for k in BACKENDS)
    for k in ("total_time_s", "bytes_sent", "normal_pages", "dirty_sync_count", "workload_writes"):
        assert a[k] == b[k]


@pytest.mark.parametrize("over, where", [
    (("memory.layout=scattered",), "memory.holes"),
    (("memory.sparse=true",), "memory.holes"),
    (("memory.holes[1].at=2MiB",), "memory.holes[1].at"),
    (("memory.holes[0].at=1000B",), "memory.holes[0].at"),
    (("memory.holes[1].at=60MiB",), "memory.holes[1].at"),
    (("memory.holes[0].size=50MiB",), "memory.holes"),
])
def test_bad_holes_are_refused_naming_the_field(over, where):
    with pytest.raises(ConfigError) as err:
        config_from_dict(VM, over)
    assert where in str(err.value)
