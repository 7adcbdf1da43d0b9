"""``pagesync-sim live mirror|receive|verify``: a real pagesync of a live Linux process.

  pagesync-sim live mirror [--passes N] [--threshold PAGES] [--stop at-once|after-copy]
                           [--to HOST:PORT | --to FILE] [--json PATH] [--delay 0.5s] [--max-blackout 5s] [--then wait|kill] [--token-file FILE] [--quiet]
                           -- CMD ARGS...
  pagesync-sim live receive [--listen HOST:PORT] [--out FILE] [--token-file FILE | --no-token] [--quiet]
  pagesync-sim live verify FILE [--pid PID] [--json PATH]

Over TCP the receiver accepts only a mirror that knows its shared secret: the token is read from
--token-file FILE (its first line) or else from the environment variable PAGESYNC_LIVE_TOKEN, on both
sides; ``receive`` refuses to start without one unless given --no-token.

Exit status: 0 mirrored and verified (receive: the verified mirror is kept; verify: the file is a
verified mirror and equals the process); 1 mirrored but the verification found differing pages
(listed loudly on stderr; nothing is kept); 2 bad input or failure (one line on stderr).
"""
import argparse
import json
import os
import socket
import sys

from ..cli import PROG, ArgParser, UsageError, write_output
from ..policies.stratus import PASSES, THRESHOLD
from .errors import LiveError

TOKEN_ENV = "PAGESYNC_LIVE_TOKEN"


def _duration(text, option="--delay", positive=False):
    from ..units import UnitError, parse_duration
    try:
        v = parse_duration(text)
    except UnitError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if not isinstance(v, float) or v < 0 or (positive and v == 0):
        raise UsageError(f"{option}: must be a time {'>' if positive else '>='} 0 such as 500ms, got '{text}'")
    return v


def format_live(d):
    """The per-pass table and a summary of a live mirror."""
    head = ("pass", "kind", "start ms", "duration ms", "dirty pages", "pages copied", "ranges", "MiB")
    rows = [(str(r["pass"]), r["kind"], f"{r['start_s'] * 1e3:.3f}", f"{r['duration_s'] * 1e3:.3f}",
             str(r["dirty_pages"]), str(r["pages_copied"]), str(r["ranges"]), f"{r['bytes'] / 2**20:.2f}")
            for r in d["per_pass"]]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lv = d["live"]
    verdict = f"converged ({d['stop_reason']})" if d["converged"] else f"NOT converged ({d['stop_reason']})"
    bl = lv["per_pass"][-1]
    thr = lv["full_pass_throughput_Bps"]
    v = lv["verification"]
    ver = (f"verified: {v['pages_compared']} pages equal the stopped target's" if d["verified"] else
           f"MISMATCH in {d['lost_writes']} pages (missing {v['n_missing']}, extra {v['n_extra']}, "
           f"different {v['n_different']})")
    lines += ["",
              f"target               pid {lv['pid']}: {' '.join(d['config']['live']['command'])}",
              f"passes               {d['passes']}  {verdict}",
              f"blackout (downtime)  {d['downtime_s'] * 1e3:.3f} ms  (stop wait {bl['stop_wait_s'] * 1e3:.3f} ms, "
              f"{bl['blackout_pages']} pages; stopped {lv['stopped_s'] * 1e3:.3f} ms with verification)",
              f"total mirror time    {d['total_time_s']:.3f} s",
              f"sent                 {d['bytes_sent'] / 2**20:.2f} MiB in {d['pages_sent']} pages "
              f"({d['copies_per_page']:.3f} copies per page); full pass "
              f"{(thr or 0) / 2**20:.0f} MiB/s",
              f"mirror               {ver}"]
    return "\n".join(lines) + "\n"


def mirror_main(argv):
    p = ArgParser(prog=f"{PROG} live mirror", description="Mirror a live process's memory with the Stratus "
                                                        "pagesync algorithm and verify the mirror.")
    p.add_argument("--passes", type=int, default=PASSES, help="copy passes after the full copy before the "
                                                              f"forced blackout (default {PASSES}, as stratus.passes)")
    p.add_argument("--threshold", type=int, default=THRESHOLD, help="dirty pages below which the next pass is "
                                                                    f"the blackout (default {THRESHOLD}, as "
                                                                    "stratus.threshold)")
    p.add_argument("--stop", default="at-once", choices=("at-once", "after-copy"),
                   help="when a scan decides the blackout: stop the target at once and copy that scan's pages "
                        "stopped (default), or copy them with the target running, then stop, scan and copy "
                        "what was written meanwhile (as stratus.stop)")
    p.add_argument("--to", default=None, metavar="HOST:PORT|FILE",
                   help="a 'live receive' partner, or a stream file (default: a temporary file)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-' for stdout)")
    p.add_argument("--delay", default="0s", help="let the target run this long before the first pass (e.g. 500ms)")
    p.add_argument("--max-blackout", default="5s",
                   help="give up the blackout this long after stopping the target (e.g. 2s; default 5s): "
                        "continue it, report the step that took too long, exit 2")
    p.add_argument("--then", default="wait", choices=("wait", "kill"),
                   help="after the cut-over: wait for the continued target to exit (default) or kill it")
    p.add_argument("--token-file", metavar="FILE", help="the receiver's shared secret (first line of FILE; "
                                                        f"default: ${TOKEN_ENV})")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise UsageError("live mirror: no command given (use: live mirror [options] -- CMD ARGS...)")
    if args.passes < 0:
        raise UsageError(f"--passes: must be >= 0, got {args.passes}")
    if args.threshold < 0:
        raise UsageError(f"--threshold: must be >= 0, got {args.threshold}")
    delay = _duration(args.delay)
    max_blackout = _duration(args.max_blackout, "--max-blackout", positive=True)
    token = _token(args.token_file)
    import tempfile

    from .mirror import run_mirror
    tmpfile = None
    to = args.to
    if to is None:
        fd, tmpfile = tempfile.mkstemp(prefix="pagesync-live-", suffix=".stream")
        os.close(fd)
        to = tmpfile
    try:
        res = run_mirror(cmd, to, passes=args.passes, threshold=args.threshold, delay=delay, then=args.then,
                         max_blackout=max_blackout, token=token, stop=args.stop)
    except LiveError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if tmpfile and os.path.exists(tmpfile):
            os.unlink(tmpfile)
    if args.json:
        write_output(args.json, json.dumps(res, indent=2) + "\n")
    if not args.quiet and args.json != "-":
        sys.stdout.write(format_live(res))
    if not res["verified"]:
        v = res["live"]["verification"]
        print(f"{PROG}: live mirror: VERIFICATION FAILED: the mirror differs from the stopped target in "
              f"{res['lost_writes']} pages: missing {v['missing']}, extra {v['extra']}, different {v['different']}",
              file=sys.stderr)
        return 1
    return 0


def _token(path):
    """The shared secret: the first line of ``path``, else $PAGESYNC_LIVE_TOKEN, else None."""
    from .protocol import LIMITS
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--token-file {path}: {getattr(e, 'strerror', None) or e}") from None
        where = f"--token-file {path}"
    else:
        text = os.environ.get(TOKEN_ENV, "").strip()
        if not text:
            return None  # unset or empty: no token
        where = f"${TOKEN_ENV}"
    if not text or len(text) > LIMITS["token_bytes"]:
        raise UsageError(f"{where}: the token must be 1 to {LIMITS['token_bytes']} characters")
    return text


def _listen_address(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen: expected HOST:PORT, got '{text}'")
    if not host.strip("[]"):
        # an empty host would mean every interface; the user has to say so
        raise UsageError(f"--listen: no host in '{text}' (127.0.0.1 for this machine only, 0.0.0.0 for every "
                         "interface)")
    return host.strip("[]"), int(port)


def _handshake(conn, token):
    """Read and check a client's HELLO within the handshake time: (page size, meta) or StreamError."""
    from .protocol import HDR, HELLO, LIMITS, REPLY, StreamError, read_hello, same_secret
    conn.settimeout(LIMITS["handshake_s"])
    rfile = conn.makefile("rb")
    ps, meta = read_hello(rfile)
    given = meta.pop("token", None)
    if token is not None and (given is None or not same_secret(given, token)):
        raise StreamError("missing token" if given is None else "wrong token")
    conn.settimeout(None)
    conn.sendall(HDR.pack(REPLY | HELLO, 0, 0))
    return rfile, ps, meta


def receive_main(argv):
    from .protocol import (HDR, HELLO, LIMITS, REPLY, Closed, Image, StreamError, commit, partial_name,
                           remove_file, serve)
    p = ArgParser(prog=f"{PROG} live receive", description="Keep the mirror of a 'live mirror' run.")
    p.add_argument("--listen", default="127.0.0.1:7077", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:7077; port 0 picks one and prints it; "
                        "0.0.0.0:PORT for every interface)")
    p.add_argument("--out", metavar="FILE", help="write the final mirror image as a stream file (only once verified)")
    p.add_argument("--token-file", metavar="FILE", help="the shared secret a mirror must present (first line of "
                                                        f"FILE; default: ${TOKEN_ENV})")
    p.add_argument("--no-token", action="store_true", help="accept any client (no shared secret)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    host, port = _listen_address(args.listen)
    if args.no_token and args.token_file:
        raise UsageError("--no-token and --token-file exclude each other")
    token = None if args.no_token else _token(args.token_file)
    if token is None and not args.no_token:
        raise UsageError(f"live receive: no token: put a shared secret in ${TOKEN_ENV} or in a file given with "
                         "--token-file (the mirror needs the same), or accept any client with --no-token")
    if args.out and os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: is a directory")
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"--out {args.out}: no such directory")
    try:
        srv = socket.create_server((host, port))
    except (OSError, OverflowError) as e:
        raise UsageError(f"--listen {args.listen}: {getattr(e, 'strerror', None) or e}") from None
    h, pt = srv.getsockname()[:2]
    print(f"{PROG} live receive: listening on {h}:{pt}", file=sys.stderr, flush=True)
    # Clients that fail the handshake (no HELLO in time, malformed, wrong token) are refused and the
    # receiver waits for the next: a stranger connecting first cannot take the place of the mirror.
    while True:
        conn, peer = srv.accept()
        try:
            rfile, ps, hello = _handshake(conn, token)
            break
        except (StreamError, Closed, OSError) as e:
            why = ("no HELLO within the handshake time" if isinstance(e, socket.timeout) else
                   "closed before its HELLO" if isinstance(e, Closed) else
                   str(e) if isinstance(e, StreamError) else e.strerror or str(e))
            print(f"{PROG} live receive: refused {peer[0]}:{peer[1]}: {why}", file=sys.stderr, flush=True)
            try:
                text = why.encode()[:LIMITS["error_text_bytes"]]
                conn.settimeout(1.0)
                conn.sendall(HDR.pack(REPLY | HELLO, len(text), 0) + text)
            except OSError:
                pass
            conn.close()
    srv.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tmp = partial_name(args.out) if args.out else None

    def on_end(verdict):
        """The mirror's verdict has arrived: keep a verified image (written, read back, renamed)."""
        if verdict[0] != "verified" or not args.out:
            return None
        try:
            img.save(tmp, hello)
            img.close()  # the file is read back next: one image in memory at a time
            commit(tmp, args.out, verdict[2])
        except OSError as e:
            return f"--out {args.out}: {e.strerror or e}"
        except LiveError as e:
            return str(e)
        return None

    img = Image(ps)
    try:
        verdict, stats = serve(rfile, img, conn.sendall, on_end=on_end)
    except Closed:
        raise UsageError(f"live receive: the mirror {peer[0]}:{peer[1]} went away before the end of the stream; "
                         "the partial mirror is discarded") from None
    except (ConnectionResetError, BrokenPipeError) as e:
        raise UsageError(f"live receive: the mirror {peer[0]}:{peer[1]} went away ({e.strerror})") from None
    except StreamError as e:
        raise UsageError(f"live receive: refused the stream of {peer[0]}:{peer[1]}: {e}; nothing kept") from None
    except LiveError as e:
        raise UsageError(f"live receive: {e}") from None
    finally:
        conn.close()
        if tmp:
            remove_file(tmp)
    img.close()
    if verdict[0] != "verified":
        print(f"{PROG}: live receive: the mirror of pid {hello.get('pid')} FAILED its verification ({verdict[1]} "
              "pages differ); nothing kept", file=sys.stderr)
        return 1
    if not args.quiet:
        cmd = hello.get("command")
        cmd = " ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
        print(f"{PROG} live receive: mirrored pid {hello.get('pid')} ({cmd}): {verdict[1]} pages held, verified, "
              f"{stats['bytes'] / 2**20:.2f} MiB received in {stats['passes']} passes"
              + (f" -> {args.out}" if args.out else ""))
    return 0


def verify_main(argv):
    """Check a saved mirror: its own digest, and with --pid its pages against a (stopped) process."""
    p = ArgParser(prog=f"{PROG} live verify", description="Check a saved mirror file, and compare it with a process.")
    p.add_argument("file", help="a stream file from 'live receive --out' or 'live mirror --to FILE'")
    p.add_argument("--pid", type=int, help="compare with this process (stopped for the comparison if it runs, "
                                           "and continued after)")
    p.add_argument("--json", metavar="PATH", help="write the comparison as JSON ('-' for stdout)")
    args = p.parse_args(argv)
    from .protocol import load
    try:
        img, hello = load(args.file)
    except LiveError as e:
        raise UsageError(f"live verify: {e}") from None
    try:
        addrs, sums = img.checksums()
    finally:
        img.close()
    res = {"file": args.file, "pages": int(len(addrs)), "pid": args.pid}
    if args.pid is None:
        if args.json:
            write_output(args.json, json.dumps(res, indent=2) + "\n")
        if args.json != "-":
            print(f"{args.file}: a verified mirror of pid {hello.get('pid')}: {len(addrs)} pages")
        return 0
    try:
        tp, ts = _process_pages(args.pid, img.page_size)
    except LiveError as e:
        raise UsageError(f"live verify: {e}") from None
    from .mirror import compare
    missing, extra, differ = compare(tp, ts, addrs, sums)
    res.update(process_pages=int(len(tp)), missing=[hex(int(x)) for x in missing],
               extra=[hex(int(x)) for x in extra], different=[hex(int(x)) for x in differ])
    if args.json:
        write_output(args.json, json.dumps(res, indent=2) + "\n")
    bad = len(missing) + len(extra) + len(differ)
    if bad:
        print(f"{PROG}: live verify: {args.file} differs from pid {args.pid} in {bad} pages: missing "
              f"{res['missing'][:16]}, extra {res['extra'][:16]}, different {res['different'][:16]}", file=sys.stderr)
        return 1
    if args.json != "-":
        print(f"{args.file}: verified: {len(addrs)} pages equal pid {args.pid}'s")
    return 0


def _process_pages(pid, page_size):
    """(addresses, checksums) of every present page of the writable private mappings of ``pid``, read
    while it is stopped: a running process is stopped for the reading and continued after, one that was
    already stopped is left so."""
    import signal

    import numpy as np

    from . import _lib
    from .mirror import expand, read_maps, thread_states, to_ranges, wait_stopped
    if os.sysconf("SC_PAGESIZE") != page_size:
        raise LiveError(f"the file's page size {page_size} is not this machine's {os.sysconf('SC_PAGESIZE')}")
    states = thread_states(pid)
    if not states:
        raise LiveError(f"no process {pid}")
    stopped_by_us = not all(c in "TtZX" for c in states)
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError as e:
        raise LiveError(f"cannot read the pages of pid {pid}: {e.strerror}") from None
    try:
        if stopped_by_us:
            os.kill(pid, signal.SIGSTOP)
            wait_stopped(pid)
        maps, _ = read_maps(pid)
        r = _lib.scan(fd, maps, 1, np.zeros(len(maps), dtype=np.int32), page_size)
        pages = expand(r, page_size)
        sums = _lib.Sender(page_size).hash_remote(pid, to_ranges(pages, page_size), len(pages))
        return pages, sums
    except _lib.OsErr as e:
        raise LiveError(f"cannot read the pages of pid {pid}: {os.strerror(e.errno)}") from None
    except ProcessLookupError:
        raise LiveError(f"pid {pid} exited during the comparison") from None
    finally:
        os.close(fd)
        if stopped_by_us:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def main(argv):
    """``pagesync-sim live ...``"""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    action, rest = argv[0], argv[1:]
    if action == "mirror":
        return mirror_main(rest)
    if action == "receive":
        return receive_main(rest)
    if action == "verify":
        return verify_main(rest)
    raise UsageError(f"live: unknown action '{action}' (choose from mirror, receive, verify)")
