"""Dirty rates as planners have them: a whole-VM rate of distinct pages dirtied per second, as QEMU's
``calc-dirty-rate`` measures it, read from a config value or from a measurement tool's report, turned
into the per-CPU write rate the engine runs; and the meter that measures the same quantity in a run.

What QEMU measures (migration/dirtyrate.c, qapi/migration.json ``calc-dirty-rate`` and
``DirtyRateInfo``): over a window of ``calc-time`` (default 1 s) it counts the *distinct* pages that
changed -- by hashing a sample of ``sample-pages`` pages per GiB at the start and end of the window
(page-sampling mode, the default), or from the dirty bitmap or the per-vCPU dirty rings -- and reports
``dirty-rate`` = changed pages x page size / 2**20 / window, in whole MiB/s. A page written many times
in the window counts once, so the rate falls as the window grows.

A uniform random writer issuing r writes/s over W pages touches, in T seconds, on average
D(r) = W (1 - exp(-r T / W)) distinct pages; the hot/cold pattern is two such writers (the hot share
of r on the hot pages, the rest on the cold ones). `writes_for_distinct` inverts this: the total
write rate that dirties a requested number of distinct pages per window. No writer can dirty more
distinct pages in a window than its working set holds, which is refused.

Report formats read by `read_dirty_rate_file` (each strictly, with bounds):
- QEMU ``query-dirty-rate`` (QMP JSON, the ``return`` object or the whole reply): ``dirty-rate``
  (MiB/s), ``status`` (must be ``measured``), ``calc-time`` with ``calc-time-unit`` (second,
  millisecond; absent = second), ``sample-pages``, ``mode``, ``vcpu-dirty-rate`` ([{id, dirty-rate}]).
- libvirt ``virsh domstats --dirtyrate`` text (one domain): ``dirtyrate.calc_status`` (2 = measured),
  ``dirtyrate.calc_period`` (s), ``dirtyrate.megabytes_per_second`` (MiB/s), ``dirtyrate.calc_mode``,
  ``dirtyrate.vcpu.N.megabytes_per_second``.
- KubeVirt's Prometheus metric ``kubevirt_vmi_dirty_rate_bytes_per_second`` (one sample, in the
  text exposition format): libvirt's megabytes_per_second x 1024 x 1024 (KubeVirt's
  pkg/monitoring/metrics/virt-handler/vmstats collector). The metric carries no window: it is
  ``workload.dirty_rate_window`` (default 1 s, QEMU's default calc-time).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .units import UnitError, parse_bandwidth, read_number, shorten

__all__ = ["DirtyRateError", "Measured", "parse_dirty_rate", "distinct_pages", "writes_for_distinct",
           "read_dirty_rate_file", "parse_report", "DirtyRateMeter", "MIB", "MAX_REPORT_BYTES"]

MIB = 1 << 20
MAX_REPORT_BYTES = 1 << 20          # a report is a few hundred bytes; a dirty-ring one lists every vCPU
MAX_REPORT_MIB_S = 1 << 30          # 1 PiB/s: beyond any memory bus
MAX_CALC_TIME_S = 3600              # QEMU's MAX_FETCH_DIRTYRATE_TIME_SEC is 60 s; an hour is generous
MAX_VCPUS = 1 << 16


class DirtyRateError(ValueError):
    """A dirty rate or a dirty-rate report that cannot be used; its str is one line."""


@dataclass(frozen=True)
class Measured:
    """A dirty rate read from a report: ``bytes_per_s`` of distinct pages over ``window_s`` seconds
    (None when the report has no window), and where it came from (``source``, for messages)."""
    bytes_per_s: float
    window_s: Optional[float]
    source: str


_PAGES = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKMG]?)\s*pages?\s*/\s*s\s*$")
_PAGE_PREFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_dirty_rate(value: object, page_size: int) -> float:
    """A whole-VM dirty rate as bytes per second: a bandwidth ('2GB/s', '500MiB/s', '8Gbit/s') or
    pages per second ('100000pages/s', '25k pages/s', of ``page_size`` bytes). Raises UnitError."""
    if isinstance(value, str):
        m = _PAGES.fullmatch(value)
        if m:
            try:
                pages = float(read_number(m.group(1))) * _PAGE_PREFIX[m.group(2)]
            except (UnitError, OverflowError):
                raise UnitError(f"cannot read '{shorten(value)}' as a dirty rate: the number is out of range") \
                    from None
            return pages * page_size
    try:
        return parse_bandwidth(value)
    except UnitError as exc:
        text = str(exc).replace("as a bandwidth", "as a dirty rate")
        if "unknown unit" in text or "needs a unit" in text:
            text += " or pages/s (e.g. 2GB/s, 500MiB/s, 100000pages/s)"
        raise UnitError(text) from None


def distinct_pages(writes: float, pages: float) -> float:
    """Expected distinct pages hit by ``writes`` uniform random writes over ``pages`` pages."""
    if pages <= 0:
        return 0.0
    return pages * -math.expm1(-writes / pages)


def _distinct(total_writes: float, hot: float, cold: float, share: float) -> float:
    return distinct_pages(total_writes * share, hot) + distinct_pages(total_writes * (1 - share), cold)


def writes_for_distinct(distinct: float, pages: int, hot_pages: int = 0, hot_share: float = 0.0) -> float:
    """Writes (in one window) that dirty ``distinct`` distinct pages on average: uniform over
    ``pages``, or with ``hot_share`` of them on the first ``hot_pages`` and the rest on the others.
    Raises DirtyRateError (the reachable maximum in its message) when ``distinct`` cannot be
    reached. ``distinct`` of 0 is 0 writes."""
    if distinct <= 0:
        return 0.0
    if hot_pages <= 0 or hot_share <= 0:
        if distinct >= pages:
            raise DirtyRateError(f"{pages}")
        return -pages * math.log1p(-distinct / pages)
    hot = min(hot_pages, pages)
    cold = pages - hot
    share = 1.0 if cold == 0 else min(hot_share, 1.0)
    reach = (hot if share > 0 else 0) + (cold if share < 1 else 0)
    if distinct >= reach:
        raise DirtyRateError(f"{reach}")
    lo, hi = 0.0, 1.0
    while _distinct(hi, hot, cold, share) < distinct:
        hi *= 2
        if hi > 1e30:
            raise DirtyRateError(f"{reach}")
    for _ in range(200):
        mid = (lo + hi) / 2
        if _distinct(mid, hot, cold, share) < distinct:
            lo = mid
        else:
            hi = mid
        if hi - lo <= hi * 1e-15:
            break
    return hi


# ---------------------------------------------------------------------------------------------
# reports

def read_dirty_rate_file(path: str) -> Measured:
    """Read a dirty-rate report (any of the formats in the module's docstring) from ``path``.
    Raises DirtyRateError naming the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise DirtyRateError(f"cannot open '{path}': {exc.strerror or exc}") from None
    if len(data) > MAX_REPORT_BYTES:
        raise DirtyRateError(f"'{path}' is more than the {MAX_REPORT_BYTES} bytes a dirty-rate report may have")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DirtyRateError(f"'{path}' is not UTF-8 text (byte {exc.start})") from None
    return parse_report(text, os.path.basename(path))


def parse_report(text: str, name: str = "<report>") -> Measured:
    """The dirty rate in the report ``text``: QMP JSON, virsh domstats text or a Prometheus sample
    of KubeVirt's metric. Raises DirtyRateError."""
    stripped = text.strip()
    if not stripped:
        raise DirtyRateError(f"{name}: empty dirty-rate report")
    if stripped.startswith("{"):
        return _qmp(stripped, name)
    if "dirtyrate." in stripped:
        return _domstats(stripped, name)
    if "kubevirt_vmi_dirty_rate_bytes_per_second" in stripped:
        return _prometheus(stripped, name)
    raise DirtyRateError(f"{name}: not a dirty-rate report: expected QEMU's query-dirty-rate JSON, "
                         "'virsh domstats --dirtyrate' output or KubeVirt's "
                         "kubevirt_vmi_dirty_rate_bytes_per_second metric")


def _whole(value, name, key, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise DirtyRateError(f"{name}: '{key}' must be a whole number, got {shorten(json.dumps(value))}")
    if not lo <= value <= hi:
        raise DirtyRateError(f"{name}: '{key}' must be in [{lo}, {hi}], got {value}")
    return value


def _qmp(text, name):
    try:
        doc = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError) as exc:
        raise DirtyRateError(f"{name}: not valid JSON ({shorten(str(exc))})") from None
    if isinstance(doc, dict) and set(doc) >= {"return"}:
        doc = doc["return"]
    if not isinstance(doc, dict):
        raise DirtyRateError(f"{name}: expected a query-dirty-rate object")
    known = {"dirty-rate", "status", "start-time", "calc-time", "calc-time-unit", "sample-pages", "mode",
             "vcpu-dirty-rate"}
    extra = sorted(set(doc) - known)
    if extra:
        raise DirtyRateError(f"{name}: unknown key '{extra[0]}' in a query-dirty-rate reply (expected "
                             f"{', '.join(sorted(known))})")
    status = doc.get("status")
    if status != "measured":
        raise DirtyRateError(f"{name}: status is {json.dumps(status)}, not \"measured\": the measurement has "
                             "not finished (query-dirty-rate again after calc-time)")
    if "dirty-rate" not in doc:
        raise DirtyRateError(f"{name}: no 'dirty-rate' in a measured query-dirty-rate reply")
    rate = _whole(doc["dirty-rate"], name, "dirty-rate", 0, MAX_REPORT_MIB_S)
    unit = doc.get("calc-time-unit", "second")
    if unit not in ("second", "millisecond"):
        raise DirtyRateError(f"{name}: 'calc-time-unit' must be \"second\" or \"millisecond\", got "
                             f"{shorten(json.dumps(unit))}")
    scale = 1.0 if unit == "second" else 1e-3
    if "calc-time" not in doc:
        raise DirtyRateError(f"{name}: no 'calc-time' in the query-dirty-rate reply")
    calc = _whole(doc["calc-time"], name, "calc-time", 1, int(MAX_CALC_TIME_S / scale))
    mode = doc.get("mode", "page-sampling")
    if mode not in ("page-sampling", "dirty-ring", "dirty-bitmap"):
        raise DirtyRateError(f"{name}: unknown 'mode' {shorten(json.dumps(mode))} (expected page-sampling, "
                             "dirty-ring or dirty-bitmap)")
    if "sample-pages" in doc:
        _whole(doc["sample-pages"], name, "sample-pages", 0, 1 << 32)
    if "start-time" in doc:
        _whole(doc["start-time"], name, "start-time", 0, 1 << 62)
    if "vcpu-dirty-rate" in doc:
        vcpus = doc["vcpu-dirty-rate"]
        if not isinstance(vcpus, list) or len(vcpus) > MAX_VCPUS:
            raise DirtyRateError(f"{name}: 'vcpu-dirty-rate' must be a list of at most {MAX_VCPUS} entries")
        for i, v in enumerate(vcpus):
            if not isinstance(v, dict) or set(v) != {"id", "dirty-rate"}:
                raise DirtyRateError(f"{name}: vcpu-dirty-rate[{i}] must be {{\"id\": N, \"dirty-rate\": MiB/s}}")
            _whole(v["id"], name, f"vcpu-dirty-rate[{i}].id", 0, MAX_VCPUS)
            _whole(v["dirty-rate"], name, f"vcpu-dirty-rate[{i}].dirty-rate", 0, MAX_REPORT_MIB_S)
    return Measured(rate * MIB, calc * scale, f"{name} (query-dirty-rate, {mode})")


_STAT = re.compile(r"([A-Za-z0-9_.]+)=(\S*)")


def _domstats(text, name):
    values: dict[str, str] = {}
    domains = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("Domain:"):
            domains += 1
            if domains > 1:
                raise DirtyRateError(f"{name}: line {lineno}: more than one domain: give the report of one VM "
                                     "(virsh domstats --dirtyrate DOMAIN)")
            continue
        m = _STAT.fullmatch(line)
        if m is None:
            raise DirtyRateError(f"{name}: line {lineno}: expected 'key=value', got '{shorten(line)}'")
        key = m.group(1)
        if not key.startswith("dirtyrate."):
            continue  # other stats groups of the same domain
        if key in values:
            raise DirtyRateError(f"{name}: line {lineno}: '{key}' is given twice")
        values[key] = m.group(2)

    def integer(key, lo, hi):
        if key not in values:
            raise DirtyRateError(f"{name}: no '{key}' in the domstats report")
        if not re.fullmatch(r"\d{1,20}", values[key]):
            raise DirtyRateError(f"{name}: '{key}' must be a whole number, got '{shorten(values[key])}'")
        v = int(values[key])
        if not lo <= v <= hi:
            raise DirtyRateError(f"{name}: '{key}' must be in [{lo}, {hi}], got {v}")
        return v

    status = integer("dirtyrate.calc_status", 0, 2)
    if status != 2:
        raise DirtyRateError(f"{name}: dirtyrate.calc_status is {status}, not 2 (measured): the measurement "
                             "has not finished (virsh domdirtyrate-calc, then domstats after its period)")
    rate = integer("dirtyrate.megabytes_per_second", 0, MAX_REPORT_MIB_S)
    period = integer("dirtyrate.calc_period", 1, MAX_CALC_TIME_S)
    mode = values.get("dirtyrate.calc_mode", "page-sampling")
    if mode not in ("page-sampling", "dirty-ring", "dirty-bitmap"):
        raise DirtyRateError(f"{name}: unknown dirtyrate.calc_mode '{shorten(mode)}'")
    for key in values:
        if key.startswith("dirtyrate.vcpu."):
            if not re.fullmatch(r"dirtyrate\.vcpu\.\d{1,5}\.megabytes_per_second", key):
                raise DirtyRateError(f"{name}: unknown key '{shorten(key)}'")
            integer(key, 0, MAX_REPORT_MIB_S)
        elif key not in ("dirtyrate.calc_status", "dirtyrate.calc_start_time", "dirtyrate.calc_period",
                         "dirtyrate.megabytes_per_second", "dirtyrate.calc_mode"):
            raise DirtyRateError(f"{name}: unknown key '{shorten(key)}'")
    return Measured(rate * MIB, float(period), f"{name} (virsh domstats, {mode})")


_SAMPLE = re.compile(r"kubevirt_vmi_dirty_rate_bytes_per_second(\{[^}]*\})?\s+(\S+)(?:\s+-?\d+)?")


def _prometheus(text, name):
    samples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("kubevirt_vmi_dirty_rate_bytes_per_second"):
            continue  # other metrics of the same scrape
        m = _SAMPLE.fullmatch(line)
        if m is None:
            raise DirtyRateError(f"{name}: line {lineno}: malformed sample '{shorten(line)}'")
        samples.append((lineno, m.group(1) or "", m.group(2)))
    if len(samples) != 1:
        raise DirtyRateError(f"{name}: {len(samples)} kubevirt_vmi_dirty_rate_bytes_per_second samples: give "
                             "the sample of one VMI")
    lineno, labels, value = samples[0]
    try:
        v = float(read_number(value))
    except UnitError:
        raise DirtyRateError(f"{name}: line {lineno}: the value '{shorten(value)}' is not a finite number") \
            from None
    if not 0 <= v <= MAX_REPORT_MIB_S * MIB:
        raise DirtyRateError(f"{name}: line {lineno}: the dirty rate must be in [0, {MAX_REPORT_MIB_S * MIB}] "
                             f"bytes/s, got {value}")
    return Measured(v, None, f"{name} (kubevirt_vmi_dirty_rate_bytes_per_second{labels})")


# ---------------------------------------------------------------------------------------------
# the meter

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
EXACT_PAGES = 1 << 16     # working sets up to this many pages are measured exactly
FIRST_WINDOWS = 3         # windows 0, 1, 2 are always measured...
EVERY = 8                 # ...then one window in EVERY: QEMU measures one window on demand; this bounds the cost
BUFFER = 1 << 20          # writes held before they are sampled and deduplicated


class DirtyRateMeter:
    """Distinct pages written per window of ``window`` cycles of simulated time, counted from the
    batches of writes the CPUs apply (``add(frames, t)``: the batch ending at cycle ``t`` belongs to
    the window holding ``t``; writes before time 0, the warm-up, are not counted).

    Like QEMU's page-sampling mode it counts a fixed sample of the pages: those whose hashed frame
    number falls in 1 of ``stride`` buckets, ``stride`` the smallest power of two that keeps the
    sampled working set within EXACT_PAGES pages (1, an exact count, for working sets up to that);
    the distinct count is the sampled count x stride. To bound its cost it measures windows 0 to
    FIRST_WINDOWS - 1 and then one in EVERY (`measured`); a batch of another window costs two
    integer operations. ``finish`` returns the counts of the complete measured windows.
    """

    def __init__(self, window_cycles: int, working_set_pages: int):
        self.window = int(window_cycles)
        self.stride = 1 << max(0, math.ceil(math.log2(max(1, working_set_pages) / EXACT_PAGES)))
        self.counts: dict[int, int] = {}     # measured window -> distinct pages
        self._k = -1                         # the window being filled (-1: none yet)
        self._end = 0                        # its last cycle
        self._on = False                     # whether it is measured
        self._buf = None
        self._fill = 0
        self._kept = np.empty(0, dtype=np.int64)

    @staticmethod
    def measured(k):
        """Whether window ``k`` is measured."""
        return k < FIRST_WINDOWS or k % EVERY == 0

    def _sample(self, frames):
        if self.stride == 1:
            return frames
        # (frame x golden) >> 40 in one bucket of ``stride`` (a power of two: the mask is the modulo), in
        # place on one temporary
        h = frames.astype(np.uint64)
        h *= _GOLDEN
        h >>= np.uint64(40)
        h &= np.uint64(self.stride - 1)
        return frames[h == 0]

    def _compact(self):
        if self._fill:
            fresh = np.unique(self._sample(self._buf[:self._fill]))
            self._kept = np.union1d(self._kept, fresh) if len(self._kept) else fresh
            self._fill = 0

    def add(self, frames, t):
        if t > self._end:
            self._enter((t - 1) // self.window)
        if not self._on:
            return
        n = len(frames)
        if self._buf is None or self._fill + n > len(self._buf):
            self._compact()
            if self._buf is None or n > len(self._buf):
                self._buf = np.empty(max(BUFFER, n), dtype=np.int64)
        self._buf[self._fill:self._fill + n] = frames
        self._fill += n

    def _enter(self, k):
        """Close the window being filled and start window ``k`` (those between had no writes)."""
        if self._on:
            self._compact()
            self.counts[self._k] = len(self._kept) * self.stride
        self._k, self._end, self._on = k, (k + 1) * self.window, self.measured(k)
        self._fill = 0
        self._kept = np.empty(0, dtype=np.int64)

    def finish(self, end):
        """The distinct pages of each complete measured window, in order, up to cycle ``end`` (the
        guest's last running instant; the window holding it is incomplete and dropped)."""
        last = end // self.window            # windows 0 .. last - 1 are complete
        if 0 <= self._k < last:
            self._enter(last)
        return [self.counts.get(j, 0) for j in range(last) if self.measured(j)]
