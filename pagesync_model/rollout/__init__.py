"""Rolling maintenance of a cluster (``pagesync-sim rollout CLUSTER.yaml``): H hosts drained a batch at
a time, the hosts of a batch sharing the fabric, as a Monte Carlo over seeds on Dask.

`load_cluster` reads CLUSTER.yaml (rollout/cluster.py); `run_rollout` runs it (rollout/run.py);
each batch is drained by the fluid host model (rollout/fluid.py: `run_fluid`).
"""
from .cluster import Cluster, cluster_from_dict, load_cluster
from .fluid import FluidGroup, FluidVm, run_fluid
from .run import RolloutResult, batch_row, run_rollout

__all__ = ["Cluster", "cluster_from_dict", "load_cluster", "FluidGroup", "FluidVm", "run_fluid", "RolloutResult",
           "batch_row", "run_rollout"]
