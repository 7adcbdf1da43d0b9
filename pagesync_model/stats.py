"""Exact two-sample tests for comparing a handful of real measurements with the model's runs.

Both are exact (every table or split enumerated), so they hold for the small samples a laboratory
gives (5 real migrations against 10-20 simulated ones) where normal approximations do not.
"""
from itertools import combinations
from math import comb


def fisher_exact(a, b, c, d):
    """Two-sided p-value of Fisher's exact test on the 2x2 table [[a, b], [c, d]]: the probability,
    with the margins fixed, of a table no more likely than the one observed."""
    r1, c1, n = a + b, a + c, a + b + c + d

    def prob(x):
        return comb(c1, x) * comb(n - c1, r1 - x) / comb(n, r1)

    p0 = prob(a)
    lo, hi = max(0, r1 + c1 - n), min(r1, c1)
    return min(1.0, sum(prob(x) for x in range(lo, hi + 1) if prob(x) <= p0 * (1 + 1e-9)))


def mann_whitney(x, y):
    """Two-sided exact p-value of the Mann-Whitney U test of samples ``x`` and ``y``: the share of all
    splits of the pooled values into groups of len(x) and len(y) whose rank sum lies at least as far
    from its mean as x's does (ties take mid-ranks)."""
    pooled = sorted(list(x) + list(y))
    rank = {}
    for v in set(pooled):
        first = pooled.index(v)
        rank[v] = first + (pooled.count(v) + 1) / 2
    ranks = [rank[v] for v in list(x) + list(y)]
    n, m = len(x), len(y)
    mean = n * (n + m + 1) / 2
    obs = abs(sum(ranks[:n]) - mean)
    total = extreme = 0
    for idx in combinations(range(n + m), n):
        total += 1
        extreme += abs(sum(ranks[i] for i in idx) - mean) >= obs - 1e-9
    return extreme / total
