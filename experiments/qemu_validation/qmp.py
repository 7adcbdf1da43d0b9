"""Minimal stdlib QMP (QEMU Machine Protocol) client over a unix socket.

Usage:
    with QMP("/tmp/x/qmp.sock") as q:
        q.cmd("query-status")
        q.cmd("migrate-set-parameters", {"max-bandwidth": 64 << 20})

QMP speaks one JSON object per line. After connecting the server sends a
greeting; the client must send {"execute": "qmp_capabilities"} before any
other command. Asynchronous events ({"event": ...}) may arrive between a
command and its reply; they are kept in `events`.
"""
import json
import socket
import time


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, connect_timeout=30.0, timeout=30.0):
        self.path = path
        self.events = []
        self.greeting = None
        self._id = 0
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        s.settimeout(timeout)
        self.sock = s
        self.rfile = s.makefile("rb")
        self.greeting = self._read()
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.rfile.readline()
        if not line:
            raise QMPError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, args=None):
        """Execute a command; return its 'return' value or raise QMPError."""
        self._id += 1
        msg = {"execute": name, "id": self._id}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if r.get("id") != self._id:
                continue
            if "error" in r:
                raise QMPError("%s: %s" % (name, r["error"]))
            return r.get("return")

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
