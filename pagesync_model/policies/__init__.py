"""Stop policies: the rules that decide what each pass copies and when the final stop comes.

A policy module defines ``NAME`` and either
- ``scanner(engine)``, a SimPy process generator that copies memory with the engine's primitives
  and calls ``engine.finish`` at cut-over, plus ``link_options(cfg)`` (per-page header and
  zero-page bytes on the wire): it runs on the page-level engine; or
- ``compute(cfg, seed)``, returning ``(summary, per_pass)`` directly, for fluid and closed-form
  models that do not simulate pages (``simgrid``, ``analytic``).
A module registers its config section (``SCHEMA.section``) and its name (``register_policy``) when
imported; this package imports them all, and importing ``pagesync_model.config`` imports this package.
"""
import importlib

POLICIES = {
    "stratus": "pagesync_model.policies.stratus",
    "qemu": "pagesync_model.policies.qemu",
    "xen-legacy": "pagesync_model.policies.xen",
    "xen-v2": "pagesync_model.policies.xen",
    "simgrid": "pagesync_model.policies.simgrid",
    "analytic": "pagesync_model.policies.analytic",
}


def require_single_rate(policy):
    """Refuse configs that give ``policy`` (a fluid or closed-form model reading only workload.rate)
    what it would silently ignore: per-CPU groups, phases, a replayed trace, a DMA writer."""
    from ..config.fields import SCHEMA
    from ..config.schema import ConfigError

    @SCHEMA.cross_check
    def _single_rate(v, raw):
        if v["policy"] != policy:
            return
        why = f"the {policy} policy models one write rate (workload.rate) and would ignore it"
        if v.get("workload.groups"):
            raise ConfigError("workload.groups", why)
        if v.get("workload.phases"):
            raise ConfigError("workload.phases", why)
        if v.get("workload.kind") == "trace":
            raise ConfigError("workload.kind", f"'trace': {why}")
        if v.get("dma.rate", 0) > 0:
            raise ConfigError("dma.rate", f"{raw['dma.rate']}: {why}")
    return _single_rate


def get_policy(name):
    """The policy module called ``name``; raises ValueError for an unknown one."""
    try:
        return importlib.import_module(POLICIES[name])
    except KeyError:
        raise ValueError(f"unknown policy '{name}' (choose from {', '.join(POLICIES)})") from None


for _module in POLICIES.values():
    importlib.import_module(_module)
