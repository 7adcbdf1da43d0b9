"""Stop policies: each is a scanner process role plus the link options its wire format needs.

A policy module defines ``NAME``, ``scanner(engine)`` (a SimPy process generator that copies memory
with the engine's primitives and calls ``engine.finish`` at cut-over) and ``link_options(cfg)``
(per-page header and zero-page bytes on the wire). ``stratus`` is the published pagesync module.
"""
import importlib

POLICIES = {
    "stratus": "pagesync_model.policies.stratus",
}


def get_policy(name):
    """The policy module called ``name``; raises ValueError for an unknown one."""
    try:
        return importlib.import_module(POLICIES[name])
    except KeyError:
        raise ValueError(f"unknown policy '{name}' (choose from {', '.join(POLICIES)})") from None
