"""The pagesync write-trace file: which pages a program wrote in each interval (.npz, compressed).

Arrays (all required unless marked optional):

  ``format``      str scalar ``"pagesync-trace"``
  ``version``     int scalar, ``FORMAT_VERSION``
  ``offsets``     uint64 [n_intervals + 1]; interval k's pages are ``pages[offsets[k]:offsets[k+1]]``;
                  ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == len(pages)``
  ``pages``       uint32 [n_writes]; dense page indices, strictly increasing within an interval
  ``page_vpn``    uint64 [n_distinct]; dense index -> virtual page number (address // page_size),
                  strictly increasing
  ``t_end``       uint64 [n_intervals]; end time of each interval, strictly increasing, in
                  ``time_unit`` since the start of recording (interval 0 starts at 0)
  ``time_unit``   str scalar, ``"ns"``
  ``page_size``   uint64 scalar, a power of two (bytes)
  ``metadata``    str scalar, a JSON object: command, interval, kernel release, recorder version,
                  date, what was recorded and how, limits (free-form beyond that)
  ``scan_ns``     optional uint64 [n_intervals]; time the recorder spent scanning at each boundary

A page appears in an interval when it was written at least once during that interval; how many
times it was written is not known.  Reading validates everything above and raises ``TraceError``
with one line naming the file and the first problem.

A trace may come from anywhere, so reading checks the archive before it inflates anything: only a
regular file, each member's .npy header (dtype, number of dimensions, and that its shape fills
exactly the member's declared size), the sizes summed against MAX_TRACE_BYTES, and a member that
inflates more than BOMB_RATIO times is refused as a zip bomb.  An array is only then materialised,
and inflating never yields more than the size declared (zipfile stops there and checks the CRC).
"""
from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..units import format_bytes

FORMAT_NAME = "pagesync-trace"
FORMAT_VERSION = 1
TIME_UNIT = "ns"

# dtypes of the stored arrays; replay code may rely on them
OFFSET_DTYPE = np.uint64
PAGE_DTYPE = np.uint32
VPN_DTYPE = np.uint64
TIME_DTYPE = np.uint64

_REQUIRED = ("format", "version", "offsets", "pages", "page_vpn", "t_end", "time_unit",
             "page_size", "metadata")
_OPTIONAL = ("scan_ns",)

# member -> (dtype it must have, or the dtype kinds it may have; number of dimensions)
_LAYOUT = {
    "format": ("U", 0), "version": ("iu", 0), "time_unit": ("U", 0), "page_size": ("iu", 0),
    "metadata": ("U", 0), "offsets": (OFFSET_DTYPE, 1), "pages": (PAGE_DTYPE, 1),
    "page_vpn": (VPN_DTYPE, 1), "t_end": (TIME_DTYPE, 1), "scan_ns": (TIME_DTYPE, 1),
}
# The recorder's traces are a few MiB; 4 GiB inflated is a billion page writes and leaves most of
# a 24 GiB machine free.  Recorded arrays deflate 3-6 times; 200 times is a bomb, not a trace,
# once it is large enough to matter.
MAX_TRACE_BYTES = 4 << 30
BOMB_RATIO = 200
BOMB_MIN_BYTES = 64 << 20
MAX_MEMBERS = 64


class TraceError(Exception):
    """A trace cannot be read, written or recorded.  ``str()`` is always one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class Trace:
    """Pages written per interval.

    ``offsets``, ``pages``, ``page_vpn``, ``t_end_ns`` and ``page_size`` are as in the module
    docstring; ``metadata`` is the decoded JSON object; ``scan_ns`` is optional.
    """

    offsets: np.ndarray
    pages: np.ndarray
    page_vpn: np.ndarray
    t_end_ns: np.ndarray
    page_size: int
    metadata: dict = field(default_factory=dict)
    scan_ns: np.ndarray | None = None

    @property
    def n_intervals(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_distinct(self) -> int:
        return len(self.page_vpn)

    @property
    def counts(self) -> np.ndarray:
        """Pages written in each interval (int64 [n_intervals])."""
        return np.diff(self.offsets.astype(np.int64))

    def interval(self, k: int) -> np.ndarray:
        """Dense page indices written in interval ``k`` (a view, uint32)."""
        return self.pages[int(self.offsets[k]):int(self.offsets[k + 1])]

    def interval_vpns(self, k: int) -> np.ndarray:
        """Virtual page numbers written in interval ``k``."""
        return self.page_vpn[self.interval(k)]

    def interval_of_write(self) -> np.ndarray:
        """For each entry of ``pages``, the interval it belongs to (int64 [n_writes])."""
        return np.repeat(np.arange(self.n_intervals, dtype=np.int64), self.counts)

    @classmethod
    def from_vpn_sets(cls, sets, t_end_ns, page_size: int = 4096, metadata: dict | None = None,
                      scan_ns=None) -> "Trace":
        """Build a trace from one iterable of virtual page numbers per interval.

        ``sets``: per-interval page numbers (duplicates inside an interval are merged);
        ``t_end_ns``: interval end times.  Raises TraceError if the result is inconsistent.
        """
        per = [np.unique(np.asarray(list(s) if not isinstance(s, np.ndarray) else s,
                                    dtype=np.uint64)) for s in sets]
        counts = np.array([len(p) for p in per], dtype=np.uint64)
        offsets = np.zeros(len(per) + 1, dtype=OFFSET_DTYPE)
        np.cumsum(counts, out=offsets[1:])
        flat = np.concatenate(per) if per else np.zeros(0, dtype=np.uint64)
        page_vpn, dense = np.unique(flat, return_inverse=True)
        trace = cls(offsets=offsets, pages=dense.astype(PAGE_DTYPE).reshape(-1),
                    page_vpn=page_vpn.astype(VPN_DTYPE),
                    t_end_ns=np.asarray(t_end_ns, dtype=TIME_DTYPE), page_size=int(page_size),
                    metadata=dict(metadata or {}),
                    scan_ns=None if scan_ns is None else np.asarray(scan_ns, dtype=TIME_DTYPE))
        validate(trace)
        return trace


def validate(trace: Trace, name: str = "trace") -> None:
    """Check every invariant of the format; raise TraceError naming ``name`` and the first problem."""
    def bad(msg: str):
        raise TraceError(f"{name}: inconsistent trace: {msg}")

    off, pages, vpn, t_end = trace.offsets, trace.pages, trace.page_vpn, trace.t_end_ns
    for label, arr, dt in (("offsets", off, OFFSET_DTYPE), ("pages", pages, PAGE_DTYPE),
                           ("page_vpn", vpn, VPN_DTYPE), ("t_end", t_end, TIME_DTYPE)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            bad(f"'{label}' must be a one-dimensional array")
        if arr.dtype != dt:
            bad(f"'{label}' has dtype {arr.dtype}, expected {np.dtype(dt)}")
    if len(off) < 1:
        bad("'offsets' is empty (it needs n_intervals + 1 entries)")
    if off[0] != 0:
        bad(f"offsets[0] is {int(off[0])}, expected 0")
    d = np.diff(off.astype(np.int64))
    if np.any(d < 0):
        k = int(np.argmax(d < 0))
        bad(f"offsets not monotone at interval {k} ({int(off[k])} > {int(off[k + 1])})")
    if int(off[-1]) != len(pages):
        bad(f"offsets[-1] is {int(off[-1])} but there are {len(pages)} page entries")
    if len(t_end) != len(off) - 1:
        bad(f"{len(t_end)} end times for {len(off) - 1} intervals")
    if len(t_end) and np.any(np.diff(t_end.astype(np.int64)) <= 0):
        k = int(np.argmax(np.diff(t_end.astype(np.int64)) <= 0))
        bad(f"interval end times not increasing at interval {k + 1}")
    if len(pages) and int(pages.max()) >= len(vpn):
        bad(f"page index {int(pages.max())} out of range (only {len(vpn)} pages in page_vpn)")
    if len(vpn) > 1 and np.any(np.diff(vpn.astype(np.int64)) <= 0):
        bad("page_vpn is not strictly increasing")
    if len(pages) > 1:
        step = np.diff(pages.astype(np.int64))
        # within an interval indices strictly increase; a boundary may go down
        boundary = np.zeros(len(pages) - 1, dtype=bool)
        inner = off[1:-1].astype(np.int64) - 1
        inner = inner[(inner >= 0) & (inner < len(pages) - 1)]
        boundary[inner] = True
        if np.any((step <= 0) & ~boundary):
            i = int(np.argmax((step <= 0) & ~boundary))
            k = int(np.searchsorted(off.astype(np.int64), i, side="right") - 1)
            bad(f"page indices of interval {k} are not strictly increasing (duplicate or unsorted)")
    ps = int(trace.page_size)
    if ps <= 0 or ps & (ps - 1):
        bad(f"page_size {ps} is not a power of two")
    if not isinstance(trace.metadata, dict):
        bad("metadata is not a JSON object")
    if trace.scan_ns is not None and (trace.scan_ns.ndim != 1 or len(trace.scan_ns) != len(t_end)):
        bad(f"'scan_ns' has {trace.scan_ns.shape} entries for {len(t_end)} intervals")


def write_trace(path, trace: Trace) -> None:
    """Validate ``trace`` and write it to ``path`` (a compressed .npz).  Raises TraceError."""
    path = Path(path)
    validate(trace, str(path))
    arrays = dict(
        format=np.array(FORMAT_NAME), version=np.array(FORMAT_VERSION, dtype=np.int64),
        offsets=trace.offsets, pages=trace.pages, page_vpn=trace.page_vpn, t_end=trace.t_end_ns,
        time_unit=np.array(TIME_UNIT), page_size=np.array(trace.page_size, dtype=np.uint64),
        metadata=np.array(json.dumps(trace.metadata, sort_keys=True, default=str)),
    )
    if trace.scan_ns is not None:
        arrays["scan_ns"] = np.asarray(trace.scan_ns, dtype=TIME_DTYPE)
    try:
        # np.savez_compressed appends ".npz" to names without it; write through a file object so
        # the file lands exactly at ``path``
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
    except OSError as e:
        raise TraceError(f"{path}: cannot write trace: {e.strerror or e}") from e


def _read_npy_header(fp):
    """(shape, dtype, header bytes) of the .npy stream ``fp``; raises ValueError."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    return shape, dtype, fp.tell()


def check_archive(path) -> None:
    """Check the trace file at ``path`` without inflating any array: a regular file holding a zip
    of at most MAX_MEMBERS members, each trace member's .npy header of the dtype and number of
    dimensions the format says and a shape that fills exactly its declared size, the sizes within
    MAX_TRACE_BYTES, and no member inflating more than BOMB_RATIO times (past BOMB_MIN_BYTES).
    Raises TraceError; lets OSError and zipfile.BadZipFile through for the caller to word."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise TraceError(f"{path}: not a pagesync trace (not a regular file)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(6)
        if head == b"\x93NUMPY":
            raise TraceError(f"{path}: not a pagesync trace (a bare .npy array, not an .npz)")
        if head.startswith(b"PK"):
            raise TraceError(f"{path}: truncated or corrupt trace file (its zip directory is missing)")
        raise TraceError(f"{path}: not a pagesync trace (not an .npz archive)")
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise TraceError(f"{path}: not a pagesync trace ({len(members)} members in the archive)")
        wanted = {f"{name}.npy": name for name in _LAYOUT}
        total = 0
        for m in members:
            name = wanted.get(m.filename)
            if name is None:
                continue
            total += m.file_size
            if total > MAX_TRACE_BYTES:
                raise TraceError(f"{path}: the trace inflates to more than {format_bytes(MAX_TRACE_BYTES)} "
                                 f"(at '{name}'), more than a trace may hold")
            if m.file_size > BOMB_MIN_BYTES and m.file_size > BOMB_RATIO * max(1, m.compress_size):
                raise TraceError(f"{path}: '{name}' inflates {m.file_size // max(1, m.compress_size)} times "
                                 f"({m.compress_size} to {m.file_size} bytes): a zip bomb, not a trace")
            with zf.open(m) as fp:
                shape, dtype, head_bytes = _read_npy_header(fp)
            want, ndim = _LAYOUT[name]
            if dtype.hasobject or (dtype.kind not in want if isinstance(want, str) else dtype != want):
                expected = f"kind {want!r}" if isinstance(want, str) else str(np.dtype(want))
                raise TraceError(f"{path}: inconsistent trace: '{name}' has dtype {dtype}, expected {expected}")
            if len(shape) != ndim:
                raise TraceError(f"{path}: inconsistent trace: '{name}' has shape {shape}, expected "
                                 f"{'a scalar' if ndim == 0 else 'a one-dimensional array'}")
            need = math.prod(shape) * dtype.itemsize
            if head_bytes + need != m.file_size:
                raise TraceError(f"{path}: inconsistent trace: '{name}' declares shape {shape} of {dtype} "
                                 f"({need} bytes) in a member of {m.file_size - head_bytes} bytes of data")


def read_trace(path) -> Trace:
    """Read and validate a trace written by ``write_trace``; the archive passes `check_archive`
    before any array in it is read.

    Raises TraceError (one line) if the file is missing, truncated, not a pagesync trace, of an
    unsupported version, too large, a zip bomb, or inconsistent.
    """
    path = Path(path)
    try:
        check_archive(path)
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise TraceError(f"{path}: not a pagesync trace (a bare .npy array, not an .npz)")
            names = set(z.files)
            if "format" not in names or str(z["format"][()]) != FORMAT_NAME:
                raise TraceError(f"{path}: not a pagesync trace (no 'format' = '{FORMAT_NAME}')")
            missing = [n for n in _REQUIRED if n not in names]
            if missing:
                raise TraceError(f"{path}: not a complete pagesync trace: missing {', '.join(missing)}")
            version = int(z["version"][()])
            if version != FORMAT_VERSION:
                raise TraceError(f"{path}: trace format version {version} is not supported "
                                 f"(this reader knows version {FORMAT_VERSION})")
            unit = str(z["time_unit"][()])
            if unit != TIME_UNIT:
                raise TraceError(f"{path}: time unit '{unit}' is not supported (expected 'ns')")
            data = {n: z[n] for n in _REQUIRED + _OPTIONAL if n in names}
    except TraceError:
        raise
    except FileNotFoundError as e:
        raise TraceError(f"{path}: no such file") from e
    except (zipfile.BadZipFile, EOFError) as e:
        raise TraceError(f"{path}: truncated or corrupt trace file ({e})") from e
    except MemoryError:
        raise TraceError(f"{path}: not enough memory to load the trace") from None
    except (ValueError, OSError, KeyError, TypeError, NotImplementedError) as e:
        raise TraceError(f"{path}: not a readable pagesync trace ({e})") from e
    try:
        meta = json.loads(str(data["metadata"][()]))
    except ValueError as e:
        raise TraceError(f"{path}: inconsistent trace: metadata is not valid JSON ({e})") from e
    scalar_ps = data["page_size"]
    if scalar_ps.ndim != 0:
        raise TraceError(f"{path}: inconsistent trace: 'page_size' is not a scalar")
    trace = Trace(offsets=data["offsets"], pages=data["pages"], page_vpn=data["page_vpn"],
                  t_end_ns=data["t_end"], page_size=int(scalar_ps[()]), metadata=meta,
                  scan_ns=data.get("scan_ns"))
    validate(trace, str(path))
    return trace
