#!/usr/bin/env python3
"""One QEMU live migration on localhost (pre-copy; optionally XBZRLE, post-copy), measured.

Starts a destination QEMU (-incoming tcp:127.0.0.1:PORT) and a source QEMU
(TCG, 1 vCPU) booting the lab guest (Debian kernel + busybox/dirtier
initramfs), waits for the guest's "DIRTIER ready" line (working set filled),
lets the dirtier run for a warm-up, sets max-bandwidth / downtime-limit /
auto-converge, migrates, polls query-migrate every 100 ms, cancels if not
completed within --limit seconds (a migration already in post-copy is never
cancelled: the guest runs on the destination), then checks that the destination guest is
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
             "cpu_throttle_percentage", "xbzrle_pages", "xbzrle_bytes",
             "xbzrle_cache_miss", "postcopy_requests", "xbzrle_encoding_rate"]


def loadavg():
    with open("/proc/loadavg") as f:
        a = f.read().split()
    return [float(a[0]), float(a[1]), float(a[2])]


def host_cpu_s():
    """The host's CPU seconds from /proc/stat's first line: (busy, of which at a positive nice value),
    busy being everything but idle and iowait; None if unreadable."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        return (sum(v) - v[3] - v[4]) / hz, v[1] / hz
    except (OSError, IndexError, ValueError):
        return None


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


class SchedWait:
    """Run-queue wait of one process over an interval, from the kernel's schedstat.

    /proc/PID/task/TID/schedstat holds, per thread, the ns spent on a CPU, the ns spent runnable
    but waiting on a run queue, and the number of time slices. A thread that exits (QEMU's
    migration thread ends with the migration) takes its figures with it, so the threads are read
    at every poll and each thread's last reading is kept: run_s and wait_s are the sums over all
    threads of (last - first) reading; a thread first seen after start() counts from zero (it was
    created during the interval). wait_share = wait_s / run_s (how much CPU the process was
    denied, per second it ran). Unreadable or malformed files are skipped, never fatal: the
    figures are then None (no thread ever read) or cover the threads that could be read."""

    def __init__(self, pid, proc="/proc"):
        self.dir = os.path.join(proc, str(pid), "task")
        self.first = {}
        self.last = {}
        self.started = False

    def _read(self):
        out = {}
        try:
            tids = os.listdir(self.dir)
        except OSError:
            return out
        for tid in tids:
            try:
                with open(os.path.join(self.dir, tid, "schedstat")) as f:
                    parts = f.read().split()
                out[tid] = (int(parts[0]), int(parts[1]))
            except (OSError, IndexError, ValueError):
                continue
        return out

    def start(self):
        self.first = self._read()
        self.last = dict(self.first)
        self.started = True

    def sample(self):
        if not self.started:
            return
        now = self._read()
        for tid, v in now.items():
            if tid not in self.first:
                self.first[tid] = (0, 0)
            # a reading going backwards is a reused thread id: start it again from zero
            if v[0] < self.last.get(tid, (0, 0))[0]:
                self.first[tid] = (0, 0)
            self.last[tid] = v
        return now

    def result(self):
        if not self.last:
            return {"run_s": None, "wait_s": None, "wait_share": None, "threads": 0}
        run = sum(self.last[t][0] - self.first[t][0] for t in self.last) / 1e9
        wait = sum(self.last[t][1] - self.first[t][1] for t in self.last) / 1e9
        return {"run_s": round(run, 4), "wait_s": round(wait, 4),
                "wait_share": round(wait / run, 4) if run > 0 else None,
                "threads": len(self.last)}


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
            q.get("expected-downtime"), q.get("cpu-throttle-percentage"),
            q.get("xbzrle-cache", {}).get("pages"),
            q.get("xbzrle-cache", {}).get("bytes"),
            q.get("xbzrle-cache", {}).get("cache-miss"),
            ram.get("postcopy-requests"),
            q.get("xbzrle-cache", {}).get("encoding-rate")]


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
    # only when not the default, so the command line of every older config stays the same
    if a.max_debt_ms != 200:
        append += " dirty_max_debt_ms=%d" % a.max_debt_ms
    if a.spacer_mib:
        append += " dirty_spacer_mib=%d" % a.spacer_mib
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
            "dirtier_max_debt_ms": a.max_debt_ms,
            "dirtier_spacer_mib": a.spacer_mib,
            "xbzrle": a.xbzrle,
            "xbzrle_cache_mib": a.xbzrle_cache,
            "postcopy": a.postcopy,
            "postcopy_preempt": a.postcopy_preempt,
            "max_postcopy_bandwidth_mib_s": a.max_postcopy_bw,
            # N bitmap passes completed: migrate-start-postcopy when a MIGRATION_PASS event with
            # pass >= N + 1 arrives (pass 1 is the sync at setup)
            "postcopy_after_passes": a.postcopy_after_passes,
            "postcopy_at_s": a.postcopy_at,
        },
        # which part of the model's check this configuration is (set by run_matrix.py)
        "model": {"feature": a.feature, "set": a.model_set},
    }
    procs = []
    tails = []
    try:
        dst = subprocess.Popen(common + [
            "-serial", "file:" + dst_ser,
            "-qmp", "unix:%s,server=on,wait=off" % dst_qmp,
            # postcopy-preempt must be set on the destination before it listens (QEMU: "Postcopy
            # preempt must be set before incoming starts"): then it listens on migrate-incoming
            "-incoming", "defer" if a.postcopy_preempt else "tcp:127.0.0.1:%d" % port],
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
        # the destination's console from the start: its lines get the host time they appear at
        # (after a post-copy switch the guest runs there while pages still arrive)
        sd = SerialTail(dst_ser, t0)
        sd.start()
        tails.append(sd)
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
        # capabilities that both sides must agree on; postcopy-blocktime only on the destination
        both = []
        if a.xbzrle:
            both.append({"capability": "xbzrle", "state": True})
        if a.postcopy:
            both.append({"capability": "postcopy-ram", "state": True})
        if a.postcopy_preempt:
            both.append({"capability": "postcopy-preempt", "state": True})
        qs.cmd("migrate-set-capabilities", {"capabilities": caps + both})
        dcaps = both + ([{"capability": "postcopy-blocktime", "state": True}]
                        if a.postcopy else [])
        if dcaps:
            qd.cmd("migrate-set-capabilities", {"capabilities": dcaps})
        if a.postcopy_preempt:
            qd.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:%d" % port})
        params = {"max-bandwidth": int(a.max_bw * (1 << 20)),
                  "downtime-limit": a.downtime_ms}
        if a.auto_converge:
            params["cpu-throttle-initial"] = a.throttle_initial
            params["cpu-throttle-increment"] = a.throttle_increment
        if a.xbzrle and a.xbzrle_cache is not None:
            params["xbzrle-cache-size"] = int(a.xbzrle_cache * (1 << 20))
        if a.postcopy:
            # 0 is QEMU's "unlimited"
            params["max-postcopy-bandwidth"] = int(a.max_postcopy_bw * (1 << 20))
        qs.cmd("migrate-set-parameters", params)
        result["migration_parameters"] = qs.cmd("query-migrate-parameters")
        result["migration_capabilities"] = {
            c["capability"]: c["state"]
            for c in qs.cmd("query-migrate-capabilities")}
        if dcaps:
            result["dst_migration_capabilities"] = {
                c["capability"]: c["state"]
                for c in qd.cmd("query-migrate-capabilities")}
        result["host"]["loadavg_at_migrate"] = loadavg()
        cpu_src0 = proc_cpu_s(src.pid)
        cpu_dst0 = proc_cpu_s(dst.pid)
        host0 = host_cpu_s()
        sched = {"src": SchedWait(src.pid), "dst": SchedWait(dst.pid)}
        for w in sched.values():
            w.start()
        qs.events.clear()
        tm0 = time.monotonic()
        wall0 = time.time()
        mig_start_rel = tm0 - t0
        # host seconds from QEMU start to migrate: the time base of dest_check.dst_rate_samples
        result["migrate_host_t"] = round(mig_start_rel, 3)
        to_port = start_tap(port, a.capture) if a.capture else port
        qs.cmd("migrate", {"uri": "tcp:127.0.0.1:%d" % to_port})
        history = []
        final = None
        last_active = None
        cancelled = False
        switch_pending = a.postcopy and (a.postcopy_after_passes is not None
                                         or a.postcopy_at is not None)
        pc = {"trigger": None, "start_cmd_t": None, "start_cmd_wall_t": None,
              "start_cmd_error": None, "first_poll_postcopy_active_t": None}

        def switch_due(t):
            if a.postcopy_at is not None and t >= a.postcopy_at:
                return "at %gs" % a.postcopy_at
            if a.postcopy_after_passes is not None:
                for e in qs.events:
                    if (e.get("event") == "MIGRATION_PASS"
                            and e["data"].get("pass", 0) >= a.postcopy_after_passes + 1):
                        return "pass %d" % e["data"]["pass"]
            return None

        def maybe_switch(status):
            nonlocal switch_pending
            if not switch_pending or status not in ("setup", "active"):
                return
            why = switch_due(time.monotonic() - tm0)
            if why is None:
                return
            switch_pending = False
            pc["trigger"] = why
            pc["start_cmd_t"] = round(time.monotonic() - tm0, 4)
            pc["start_cmd_wall_t"] = round(time.time() - wall0, 4)
            try:
                qs.cmd("migrate-start-postcopy")
            except Exception as e:  # e.g. the migration completed in between
                pc["start_cmd_error"] = str(e)

        while True:
            t = time.monotonic() - tm0
            q = qs.cmd("query-migrate")
            history.append(compact(q, t))
            for w in sched.values():
                w.sample()
            status = q.get("status")
            if "ram" in q:
                last_active = q
            if (status == "postcopy-active"
                    and pc["first_poll_postcopy_active_t"] is None):
                pc["first_poll_postcopy_active_t"] = round(t, 3)
            if status in ("completed", "failed", "cancelled"):
                final = q
                break
            maybe_switch(status)
            # in post-copy the guest already runs on the destination: never cancel
            if t > a.limit and not cancelled and not status.startswith("postcopy"):
                qs.cmd("migrate_cancel")
                cancelled = True
                cancel_t = t
            if cancelled and t > cancel_t + 30:
                final = q
                break
            if t > a.limit + 300:
                raise RuntimeError("post-copy did not complete within limit + 300 s")
            # while a switch is due, look at the events (and the clock) every 10 ms
            while switch_pending and time.monotonic() - tm0 < t + a.poll - 0.01:
                time.sleep(0.01)
                qs.cmd("query-status")  # reads the events that arrived
                maybe_switch(status)
            time.sleep(max(0.0, a.poll - (time.monotonic() - tm0 - t)))
        tm1 = time.monotonic()
        mig_end_rel = tm1 - t0
        result["host"]["loadavg_end"] = loadavg()
        # how much CPU the two QEMU processes were denied between migrate and the end of
        # polling: run-queue wait over run time, all threads (the load average counts niced
        # jobs queued behind the lab too; this is what says whether a run was quiet)
        for side, w in sched.items():
            w.sample()
            result["host"][side + "_qemu_schedstat"] = w.result()
        # what the rest of the host used meanwhile: its busy CPU time less the two QEMUs', as a share of
        # the host's CPU time (nproc x wall), and the part of it at a positive nice value (other jobs,
        # which yield to the lab)
        host1 = host_cpu_s()
        cpu_q = [proc_cpu_s(src.pid), proc_cpu_s(dst.pid)]
        if host0 and host1 and None not in cpu_q + [cpu_src0, cpu_dst0]:
            span = (tm1 - tm0) * os.cpu_count()
            other = (host1[0] - host0[0]) - (cpu_q[0] - cpu_src0) - (cpu_q[1] - cpu_dst0)
            result["host"]["other_cpu_share"] = round(max(0.0, other) / span, 4)
            result["host"]["niced_cpu_share"] = round((host1[1] - host0[1]) / span, 4)
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
        if a.postcopy:
            # the destination's counters are only filled when its status is completed
            # (QEMU 10.0 migration.c fill_destination_migration_info ->
            # postcopy-ram.c fill_destination_postcopy_migration_info)
            dq, dl = None, time.monotonic() + 60
            while time.monotonic() < dl:
                dq = qd.cmd("query-migrate")
                pc["dst_completed_poll_t"] = round(time.monotonic() - tm0, 3)
                if dq.get("status") in ("completed", "failed"):
                    break
                time.sleep(0.1)
            act = [e[0] for e in evs["status"] if e[1] == "postcopy-active"]
            ram = (final or {}).get("ram", {})
            pc.update({
                "postcopy_active_t": act[0] if act else None,
                "switched": bool(act),
                "postcopy_requests": ram.get("postcopy-requests"),
                "postcopy_bytes": ram.get("postcopy-bytes"),
                "dst_status": (dq or {}).get("status"),
                "postcopy_blocktime_ms": (dq or {}).get("postcopy-blocktime"),
                "postcopy_vcpu_blocktime_ms": (dq or {}).get("postcopy-vcpu-blocktime"),
            })
            result["dst_final"] = dq
        result["postcopy"] = pc if a.postcopy else None
        result["cancelled_by_limit"] = cancelled
        result["converged"] = final.get("status") == "completed"
        result["wall_migration_s"] = round(tm1 - tm0, 3)
        result["history_fields"] = HIST_KEYS
        result["history"] = history

        # destination check
        dcheck = {"checked": False}
        if result["converged"]:
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
    ap.add_argument("--max-debt-ms", type=int, default=200,
                    help="the dirtier's backlog tolerance: a backlog of writes longer than this "
                    "is dropped, a shorter one caught up (dirty_max_debt_ms)")
    ap.add_argument("--spacer-mib", type=int, default=0,
                    help="the dirtier maps and touches this many MiB before its working set, "
                    "which moves the working set in guest-physical memory (dirty_spacer_mib)")
    ap.add_argument("--xbzrle", action="store_true",
                    help="XBZRLE capability on source and destination")
    ap.add_argument("--xbzrle-cache", type=float, default=None,
                    help="xbzrle-cache-size MiB (default: QEMU's, 64)")
    ap.add_argument("--postcopy", action="store_true",
                    help="postcopy-ram on source and destination (postcopy-blocktime on the "
                    "destination)")
    ap.add_argument("--postcopy-preempt", action="store_true",
                    help="postcopy-preempt on both sides (needs --postcopy)")
    ap.add_argument("--max-postcopy-bw", type=float, default=0.0,
                    help="max-postcopy-bandwidth MiB/s (0: unlimited, QEMU's default)")
    ap.add_argument("--postcopy-after-passes", type=int, default=None, metavar="N",
                    help="migrate-start-postcopy once N bitmap passes are complete (the "
                    "MIGRATION_PASS event numbered N+1; 1 = libvirt's --postcopy-after-precopy)")
    ap.add_argument("--postcopy-at", type=float, default=None, metavar="S",
                    help="migrate-start-postcopy S seconds after migrate")
    ap.add_argument("--feature", default=None,
                    help="model feature this run checks (metadata, e.g. xbzrle)")
    ap.add_argument("--model-set", choices=["calibration", "validation"], default=None,
                    help="whether the model fits constants on this run or is judged on it")
    a = ap.parse_args(argv)
    if not a.postcopy and (a.postcopy_preempt or a.postcopy_after_passes is not None
                           or a.postcopy_at is not None or a.max_postcopy_bw):
        ap.error("--postcopy-preempt, --postcopy-after-passes, --postcopy-at and "
                 "--max-postcopy-bw need --postcopy")
    if a.postcopy_after_passes is not None and a.postcopy_after_passes < 1:
        ap.error("--postcopy-after-passes must be >= 1, got %d" % a.postcopy_after_passes)
    if a.postcopy_at is not None and a.postcopy_at < 0:
        ap.error("--postcopy-at must be >= 0 s, got %g" % a.postcopy_at)
    if a.max_postcopy_bw < 0:
        ap.error("--max-postcopy-bw must be >= 0 MiB/s, got %g" % a.max_postcopy_bw)
    if a.xbzrle_cache is not None and (not a.xbzrle or a.xbzrle_cache <= 0):
        ap.error("--xbzrle-cache needs --xbzrle and a size > 0 MiB")
    if a.max_debt_ms < 1:
        ap.error("--max-debt-ms must be >= 1, got %d" % a.max_debt_ms)
    if a.spacer_mib < 0 or a.spacer_mib + a.ws >= a.ram:
        ap.error("--spacer-mib %d: must be >= 0 and leave room in %d MiB of guest RAM beside "
                 "the %d MiB working set" % (a.spacer_mib, a.ram, a.ws))
    return a


def summary_line(r):
    f = r.get("final") or {}
    ram = f.get("ram", {})
    return ("%s#%s status=%s total=%sms downtime=%sms setup=%sms "
            "transferred=%.1fMiB syncs=%s mbps=%s rate_achieved=%s load=%s wait_share=%s other_cpu=%s "
            "dst_ok=%s xbzrle_pages=%s pc_requests=%s blocktime=%s err=%s" % (
                r.get("config"), r.get("run_index"), f.get("status"),
                f.get("total-time"), f.get("downtime"), f.get("setup-time"),
                ram.get("transferred", 0) / 2**20, ram.get("dirty-sync-count"),
                ram.get("mbps"),
                (r.get("guest_rate") or {}).get(
                    "achieved_during_migration_pages_s"),
                r["host"].get("loadavg_at_migrate"),
                [(r["host"].get(k) or {}).get("wait_share")
                 for k in ("src_qemu_schedstat", "dst_qemu_schedstat")],
                r["host"].get("other_cpu_share"),
                (r.get("dest_check") or {}).get("alive_and_writing"),
                f.get("xbzrle-cache", {}).get("pages"), ram.get("postcopy-requests"),
                (r.get("postcopy") or {}).get("postcopy_blocktime_ms"),
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
