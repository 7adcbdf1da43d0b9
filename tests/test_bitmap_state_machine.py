"""Hypothesis state machine: the dirty bitmap behaves like a Python set of frame numbers.

Every rule applies one bitmap kernel to a bitmap in each backend (compiled and numpy) and to a plain
``set``, then checks that all agree: return values after each step, bitmap contents as an invariant.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pagesync_model.kernels import numpy_kernels as npk

try:
    import pagesync_model._cykernels as _cy
except ImportError:
    _cy = None

BACKENDS = [("numpy", npk)] + ([("cython", _cy)] if _cy is not None else [])


def set_bits(bitmap):
    bits = np.unpackbits(bitmap.view(np.uint8), bitorder="little")
    return set(np.flatnonzero(bits).tolist())


class BitmapMachine(RuleBasedStateMachine):
    """One bitmap of ``n`` frames per backend, and the set it should equal."""

    @initialize(n=st.sampled_from([1, 63, 64, 65, 127, 128, 129, 200, 640]))
    def setup(self, n):
        self.n = n
        self.model = set()
        self.maps = {name: (mod, np.zeros((n + 63) // 64, np.uint64)) for name, mod in BACKENDS}

    def _range(self, data):
        lo = data.draw(st.integers(0, self.n), label="lo")
        hi = data.draw(st.integers(lo, self.n), label="hi")
        return lo, hi

    @rule(data=st.data())
    def set_range(self, data):
        lo, hi = self._range(data)
        want = len(set(range(lo, hi)) - self.model)
        self.model |= set(range(lo, hi))
        for name, (mod, bm) in self.maps.items():
            assert mod.bitmap_set_range(bm, lo, hi) == want, name

    @rule(data=st.data())
    def set_frames(self, data):
        frames = data.draw(st.lists(st.integers(0, self.n - 1), max_size=40), label="frames")
        want = len(set(frames) - self.model)
        self.model |= set(frames)
        for name, (mod, bm) in self.maps.items():
            assert mod.bitmap_set_frames(bm, np.array(frames, np.int64)) == want, name

    @rule(data=st.data())
    def popcount(self, data):
        lo, hi = self._range(data)
        want = sum(1 for f in self.model if lo <= f < hi)
        for name, (mod, bm) in self.maps.items():
            assert mod.bitmap_popcount(bm, lo, hi) == want, name

    @rule(data=st.data(), cap=st.integers(1, 6), max_pages=st.integers(1, 300))
    def extract_runs_and_clear(self, data, cap, max_pages):
        lo, hi = self._range(data)
        # expected: maximal runs of the set inside [lo, hi), until cap runs or max_pages pages
        runs, f = [], lo
        while f < hi:
            if f in self.model:
                s = f
                while f < hi and f in self.model:
                    f += 1
                runs.append((s, f - s))
                if len(runs) == cap or sum(l for _, l in runs) >= max_pages:
                    break
            else:
                f += 1
        next_pos = runs[-1][0] + runs[-1][1] if runs and (len(runs) == cap or
                                                         sum(l for _, l in runs) >= max_pages) else hi
        for s, l in runs:
            self.model -= set(range(s, s + l))
        want = (len(runs), sum(l for _, l in runs), next_pos)
        for name, (mod, bm) in self.maps.items():
            starts, lens = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
            got = mod.bitmap_extract_runs(bm, lo, hi, max_pages, True, starts, lens)
            assert got == want, name
            assert list(zip(starts[:got[0]].tolist(), lens[:got[0]].tolist())) == runs, name

    @invariant()
    def bitmaps_equal_the_set(self):
        if not hasattr(self, "model"):
            return
        for name, (_, bm) in self.maps.items():
            assert set_bits(bm) == self.model, name      # also: no bit at or beyond n is ever set


BitmapMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestBitmapMachine = BitmapMachine.TestCase


def test_compiled_backend_in_machine():
    """The machine above must include the compiled backend whenever it is built."""
    if _cy is None:
        pytest.skip("pagesync_model._cykernels not built")
    assert [name for name, _ in BACKENDS] == ["numpy", "cython"]
