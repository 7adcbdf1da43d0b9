"""ctypes bindings of ``_ext/live/pagesync_live.c`` (built into pagesync_model/_pagesync_live*.so)."""
import ctypes
import errno
import glob
from pathlib import Path

import numpy as np

from .errors import LiveError

_c_u64p = ctypes.POINTER(ctypes.c_uint64)
_lib = None


def lib():
    global _lib
    if _lib is None:
        found = sorted(glob.glob(str(Path(__file__).resolve().parent.parent / "_pagesync_live*.so")))
        if not found:
            raise LiveError("the live mirror library is not built (no pagesync_model/_pagesync_live*.so): run "
                            "'python setup.py build_ext --inplace' or reinstall the package")
        L = ctypes.CDLL(found[0], use_errno=True)
        L.psl_scan.restype = ctypes.c_long
        L.psl_scan.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                               ctypes.c_long, ctypes.c_void_p, ctypes.POINTER(ctypes.c_long), _c_u64p,
                               ctypes.c_uint64]
        L.psl_send.restype = ctypes.c_long
        L.psl_send.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                               ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p]
        L.psl_hash_local.restype = None
        L.psl_hash_local.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_uint64,
                                     ctypes.c_void_p]
        L.psl_hash_remote.restype = ctypes.c_long
        L.psl_hash_remote.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                                      ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64]
        L.psl_scatter.restype = ctypes.c_long
        L.psl_scatter.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_long,
                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_int,
                                  ctypes.c_uint64]
        _lib = L
    return _lib


def ptr(a):
    """Address of a numpy array's data (or a writable buffer's)."""
    if isinstance(a, np.ndarray):
        return a.ctypes.data
    return ctypes.addressof(ctypes.c_char.from_buffer(a))


class OsErr(Exception):
    """A negative errno returned by the C code."""

    def __init__(self, err, where):
        super().__init__(err, where)
        self.errno = err
        self.where = where


def scan(fd, maps, mode, map_err, page_size, cap=1 << 16):
    """PAGEMAP_SCAN over ``maps`` (uint64 [n, 2]): mode 0 = written pages, re-armed (unregistered
    mappings in full, flagged in ``map_err``), mode 1 = present pages.  Returns uint64 [k, 2] ranges."""
    L = lib()
    n = len(maps)
    maps = np.ascontiguousarray(maps, dtype=np.uint64)
    parts = []
    mi = ctypes.c_long(0)
    pos = ctypes.c_uint64(0)
    while mi.value < n:
        out = np.empty((cap, 3), dtype=np.uint64)
        got = L.psl_scan(fd, ptr(maps), n, mode, ptr(out), cap, ptr(map_err), ctypes.byref(mi), ctypes.byref(pos),
                         page_size)
        if got < 0:
            raise OsErr(-got, "PAGEMAP_SCAN")
        parts.append(out[:got, :2])
        cap = min(cap * 4, 1 << 22)
    if not parts:
        return np.empty((0, 2), dtype=np.uint64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Sender:
    """process_vm_readv -> fd, with a reusable buffer and cumulative statistics."""

    BUF = 4 << 20
    MAX_IOV = 1024  # as in the C code: struct send_state is 6 + 2 * MAX_IOV words

    def __init__(self, page_size):
        self.page_size = page_size
        self.buf = np.empty(self.BUF, dtype=np.uint8)
        self.stats = np.zeros(6, dtype=np.uint64)  # bytes, records, ranges, unreadable pages, read ns, write ns
        self.state = np.zeros(6 + 2 * self.MAX_IOV, dtype=np.uint64)

    def send(self, pid, fd, ranges, deadline_ns=0):
        """Send ``ranges`` of ``pid``'s memory to ``fd``; ``deadline_ns`` (CLOCK_MONOTONIC, 0 = none):
        OsErr(ETIMEDOUT) past it.  A signal returns from C (EINTR) so that the interpreter runs its
        handler, which may raise; if it does not, the send resumes where it stopped."""
        r = np.zeros((len(ranges), 3), dtype=np.uint64)
        r[:, :2] = ranges
        self.state[:] = 0
        while True:
            rc = lib().psl_send(pid, fd, ptr(r), len(r), ptr(self.buf), self.BUF, self.page_size, ptr(self.stats),
                                deadline_ns, ptr(self.state))
            if rc != -errno.EINTR:
                break
        if rc < 0:
            raise OsErr(-rc, "send")

    def hash_remote(self, pid, ranges, npages, deadline_ns=0):
        r = np.zeros((len(ranges), 3), dtype=np.uint64)
        r[:, :2] = ranges
        out = np.empty(npages, dtype=np.uint64)
        got = lib().psl_hash_remote(pid, ptr(r), len(r), ptr(self.buf), self.BUF, self.page_size, ptr(out),
                                    deadline_ns)
        if got < 0:
            raise OsErr(-got, "process_vm_readv")
        return out[:got]


def hash_local(base_addr, idx, page_size):
    idx = np.ascontiguousarray(idx, dtype=np.uint64)
    out = np.empty(len(idx), dtype=np.uint64)
    lib().psl_hash_local(base_addr, ptr(idx), len(idx), page_size, ptr(out))
    return out
