"""The mirror stream and the partner's image.

A stream is a sequence of records, each a 16-byte header ``(u32 type, u32 count, u64 arg)`` in
native byte order followed by a payload:

  HELLO   count = length of a JSON object that follows, arg = page size
  PAGES   count ranges: count x (u64 address, u64 length), then arg bytes of page data, the ranges'
          contents concatenated (written by the C sender, one record per buffer of up to 4 MiB)
  DROP    count ranges (address, length): pages the target no longer has (unmapped, MADV_DONTNEED,
          or the zero page): the mirror forgets them
  PASS    end of pass ``count``; over TCP the receiver answers ACK when everything before it is in
          its image, so a pass's time includes the transfer
  VERIFY  the receiver answers with the address and checksum of every page of its image
  END     the last record; the receiver writes its image (``--out``) and answers ACK

A file written by ``live mirror --to FILE`` is such a stream (nobody answers); ``live receive
--out FILE`` writes the final image as a stream too (HELLO, PAGES, END), readable by ``load``.
"""
import errno
import json
import mmap
import os
import select
import socket
import struct
import time

import numpy as np

from . import _lib
from .errors import LiveError

HDR = struct.Struct("=IIQ")
HELLO, PAGES, DROP, PASS, VERIFY, END = 1, 2, 3, 4, 5, 6
REPLY = 0x80
CHUNK_SHIFT = 30  # the image is kept in 1 GiB chunks of address space, allocated on first use


class Image:
    """The partner's copy of the target's memory: page contents by virtual address."""

    def __init__(self, page_size):
        self.page_size = page_size
        self.chunks = {}  # key -> (mmap, presence uint8 array)
        self._keys = None

    def _chunk(self, key):
        c = self.chunks.get(key)
        if c is None:
            size = 1 << CHUNK_SHIFT
            mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
            c = (mm, np.zeros(size // self.page_size, dtype=np.uint8))
            self.chunks[key] = c
            self._keys = None
        return c

    def _tables(self):
        if self._keys is None:
            keys = sorted(self.chunks)
            self._keys = (np.array(keys, dtype=np.uint64),
                          np.array([_lib.ptr(self.chunks[k][0]) for k in keys], dtype=np.uint64),
                          np.array([self.chunks[k][1].ctypes.data for k in keys], dtype=np.uint64))
        return self._keys

    def apply_pages(self, table, data):
        """Store a PAGES record: ``table`` uint64 [k, 2] (address, length), ``data`` the bytes."""
        a = table[:, 0]
        last = a + table[:, 1] - np.uint64(1)
        for key in np.union1d(a >> np.uint64(CHUNK_SHIFT), last >> np.uint64(CHUNK_SHIFT)).tolist():
            self._chunk(int(key))
        keys, bases, pres = self._tables()
        t = np.ascontiguousarray(table, dtype=np.uint64)
        rc = _lib.lib().psl_scatter(_lib.ptr(data), _lib.ptr(t), len(t), _lib.ptr(keys), _lib.ptr(bases),
                                    _lib.ptr(pres), len(keys), CHUNK_SHIFT, self.page_size)
        if rc != 0:
            raise LiveError("internal error: image chunk missing")

    def drop(self, table):
        """Forget the pages of ``table`` (address, length): they read as zero again."""
        ps = self.page_size
        for addr, length in table.tolist():
            while length > 0:
                key, off = addr >> CHUNK_SHIFT, addr & ((1 << CHUNK_SHIFT) - 1)
                take = min(length, (1 << CHUNK_SHIFT) - off)
                c = self.chunks.get(key)
                if c is not None:
                    c[0][off:off + take] = bytes(take)
                    c[1][off // ps:(off + take) // ps] = 0
                addr += take
                length -= take

    def pages(self):
        """Addresses of every page held, sorted (uint64)."""
        ps = self.page_size
        parts = [np.uint64(k << CHUNK_SHIFT) + np.flatnonzero(self.chunks[k][1]).astype(np.uint64) * np.uint64(ps)
                 for k in sorted(self.chunks)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)

    def checksums(self):
        """(addresses, checksums) of every page held."""
        addrs, sums = [], []
        for k in sorted(self.chunks):
            mm, pres = self.chunks[k]
            idx = np.flatnonzero(pres).astype(np.uint64)
            addrs.append(np.uint64(k << CHUNK_SHIFT) + idx * np.uint64(self.page_size))
            sums.append(_lib.hash_local(_lib.ptr(mm), idx, self.page_size))
        if not addrs:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        return np.concatenate(addrs), np.concatenate(sums)

    def runs(self):
        """The image as maximal runs of held pages: uint64 [k, 2] (address, length)."""
        p = self.pages()
        if len(p) == 0:
            return np.empty((0, 2), dtype=np.uint64)
        ps = np.uint64(self.page_size)
        brk = np.flatnonzero(np.diff(p) != ps) + 1
        starts = p[np.r_[0, brk]]
        ends = p[np.r_[brk - 1, len(p) - 1]] + ps
        return np.stack([starts, ends - starts], axis=1)

    def read(self, addr, length):
        key, off = addr >> CHUNK_SHIFT, addr & ((1 << CHUNK_SHIFT) - 1)
        c = self.chunks.get(key)
        return bytes(length) if c is None else bytes(c[0][off:off + length])

    def save(self, path, hello=None):
        """Write the image as a stream file (HELLO, PAGES records, END)."""
        with open(path, "wb") as f:
            meta = json.dumps(hello or {}).encode()
            f.write(HDR.pack(HELLO, len(meta), self.page_size) + meta)
            runs = self.runs()
            for i in range(0, len(runs), 1024):
                part = runs[i:i + 1024]
                data = b"".join(self.read(int(a), int(n)) for a, n in part.tolist())
                f.write(HDR.pack(PAGES, len(part), len(data)) + part.astype(np.uint64).tobytes() + data)
            f.write(HDR.pack(END, 0, 0))

    def close(self):
        for mm, _ in self.chunks.values():
            mm.close()
        self.chunks.clear()


class Closed(Exception):
    """The other side closed the stream (cleanly at a record boundary or not)."""


def read_exact(f, n, buf=None):
    """Read exactly n bytes from a binary file object (socket makefile or file)."""
    out = bytearray(n) if buf is None else buf
    mv = memoryview(out)[:n]
    got = 0
    while got < n:
        k = f.readinto(mv[got:])
        if not k:
            raise Closed(got)
        got += k
    return out


def serve(rfile, reply=None, on_record=None):
    """Apply a stream to a new Image until END; ``reply(bytes)`` answers PASS, VERIFY and END (None
    for a file).  Returns (image, hello dict, stats).  Raises Closed if the stream ends early."""
    h = read_exact(rfile, HDR.size)
    typ, count, arg = HDR.unpack(h)
    if typ != HELLO:
        raise LiveError("not a pagesync live stream (no HELLO record)")
    hello = json.loads(bytes(read_exact(rfile, count)).decode()) if count else {}
    img = Image(int(arg))
    stats = {"records": 1, "bytes": 0, "passes": 0, "dropped_pages": 0}
    buf = bytearray(1 << 20)
    while True:
        typ, count, arg = HDR.unpack(read_exact(rfile, HDR.size))
        stats["records"] += 1
        if typ == PAGES or typ == DROP:
            table = np.frombuffer(bytes(read_exact(rfile, 16 * count)), dtype=np.uint64).reshape(-1, 2)
            if typ == PAGES:
                if arg > len(buf):
                    buf = bytearray(int(arg))
                read_exact(rfile, int(arg), buf)
                img.apply_pages(table, buf)
                stats["bytes"] += int(arg)
            else:
                img.drop(table)
                stats["dropped_pages"] += int(table[:, 1].sum()) // img.page_size if count else 0
        elif typ == PASS:
            stats["passes"] += 1
            if reply:
                reply(HDR.pack(REPLY | PASS, count, 0))
        elif typ == VERIFY:
            if reply:
                addrs, sums = img.checksums()
                reply(HDR.pack(REPLY | VERIFY, 0, len(addrs)) + addrs.tobytes() + sums.tobytes())
        elif typ == END:
            if on_record:
                on_record(img, hello)
            if reply:
                reply(HDR.pack(REPLY | END, 0, 0))
            return img, hello, stats
        else:
            raise LiveError(f"corrupt stream: record type {typ}")


def load(path):
    """Read a stream file (from ``mirror --to FILE`` or ``receive --out FILE``) into an Image."""
    try:
        with open(path, "rb") as f:
            img, hello, _ = serve(f)
    except Closed:
        raise LiveError(f"{path}: the stream ends early (no END record)") from None
    except OSError as e:
        raise LiveError(f"cannot read {path}: {e.strerror}") from None
    return img, hello


# ---- the mirror's end of the link ------------------------------------------------------------------

class Link:
    """Where the mirror goes: a receiver over TCP, or a stream file."""

    def __init__(self, to):
        self.to = to
        self.sock = None
        self.file = None
        host, sep, port = to.rpartition(":")
        if sep and port.isdigit() and host:
            try:
                self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            except OSError as e:
                raise LiveError(f"--to {to}: cannot connect to a receiver: {e.strerror or e}") from None
            self.sock.settimeout(None)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.fd = self.sock.fileno()
            self.rfile = self.sock.makefile("rb")
        else:
            try:
                self.file = open(to, "wb")
            except OSError as e:
                raise LiveError(f"--to {to}: cannot write: {e.strerror}") from None
            self.fd = self.file.fileno()
            os.set_blocking(self.fd, False)  # a FIFO whose reader stalls is then waited for in poll
        self.deadline_ns = None

    def hello(self, page_size, meta):
        self.page_size = page_size
        meta = json.dumps(meta).encode()
        self.write(HDR.pack(HELLO, len(meta), page_size) + meta)

    def set_deadline(self, deadline_ns):
        """Every write and wait for a reply from now on fails with TimeoutError past ``deadline_ns``
        (CLOCK_MONOTONIC; None = wait as long as it takes, a signal still interrupts)."""
        self.deadline_ns = deadline_ns
        if self.sock:
            self.sock.settimeout(self._left())

    def _left(self):
        if self.deadline_ns is None:
            return None
        left = (self.deadline_ns - time.monotonic_ns()) / 1e9
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "deadline passed")
        return left

    def write(self, data):
        if self.sock:
            self.sock.settimeout(self._left())
            self.sock.sendall(data)
            return
        mv = memoryview(data)
        while len(mv):
            try:
                n = os.write(self.fd, mv)
            except BlockingIOError:
                left = self._left()
                p = select.poll()
                p.register(self.fd, select.POLLOUT)
                if not p.poll(None if left is None else max(1, int(left * 1000))):
                    raise TimeoutError(errno.ETIMEDOUT, "deadline passed") from None
                continue
            mv = mv[n:]

    def drop(self, ranges):
        """Tell the partner to forget ``ranges`` (uint64 [k, 2] start, end)."""
        if len(ranges):
            table = np.stack([ranges[:, 0], ranges[:, 1] - ranges[:, 0]], axis=1).astype(np.uint64)
            self.write(HDR.pack(DROP, len(table), 0) + table.tobytes())

    def _reply(self, typ):
        if self.sock:
            self.sock.settimeout(self._left())
        try:
            h = read_exact(self.rfile, HDR.size)
        except Closed:
            raise ConnectionResetError(104, "the receiver closed the connection") from None
        t, count, arg = HDR.unpack(h)
        if t != REPLY | typ:
            raise LiveError(f"receiver {self.to}: unexpected reply {t:#x}")
        return count, arg

    def end_pass(self, n):
        self.write(HDR.pack(PASS, n, 0))
        if self.sock:
            self._reply(PASS)

    def checksums(self):
        """The partner's (addresses, checksums); for a file, the file is read back."""
        if self.sock:
            self.write(HDR.pack(VERIFY, 0, 0))
            _, n = self._reply(VERIFY)
            raw = read_exact(self.rfile, 16 * n)
            arr = np.frombuffer(bytes(raw), dtype=np.uint64)
            return arr[:n].copy(), arr[n:].copy()
        self.end()
        img, _ = load(self.to)
        try:
            return img.checksums()
        finally:
            img.close()

    def end(self):
        if getattr(self, "_ended", False):
            return
        self._ended = True
        if self.sock:
            self.write(HDR.pack(END, 0, 0))
            self._reply(END)
        else:
            self.write(HDR.pack(END, 0, 0))
            self.file.flush()

    def close(self):
        for x in (self.sock, self.file):
            try:
                if x:
                    x.close()
            except OSError:
                pass
