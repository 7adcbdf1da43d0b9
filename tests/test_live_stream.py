"""The live mirror's stream as hostile input, and its saved files as promises.

Streams are built by hand here from the record layout in ``pagesync_model.live.protocol``'s docstring
and checked against a naive reference parser (a dict of pages, every rule of the format spelled out
again); the receiver runs as a real TCP server process; the round trips mirror a C target whose
mappings straddle 1 GiB boundaries and whose contents the test recomputes on its own.
"""
import hashlib
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagesync_model.live import _lib
from pagesync_model.live.protocol import (LIMITS, Closed, Image, StreamError, load, read_hello, serve)

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = tempfile.gettempdir()
PS = 4096
GiB = 1 << 30
H = struct.Struct("=IIQ")
HELLO, PAGES, DROP, PASS, VERIFY, END, VERIFIED, FAILED = 1, 2, 3, 4, 5, 6, 7, 8
TOKEN = "test-token-0123456789"


def page_sum(page):
    """The per-page checksum (the C library's, over a buffer of this test's)."""
    buf = np.frombuffer(page, dtype=np.uint8).copy()
    return int(_lib.hash_local(buf.ctypes.data, np.zeros(1, np.uint64), len(page))[0])


def digest_of(pages):
    """The VERIFIED digest of a {address: bytes} image, computed here: blake2b-256 over the sorted
    addresses then their checksums, little-endian u64."""
    addrs = sorted(pages)
    h = hashlib.blake2b(digest_size=32)
    h.update(b"".join(struct.pack("<Q", a) for a in addrs))
    h.update(b"".join(struct.pack("<Q", page_sum(pages[a])) for a in addrs))
    return h.digest()


def rec_hello(meta=None, ps=PS):
    j = json.dumps(meta or {}).encode()
    return H.pack(HELLO, len(j), ps) + j


def rec_pages(ranges, data):
    return H.pack(PAGES, len(ranges), len(data)) + b"".join(struct.pack("=QQ", a, n) for a, n in ranges) + data


def rec_drop(ranges):
    return H.pack(DROP, len(ranges), 0) + b"".join(struct.pack("=QQ", a, n) for a, n in ranges)


def rec_verified(pages):
    return H.pack(VERIFIED, 32, len(pages)) + digest_of(pages)


def fill(addr, n):
    """Recognizable contents for [addr, addr + n): each 8-byte word holds its address."""
    return np.arange(addr, addr + n, 8, dtype=np.uint64).tobytes()


# ---- the naive reference --------------------------------------------------------------------------

def reference(stream):
    """Parse ``stream`` by the format's rules with a dict of pages: ('ok', pages, verdict kind) or
    ('refused',)."""
    f = io.BytesIO(stream)

    def take(n):
        b = f.read(n)
        if len(b) != n:
            raise ValueError("short")
        return b

    def table(count):
        if not 1 <= count <= 1024:
            raise ValueError("count")
        rows = [struct.unpack("=QQ", take(16)) for _ in range(count)]
        for a, n in rows:
            if a % ps or n % ps or n == 0 or a + n > (1 << 57):
                raise ValueError("range")
        return rows

    try:
        typ, count, ps = H.unpack(take(16))
        if typ != HELLO or count > 65536 or ps not in (4096, 8192, 16384, 65536):
            raise ValueError("hello")
        meta = json.loads(take(count).decode()) if count else {}
        if not isinstance(meta, dict):
            raise ValueError("meta")
        if "token" in meta and (not isinstance(meta["token"], str) or len(meta["token"]) > 1024):
            raise ValueError("token")
        pages, verdict = {}, None
        while True:
            typ, count, arg = H.unpack(take(16))
            if verdict and typ != END:
                raise ValueError("after verdict")
            if typ == PAGES:
                rows = table(count)
                if arg > 4 << 20 or sum(n for _, n in rows) != arg:
                    raise ValueError("data")
                data = take(arg)
                pos = 0
                for a, n in rows:
                    for p in range(0, n, ps):
                        pages[a + p] = data[pos + p:pos + p + ps]
                    pos += n
            elif typ == DROP:
                rows = table(count)
                if arg:
                    raise ValueError("drop arg")
                for a, n in rows:
                    for k in [k for k in pages if a <= k < a + n]:
                        del pages[k]
            elif typ == PASS:
                if arg:
                    raise ValueError("pass arg")
            elif typ == VERIFY:
                if count or arg:
                    raise ValueError("verify")
            elif typ == VERIFIED:
                if count != 32:
                    raise ValueError("verified")
                d = take(32)
                if arg != len(pages) or d != digest_of(pages):
                    raise ValueError("digest")
                verdict = "verified"
            elif typ == FAILED:
                if count:
                    raise ValueError("failed")
                verdict = "failed"
            elif typ == END:
                if count or arg or not verdict:
                    raise ValueError("end")
                return "ok", pages, verdict
            else:
                raise ValueError("type")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ("refused",)


def parse(stream):
    """The implementation, in the same terms as ``reference``."""
    f = io.BytesIO(stream)
    img = None
    try:
        ps, _ = read_hello(f)
        img = Image(ps)
        verdict, _ = serve(f, img)
        return "ok", {int(a): img.read(int(a), ps) for a in img.pages()}, verdict[0]
    except (StreamError, Closed):
        return ("refused",)
    finally:
        if img:
            img.close()


# ---- the image across chunk and 1 GiB boundaries ----------------------------------------------------

def test_runs_across_1gib_boundaries_round_trip(tmp_path):
    # a 4 MiB buffer straddling a 1 GiB boundary (the case), an unaligned 7-page run across
    # another, a run of 3 chunks, many single pages: saved, read back, every byte where it was
    want = {}
    img = Image(PS)
    layout = [(5 * GiB - (2 << 20), 4 << 20), (7 * GiB - 3 * PS, 7 * PS), (9 * GiB - (5 << 20) - PS, 4 << 20),
              (9 * GiB - PS, 4 << 20)] + [(12 * GiB + i * 3 * PS, PS) for i in range(300)]
    for a, n in layout:
        data = fill(a, n)
        img.apply_pages(np.array([[a, n]], dtype=np.uint64), data)
        for p in range(0, n, PS):
            want[a + p] = data[p:p + PS]
    path = tmp_path / "img"
    img.save(path, {"pid": 1})
    img.close()
    back, hello = load(path)
    try:
        assert hello == {"pid": 1}
        got = back.pages().tolist()
        assert got == sorted(want)
        for a, n in layout:
            assert back.read(a, n) == fill(a, n), hex(a)
        # the saved records: every table adds up to its data, within the limits
        raw = path.read_bytes()
        pos = 16 + H.unpack(raw[:16])[1]
        while True:
            typ, count, arg = H.unpack(raw[pos:pos + 16])
            pos += 16
            if typ != PAGES:
                break
            rows = np.frombuffer(raw[pos:pos + 16 * count], dtype=np.uint64).reshape(-1, 2)
            assert int(rows[:, 1].sum()) == arg <= 4 << 20 and count <= 1024
            pos += 16 * count + arg
        assert typ == VERIFIED
    finally:
        back.close()


def test_a_file_that_is_not_the_verified_mirror_is_refused(tmp_path):
    img = Image(PS)
    img.apply_pages(np.array([[GiB - PS, 2 * PS]], dtype=np.uint64), fill(GiB - PS, 2 * PS))
    good = tmp_path / "good"
    img.save(good)
    img.close()
    raw = good.read_bytes()
    cases = {"truncated": raw[:-20], "one data byte changed": raw[:200] + bytes([raw[200] ^ 1]) + raw[201:],
             "trailing data": raw + b"x",
             "FAILED verdict": raw[:-16 - 48] + H.pack(FAILED, 0, 3) + H.pack(END, 0, 0),
             "no verdict": raw[:-16 - 48] + H.pack(END, 0, 0)}
    for name, data in cases.items():
        p = tmp_path / name.replace(" ", "_")
        p.write_bytes(data)
        with pytest.raises(StreamError) as e:
            load(p)
        assert str(e.value).startswith(str(p)) and "\n" not in str(e.value), name


# ---- hostile records, in-process ----------------------------------------------------------------------

BASE = 0x7f0000000000


@pytest.mark.parametrize("name,body", [
    ("table claims more than the data", rec_pages([(BASE, 2 * PS)], bytes(PS))[:-PS] + bytes(PS)),
    ("table claims 1 MiB of heap", H.pack(PAGES, 1, PS) + struct.pack("=QQ", BASE, 1 << 20) + bytes(PS)),
    ("lengths whose sum wraps to the data's size", rec_pages([(0, 1 << 57)] * 128 + [(BASE, PS)], bytes(PS))),
    ("data larger than the limit", H.pack(PAGES, 1, 8 << 20) + struct.pack("=QQ", BASE, 8 << 20)),
    ("4 GiB of ranges", H.pack(PAGES, 0xFFFFFFFF, 0)),
    ("no ranges", H.pack(PAGES, 0, 0)),
    ("unaligned address", rec_pages([(BASE + 8, PS)], bytes(PS))),
    ("unaligned length", rec_pages([(BASE, PS + 8)], bytes(PS + 8))),
    ("address wraps around", rec_pages([((1 << 64) - PS, 2 * PS)], bytes(2 * PS))),
    ("above the address space", rec_pages([(1 << 60, PS)], bytes(PS))),
    ("DROP of 2^62 bytes", rec_drop([(0, 1 << 62)])),
    ("DROP with data", H.pack(DROP, 1, 5) + struct.pack("=QQ", BASE, PS)),
    ("unknown record", H.pack(99, 0, 0)),
    ("END without a verdict", H.pack(END, 0, 0)),
    ("VERIFIED with a wrong digest", H.pack(VERIFIED, 32, 0) + bytes(32) + H.pack(END, 0, 0)),
    ("VERIFIED for other pages", rec_verified({BASE: bytes(PS)}) + H.pack(END, 0, 0)),
    ("PAGES after the verdict", rec_verified({}) + rec_pages([(BASE, PS)], bytes(PS)) + H.pack(END, 0, 0)),
])
def test_malformed_records_are_refused(name, body):
    stream = rec_hello({"pid": 1}) + body
    assert reference(stream) == ("refused",), name  # the reference agrees that the stream is bad
    img = Image(PS)
    f = io.BytesIO(stream)
    read_hello(f)
    t = time.perf_counter()
    with pytest.raises((StreamError, Closed)) as e:
        serve(f, img)
    assert time.perf_counter() - t < 2
    if isinstance(e.value, StreamError):
        assert "\n" not in str(e.value)
    assert len(img.pages()) == 0
    img.close()


def test_the_c_scatter_checks_the_table_itself():
    # psl_scatter is handed tables straight from the network: it refuses a bad one on its own (the
    # Python checks bypassed) and copies nothing
    img = Image(PS)
    img.apply_pages(np.array([[BASE, 2 * PS]], dtype=np.uint64), fill(BASE, 2 * PS))
    data = np.frombuffer(bytes(range(256)) * 32, dtype=np.uint8)  # 2 pages

    def scatter(rows, n):
        t = np.array(rows, dtype=np.uint64).reshape(-1, 2)
        return _lib.lib().psl_scatter(data.ctypes.data, n, t.ctypes.data, len(t), img.keys.ctypes.data,
                                      img.bases.ctypes.data, img.pres.ctypes.data, len(img.keys), 21, PS)
    assert scatter([(BASE, 4 * PS)], 2 * PS) == -2            # claims more than it carries
    assert scatter([(BASE, PS)], 2 * PS) == -2                # carries more than it claims
    assert scatter([(0, 1 << 57)] * 128 + [(BASE, PS)], PS) == -2  # a sum that wraps
    assert scatter([(BASE + 8, PS)], PS) == -1                # unaligned
    assert scatter([(BASE, 0)], 0) == -1                      # empty
    assert scatter([((1 << 64) - PS, 2 * PS)], 2 * PS) == -1  # wraps around
    assert scatter([(BASE, PS), (BASE + GiB, PS)], 2 * PS) == -3  # a chunk not created: nothing copied
    assert img.read(BASE, 2 * PS) == fill(BASE, 2 * PS)
    assert scatter([(BASE + PS, PS)], PS) == 0 and img.read(BASE + PS, PS) == data[:PS].tobytes()
    img.close()


@pytest.mark.parametrize("hello", [
    H.pack(HELLO, 0, 1), H.pack(HELLO, 0, 3), H.pack(HELLO, 0, 0), H.pack(HELLO, 0, 1 << 40),
    H.pack(HELLO, 0xFFFFFFFF, PS), H.pack(HELLO, 3, PS) + b"[1]", H.pack(HELLO, 3, PS) + b"{x}",
    H.pack(HELLO, 5000, PS) + b"[" * 5000, rec_hello({"token": 5}), rec_hello({"token": "x" * 2000}),
    H.pack(PAGES, 0, 0)])
def test_bad_hello_is_refused(hello):
    assert reference(hello + rec_verified({}) + H.pack(END, 0, 0)) == ("refused",)
    with pytest.raises(StreamError):
        read_hello(io.BytesIO(hello + bytes(64)))


def test_a_huge_drop_costs_what_the_image_holds():
    # DROP of the whole user address space over a small image: visits the chunks held, not 2^57 bytes
    img = Image(PS)
    for a in (BASE, BASE + 5 * GiB, 3 * GiB - PS):
        img.apply_pages(np.array([[a, 2 * PS]], dtype=np.uint64), fill(a, 2 * PS))
    t = time.perf_counter()
    img.drop(np.array([[0, LIMITS["address_end"]]], dtype=np.uint64))
    assert time.perf_counter() - t < 1
    assert len(img.pages()) == 0 and img.read(BASE, PS) == bytes(PS)
    img.close()


def _vm_size():
    return int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) << 10


def _vm_rss():
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) << 10


@pytest.mark.parametrize("n", [2000, pytest.param(20000, marks=pytest.mark.slow)])
def test_scattered_pages_reserve_address_space_in_proportion(n):
    # n one-page ranges, each in a 1 GiB region of its own: measured address space and memory stay
    # within a bound of the bytes received (512 x for address space, plus a pool; 4 x for memory)
    before, rss0 = _vm_size(), _vm_rss()
    img = Image(PS)
    for i in range(0, n, 1000):
        rows = [(BASE - (i + k) * GiB, PS) for k in range(min(1000, n - i))]
        f = io.BytesIO(rec_pages(rows, bytes(PS) * len(rows)) + rec_verified({}))
        with pytest.raises(StreamError):  # the verdict does not match: the pages were applied before it
            serve(f, img)
    received = n * PS
    assert len(img.pages()) == n
    assert _vm_size() - before <= 512 * received + 2 * GiB
    assert _vm_rss() - rss0 <= 4 * received + (64 << 20)
    img.close()


# ---- the stream parser against the reference, fuzzed ---------------------------------------------------

ADDRS = [BASE, BASE + PS, GiB - PS, GiB, 2 * GiB - 2 * PS, (2 << 20) - PS, 3 << 20, LIMITS["address_end"] - PS,
         LIMITS["address_end"], (1 << 64) - PS, 0]


@st.composite
def valid_stream(draw):
    """A stream the format allows: random PAGES/DROP/PASS/VERIFY records around chunk and 1 GiB
    boundaries, then a verdict (right for the pages held) and END."""
    pages = {}
    out = [rec_hello({"pid": draw(st.integers(0, 99))})]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["pages", "pages", "drop", "pass", "verify"]))
        if kind == "pages":
            rows, data = [], b""
            for _ in range(draw(st.integers(1, 3))):
                a = draw(st.sampled_from(ADDRS[:6])) + PS * draw(st.integers(-2, 2))
                n = PS * draw(st.integers(1, 3))
                body = bytes([draw(st.integers(0, 255))]) * n
                rows.append((a, n))
                data += body
                for p in range(0, n, PS):
                    pages[a + p] = body[p:p + PS]
            out.append(rec_pages(rows, data))
        elif kind == "drop":
            rows = [(draw(st.sampled_from(ADDRS[:6])), PS * draw(st.sampled_from([1, 2, 1 << 20])))
                    for _ in range(draw(st.integers(1, 2)))]
            for a, n in rows:
                for k in [k for k in pages if a <= k < a + n]:
                    del pages[k]
            out.append(rec_drop(rows))
        elif kind == "pass":
            out.append(H.pack(PASS, draw(st.integers(0, 5)), 0))
        else:
            out.append(H.pack(VERIFY, 0, 0))
    out.append(rec_verified(pages) if draw(st.booleans()) else H.pack(FAILED, 0, 1))
    out.append(H.pack(END, 0, 0))
    return b"".join(out)


INTERESTING = [0, 1, 3, 8, 16, PS - 1, PS, 1024, 1025, 4 << 20, (4 << 20) + PS, 1 << 31, (1 << 32) - 1,
               1 << 57, 1 << 62, (1 << 64) - 1]


@st.composite
def mutated_stream(draw):
    s = bytearray(draw(valid_stream()))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "field", "cut", "insert", "record"]))
        pos = draw(st.integers(0, max(0, len(s) - 1)))
        if how == "flip":
            s[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "field":
            width = draw(st.sampled_from([4, 8]))
            v = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            s[pos:pos + width] = v.to_bytes(width, sys.byteorder)
        elif how == "cut":
            del s[pos:pos + draw(st.integers(1, 64))]
        elif how == "insert":
            s[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        else:
            rec = H.pack(draw(st.integers(0, 10)), draw(st.sampled_from(INTERESTING)) & 0xFFFFFFFF,
                         draw(st.sampled_from(INTERESTING)))
            s[pos:pos] = rec + draw(st.binary(max_size=48))
    return bytes(s)


def _agree(stream):
    want, got = reference(stream), parse(stream)
    assert got == want


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(valid_stream(), mutated_stream()))
def test_stream_parser_agrees_with_the_reference(stream):
    _agree(stream)


FUZZ_LOG = os.environ.get("PAGESYNC_FUZZ_LOG")


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("PAGESYNC_FUZZ_EXAMPLES", "20000")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(valid_stream(), mutated_stream(), st.binary(max_size=300).map(lambda b: rec_hello() + b)))
def test_stream_parser_agrees_with_the_reference_long(stream):
    if FUZZ_LOG:
        with open(FUZZ_LOG, "a") as f:
            f.write(f"{len(stream)} {reference(stream)[0]}\n")
    _agree(stream)


# ---- the receiver as a TCP server ------------------------------------------------------------------------

class Receiver:
    """``live receive`` in a process of its own; stderr lines arrive in ``self.lines``."""

    def __init__(self, *args, token=TOKEN):
        env = dict(os.environ)
        env.pop("PAGESYNC_LIVE_TOKEN", None)
        if token is not None:
            env["PAGESYNC_LIVE_TOKEN"] = token
        self.p = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "receive", "--listen",
                                   "127.0.0.1:0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=OUTSIDE, env=env)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line(20)
        self.port = int(re.search(r":(\d+)$", first.strip()).group(1))

    def _read(self):
        for line in self.p.stderr:
            self.err.append(line)
            self.lines.put(line)

    def line(self, timeout=10):
        return self.lines.get(timeout=timeout)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def wait(self, timeout=20):
        out = self.p.stdout.read()
        rc = self.p.wait(timeout=timeout)
        time.sleep(0.05)
        return rc, out, "".join(self.err[1:])

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def reply_of(sock):
    h = b""
    while len(h) < 16:
        b = sock.recv(16 - len(h))
        if not b:
            return None
        h += b
    typ, count, arg = H.unpack(h)
    text = b""
    while len(text) < count:
        text += sock.recv(count - len(text))
    return typ, count, arg, text.decode()


def good_stream(pages_layout):
    """A well-formed mirror stream after the HELLO: the pages, a PASS, the right verdict, END."""
    pages, recs = {}, []
    for a, n in pages_layout:
        data = fill(a, n)
        recs.append(rec_pages([(a, n)], data))
        for p in range(0, n, PS):
            pages[a + p] = data[p:p + PS]
    return b"".join(recs) + H.pack(PASS, 0, 0) + rec_verified(pages) + H.pack(END, 0, 0), pages


@pytest.fixture
def receiver():
    made = []

    def make(*args, **kw):
        r = Receiver(*args, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.kill()


def _leftovers(d, name):
    return sorted(p.name for p in Path(d).iterdir() if p.name.startswith(f".{name}") or p.name == name)


def test_receiver_keeps_only_a_verified_mirror_from_the_client_with_the_token(receiver, tmp_path):
    out = tmp_path / "m.stream"
    r = receiver("--out", str(out))
    # strangers first: no token, a wrong one, one who hangs up, one who sends a bad HELLO
    for meta, expect in [({"pid": 1}, "missing token"), ({"token": "guess"}, "wrong token")]:
        s = r.connect()
        s.sendall(rec_hello(meta))
        typ, count, _, text = reply_of(s)
        assert typ == 0x80 | HELLO and text == expect
        s.close()
        assert expect in r.line()
    s = r.connect()
    s.close()
    assert "closed before its HELLO" in r.line()
    s = r.connect()
    s.sendall(H.pack(HELLO, 0xFFFFFFFF, PS))  # 4 GiB of metadata declared
    assert "at most 65536" in reply_of(s)[3]
    s.close()
    assert "refused" in r.line()
    assert not out.exists()
    # then the mirror
    layout = [(5 * GiB - (2 << 20), 4 << 20), (7 * GiB - 3 * PS, 7 * PS)]
    body, pages = good_stream(layout)
    s = r.connect()
    s.sendall(rec_hello({"pid": 42, "command": ["x"], "token": TOKEN}))
    assert reply_of(s)[:2] == (0x80 | HELLO, 0)
    s.sendall(body)
    assert reply_of(s)[:2] == (0x80 | PASS, 0)
    assert reply_of(s)[:2] == (0x80 | END, 0)
    s.close()
    rc, stdout, err = r.wait()
    assert rc == 0, err
    assert "verified" in stdout
    img, hello = load(out)
    try:
        assert hello == {"pid": 42, "command": ["x"]}  # the token is not kept
        assert img.pages().tolist() == sorted(pages)
        for a, n in layout:
            assert img.read(a, n) == fill(a, n)
    finally:
        img.close()
    assert _leftovers(tmp_path, "m.stream") == ["m.stream"]


@pytest.mark.parametrize("name,body,status", [
    ("table claims more than the data", rec_pages([(BASE, 2 * PS)], bytes(PS))[:-PS] + bytes(PS), 2),
    ("table claims 1 MiB of heap", H.pack(PAGES, 1, PS) + struct.pack("=QQ", BASE, 1 << 20) + bytes(PS), 2),
    ("DROP of 2^62 bytes", rec_drop([(0, 1 << 62)]), 2),
    ("address wraps around", rec_pages([((1 << 64) - PS, 2 * PS)], bytes(2 * PS)), 2),
    ("VERIFIED with a wrong digest", rec_pages([(BASE, PS)], bytes(PS)) + H.pack(VERIFIED, 32, 1) + bytes(32)
     + H.pack(END, 0, 0), 2),
    ("the mirror's verdict is FAILED", rec_pages([(BASE, PS)], fill(BASE, PS)) + H.pack(FAILED, 0, 1)
     + H.pack(END, 0, 0), 1),
])
def test_receiver_refuses_a_bad_stream_and_keeps_nothing(receiver, tmp_path, name, body, status):
    out = tmp_path / "m.stream"
    r = receiver("--out", str(out))
    s = r.connect()
    s.sendall(rec_hello({"token": TOKEN}))
    assert reply_of(s)[1] == 0
    try:
        s.sendall(body + bytes(64))
    except OSError:
        pass  # the receiver may hang up first
    rc, stdout, err = r.wait()
    s.close()
    assert rc == status, (name, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert ("FAILED" in err) if status == 1 else ("refused the stream" in err), err
    assert _leftovers(tmp_path, "m.stream") == []


def test_receiver_that_cannot_keep_the_mirror_says_so(receiver, tmp_path):
    # the directory of --out vanishes during the mirror: the verified mirror cannot be written, the
    # mirror hears it in the END reply and the receiver fails (nothing claims success)
    d = tmp_path / "gone"
    d.mkdir()
    r = receiver("--out", str(d / "m.stream"))
    s = r.connect()
    s.sendall(rec_hello({"token": TOKEN}))
    assert reply_of(s)[1] == 0
    d.rmdir()
    body, _ = good_stream([(BASE, 4 * PS)])
    s.sendall(body)
    assert reply_of(s)[:2] == (0x80 | PASS, 0)
    typ, count, _, text = reply_of(s)
    assert typ == 0x80 | END and count > 0 and "No such file or directory" in text
    s.close()
    rc, _, err = r.wait()
    assert rc == 2 and err.count("\n") == 1 and "No such file or directory" in err, err
    assert not d.exists()


def test_receive_bad_arguments(tmp_path, monkeypatch, capsys):
    from pagesync_model.cli import main
    monkeypatch.delenv("PAGESYNC_LIVE_TOKEN", raising=False)
    tok = tmp_path / "tok"
    tok.write_text("\n")
    for args, msg in [([], "no token"), (["--listen", ":0", "--no-token"], "no host"),
                      (["--listen", "127.0.0.1:99999", "--no-token"], "expected HOST:PORT"),
                      (["--token-file", str(tok)], "1 to 1024 characters"),
                      (["--token-file", str(tmp_path / "none")], "No such file"),
                      (["--no-token", "--token-file", str(tok)], "exclude each other"),
                      (["--no-token", "--out", str(tmp_path)], "is a directory"),
                      (["--no-token", "--out", str(tmp_path / "no" / "f")], "no such directory")]:
        assert main(["live", "receive", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, (args, err)


# ---- the mirror's handshake against the receiver's timing ----------------------------------------------------

def _accept_loop(srv, token, seen):
    """The receiver's accept loop (``live receive``'s own handshake): clients that fail it are refused
    and the next is taken."""
    from pagesync_model.live.cli import _handshake
    while True:
        conn, _ = srv.accept()
        try:
            _, _, meta = _handshake(conn, token)
        except (StreamError, Closed, OSError) as e:
            seen.append(("refused", type(e).__name__))
            conn.close()
            continue
        seen.append(("accepted", meta))
        return conn


def test_a_target_slow_to_start_does_not_lose_the_receiver(monkeypatch):
    # the mirror connects before it starts the target and sends its HELLO once the preload library is
    # up (it has up to 10 s), while the receiver refuses a client silent for LIMITS["handshake_s"] after
    # its accept: the mirror connects again when that time may have run out
    from pagesync_model.live import protocol
    monkeypatch.setitem(protocol.LIMITS, "handshake_s", 0.5)
    srv = socket.create_server(("127.0.0.1", 0))
    seen, conns = [], []
    th = threading.Thread(target=lambda: conns.append(_accept_loop(srv, TOKEN, seen)), daemon=True)
    th.start()
    link = protocol.Link(f"127.0.0.1:{srv.getsockname()[1]}", token=TOKEN)
    try:
        time.sleep(0.8)  # the target's start: longer than the receiver's handshake time
        link.hello(PS, {"pid": 1, "command": ["x"]})
        th.join(5)
        assert seen and seen[-1] == ("accepted", {"pid": 1, "command": ["x"]}), seen
    finally:
        link.close()
        for c in conns:
            c.close()
        srv.close()


def test_a_receiver_that_never_answers_the_hello_is_given_up(monkeypatch):
    # the wait for REPLY|HELLO is bounded (3 x the handshake time) although no blackout deadline is set
    from pagesync_model.live import protocol
    from pagesync_model.live.errors import LiveError
    monkeypatch.setitem(protocol.LIMITS, "handshake_s", 0.2)
    srv = socket.create_server(("127.0.0.1", 0))
    got = {}

    def run():
        link = protocol.Link(f"127.0.0.1:{srv.getsockname()[1]}", token=TOKEN)
        t0 = time.monotonic()
        try:
            link.hello(PS, {"pid": 1})
        except LiveError as e:
            got["err"] = str(e)
        finally:
            got["took"] = time.monotonic() - t0
            link.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    conn, _ = srv.accept()  # reads nothing, answers nothing
    try:
        th.join(10)
        assert not th.is_alive(), "the mirror waits for the HELLO's reply forever"
        assert "did not answer the HELLO" in got.get("err", ""), got
        assert 0.5 < got["took"] < 3, got
    finally:
        conn.close()
        srv.close()


# ---- round trips with a live target ------------------------------------------------------------------------

def _live_reason():
    from pagesync_model.trace.record import probe
    if shutil.which("gcc") is None:
        return "gcc not found: cannot build the C target"
    return probe()


live = pytest.mark.skipif(_live_reason() is not None, reason=f"no live mirror here: {_live_reason()}")
K = np.uint64(0x9e3779b97f4a7c15)
LB = 0x200000000000  # an empty stretch of the address space for the target's fixed mappings
# a 4 MiB buffer straddling a 1 GiB boundary, 7 pages across another, 10 MiB + 2 pages across a third,
# and 2000 two-page mappings (each its own mapping: one-page holes between them)
LAYOUT = [(LB + 5 * GiB - (2 << 20), 4 << 20, 1), (LB + 7 * GiB - 3 * PS, 7 * PS, 1),
          (LB + 9 * GiB - (5 << 20) - PS, (10 << 20) + 2 * PS, 1), (LB + 12 * GiB - PS, 2 * PS, 2000)]


def pattern(addr, n):
    """What live_layout writes: every 8-byte word holds its address XOR K."""
    return (np.arange(addr, addr + n, 8, dtype=np.uint64) ^ K).tobytes()


def mappings(layout):
    return [(a + i * (n + PS), n) for a, n, count in layout for i in range(count)]


def check_image(img, layout):
    maps = mappings(layout)
    held = set(img.pages().tolist())
    for a, n in maps:
        assert all(p in held for p in range(a, a + n, PS)), hex(a)
        assert img.read(a, n) == pattern(a, n), hex(a)
    return maps


@pytest.fixture(scope="module")
def layout_bin():
    d = tempfile.mkdtemp(prefix="pagesync-live-stream-")
    os.chmod(d, 0o755)
    exe = os.path.join(d, "live_layout")
    subprocess.run(["gcc", "-O2", "-o", exe, str(ROOT / "tests" / "data" / "live_layout.c")], check=True)
    yield exe
    shutil.rmtree(d, ignore_errors=True)


def layout_args(layout):
    return [f"{a:#x}:{n}:{c}" for a, n, c in layout]


def mirror_cli(args, cmd, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "pagesync_model", "live", "mirror", "--quiet", *args, "--", *cmd],
                          capture_output=True, text=True, cwd=OUTSIDE, env=env, timeout=timeout)


@live
def test_live_round_trip_across_1gib_boundaries(layout_bin, receiver, tmp_path):
    out, to = tmp_path / "recv.stream", tmp_path / "file.stream"
    r = receiver("--out", str(out), "--quiet")
    env = dict(os.environ, PAGESYNC_LIVE_TOKEN=TOKEN)
    cmd = [layout_bin, "10", *layout_args(LAYOUT)]
    for dest in (f"127.0.0.1:{r.port}", str(to)):
        p = mirror_cli(["--delay", "300ms", "--then", "kill", "--json", str(tmp_path / "r.json"), "--to", dest], cmd,
                       env=env)
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("map ") == 2003
        d = json.loads((tmp_path / "r.json").read_text())
        assert d["verified"]
        img, hello = load(out if dest != str(to) else to)
        try:
            assert hello["pid"] == d["live"]["pid"] and "token" not in hello
            assert len(img.pages()) == d["memory_pages"]
            check_image(img, LAYOUT)
        finally:
            img.close()
    rc, _, err = r.wait()
    assert rc == 0, err
    assert _leftovers(tmp_path, "recv.stream") == ["recv.stream"]
    assert _leftovers(tmp_path, "file.stream") == ["file.stream"]


@live
def test_mirror_refused_without_the_token(layout_bin, receiver, tmp_path):
    r = receiver("--out", str(tmp_path / "m"))
    env = dict(os.environ)
    env.pop("PAGESYNC_LIVE_TOKEN", None)
    p = mirror_cli(["--then", "kill", "--to", f"127.0.0.1:{r.port}"], [layout_bin, "5", f"0:{PS}"], env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "refused the mirror: missing token" in p.stderr
    assert "missing token" in r.line()
    r.kill()
    assert _leftovers(tmp_path, "m") == []


@live
@pytest.mark.parametrize("where", ["file", "tcp"])
def test_a_failed_verification_keeps_nothing(layout_bin, receiver, tmp_path, monkeypatch, where):
    # the mirror's comparison is made to report one differing page: the receiver must hear the
    # verdict (exit 1) and neither it nor the file writer may leave a file under the final name
    from pagesync_model.live import mirror as m
    real = m.compare

    def one_off(tp, ts, mp, ms):
        missing, extra, differ = real(tp, ts, mp, ms)
        return missing, extra, np.union1d(differ, tp[:1])
    monkeypatch.setattr(m, "compare", one_off)
    out = tmp_path / "m.stream"
    r = receiver("--out", str(out)) if where == "tcp" else None
    res = m.run_mirror([layout_bin, "5", f"0:{1 << 20}"], f"127.0.0.1:{r.port}" if r else str(out), passes=1,
                       threshold=10 ** 6, delay=0.2, then="kill", token=TOKEN, stdout=subprocess.DEVNULL)
    assert not res["verified"] and res["lost_writes"] == 1
    if r:
        rc, _, err = r.wait()
        assert rc == 1 and "FAILED its verification (1 pages differ); nothing kept" in err, err
    assert _leftovers(tmp_path, "m.stream") == []


def _state(pid):
    s = Path(f"/proc/{pid}/stat").read_text()
    return s[s.rfind(")") + 2]


@live
def test_verify_a_saved_mirror_against_the_process(layout_bin, tmp_path):
    # mirror a target that then idles (--then wait); once the file exists under its name the cut-over
    # is done: the target's pattern pages must equal the file's, and a page changed behind the
    # mirror's back must show up as different
    to = tmp_path / "m.stream"
    lay = [(LB + 5 * GiB - (2 << 20), 4 << 20, 1)]
    p = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "mirror", "--quiet", "--delay", "200ms",
                          "--to", str(to), "--", layout_bin, "30", *layout_args(lay)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=OUTSIDE)
    pid = None
    try:
        t = time.monotonic()
        while not to.exists():
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() - t < 60
            time.sleep(0.05)
        img, hello = load(to)
        pid = hello["pid"]
        check_image(img, lay)
        img.close()

        def verify(*extra):
            q = subprocess.run([sys.executable, "-m", "pagesync_model", "live", "verify", str(to), *extra],
                               capture_output=True, text=True, cwd=OUTSIDE, timeout=60)
            return q
        q = verify()
        assert q.returncode == 0 and "a verified mirror of pid" in q.stdout, q.stderr
        js = tmp_path / "v.json"
        q = verify("--pid", str(pid), "--json", str(js))
        assert q.returncode in (0, 1), q.stderr
        first = json.loads(js.read_text())
        a, n = lay[0][:2]
        ours = {hex(x) for x in range(a, a + n, PS)}
        assert not ours & set(first["missing"] + first["extra"] + first["different"])
        assert _state(pid) != "T"  # stopped for the comparison only
        # one word of one page changed behind the mirror's back
        victim = a + 37 * PS
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(victim + 8)
            mem.write(b"changed!")
        os.kill(pid, signal.SIGSTOP)  # a process stopped before stays stopped
        q = verify("--pid", str(pid), "--json", str(js))
        assert q.returncode == 1 and q.stderr.count("\n") == 1 and "differs from pid" in q.stderr
        second = json.loads(js.read_text())
        assert set(second["different"]) & ours == {hex(victim)}
        assert _state(pid) == "T"
        os.kill(pid, signal.SIGCONT)
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.kill()
        p.wait()


def _largest_mapping():
    """The largest single mapping this test affords: a quarter of the available memory, at most 8 GiB,
    in whole GiB."""
    avail = int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) << 10
    return max(1, min(8, avail // 4 // GiB)) * GiB


@live
@pytest.mark.slow
def test_live_round_trip_of_the_largest_mapping(layout_bin, receiver, tmp_path):
    size = _largest_mapping()
    lay = [(LB + 3 * GiB - (1 << 20) - PS, size + 2 * PS, 1)]
    out = tmp_path / "big.stream"
    r = receiver("--out", str(out), "--quiet")
    t = time.perf_counter()
    p = mirror_cli(["--delay", "500ms", "--then", "kill", "--json", str(tmp_path / "r.json"), "--to",
                    f"127.0.0.1:{r.port}"], [layout_bin, "600", *layout_args(lay)],
                   env=dict(os.environ, PAGESYNC_LIVE_TOKEN=TOKEN), timeout=1200)
    took = time.perf_counter() - t
    assert p.returncode == 0, p.stderr
    rc, _, err = r.wait(timeout=600)
    assert rc == 0, err
    img, _ = load(out)
    try:
        a, n = lay[0][:2]
        step = 64 << 20
        for off in range(0, n, step):
            k = min(step, n - off)
            assert img.read(a + off, k) == pattern(a + off, k), hex(a + off)
    finally:
        img.close()
    print(f"largest mapping {size >> 30} GiB + 2 pages: mirrored, saved, read back and checked in {took:.1f} s; "
          f"file {out.stat().st_size / GiB:.2f} GiB")
