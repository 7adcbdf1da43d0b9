"""Stop policies: the rules that decide what each pass copies and when the final stop comes.

The contract and the registry are in base.py. Each module below declares its policy class with
``@register``, its config sections and their checks; importing a module is its registry line. Adding
a policy is one module and one name in the import below.
"""
from .base import (REGISTRY, VARIANTS, FluidPolicy, PagePolicy, Policy, PolicyError, VariantError, register,
                   single_rate_check)
from . import stratus, qemu, qemu16, xen, simgrid, analytic  # noqa: E402,F401  -- the registry, in this order

__all__ = ["REGISTRY", "VARIANTS", "Policy", "PagePolicy", "FluidPolicy", "PolicyError", "VariantError",
           "register", "single_rate_check", "get_policy"]


def get_policy(name):
    """The registered policy called ``name``; raises ValueError for an unknown one."""
    return REGISTRY.get(name)
