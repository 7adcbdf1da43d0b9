#!/usr/bin/env python3
"""One QEMU pre-copy live migration on localhost, measured.

Starts a destination QEMU (-incoming tcp:127.0.0.1:PORT) and a source QEMU
(TCG, 1 vCPU) booting the lab guest (Debian kernel + busybox/dirtier
initramfs), waits for the guest's "DIRTIER ready" line (working set filled),
lets the dirtier run for a warm-up, sets max-bandwidth / downtime-limit /
auto-converge, migrates, polls query-migrate every 100 ms, cancels if not
completed within --limit seconds, then checks that the destination guest is
running and still writing (its serial console), and writes one JSON file.

Example:
    ./run_migration.py --ws 128 --rate 16000 --pattern rand --max-bw 64 \
        --downtime-ms 300 --limit 60 --out runs/test.json
"""
import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qmp import QMP  # noqa: E402

RATE_RE = re.compile(
    r"DIRTIER rate t=([\d.]+) writes=(\d+) achieved=(\d+) target=(\d+)")
HIST_KEYS = ["t", "status", "transferred", "remaining", "dirty_sync_count",
             "dirty_pages_rate", "mbps", "expected_downtime",
             "cpu_throttle_percentage"]


def loadavg():
    with open("/proc/loadavg") as f:
        a = f.read().split()
    return [float(a[0]), float(a[1]), float(a[2])]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_cpu_s(pid):
    """utime+stime of a process in seconds (all threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class SerialTail(threading.Thread):
    """Follows a serial log file; stamps lines with host monotonic time."""

    def __init__(self, path, t0):
        super().__init__(daemon=True)
        self.path, self.t0 = path, t0
        self.lines = []          # (host_t_rel, line)
        self.stop = False

    def run(self):
        while not os.path.exists(self.path) and not self.stop:
            time.sleep(0.02)
        buf = b""
        with open(self.path, "rb") as f:
            while not self.stop:
                chunk = f.read(65536)
                if not chunk:
                    time.sleep(0.02)
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.lines.append(
                        (round(time.monotonic() - self.t0, 3),
                         line.decode("utf-8", "replace").rstrip("\r")))

    def find(self, needle):
        return [l for l in list(self.lines) if needle in l[1]]

    def rates(self):
        out = []
        for ht, line in list(self.lines):
            m = RATE_RE.search(line)
            if m:
                out.append({"host_t": ht, "guest_t": float(m.group(1)),
                            "writes": int(m.group(2)),
                            "achieved": int(m.group(3))})
        return out


def start_tap(dst_port, path):
    """A TCP tap between the source and the destination: forwards the migration stream and keeps a
    copy of it in ``path`` (for qemu_stream.py). Returns the port the source should migrate to."""
    import socket
    import threading
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def serve():
        src, _ = ls.accept()
        dst = socket.create_connection(("127.0.0.1", dst_port))
        with open(path, "wb") as f:
            while True:
                b = src.recv(1 << 20)
                if not b:
                    break
                f.write(b)
                dst.sendall(b)
        dst.shutdown(socket.SHUT_WR)
        src.close()
        ls.close()

    threading.Thread(target=serve, daemon=True).start()
    return ls.getsockname()[1]


def qemu_version():
    out = subprocess.run(["qemu-system-x86_64", "--version"],
                         capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else None


def compact(q, t):
    ram = q.get("ram", {})
    return [round(t, 3), q.get("status"), ram.get("transferred"),
            ram.get("remaining"), ram.get("dirty-sync-count"),
            ram.get("dirty-pages-rate"),
            round(ram["mbps"], 2) if "mbps" in ram else None,
            q.get("expected-downtime"), q.get("cpu-throttle-percentage")]


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def run(a):
    build = a.build
    kernel = os.path.join(build, "vmlinuz")
    initrd = os.path.join(build, "initramfs.cpio.gz")
    for p in (kernel, initrd):
        if not os.path.exists(p):
            sys.exit("missing %s: run build_guest.sh first" % p)
    work = tempfile.mkdtemp(prefix="qmig-")
    port = a.port or free_port()
    append = ("console=ttyS0 quiet panic=-1 dirty_ws=%d dirty_rate=%d "
              "dirty_pattern=%s dirty_report_ms=%d"
              % (a.ws, a.rate, a.pattern, a.report_ms))
    common = ["qemu-system-x86_64", "-accel", "tcg", "-smp", "1",
              "-m", str(a.ram), "-nodefaults", "-display", "none",
              "-monitor", "none", "-no-reboot",
              "-kernel", kernel, "-initrd", initrd, "-append", append]
    src_ser = os.path.join(work, "src.serial")
    dst_ser = os.path.join(work, "dst.serial")
    src_qmp = os.path.join(work, "src.qmp")
    dst_qmp = os.path.join(work, "dst.qmp")
    t0 = time.monotonic()
    result = {
        "schema": "pagesync-qemu-run/1",
        "config": a.config,
        "run_index": a.run_index,
        "timestamp": datetime.datetime.now(datetime.timezone.utc)
        .isoformat(timespec="seconds"),
        "qemu_version": qemu_version(),
        "host": {"nproc": os.cpu_count(), "loadavg_start": loadavg()},
        "inputs": {
            "accel": "tcg", "vcpus": 1, "guest_ram_mib": a.ram,
            "working_set_mib": a.ws, "rate_requested_pages_s": a.rate,
            "pattern": a.pattern, "max_bandwidth_mib_s": a.max_bw,
            "max_bandwidth_bytes_s": int(a.max_bw * (1 << 20)),
            "downtime_limit_ms": a.downtime_ms,
            "auto_converge": a.auto_converge,
            "cpu_throttle_initial": a.throttle_initial,
            "cpu_throttle_increment": a.throttle_increment,
            "time_limit_s": a.limit, "warmup_s": a.warmup,
            "poll_interval_s": a.poll, "kernel": os.path.realpath(kernel),
            "kernel_cmdline": append,
        },
    }
    procs = []
    tails = []
    try:
        dst = subprocess.Popen(common + [
            "-serial", "file:" + dst_ser,
            "-qmp", "unix:%s,server=on,wait=off" % dst_qmp,
            "-incoming", "tcp:127.0.0.1:%d" % port],
            stdout=subprocess.DEVNULL, stderr=open(
                os.path.join(work, "dst.err"), "wb"))
        procs.append(dst)
        src = subprocess.Popen(common + [
            "-serial", "file:" + src_ser,
            "-qmp", "unix:%s,server=on,wait=off" % src_qmp],
            stdout=subprocess.DEVNULL, stderr=open(
                os.path.join(work, "src.err"), "wb"))
        procs.append(src)
        st = SerialTail(src_ser, t0)
        st.start()
        tails.append(st)
        # wait for ready
        deadline = time.monotonic() + a.boot_timeout
        while not st.find("DIRTIER ready"):
            if time.monotonic() > deadline or src.poll() is not None:
                raise RuntimeError("guest not ready (boot timeout)")
            time.sleep(0.1)
        ready = st.find("DIRTIER ready")[0]
        m = re.search(r"fill_s=([\d.]+)", ready[1])
        result["guest_boot_to_ready_s"] = ready[0]
        result["guest_fill_s"] = float(m.group(1)) if m else None
        time.sleep(a.warmup)

        qs = QMP(src_qmp)
        qd = QMP(dst_qmp)
        caps = [{"capability": "auto-converge", "state": a.auto_converge},
                {"capability": "events", "state": True}]
        qs.cmd("migrate-set-capabilities", {"capabilities": caps})
        params = {"max-bandwidth": int(a.max_bw * (1 << 20)),
                  "downtime-limit": a.downtime_ms}
        if a.auto_converge:
            params["cpu-throttle-initial"] = a.throttle_initial
            params["cpu-throttle-increment"] = a.throttle_increment
        qs.cmd("migrate-set-parameters", params)
        result["migration_parameters"] = qs.cmd("query-migrate-parameters")
        result["migration_capabilities"] = {
            c["capability"]: c["state"]
            for c in qs.cmd("query-migrate-capabilities")}
        result["host"]["loadavg_at_migrate"] = loadavg()
        cpu_src0 = proc_cpu_s(src.pid)
        cpu_dst0 = proc_cpu_s(dst.pid)
        qs.events.clear()
        tm0 = time.monotonic()
        wall0 = time.time()
        mig_start_rel = tm0 - t0
        to_port = start_tap(port, a.capture) if a.capture else port
        qs.cmd("migrate", {"uri": "tcp:127.0.0.1:%d" % to_port})
        history = []
        final = None
        last_active = None
        cancelled = False
        while True:
            t = time.monotonic() - tm0
            q = qs.cmd("query-migrate")
            history.append(compact(q, t))
            status = q.get("status")
            if "ram" in q:
                last_active = q
            if status in ("completed", "failed", "cancelled"):
                final = q
                break
            if t > a.limit and not cancelled:
                qs.cmd("migrate_cancel")
                cancelled = True
                cancel_t = t
            if cancelled and t > cancel_t + 30:
                final = q
                break
            time.sleep(max(0.0, a.poll - (time.monotonic() - tm0 - t)))
        tm1 = time.monotonic()
        mig_end_rel = tm1 - t0
        result["host"]["loadavg_end"] = loadavg()
        result["host"]["src_qemu_cpu_s_during_migration"] = (
            round(proc_cpu_s(src.pid) - cpu_src0, 2)
            if cpu_src0 is not None else None)
        result["host"]["dst_qemu_cpu_s_during_migration"] = (
            round(proc_cpu_s(dst.pid) - cpu_dst0, 2)
            if cpu_dst0 is not None else None)
        result["final"] = final
        # after migrate_cancel query-migrate carries no statistics: keep the
        # last reply that had them
        result["last_with_stats"] = (last_active if final is not last_active
                                     else None)
        evs = {"pass": [], "status": []}
        for e in qs.events:
            ts = e.get("timestamp", {})
            et = round(ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
                       - wall0, 3)
            if e.get("event") == "MIGRATION_PASS":
                evs["pass"].append([et, e["data"].get("pass")])
            elif e.get("event") == "MIGRATION":
                evs["status"].append([et, e["data"].get("status")])
        result["events"] = evs
        result["cancelled_by_limit"] = cancelled
        result["converged"] = final.get("status") == "completed"
        result["wall_migration_s"] = round(tm1 - tm0, 3)
        result["history_fields"] = HIST_KEYS
        result["history"] = history

        # destination check
        dcheck = {"checked": False}
        if result["converged"]:
            sd = SerialTail(dst_ser, t0)
            sd.start()
            tails.append(sd)
            time.sleep(a.post_check)
            dstat = qd.cmd("query-status")
            drates = sd.rates()
            src_rates = st.rates()
            last_src_writes = src_rates[-1]["writes"] if src_rates else None
            dcheck = {
                "checked": True,
                "dst_status": dstat.get("status"),
                "dst_running": dstat.get("running"),
                "dst_rate_lines": len(drates),
                "dst_achieved_mean": mean([r["achieved"] for r in drates]),
                "dst_first_writes": drates[0]["writes"] if drates else None,
                "src_last_writes": last_src_writes,
            }
            alive = dstat.get("running") and len(drates) >= 2
            if a.rate > 0:
                alive = alive and drates[-1]["writes"] > drates[0]["writes"]
                if last_src_writes is not None:
                    # the counter continues from the source's memory state
                    dcheck["writes_continue_from_source"] = (
                        drates[0]["writes"] >= last_src_writes)
                    alive = alive and dcheck["writes_continue_from_source"]
            dcheck["alive_and_writing"] = bool(alive)
            dcheck["dst_rate_samples"] = [
                [r["host_t"], r["achieved"]] for r in drates]
        result["dest_check"] = dcheck

        # guest achieved write rate on the source, from its serial console
        rates = st.rates()
        pre = [r["achieved"] for r in rates if r["host_t"] <= mig_start_rel
               and r["host_t"] > mig_start_rel - a.warmup]
        during = [r["achieved"] for r in rates
                  if mig_start_rel + a.report_ms / 1000.0 <= r["host_t"]
                  <= mig_end_rel]
        result["guest_rate"] = {
            "requested_pages_s": a.rate,
            "achieved_before_migration_pages_s": mean(pre),
            "achieved_during_migration_pages_s": mean(during),
            "achieved_min_during_pages_s": min(during) if during else None,
            # [host time relative to migrate command (s), achieved pages/s]
            "samples": [[round(r["host_t"] - mig_start_rel, 2), r["achieved"]]
                        for r in rates
                        if r["host_t"] > mig_start_rel - a.warmup],
        }
        for q in (qs, qd):
            try:
                q.cmd("quit")
            except Exception:
                pass
            q.close()
    except Exception as e:  # record failures too
        result["error"] = "%s: %s" % (type(e).__name__, e)
        try:
            result["src_serial_tail"] = open(src_ser, errors="replace") \
                .read()[-2000:]
            result["src_stderr"] = open(os.path.join(work, "src.err"),
                                        errors="replace").read()[-2000:]
            result["dst_stderr"] = open(os.path.join(work, "dst.err"),
                                        errors="replace").read()[-2000:]
        except OSError:
            pass
    finally:
        for t in tails:
            t.stop = True
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if a.keep_work:
            result["workdir"] = work
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ram", type=int, default=512, help="guest RAM MiB")
    ap.add_argument("--ws", type=int, default=128, help="working set MiB")
    ap.add_argument("--rate", type=int, default=0, help="page writes/s")
    ap.add_argument("--pattern", choices=["rand", "seq"], default="rand")
    ap.add_argument("--max-bw", type=float, default=64.0,
                    help="max-bandwidth MiB/s")
    ap.add_argument("--downtime-ms", type=int, default=300)
    ap.add_argument("--auto-converge", action="store_true")
    ap.add_argument("--throttle-initial", type=int, default=20)
    ap.add_argument("--throttle-increment", type=int, default=10)
    ap.add_argument("--limit", type=float, default=60.0,
                    help="cancel if not completed after this many seconds")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds of dirtying before migrating")
    ap.add_argument("--post-check", type=float, default=4.0,
                    help="seconds to watch the destination guest")
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--report-ms", type=int, default=500)
    ap.add_argument("--boot-timeout", type=float, default=120.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--build", default=os.path.join(HERE, "build"))
    ap.add_argument("--config", default="adhoc")
    ap.add_argument("--run-index", type=int, default=0)
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--out", help="JSON output path (default: stdout)")
    ap.add_argument("--capture", help="keep a copy of the migration stream in this file (a TCP tap)")
    return ap.parse_args(argv)


def summary_line(r):
    f = r.get("final") or {}
    ram = f.get("ram", {})
    return ("%s#%s status=%s total=%sms downtime=%sms setup=%sms "
            "transferred=%.1fMiB syncs=%s mbps=%s rate_achieved=%s load=%s "
            "dst_ok=%s err=%s" % (
                r.get("config"), r.get("run_index"), f.get("status"),
                f.get("total-time"), f.get("downtime"), f.get("setup-time"),
                ram.get("transferred", 0) / 2**20, ram.get("dirty-sync-count"),
                ram.get("mbps"),
                (r.get("guest_rate") or {}).get(
                    "achieved_during_migration_pages_s"),
                r["host"].get("loadavg_at_migrate"),
                (r.get("dest_check") or {}).get("alive_and_writing"),
                r.get("error")))


def main(argv=None):
    a = parse(argv)
    r = run(a)
    js = json.dumps(r, separators=(",", ":"))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(js + "\n")
    else:
        print(js)
    print(summary_line(r), file=sys.stderr)
    return 0 if "error" not in r else 1


if __name__ == "__main__":
    sys.exit(main())
