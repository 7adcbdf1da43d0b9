"""The mirror stream and the partner's image.

A stream is a sequence of records, each a 16-byte header ``(u32 type, u32 count, u64 arg)`` in
native byte order followed by a payload:

  HELLO     count = length of a JSON object that follows, arg = page size.  Over TCP the object
            carries the shared secret ("token") and the receiver answers REPLY|HELLO with count =
            length of a refusal text that follows (0: accepted)
  PAGES     count ranges: count x (u64 address, u64 length), then arg bytes of page data, the ranges'
            contents concatenated (written by the C sender, one record per buffer of up to 4 MiB)
  DROP      count ranges (address, length), arg 0: pages the target no longer has (unmapped,
            MADV_DONTNEED, or the zero page): the mirror forgets them
  PASS      end of pass ``count``; over TCP the receiver answers ACK when everything before it is in
            its image, so a pass's time includes the transfer
  VERIFY    the receiver answers with the address and checksum of every page of its image
  VERIFIED  the mirror's verdict: the image equals the stopped target; arg = pages, a 32-byte
            digest (``digest``) of the target's (addresses, checksums) follows (count = 32)
  FAILED    the mirror's verdict: arg pages differ; nothing may be kept
  END       the last record, after a verdict.  Over TCP the receiver answers REPLY|END with count =
            length of an error text that follows (0: the mirror is kept where it was asked to be)

Every field is checked against ``LIMITS`` before it is used; a stream that breaks one is refused
(``StreamError``, one line).  A file written by ``live mirror --to FILE`` or ``live receive --out
FILE`` is such a stream (HELLO, PAGES/DROP/PASS, VERIFIED, END) and exists under its name only if it
is verified: it is written under a temporary name, read back, checked against the digest and only
then renamed.  ``load`` checks the digest again.  ``--to`` a named pipe is written to directly: its
reader gets the stream as it is sent, but the mirror cannot read it back, so it is never verified
(the mirror fails after the cut-over, and no verdict or END is sent).
"""
import errno
import hashlib
import hmac
import json
import mmap
import os
import select
import socket
import stat
import struct
import time

import numpy as np

from . import _lib
from .errors import LiveError

HDR = struct.Struct("=IIQ")
HELLO, PAGES, DROP, PASS, VERIFY, END, VERIFIED, FAILED = 1, 2, 3, 4, 5, 6, 7, 8
NAMES = {HELLO: "HELLO", PAGES: "PAGES", DROP: "DROP", PASS: "PASS", VERIFY: "VERIFY", END: "END",
         VERIFIED: "VERIFIED", FAILED: "FAILED"}
REPLY = 0x80
DIGEST_SIZE = 32

# Every limit the receiver enforces, in one place.
LIMITS = {
    "page_sizes": (4096, 8192, 16384, 65536),  # the base page sizes of Linux ports
    "hello_bytes": 64 << 10,        # the HELLO's JSON object
    "token_bytes": 1024,            # the shared secret
    "ranges_per_record": 1024,      # PAGES and DROP tables (the C sender's MAX_IOV)
    "record_data_bytes": 4 << 20,   # PAGES data (the C sender's batch, _lib.Sender.BUF)
    "address_end": 1 << 57,         # no range may end above this (user space ends at 2^56 with 5-level paging)
    "error_text_bytes": 4096,       # a REPLY's refusal or error text
    "handshake_s": 10.0,            # a TCP client must have sent its HELLO by then
}
# The image keeps pages in chunks of 2 MiB of address space, created when a page arrives in one and
# carved from pools of 1 GiB reserved (MAP_NORESERVE) address space: memory is only touched by pages
# received, and the address space reserved is at most 512 x the bytes received (plus one pool).
CHUNK_SHIFT = 21
POOL_CHUNKS = 512
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux's value; Python < 3.13 does not export it


class StreamError(LiveError):
    """A malformed, unauthenticated or unverified stream (one line)."""


def check_page_size(ps):
    if ps not in LIMITS["page_sizes"]:
        raise StreamError(f"page size {ps} is not one of {', '.join(map(str, LIMITS['page_sizes']))}")
    return ps


def check_table(table, ps, what):
    """Refuse a (address, length) table with an unaligned, empty, wrapping or too-high range."""
    if len(table) == 0:
        return
    a, n = table[:, 0], table[:, 1]
    m = np.uint64(ps - 1)
    bad = ((a & m) != 0) | ((n & m) != 0) | (n == 0) | (n > np.uint64(LIMITS["address_end"])) | \
        (a > np.uint64(LIMITS["address_end"]) - n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StreamError(f"{what} range {i}: address {int(a[i]):#x} length {int(n[i]):#x} is not page-aligned "
                          f"({ps}), empty, or ends above {LIMITS['address_end']:#x}")


def digest(addrs, sums):
    """32-byte digest of a sorted (addresses, checksums) pair: what a VERIFIED record promises."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    h.update(np.ascontiguousarray(addrs, dtype="<u8").tobytes())
    h.update(np.ascontiguousarray(sums, dtype="<u8").tobytes())
    return h.digest()


def same_secret(given, expected):
    """Constant-time comparison of two tokens (the hashes make the time independent of the lengths)."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


class Image:
    """The partner's copy of the target's memory: page contents by virtual address."""

    def __init__(self, page_size):
        self.page_size = check_page_size(page_size)
        self.ppc = (1 << CHUNK_SHIFT) // page_size  # pages per chunk
        self.keys = np.empty(0, dtype=np.uint64)    # chunk numbers (address >> CHUNK_SHIFT), sorted
        self.slots = np.empty(0, dtype=np.int64)    # the slot of each key
        self.bases = np.empty(0, dtype=np.uint64)   # local address of each key's memory
        self.pres = np.empty(0, dtype=np.uint64)    # local address of each key's presence bytes
        self.slot_keys = np.empty(0, dtype=np.uint64)
        self.pools = []  # (mmap, uint8 view [POOL_CHUNKS * 2 MiB], presence uint8 [POOL_CHUNKS * ppc])

    def _add_chunks(self, need):
        """Create the chunks of the sorted unique keys ``need`` that do not exist yet."""
        new = need[~np.isin(need, self.keys, assume_unique=True)]
        if not len(new):
            return
        first = len(self.slot_keys)
        slots = np.arange(first, first + len(new), dtype=np.int64)
        while len(self.pools) * POOL_CHUNKS < first + len(new):
            size = POOL_CHUNKS << CHUNK_SHIFT
            mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
            self.pools.append((mm, np.frombuffer(mm, dtype=np.uint8), np.zeros(POOL_CHUNKS * self.ppc, np.uint8)))
        pool_base = np.array([p[1].ctypes.data for p in self.pools], dtype=np.uint64)
        pres_base = np.array([p[2].ctypes.data for p in self.pools], dtype=np.uint64)
        pi, si = slots // POOL_CHUNKS, (slots % POOL_CHUNKS).astype(np.uint64)
        bases = pool_base[pi] + (si << np.uint64(CHUNK_SHIFT))
        pres = pres_base[pi] + si * np.uint64(self.ppc)
        self.slot_keys = np.concatenate([self.slot_keys, new])
        keys = np.concatenate([self.keys, new])
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.slots = np.concatenate([self.slots, slots])[order]
        self.bases = np.concatenate([self.bases, bases])[order]
        self.pres = np.concatenate([self.pres, pres])[order]

    def apply_pages(self, table, data):
        """Store a PAGES record: ``table`` uint64 [k, 2] (address, length), ``data`` its bytes
        (exactly the table's total length)."""
        t = np.ascontiguousarray(table, dtype=np.uint64).reshape(-1, 2)
        check_table(t, self.page_size, "PAGES")
        total = sum(t[:, 1].tolist())  # Python ints: a uint64 sum could wrap to the data's size
        if total != len(data):
            raise StreamError(f"PAGES record: its table covers {total} bytes but it carries {len(data)}")
        if not len(t):
            return
        sh = np.uint64(CHUNK_SHIFT)
        k0, k1 = t[:, 0] >> sh, (t[:, 0] + t[:, 1] - np.uint64(1)) >> sh
        span = (k1 - k0 + np.uint64(1)).astype(np.int64)  # at most 3 each: a range is <= 4 MiB
        need = np.repeat(k0, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span)).astype(
            np.uint64)
        self._add_chunks(np.unique(need))
        buf = np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(1, np.uint8)
        rc = _lib.lib().psl_scatter(buf.ctypes.data, len(data), t.ctypes.data, len(t), self.keys.ctypes.data,
                                    self.bases.ctypes.data, self.pres.ctypes.data, len(self.keys), CHUNK_SHIFT,
                                    self.page_size)
        if rc != 0:
            raise StreamError(f"PAGES record refused by the scatter (code {rc})")

    def _pieces(self, addr, length):
        """(index into keys or -1, offset in chunk, length) pieces of [addr, addr + length)."""
        mask = (1 << CHUNK_SHIFT) - 1
        while length > 0:
            key, off = addr >> CHUNK_SHIFT, addr & mask
            take = min(length, (1 << CHUNK_SHIFT) - off)
            j = int(np.searchsorted(self.keys, np.uint64(key)))
            yield (j if j < len(self.keys) and int(self.keys[j]) == key else -1), off, take
            addr += take
            length -= take

    def _chunk_views(self, j):
        s = int(self.slots[j])
        _, mem, pres = self.pools[s // POOL_CHUNKS]
        i = s % POOL_CHUNKS
        return mem[i << CHUNK_SHIFT:(i + 1) << CHUNK_SHIFT], pres[i * self.ppc:(i + 1) * self.ppc]

    def drop(self, table):
        """Forget the pages of ``table`` (address, length): they read as zero again.  Only chunks that
        exist are visited, so a huge range costs no more than the image holds."""
        t = np.ascontiguousarray(table, dtype=np.uint64).reshape(-1, 2)
        check_table(t, self.page_size, "DROP")
        ps = self.page_size
        for addr, length in t.tolist():
            lo = int(np.searchsorted(self.keys, np.uint64(addr >> CHUNK_SHIFT), "left"))
            hi = int(np.searchsorted(self.keys, np.uint64((addr + length - 1) >> CHUNK_SHIFT), "right"))
            for j in range(lo, hi):
                cbase = int(self.keys[j]) << CHUNK_SHIFT
                a, b = max(addr, cbase), min(addr + length, cbase + (1 << CHUNK_SHIFT))
                mem, pres = self._chunk_views(j)
                p0, p1 = (a - cbase) // ps, (b - cbase) // ps
                held = np.flatnonzero(pres[p0:p1]) + p0
                if len(held):
                    # zero only the pages held: untouched memory stays untouched
                    mem.reshape(-1, ps)[held] = 0
                    pres[held] = 0

    def _held(self):
        """Per pool: (pool index, page indices in the pool, their addresses) of the pages held."""
        ps = np.uint64(self.page_size)
        for p, (_, mem, pres) in enumerate(self.pools):
            idx = np.flatnonzero(pres).astype(np.uint64)
            if len(idx):
                slot = (idx // np.uint64(self.ppc)).astype(np.int64) + p * POOL_CHUNKS
                yield p, idx, (self.slot_keys[slot] << np.uint64(CHUNK_SHIFT)) + (idx % np.uint64(self.ppc)) * ps

    def checksums(self):
        """(addresses, checksums) of every page held, sorted by address."""
        addrs, sums = [], []
        for p, idx, a in self._held():
            addrs.append(a)
            sums.append(_lib.hash_local(self.pools[p][1].ctypes.data, idx, self.page_size))
        if not addrs:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        a, s = np.concatenate(addrs), np.concatenate(sums)
        order = np.argsort(a, kind="stable")
        return a[order], s[order]

    def pages(self):
        """Addresses of every page held, sorted (uint64)."""
        parts = [a for _, _, a in self._held()]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)

    def digest(self):
        return digest(*self.checksums())

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
        """``length`` bytes of the image from ``addr`` (zeros where it holds nothing), across chunks."""
        out = bytearray(length)
        mv = memoryview(out)
        pos = 0
        for j, off, take in self._pieces(addr, length):
            if j >= 0:
                mv[pos:pos + take] = self._chunk_views(j)[0][off:off + take]
            pos += take
        return bytes(out)

    def records(self):
        """The image as PAGES records: (table uint64 [k, 2], data) within the stream's limits."""
        cap, most = LIMITS["record_data_bytes"], LIMITS["ranges_per_record"]
        table, parts, fill = [], [], 0
        for a, n in self.runs().tolist():
            while n > 0:
                take = min(n, cap - fill)
                table.append((a, take))
                parts.append(self.read(a, take))
                fill += take
                a += take
                n -= take
                if fill == cap or len(table) == most:
                    yield np.array(table, dtype=np.uint64), b"".join(parts)
                    table, parts, fill = [], [], 0
        if table:
            yield np.array(table, dtype=np.uint64), b"".join(parts)

    def save(self, path, hello=None):
        """Write the image as a verified stream file (HELLO, PAGES records, VERIFIED, END) at ``path``
        (the caller renames it into place once it has read it back)."""
        addrs, sums = self.checksums()
        with open(path, "wb") as f:
            meta = json.dumps(hello or {}).encode()
            f.write(HDR.pack(HELLO, len(meta), self.page_size) + meta)
            for table, data in self.records():
                f.write(HDR.pack(PAGES, len(table), len(data)) + table.tobytes() + data)
            f.write(HDR.pack(VERIFIED, DIGEST_SIZE, len(addrs)) + digest(addrs, sums) + HDR.pack(END, 0, 0))
            f.flush()
            os.fsync(f.fileno())
        return digest(addrs, sums)

    def close(self):
        pools, self.pools = self.pools, []
        self.keys = self.slots = self.bases = self.pres = self.slot_keys = np.empty(0, dtype=np.uint64)
        for mm, _, _ in pools:
            try:
                mm.close()
            except BufferError:
                pass  # a view is still alive somewhere; the mapping goes with it


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


def read_hello(rfile):
    """The HELLO record: (page size, meta dict), every field checked."""
    typ, count, arg = HDR.unpack(read_exact(rfile, HDR.size))
    if typ != HELLO:
        raise StreamError(f"not a pagesync live stream (first record type {typ}, not HELLO)")
    if count > LIMITS["hello_bytes"]:
        raise StreamError(f"HELLO declares {count} bytes of metadata (at most {LIMITS['hello_bytes']})")
    check_page_size(arg)
    try:
        meta = json.loads(bytes(read_exact(rfile, count)).decode()) if count else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise StreamError("HELLO metadata is not JSON (or nested too deeply)") from None
    if not isinstance(meta, dict):
        raise StreamError("HELLO metadata is not a JSON object")
    tok = meta.get("token")
    if tok is not None and (not isinstance(tok, str) or len(tok) > LIMITS["token_bytes"]):
        raise StreamError("HELLO token is not a string of at most "
                          f"{LIMITS['token_bytes']} characters")
    return int(arg), meta


def _table(rfile, count, what):
    if not 1 <= count <= LIMITS["ranges_per_record"]:
        raise StreamError(f"{what} record with {count} ranges (1 to {LIMITS['ranges_per_record']})")
    return np.frombuffer(bytes(read_exact(rfile, 16 * count)), dtype=np.uint64).reshape(-1, 2)


def serve(rfile, img, reply=None, on_end=None, partial=False):
    """Apply the records after HELLO to ``img`` until END.  ``reply(bytes)`` answers PASS, VERIFY and
    END (None for a file).  At END, ``on_end(verdict)`` (verdict ("verified", pages, digest) or
    ("failed", pages)) returns None or an error text, which is sent in the END reply.  With
    ``partial`` a clean end of file at a record boundary ends the stream (a file still being written).
    Returns (verdict or None, stats).  Raises StreamError for a malformed stream, Closed if it ends
    early."""
    stats = {"records": 1, "bytes": 0, "passes": 0, "dropped_pages": 0}
    buf = bytearray(LIMITS["record_data_bytes"])
    verdict = None
    ps = img.page_size
    while True:
        try:
            typ, count, arg = HDR.unpack(read_exact(rfile, HDR.size))
        except Closed as c:
            if partial and c.args[0] == 0:
                return verdict, stats
            raise
        stats["records"] += 1
        if verdict is not None and typ != END:
            raise StreamError(f"{NAMES.get(typ, f'type {typ}')} record after the verdict (only END may follow)")
        if typ == PAGES:
            table = _table(rfile, count, "PAGES")
            if arg > LIMITS["record_data_bytes"]:
                raise StreamError(f"PAGES record with {arg} bytes of data (at most {LIMITS['record_data_bytes']})")
            check_table(table, ps, "PAGES")
            covered = sum(table[:, 1].tolist())  # Python ints: a uint64 sum could wrap to arg
            if covered != arg:
                raise StreamError(f"PAGES record: its table covers {covered} bytes but it carries {arg}")
            img.apply_pages(table, memoryview(read_exact(rfile, int(arg), buf))[:int(arg)])
            stats["bytes"] += int(arg)
        elif typ == DROP:
            table = _table(rfile, count, "DROP")
            if arg != 0:
                raise StreamError(f"DROP record with arg {arg} (must be 0)")
            check_table(table, ps, "DROP")
            img.drop(table)
            stats["dropped_pages"] += sum(table[:, 1].tolist()) // ps
        elif typ == PASS:
            if arg != 0:
                raise StreamError(f"PASS record with arg {arg} (must be 0)")
            stats["passes"] += 1
            if reply:
                reply(HDR.pack(REPLY | PASS, count, 0))
        elif typ == VERIFY:
            if count or arg:
                raise StreamError(f"VERIFY record with count {count}, arg {arg} (must be 0)")
            if reply:
                addrs, sums = img.checksums()
                reply(HDR.pack(REPLY | VERIFY, 0, len(addrs)) + addrs.tobytes() + sums.tobytes())
        elif typ == VERIFIED:
            if count != DIGEST_SIZE:
                raise StreamError(f"VERIFIED record with a {count}-byte digest (must be {DIGEST_SIZE})")
            d = bytes(read_exact(rfile, DIGEST_SIZE))
            addrs, sums = img.checksums()
            if arg != len(addrs) or d != digest(addrs, sums):
                raise StreamError(f"the verdict says VERIFIED for {arg} pages, but the image received ({len(addrs)} "
                                  "pages) is not the one verified")
            verdict = ("verified", int(arg), d)
        elif typ == FAILED:
            if count:
                raise StreamError(f"FAILED record with count {count} (must be 0)")
            verdict = ("failed", int(arg))
        elif typ == END:
            if count or arg:
                raise StreamError(f"END record with count {count}, arg {arg} (must be 0)")
            if verdict is None:
                raise StreamError("END without a verdict (VERIFIED or FAILED)")
            err = on_end(verdict) if on_end else None
            if reply:
                text = (err or "").encode()[:LIMITS["error_text_bytes"]]
                reply(HDR.pack(REPLY | END, len(text), 0) + text)
            if err:
                raise LiveError(err)
            return verdict, stats
        else:
            raise StreamError(f"unknown record type {typ}")


def load(path):
    """Read a verified stream file (from ``mirror --to FILE`` or ``receive --out FILE``) into an Image:
    (image, hello dict).  StreamError unless it is well formed, says VERIFIED, and its pages match the
    verdict's digest."""
    return _load(path, partial=False)


def _load(path, partial):
    img = None
    try:
        with open(path, "rb") as f:
            ps, hello = read_hello(f)
            img = Image(ps)
            verdict, _ = serve(f, img, partial=partial)
            if not partial:
                if verdict[0] != "verified":
                    raise StreamError(f"the mirror failed its verification ({verdict[1]} pages differ)")
                if f.read(1):
                    raise StreamError("data after the END record")
    except Closed:
        if img:
            img.close()
        raise StreamError(f"{path}: the stream ends early (no END record)") from None
    except StreamError as e:
        if img:
            img.close()
        raise StreamError(f"{path}: {e}") from None
    except OSError as e:
        if img:
            img.close()
        raise LiveError(f"cannot read {path}: {e.strerror}") from None
    return img, hello


def partial_name(path):
    """The temporary name a stream file is written under until it is verified (same directory, so the
    final rename is atomic)."""
    d, b = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{b}.{os.getpid()}.partial")


def remove_file(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def commit(tmp, path, expect):
    """Read the stream file ``tmp`` back, check that it holds the image of digest ``expect``, and rename
    it to ``path``.  The temporary file is removed whatever happens; LiveError if it was not kept."""
    try:
        img, _ = load(tmp)
        try:
            got = img.digest()
        finally:
            img.close()
        if got != expect:
            raise LiveError(f"{path}: the file read back is not the verified mirror; not kept")
        os.replace(tmp, path)
        try:
            dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # the rename is done; a directory that cannot be synced is no reason to refuse it
    finally:
        remove_file(tmp)


# ---- the mirror's end of the link ------------------------------------------------------------------

class Link:
    """Where the mirror goes: a receiver over TCP, or a stream file (written under a temporary name
    and renamed only once verified), or a named pipe.  ``set_deadline`` bounds every write and every
    wait for a reply (the blackout)."""

    def __init__(self, to, token=None):
        self.to = to
        self.token = token
        self.sock = None
        self.file = None
        self.tmp = None
        self.deadline_ns = None
        host, sep, port = to.rpartition(":")
        if sep and port.isdigit() and host:
            self._address = (host.strip("[]"), int(port))
            self._connect()
        else:
            try:
                st = os.stat(to)
            except FileNotFoundError:
                st = None
            except OSError as e:
                raise LiveError(f"--to {to}: {e.strerror}") from None
            # a named pipe (or a device) is written to directly: there is nothing to rename, and
            # nothing to read back for the verification (``checksums`` says so)
            path = to if st is not None and not stat.S_ISREG(st.st_mode) else partial_name(to)
            try:
                self.file = open(path, "wb")
            except OSError as e:
                raise LiveError(f"--to {to}: cannot write: {e.strerror}") from None
            if path != to:
                self.tmp = path
            self.fd = self.file.fileno()
            os.set_blocking(self.fd, False)  # a FIFO whose reader stalls is then waited for in poll

    def _connect(self):
        if self.sock:  # a second connection (see ``hello``): the first is given up
            self.rfile.close()
            self.sock.close()
            self.sock = None
        try:
            self.sock = socket.create_connection(self._address, timeout=10)
        except OSError as e:
            raise LiveError(f"--to {self.to}: cannot connect to a receiver: {e.strerror or e}") from None
        self.connected_at = time.monotonic()
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.fd = self.sock.fileno()
        self.rfile = self.sock.makefile("rb")

    def hello(self, page_size, meta):
        """Send the HELLO; over TCP, wait for the receiver to accept it (LiveError if it refuses, or does
        not answer within 3 x LIMITS["handshake_s"]: it may be busy refusing other clients first)."""
        self.page_size = page_size
        if self.sock and self.token is not None:
            meta = dict(meta, token=self.token)
        meta = json.dumps(meta).encode()
        if not self.sock:
            self.write(HDR.pack(HELLO, len(meta), page_size) + meta)
            return
        if time.monotonic() - self.connected_at > LIMITS["handshake_s"] / 2:
            # the receiver refuses a client whose HELLO has not come handshake_s after it accepted it,
            # and the target's start (the preload library has up to 10 s) may have used much of that:
            # a new connection has all of it
            self._connect()
        wait = LIMITS["handshake_s"] * 3
        old = self.deadline_ns
        self.set_deadline(time.monotonic_ns() + int(wait * 1e9))
        try:
            self.write(HDR.pack(HELLO, len(meta), page_size) + meta)
            count, _ = self._reply(HELLO)
            text = self._text(count)
        except TimeoutError:
            raise LiveError(f"receiver {self.to} did not answer the HELLO within {wait:.0f} s") from None
        finally:
            self.deadline_ns = old
            self.sock.settimeout(None)  # the next write or wait sets it from the deadline again
        if text:
            hint = (" (the token is read from --token-file FILE or $PAGESYNC_LIVE_TOKEN, as the receiver's)"
                    if text.endswith("token") else "")
            raise LiveError(f"receiver {self.to} refused the mirror: {text}{hint}")

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
        most = LIMITS["ranges_per_record"]
        table = np.stack([ranges[:, 0], ranges[:, 1] - ranges[:, 0]], axis=1).astype(np.uint64)
        for i in range(0, len(table), most):
            part = table[i:i + most]
            self.write(HDR.pack(DROP, len(part), 0) + part.tobytes())

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

    def _text(self, count):
        if count > LIMITS["error_text_bytes"]:
            raise LiveError(f"receiver {self.to}: a {count}-byte reply text")
        try:
            return bytes(read_exact(self.rfile, count)).decode(errors="replace").splitlines()[0] if count else ""
        except Closed:
            raise ConnectionResetError(104, "the receiver closed the connection") from None

    def end_pass(self, n):
        self.write(HDR.pack(PASS, n, 0))
        if self.sock:
            self._reply(PASS)

    def checksums(self):
        """The partner's (addresses, checksums); for a file, the file written so far is read back."""
        if self.sock:
            self.write(HDR.pack(VERIFY, 0, 0))
            _, n = self._reply(VERIFY)
            raw = read_exact(self.rfile, 16 * n)
            arr = np.frombuffer(bytes(raw), dtype=np.uint64)
            return arr[:n].copy(), arr[n:].copy()
        if self.tmp is None:
            raise LiveError(f"--to {self.to}: not a regular file: the stream sent there cannot be read back, so "
                            "the mirror cannot be verified; no verdict sent")
        self.file.flush()
        img, _ = _load(self.tmp, partial=True)
        try:
            return img.checksums()
        finally:
            img.close()

    def end(self, target_pages, target_sums, n_bad):
        """Send the verdict (VERIFIED with the digest of the stopped target's pages, or FAILED with the
        number of pages that differ) and END.  A file is renamed to its name only when verified and read
        back; a receiver answers whether it kept the mirror (LiveError if not)."""
        if n_bad:
            rec = HDR.pack(FAILED, 0, n_bad)
        else:
            rec = HDR.pack(VERIFIED, DIGEST_SIZE, len(target_pages)) + digest(target_pages, target_sums)
        self.write(rec + HDR.pack(END, 0, 0))
        if self.sock:
            count, _ = self._reply(END)
            text = self._text(count)
            if text:
                raise LiveError(f"receiver {self.to} did not keep the mirror: {text}")
            return
        self.file.flush()
        os.fsync(self.fd)
        self.file.close()
        if n_bad:
            remove_file(self.tmp)
        else:
            commit(self.tmp, self.to, digest(target_pages, target_sums))

    def close(self):
        for x in (self.sock, self.file):
            try:
                if x:
                    x.close()
            except OSError:
                pass
        if self.tmp is not None:
            remove_file(self.tmp)  # not verified (or already renamed): nothing stays under a temporary name
