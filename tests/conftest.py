"""Shared fixtures: small machines that simulate in well under a second on either backend."""
import pytest

from pagesync_model.config import config_from_dict
from pagesync_model.kernels import cython_available

BACKENDS = ["numpy"] + (["cython"] if cython_available() else [])

SMALL = {
    "memory": {"size": "64MiB", "kernel_size": "4MiB", "processes": 8},
    "cpus": {"count": 4, "tlb_entries": 64},
    "workload": {"kind": "hotcold", "rate": "20k/s", "working_set": "32MiB", "hot_fraction": 0.05,
                 "hot_share": 0.9},
    "link": {"bandwidth": "1GB/s", "latency": "2us", "per_copy": "1us"},
    "stratus": {"passes": 5, "threshold": 64},
}


def small_config(*overrides, base=None):
    """A Config for a 64 MiB machine, with 'dotted.key=value' overrides."""
    return config_from_dict(base or SMALL, overrides)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
