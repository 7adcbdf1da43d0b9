"""The exact tests in pagesync_model.stats against cases computed by hand."""
import pytest

from pagesync_model.stats import fisher_exact, mann_whitney


def test_fisher_exact_by_hand():
    # [[3, 2], [10, 0]]: margins 5 and 13 of 15; only the observed table is as unlikely:
    # C(13,3) C(2,2) / C(15,5) = 286 / 3003 (the tables with 4 and 5 are 1430/3003 and 1287/3003)
    assert fisher_exact(3, 2, 10, 0) == pytest.approx(286 / 3003)
    assert fisher_exact(2, 2, 2, 2) == pytest.approx(1.0)
    assert fisher_exact(5, 0, 0, 5) == pytest.approx(2 / 252)   # the two extreme tables of C(10,5)


def test_mann_whitney_by_hand():
    # complete separation of 3 and 4 values: 2 of the C(7,3) = 35 splits are as extreme
    assert mann_whitney([1, 2, 3], [4, 5, 6, 7]) == pytest.approx(2 / 35)
    # [1, 3, 5] vs [2, 4, 6]: rank sum 9, mean 10.5; of the 20 splits only the 6 summing 10 or 11 are closer
    assert mann_whitney([1, 3, 5], [2, 4, 6]) == pytest.approx(14 / 20)
    # ties take mid-ranks: identical samples are never evidence of a difference
    assert mann_whitney([2, 2, 2], [2, 2, 2]) == pytest.approx(1.0)
