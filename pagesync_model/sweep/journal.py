"""The sweep journal, PREFIX.journal: the record of which runs finished, and the only thing --resume
trusts (PREFIX.csv and PREFIX.parquet are views of it, rewritten whole).

It is append-only, one record a line: 8 hex digits of the CRC-32 of the JSON that follows, a space,
the JSON, a newline. Each record is written with one write() and fsync()ed before the sweep counts
the run as done, so a sweep killed at any moment (SIGKILL, power loss) leaves whole records and at
most one torn last record; reading discards that record, and its run is run again. A bad record with
more after it is damage, not a torn write, and reading refuses the file.

The first record is the header: the format, the sweep's spec hash (see ``Sweep.spec_hash``), its
axis keys and run count, the model version. Rows follow, a later row of a run replacing an earlier one.
A journal being written is locked (flock), so two sweeps never write one.
"""
import fcntl
import json
import os
import zlib

from .. import __version__

FORMAT = 1
KIND = "pagesync-sim sweep journal"


class JournalError(ValueError):
    """A journal that cannot be read, trusted or written; one line naming the file."""


def encode(record):
    """One record as the bytes of its line."""
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(body.encode()):08x} {body}\n".encode()


def _decode(line):
    """The record of one line without its newline, or None if it is not a whole, intact record."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    try:
        crc = int(line[:8].decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        return None
    body = line[9:]
    if zlib.crc32(body) != crc:
        return None
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read(path):
    """Read the journal at ``path``: (header or None, rows in order, bytes discarded from a torn end).
    A missing header (empty file, or the header itself torn) gives (None, [], n). Raises JournalError
    for a file that is not a journal or is damaged before its last record."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise JournalError(f"cannot read '{path}': {exc.strerror or exc}") from None
    header, rows, offset = None, [], 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        record = _decode(data[offset:end]) if end >= 0 else None
        if record is None:
            rest = data[end + 1:] if end >= 0 else b""
            if rest.strip(b"\0"):  # whole records (not just a zero-filled tail) follow: damage
                raise JournalError(f"'{path}': the record at byte {offset} is damaged (checksum or format) "
                                   "and more follow; move the file away to start the sweep over")
            return header, rows, len(data) - offset
        if header is None:
            if record.get("kind") != KIND:
                raise JournalError(f"'{path}' is not a sweep journal")
            if record.get("format") != FORMAT:
                raise JournalError(f"'{path}': journal format {record.get('format')} is not {FORMAT}; "
                                   "move it away to start the sweep over")
            header = record
        elif record.get("type") == "row" and isinstance(record.get("row"), dict):
            rows.append(record["row"])
        else:
            raise JournalError(f"'{path}': unexpected record at byte {offset}")
        offset = end + 1
    return header, rows, 0


def header(spec, axis_keys, runs, source):
    """The header record of a sweep's journal."""
    return {"kind": KIND, "format": FORMAT, "spec": spec, "axes": list(axis_keys), "runs": runs,
            "sweep": source, "model": __version__}


def _lock(fd, path):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"'{path}' is in use by another sweep (its journal is locked)") from None


class Journal:
    """The journal at ``path``, locked for this sweep: ``lock()`` first, then ``existing()`` to read
    what is there, ``start(header, rows)`` to replace it atomically, ``append(row)`` per run, ``close()``."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def lock(self):
        """Take the lock on the journal (creating an empty one if there is none). Raises JournalError."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise JournalError(f"cannot write '{self.path}': {exc.strerror or exc}") from None
            _lock(fd, self.path)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not replaced by another sweep between our open and our lock
                self.fd = fd
                return
            os.close(fd)

    def existing(self):
        """``read`` of the journal as it is (None, [], 0 when empty)."""
        return read(self.path)

    def start(self, head, rows=()):
        """Replace the journal with ``head`` and ``rows`` (written to a temporary file, synced,
        renamed over it), keeping the lock. Raises JournalError."""
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            _lock(fd, tmp)
            try:
                data = encode(head) + b"".join(encode({"type": "row", "row": r}) for r in rows)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                os.replace(tmp, self.path)
                _sync_dir(self.path)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise JournalError(f"cannot write '{self.path}': {exc.strerror or exc}") from None
        old, self.fd = self.fd, fd
        if old is not None:
            os.close(old)
        os.lseek(self.fd, 0, os.SEEK_END)

    def append(self, row):
        """Append ``row`` and sync it to disk. Raises JournalError (disk full, I/O error)."""
        data = encode({"type": "row", "row": row})
        try:
            written = os.write(self.fd, data)
            if written != len(data):  # a short write leaves a torn record: drop it, say so
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR) - written)
                raise OSError(28, "No space left on device")
            os.fsync(self.fd)
        except OSError as exc:
            raise JournalError(f"cannot append to '{self.path}': {exc.strerror or exc}") from None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _sync_dir(path):
    """fsync the directory holding ``path`` so a rename survives a crash."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
