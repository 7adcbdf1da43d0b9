"""The speed work (batched copy pieces, fused kernels) leaves every result as it was.

The reference is a version oracle: tests/data/equivalence_digests.json holds, for small configs of
every page-level policy (stratus and its variants, qemu with XBZRLE, auto-converge and post-copy,
the Nova, KubeVirt and oVirt monitors, xen-legacy, xen-v2) on both kernel backends, a digest of the
whole result document (per-pass records, totals, lost writes and stale frames; wall-clock figures
left out) as produced by the code before that work. The commit that produced them is named in the
file; tests/equivalence_cases.py regenerates them (only on purpose, from that commit).
"""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import equivalence_cases as cases  # noqa: E402

ORACLE = json.loads(cases.DIGESTS.read_text())
# The numpy twin is ~6x slower: the default suite runs it on one case per policy, the rest are slow.
NUMPY_FAST = {"stratus", "stratus-copy-before-clear", "qemu-hotcold-converges", "qemu-xbzrle", "xen-v2",
              "xen-legacy", "ovirt"}


def params():
    for name in cases.CASES:
        for backend in cases.BACKENDS:
            marks = [pytest.mark.slow] if backend == "numpy" and name not in NUMPY_FAST else []
            yield pytest.param(name, backend, id=f"{name}-{backend}", marks=marks)


def test_oracle_covers_every_case():
    assert ORACLE["commit"], "the oracle names the commit that produced it"
    assert set(ORACLE["cases"]) == {f"{n}/{b}" for n in cases.CASES for b in cases.BACKENDS}


@pytest.mark.parametrize("name,backend", list(params()))
def test_result_unchanged(name, backend):
    from pagesync_model.kernels import get_backend
    if backend == "cython":
        try:
            get_backend("cython")
        except Exception:
            pytest.skip("compiled kernels not built")
    d = cases.outcome(name, backend)
    want = ORACLE["cases"][f"{name}/{backend}"]
    assert cases.brief(d) == {k: want[k] for k in cases.brief(d)}
    assert set(want["keys"]) <= set(d), "a result field the oracle knew is gone"
    assert cases.digest(d, want["keys"], want["pass_keys"]) == want["digest"]
