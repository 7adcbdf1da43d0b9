"""Faults on the way of many migrations (sim/multi.py): links that stall, drop or lose packets, and
destinations (mirror partners) that reset, from a schedule or from seeded rates.

- ``stall``: the link carries nothing for ``duration`` (its capacity is 0); connections survive, so
  every migration crossing it waits and goes on.
- ``drop``: the link goes down for ``duration`` and the connections over it break. A migration in
  pre-copy (``qemu``, ``xen-legacy``) fails and its source keeps running; the operator
  layer may start it again (``retries``, after the link is back and ``retry_delay``). A ``qemu``
  migration in post-copy pauses (the guest waits on the destination for pages that do not come) and,
  with ``postcopy_recover`` (QEMU's postcopy-recover), goes on when the link is back; without it the
  guest is lost. A ``stratus`` resync starts over once the link is back, whatever ``retries`` says.
- ``loss``: packet loss probability ``loss`` on the link for ``duration``; it cuts each TCP connection
  crossing it to the Mathis et al. (1997) bound MSS / RTT x sqrt(3/2) / sqrt(p) (p: the route's
  combined loss, RTT: twice the route's summed latency); a migration's cap becomes the lesser of its
  own and that bound times its connections.
- ``reset``: the destination of the named VM's migration (the mirror partner) resets at ``at`` and is
  back ``duration`` later: pre-copy fails (and may be retried), post-copy loses the guest (it ran on
  the destination), the stratus resync starts over.
- ``pause``: the named VM's source cannot pause in time: from ``at`` for ``duration`` one of its
  vCPUs does not exit, so a stop of its vCPUs that begins then completes only when the fault ends.
  QEMU (``qemu``, rules current) waits without bound: ``pause_all_vcpus`` loops on
  ``qemu_cond_wait`` until every vCPU has stopped (system/cpus.c in QEMU's tree) and
  ``migration_stop_vm`` takes ``downtime_start`` before ``vm_stop_force_state`` (migration/
  migration.c), so the downtime grows by the wait and the migration does not fail; the guest's CPUs
  go on writing until the stop completes (the model stops a VM's CPUs together) and the last sync
  comes after it, so no write is lost (`hold`). Xen (``xen-legacy``, ``xen-v2``) asks the guest to
  suspend and libxl waits 60 s for it (tools/libs/light/libxl_dom_suspend.c in Xen's tree): a guest
  that suspends within that writes until it does, its downtime counted from the request; past it
  the save fails with ERROR_GUEST_TIMEDOUT and ``xl migrate`` gives up with the guest running on
  the source (tools/xl/xl_migrate.c: "Migration failed, failed to suspend at sender."), a failed
  attempt the operator may retry. A ``stratus`` resync whose CPUs cannot stop (the rendezvous of
  each harvest with ``tracking.stop_cpus``, the blackout's stop) starts over once the fault ends,
  as after a drop. A retry after a pause waits for the fault's end.

A completed migration still has the lost-write oracle of its last attempt (a new attempt starts from a
fresh destination); a lost post-copy guest is reported with verdict 'lost', never as complete.
"""
import math
import random
from dataclasses import dataclass
from typing import Optional

__all__ = ["Fault", "RandomFaults", "KINDS", "mathis_rate", "scheduled", "hold"]

KINDS = ("stall", "drop", "loss", "reset", "pause")
MATHIS_C = math.sqrt(1.5)


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` (KINDS), at ``at`` s from the batch's start, lasting ``duration`` s, on the
    link ``link`` (stall, drop, loss), the destination of VM ``vm`` (reset) or VM ``vm``'s source
    (pause); ``loss`` for kind loss."""
    kind: str
    at: float
    duration: float
    link: Optional[str] = None
    vm: Optional[str] = None
    loss: float = 0.0


@dataclass(frozen=True)
class RandomFaults:
    """Faults of ``kind`` on ``link`` with exponentially distributed times between them (mean ``mtbf``
    s, counted from the end of the previous one), each lasting ``duration`` s, drawn with ``seed``."""
    kind: str
    link: str
    mtbf: float
    duration: float
    loss: float = 0.0
    seed: int = 1


def scheduled(rf, horizon):
    """The faults of a RandomFaults up to ``horizon`` s, in time order (the same for the same seed)."""
    rng = random.Random(rf.seed)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(1.0 / rf.mtbf)
        if t >= horizon:
            return out
        out.append(Fault(rf.kind, t, rf.duration, link=rf.link, loss=rf.loss))
        t += rf.duration


def mathis_rate(loss, rtt, mss):
    """Bytes/s one TCP connection gets at packet loss ``loss`` and round trip ``rtt`` s (Mathis et al.,
    "The macroscopic behavior of the TCP congestion avoidance algorithm", 1997); None when it does not
    bind (no loss, or no round trip to bound it)."""
    if loss <= 0 or rtt <= 0:
        return None
    return mss / rtt * MATHIS_C / math.sqrt(loss)


def hold(windows, now):
    """How long a stop of a VM's vCPUs that begins at ``now`` waits for them beyond its usual time,
    under its ``pause`` faults ``windows`` [(start, end)] (any unit): until the last one in force ends
    (0 when none is)."""
    ends = [end for start, end in windows if start <= now < end]
    return max(ends) - now if ends else 0
