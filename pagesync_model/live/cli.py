"""``pagesync-sim live mirror|receive``: a real pagesync of a live Linux process.

  pagesync-sim live mirror [--passes N] [--threshold PAGES] [--to HOST:PORT | --to FILE] [--json PATH]
                           [--delay 0.5s] [--then wait|kill] [--quiet] -- CMD ARGS...
  pagesync-sim live receive [--listen HOST:PORT] [--out FILE] [--quiet]

Exit status: 0 mirrored and verified; 1 mirrored but the verification found differing pages
(listed loudly on stderr); 2 bad input or failure (one line on stderr).
"""
import argparse
import json
import socket
import sys

from ..cli import PROG, ArgParser, UsageError, write_output
from ..policies.stratus import PASSES, THRESHOLD
from .errors import LiveError


def _duration(text):
    from ..units import UnitError, parse_duration
    try:
        v = parse_duration(text)
    except UnitError as exc:
        raise UsageError(f"--delay: {exc}") from None
    if not isinstance(v, float) or v < 0:
        raise UsageError(f"--delay: must be a time >= 0 such as 500ms, got '{text}'")
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
    p.add_argument("--to", default=None, metavar="HOST:PORT|FILE",
                   help="a 'live receive' partner, or a stream file (default: a temporary file)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-' for stdout)")
    p.add_argument("--delay", default="0s", help="let the target run this long before the first pass (e.g. 500ms)")
    p.add_argument("--then", default="wait", choices=("wait", "kill"),
                   help="after the cut-over: wait for the continued target to exit (default) or kill it")
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
    import os
    import tempfile

    from .mirror import run_mirror
    tmpfile = None
    to = args.to
    if to is None:
        fd, tmpfile = tempfile.mkstemp(prefix="pagesync-live-", suffix=".stream")
        os.close(fd)
        to = tmpfile
    try:
        res = run_mirror(cmd, to, passes=args.passes, threshold=args.threshold, delay=delay, then=args.then)
    except LiveError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if tmpfile:
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


def receive_main(argv):
    from .protocol import Closed, serve
    p = ArgParser(prog=f"{PROG} live receive", description="Keep the mirror of a 'live mirror' run.")
    p.add_argument("--listen", default="127.0.0.1:7077", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:7077; port 0 picks one and prints it)")
    p.add_argument("--out", metavar="FILE", help="write the final mirror image as a stream file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--listen: expected HOST:PORT, got '{args.listen}'")
    try:
        srv = socket.create_server((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError as e:
        raise UsageError(f"--listen {args.listen}: {e.strerror or e}") from None
    h, pt = srv.getsockname()[:2]
    print(f"{PROG} live receive: listening on {h}:{pt}", file=sys.stderr, flush=True)
    conn, peer = srv.accept()
    srv.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rfile = conn.makefile("rb")

    def save(img, hello):
        if args.out:
            try:
                img.save(args.out, hello)
            except OSError as e:
                raise UsageError(f"--out {args.out}: {e.strerror}") from None

    try:
        img, hello, stats = serve(rfile, conn.sendall, on_record=save)
    except Closed:
        raise UsageError(f"live receive: the mirror {peer[0]}:{peer[1]} went away before the end of the stream; "
                         "the partial mirror is discarded") from None
    except (ConnectionResetError, BrokenPipeError) as e:
        raise UsageError(f"live receive: the mirror {peer[0]}:{peer[1]} went away ({e.strerror})") from None
    except LiveError as e:
        raise UsageError(f"live receive: {e}") from None
    finally:
        conn.close()
    n = len(img.pages())
    img.close()
    if not args.quiet:
        print(f"{PROG} live receive: mirrored pid {hello.get('pid')} ({' '.join(hello.get('command', []))}): "
              f"{n} pages held, {stats['bytes'] / 2**20:.2f} MiB received in {stats['passes']} passes"
              + (f" -> {args.out}" if args.out else ""))
    return 0


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
    raise UsageError(f"live: unknown action '{action}' (choose from mirror, receive)")
