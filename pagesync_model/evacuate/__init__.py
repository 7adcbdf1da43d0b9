"""Draining a host: many migrations at once over shared links (``pagesync-sim evacuate HOST.yaml``).

`load_host` reads HOST.yaml into a `Host`; `run_host(host, seed) -> HostResult` runs its evacuation
(evacuate/run.py documents the result); `plan_host` searches the concurrency limit and order.
Several migrations on one machine model are sim/multi.py's `run_batch`; this package adds the
host's VMs, platform limits and orders on top of it.
"""
from .host import Host, HostVm, ORDERS, PLATFORMS, host_from_dict, load_host, order_vms
from .run import HostResult, PlanResult, VmOutcome, plan_host, run_host

__all__ = ["Host", "HostVm", "ORDERS", "PLATFORMS", "host_from_dict", "load_host", "order_vms", "HostResult",
           "PlanResult", "VmOutcome", "plan_host", "run_host"]
