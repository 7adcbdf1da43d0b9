"""Deliberately naive pure-Python kernels: the obvious transcription of kernels/CONTRACT.md.

Only tests use these, to hold the Cython kernels and the numpy twin to identical results. Every loop
is a Python loop over Python ints; no vectorisation, no cleverness, no argument validation beyond
what the transcription needs. Arrays are numpy arrays updated in place, exactly like the backends.
"""
import math

from pagesync_model.kernels.dtypes import (
    PTE_ACCESSED, PTE_DIRTY, PTE_SOFT_DIRTY, SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2, TLB_DIRTY, TLB_VALID,
)

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


def _get_bit(bitmap, f):
    return (int(bitmap[f // 64]) >> (f % 64)) & 1


def _set_bit(bitmap, f):
    bitmap[f // 64] = int(bitmap[f // 64]) | (1 << (f % 64))


def _clear_bit(bitmap, f):
    bitmap[f // 64] = int(bitmap[f // 64]) & ~(1 << (f % 64)) & MASK64


def harvest(pte, bounds, bitmap, versions, pt_base, ptes_per_pt, clear, out_dirty):
    new_bits = 0
    for s in range(len(bounds) - 1):
        out_dirty[s] = 0
        for f in range(int(bounds[s]), int(bounds[s + 1])):
            if int(pte[f]) & PTE_DIRTY:
                out_dirty[s] += 1
                if not _get_bit(bitmap, f):
                    new_bits += 1
                _set_bit(bitmap, f)
                if clear:
                    pte[f] = (int(pte[f]) & ~PTE_DIRTY & MASK64) | PTE_SOFT_DIRTY
                    p = pt_base + f // ptes_per_pt
                    versions[p] = (int(versions[p]) + 1) & MASK32
    return new_bits


def apply_writes_mapped(frames, index, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                        out_counts):
    ncpu, entries = tlb_tag.shape
    for c in range(ncpu):
        walks = dirty_sets = flush_refills = 0
        for w in range(int(cpu_bounds[c]), int(cpu_bounds[c + 1])):
            f, ix = int(frames[w]), int(index[w])
            versions[ix] = (int(versions[ix]) + 1) & MASK32
            slot = f % entries
            tag = int(tlb_tag[c, slot])
            flags = int(tlb_flags[c, slot])
            if tag == f and flags == TLB_VALID | TLB_DIRTY:
                continue
            walks += 1
            if tag == f and not (flags & TLB_VALID):
                flush_refills += 1
            if int(pte[ix]) & PTE_DIRTY == 0:
                pte[ix] = int(pte[ix]) | PTE_DIRTY | PTE_ACCESSED
                p = pt_base + f // ptes_per_pt
                versions[p] = (int(versions[p]) + 1) & MASK32
                dirty_sets += 1
            tlb_tag[c, slot] = f
            tlb_flags[c, slot] = TLB_VALID | TLB_DIRTY
        out_counts[c, 0] = walks
        out_counts[c, 1] = dirty_sets
        out_counts[c, 2] = flush_refills


def apply_writes(frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, out_counts):
    # dense memory: frame f's PTE and version are at f
    apply_writes_mapped(frames, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                        out_counts)


def block_index(frames, slots, low, block, out):
    missing = 0
    for w in range(len(frames)):
        f = int(frames[w])
        if f < low:
            out[w] = f
            continue
        s = int(slots[(f - low) // block])
        if s < 0:
            out[w] = -1
            missing += 1
        else:
            out[w] = low + s * block + (f - low) % block
    return missing


def bitmap_set_range(bitmap, lo, hi):
    new_bits = 0
    for f in range(lo, hi):
        if not _get_bit(bitmap, f):
            new_bits += 1
            _set_bit(bitmap, f)
    return new_bits


def bitmap_set_frames(bitmap, frames):
    new_bits = 0
    for f in frames:
        f = int(f)
        if not _get_bit(bitmap, f):
            new_bits += 1
            _set_bit(bitmap, f)
    return new_bits


def bitmap_popcount(bitmap, lo, hi):
    return sum(_get_bit(bitmap, f) for f in range(lo, hi))


def bitmap_extract_runs(bitmap, lo, hi, max_pages, clear, out_starts, out_lens):
    cap = len(out_starts)
    nruns = pages = 0
    f = lo
    while f < hi:
        if not _get_bit(bitmap, f):
            f += 1
            continue
        start = f
        while f < hi and _get_bit(bitmap, f):
            f += 1
        if clear:
            for g in range(start, f):
                _clear_bit(bitmap, g)
        out_starts[nruns] = start
        out_lens[nruns] = f - start
        nruns += 1
        pages += f - start
        if nruns == cap or pages >= max_pages:
            return nruns, pages, f
    return nruns, pages, hi


def bitmap_take_pages(bitmap, lo, hi, k, clear, out_starts, out_lens):
    cap = len(out_starts)
    nruns = pages = 0
    f = lo
    while f < hi:
        if not _get_bit(bitmap, f):
            f += 1
            continue
        start = f
        while f < hi and _get_bit(bitmap, f) and pages + (f - start) < k:
            f += 1
        if clear:
            for g in range(start, f):
                _clear_bit(bitmap, g)
        out_starts[nruns] = start
        out_lens[nruns] = f - start
        nruns += 1
        pages += f - start
        if pages >= k:
            return nruns, pages, f
        if nruns == cap:
            break
    return nruns, pages, hi


def build_copy_list(run_starts, run_lens, nearby, max_ranges, out_starts, out_ends):
    starts, ends = [], []
    for s, l in zip(run_starts, run_lens):
        s, l = int(s), int(l)
        n = len(starts)
        if n > 0 and s <= ends[n - 1] - 1 + nearby:
            ends[n - 1] = max(ends[n - 1], s + l)
        elif n < max_ranges:
            starts.append(s)
            ends.append(s + l)
        else:
            best = 0
            for i in range(n - 1):
                if starts[i + 1] - ends[i] < starts[best + 1] - ends[best]:
                    best = i
            ends[best] = ends[best + 1]
            del starts[best + 1]
            del ends[best + 1]
            starts.append(s)
            ends.append(s + l)
    for i in range(len(starts)):
        out_starts[i] = starts[i]
        out_ends[i] = ends[i]
    return len(starts)


def deliver_runs(src, dst, starts, lens):
    zeros = 0
    for s, l in zip(starts, lens):
        for f in range(int(s), int(s) + int(l)):
            dst[f] = src[f]
            if int(src[f]) == 0:
                zeros += 1
    return zeros


def find_mismatch(a, b, out):
    count = 0
    for f in range(len(a)):
        if int(a[f]) != int(b[f]):
            if count < len(out):
                out[count] = f
            count += 1
    return count


def splitmix64(key, k):
    z = (key + (k + 1) * SPLITMIX_GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * SPLITMIX_M1) & MASK64
    z = ((z ^ (z >> 27)) * SPLITMIX_M2) & MASK64
    return z ^ (z >> 31)


def gen_random(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out, block=1):
    pos = 0
    for c in range(len(stream_keys)):
        for j in range(int(counts[c])):
            k = (int(counters[c]) + j) & MASK64
            z = splitmix64(int(stream_keys[c]), k)
            hi, lo = z >> 32, z & MASK32
            if hi < hot_threshold:
                idx = (lo * hot_span) >> 32
            else:
                idx = hot_span + ((lo * (span - hot_span)) >> 32)
            out[pos] = base + ((idx // block) * mult % modulus) * block + idx % block
            pos += 1
        counters[c] = (int(counters[c]) + int(counts[c])) & MASK64


def gen_sequential(cursors, counts, stride, span, base, mult, modulus, out, block=1):
    pos = 0
    for c in range(len(cursors)):
        for j in range(int(counts[c])):
            idx = (int(cursors[c]) + j * stride) % span
            out[pos] = base + ((idx // block) * mult % modulus) * block + idx % block
            pos += 1
        cursors[c] = (int(cursors[c]) + int(counts[c]) * stride) % span


def cpu_debt_step(run, debt, paced, out_avail):
    for c in range(len(debt)):
        a = float(run) - float(debt[c])
        debt[c] = -a if a < 0 else 0.0
        if paced:
            a = 0.0 if a < 0 else float(run)
        out_avail[c] = max(a, 0.0)


def rate_step(run, rate_per_cycle, carry, counts):
    total = 0
    for c in range(len(run)):
        e = float(run[c]) * float(rate_per_cycle) + float(carry[c])
        counts[c] = math.floor(e)
        carry[c] = e - float(counts[c])
        total += int(counts[c])
    return total


def charge_tracking(step_counts, walk_cycles, dirty_cycles, debt, out_extra):
    totals = [0, 0, 0]
    for c in range(len(debt)):
        for j in range(3):
            totals[j] += int(step_counts[c, j])
        out_extra[c] = float(step_counts[c, 2]) * float(walk_cycles) + float(step_counts[c, 1]) * float(dirty_cycles)
        debt[c] = float(debt[c]) + float(out_extra[c])
    return tuple(totals)


def cpu_rate_step(run, debt, paced, rate_per_cycle, carry, out_avail, counts):
    cpu_debt_step(run, debt, paced, out_avail)
    return rate_step(out_avail, rate_per_cycle, carry, counts)


def random_write_step(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, block, out,
                      cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
                      dirty_cycles, debt, out_extra):
    gen_random(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out, block)
    cpu_bounds[0] = 0
    for c in range(len(counts)):
        cpu_bounds[c + 1] = int(cpu_bounds[c]) + int(counts[c])
    apply_writes(out, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts)
    return charge_tracking(step_counts, walk_cycles, dirty_cycles, debt, out_extra)


def _cpu_tick(st, fstate, t, tick_limit, stopped, paced, rate_per_cycle, carry, debt, avail, counts, stream_keys,
              counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte, versions,
              tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf,
              meter_on):
    # One tick of the cpus process (Cpus.advance_to up to t) inside the copy loop, the QEMU turn or the xen
    # batches: ``st`` maps the loop's state fields by name, the tracking cycles add up in fstate[0]. False
    # (and next_tick = t) when the step is left to Python: past tick_limit, or its writes might not fit.
    import numpy as np
    dt = t - int(st["t_done"])
    bound = len(stream_keys) * (int(float(dt) * rate_per_cycle) + 2)
    if t > tick_limit or bound > len(frames) or (meter_on and int(st["meter_fill"]) + bound > len(meter_buf)):
        st["next_tick"] = t
        return False
    st["t_done"] = t
    if stopped:                                   # Cpus.advance_to of stopped CPUs: time only
        return True
    st["running_cycles"] += dt
    total = cpu_rate_step(float(dt), debt, paced, rate_per_cycle, carry, avail, counts)
    if total:
        w = random_write_step(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus,
                              block, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                              step_counts, walk_cycles, dirty_cycles, debt, extra)
        if meter_on:
            fill = int(st["meter_fill"])
            for j in range(total):
                meter_buf[fill + j] = frames[j]
            st["meter_fill"] += total
        fstate[0] = float(fstate[0]) + float(np.add.reduce(extra))   # numpy's summation order, as Cpus.advance_to
        st["writes"] += total
        st["walks"] += w[0]
        st["dirty_sets"] += w[1]
        st["flush_refills"] += w[2]
    return True


class _Fields:
    # an int64 state array seen by field name, as _cpu_tick reads and writes it
    def __init__(self, state, fields):
        self.state, self.fields = state, fields

    def __getitem__(self, name):
        return self.state[self.fields[name]]

    def __setitem__(self, name, value):
        self.state[self.fields[name]] = value


def copy_loop(state, fstate, bitmap, hi, use_bitmap, runs_s, runs_l, link_i, link_f, partner, horizon, tick_limit,
              quantum, chunk, paced, rate_per_cycle, carry, debt, avail, counts, stream_keys, counters, hot_span,
              hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags,
              pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf, meter_on,
              stopped=False):
    # The scanner's loop as Interconnect.copy and Machine.copy_bitmap_runs run it, with the cpus process's
    # ticks: one frame at a time, the pieces cut by searching the run list from its start.
    import numpy as np
    from pagesync_model.kernels.dtypes import COPY_LOOP_FIELDS, PARTNER_GARBAGE
    st = {name: int(state[i]) for i, name in enumerate(COPY_LOOP_FIELDS)}
    ps, header, zpb, latency = (int(x) for x in link_i)
    bandwidth, per_copy, first_copy, clock = (float(x) for x in link_f)
    ncpu = len(stream_keys)
    status = 0

    def tick(t):
        return _cpu_tick(st, fstate, t, tick_limit, stopped, paced, rate_per_cycle, carry, debt, avail, counts,
                         stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
                         cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts,
                         walk_cycles, dirty_cycles, extra, meter_buf, meter_on)

    while True:
        if st["nruns"] == 0:
            if not use_bitmap or st["pos"] >= hi:
                break
            if not st["admit"] and st["now"] >= horizon:
                status = 1
                break
            st["admit"] = 1
            nr, _p, nxt = bitmap_extract_runs(bitmap, st["pos"], hi, chunk, True, runs_s, runs_l)
            st["pos"] = hi if nr == 0 else nxt
            if nr == 0:
                break
            st["nruns"], st["run_i"], st["run_off"] = nr, 0, 0
        elif not st["admit"]:
            if st["now"] >= horizon:
                status = 1
                break
            st["admit"] = 1
        s = st["now"]
        while st["t_done"] + quantum <= s and status == 0:
            if not tick(st["t_done"] + quantum):
                status = 2
        if status == 0 and st["t_done"] < s and not tick(s):
            status = 2
        if status:
            break
        # the piece: the pages [lo, lo + chunk) of the list, counted from its start
        lens = [int(x) for x in runs_l[:st["nruns"]]]
        lo = sum(lens[:st["run_i"]]) + st["run_off"]
        total_pages = sum(lens)
        hi_p = min(total_pages, lo + chunk)
        frames_in, runs_in, acc = [], set(), 0
        for r, ln in enumerate(lens):
            for j in range(ln):
                if lo <= acc < hi_p:
                    frames_in.append(int(runs_s[r]) + j)
                    runs_in.add(r)
                acc += 1
        calls = len(runs_in) - (1 if st["run_off"] > 0 else 0)
        first = sum(1 for f in frames_in if partner[f] == PARTNER_GARBAGE) if first_copy > 0 else 0
        zeros = 0
        for f in frames_in:
            partner[f] = versions[f]
            zeros += int(versions[f] == 0)
        pages = len(frames_in)
        acc, st["run_i"], st["run_off"] = 0, len(lens), 0
        for r, ln in enumerate(lens):
            if acc + ln > hi_p:
                st["run_i"], st["run_off"] = r, hi_p - acc
                break
            acc += ln
        if st["run_i"] >= len(lens):
            st["nruns"] = 0
        nbytes = (pages * ps if zpb < 0 else (pages - zeros) * ps + zeros * zpb) + pages * header
        cycles = int(round((calls * per_copy + nbytes / bandwidth + first * first_copy) * clock))
        st["busy_until"] = max(s, st["busy_until"]) + cycles
        st["last_arrival"] = st["busy_until"] + latency
        st["bytes_sent"] += nbytes
        st["pages_sent"] += pages
        st["zero_pages_sent"] += zeros
        st["calls"] += calls
        st["busy_cycles"] += cycles
        st["timeouts"] += 1
        st["copy_zeros"] += zeros
        st["pieces"] += 1
        st["admit"] = 0
        st["now"] = st["busy_until"]
        if st["nruns"] == 0 and not use_bitmap:
            break
    st["status"] = status
    for i, name in enumerate(COPY_LOOP_FIELDS):
        state[i] = st[name]


def qemu_turn(state, fstate, bitmap, n_pages, cap, runs_s, runs_l, link_i, link_f, partner, horizon, tick_limit, quantum,
              chunk, t0, max_wait, window_bytes, quota, per_page, xbzrle, paced, rate_per_cycle, carry, debt, avail,
              counts, stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
              cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
              dirty_cycles, extra, meter_buf, meter_on, stopped=False):
    # policies/qemu.py's iterate and Migration.next_pages as written there (lists of takes, then
    # concatenated), each piece Interconnect.copy of one piece, the CPU steps as the cpus process's ticks
    # and the catch-up before the piece is read; one frame at a time.
    import numpy as np
    from pagesync_model.kernels.dtypes import PARTNER_GARBAGE, QEMU_TURN_FIELDS
    st = {name: int(state[i]) for i, name in enumerate(QEMU_TURN_FIELDS)}
    ps, header, zpb, latency = (int(x) for x in link_i)
    bandwidth, per_copy, first_copy, clock = (float(x) for x in link_f)
    ncpu = len(stream_keys)
    status = 0

    def tick(t):
        return _cpu_tick(st, fstate, t, tick_limit, stopped, paced, rate_per_cycle, carry, debt, avail, counts,
                         stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
                         cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts,
                         walk_cycles, dirty_cycles, extra, meter_buf, meter_on)

    def next_pages(budget):
        parts, got = [], 0
        for _ in range(2):
            out_s, out_l = [0] * cap, [0] * cap
            nr, took, cut = bitmap_take_pages(bitmap, st["cursor"], n_pages, budget - got, True, out_s, out_l)
            runs = list(zip(out_s[:nr], out_l[:nr]))
            if not parts and cut < n_pages and runs:
                st["cursor"] = cut
                return runs
            if runs:
                parts += runs
                got += took
                st["cursor"] = cut if cut < n_pages else 0
                if cut >= n_pages:
                    st["wrapped"] = 1
                if got >= budget:
                    break
            else:
                st["cursor"] = 0
                st["wrapped"] = 1
            if got >= budget or st["remaining"] - got <= 0:
                break
        return parts

    while True:
        s = st["now"]
        if st["nruns"] == 0:
            if (st["bytes_sent"] - window_bytes >= quota or st["remaining"] <= 0
                    or not (s - t0 < max_wait)):
                break
            if not st["admit"] and s >= horizon:
                status = 1
                break
            st["admit"] = 1
            left = quota - (st["bytes_sent"] - window_bytes)
            before = st["wrapped"]
            st["wrapped"] = 0
            runs = next_pages(max(1, min(chunk, left // per_page)))
            wrapped_now = st["wrapped"]
            st["wrapped"] = 1 if (before or wrapped_now) else 0
            for j, (f, ln) in enumerate(runs):
                runs_s[j], runs_l[j] = f, ln
            st["nruns"] = len(runs)
            if not runs:
                break
            if xbzrle and wrapped_now:
                status = 3
                break
        while st["t_done"] + quantum <= s and status == 0:
            if not tick(st["t_done"] + quantum):
                status = 2
        if status == 0 and st["t_done"] < s and not tick(s):
            status = 2
        if status:
            break
        frames_in = [f for j in range(st["nruns"]) for f in range(int(runs_s[j]), int(runs_s[j]) + int(runs_l[j]))]
        calls = st["nruns"]
        first = sum(1 for f in frames_in if partner[f] == PARTNER_GARBAGE) if first_copy > 0 else 0
        zeros = 0
        for f in frames_in:
            partner[f] = versions[f]
            zeros += int(versions[f] == 0)
        pages = len(frames_in)
        st["nruns"] = 0
        st["remaining"] -= pages
        nbytes = (pages * ps if zpb < 0 else (pages - zeros) * ps + zeros * zpb) + pages * header
        cycles = int(round((calls * per_copy + nbytes / bandwidth + first * first_copy) * clock))
        st["busy_until"] = max(s, st["busy_until"]) + cycles
        st["last_arrival"] = st["busy_until"] + latency
        st["bytes_sent"] += nbytes
        st["pages_sent"] += pages
        st["zero_pages_sent"] += zeros
        st["calls"] += calls
        st["busy_cycles"] += cycles
        st["timeouts"] += 1
        st["pieces"] += 1
        st["admit"] = 0
        st["now"] = st["busy_until"]
    st["status"] = status
    for i, name in enumerate(QEMU_TURN_FIELDS):
        state[i] = st[name]


def xen_batches(state, fstate, xstate, to_send, to_skip, cand, skipped, batch, header_bytes, peek, runs_s, runs_l,
                link_i, link_f, partner, horizon, tick_limit, quantum, chunk, paced, rate_per_cycle, carry, debt, avail,
                counts, stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
                cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
                dirty_cycles, extra, meter_buf, meter_on, stopped=False):
    # Save.send_round's batches as xen.py runs them: at each batch's start (with ``peek``) the cpus process's
    # ticks and the scanner's catch-up, the peek one frame at a time, the choice, the header on the link, then
    # the pieces (the reference copy_loop over the batch's runs).
    import numpy as np
    from pagesync_model.kernels.dtypes import COPY_LOOP_FIELDS, PTE_DIRTY, XEN_BATCH_FIELDS
    F = {name: i for i, name in enumerate(COPY_LOOP_FIELDS)}
    X = {name: i for i, name in enumerate(XEN_BATCH_FIELDS)}
    n = len(pte)
    n_words = len(to_send)
    bandwidth, per_copy, first_copy, clock = (float(x) for x in link_f)
    ncpu = len(stream_keys)

    def tick(t):
        return _cpu_tick(_Fields(state, F), fstate, t, tick_limit, stopped, paced, rate_per_cycle, carry, debt,
                         avail, counts, stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus,
                         block, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                         step_counts, walk_cycles, dirty_cycles, extra, meter_buf, meter_on)

    while True:
        s = int(state[F["now"]])
        if not state[F["admit"]]:
            if s >= horizon:
                state[F["status"]] = 1
                return
            state[F["admit"]] = 1
        if state[F["nruns"]] and not xstate[X["header_due"]]:
            pieces = int(state[F["pieces"]])
            copy_loop(state, fstate, np.zeros(1, np.uint64), 0, False, runs_s, runs_l, link_i, link_f, partner,
                      horizon, tick_limit, quantum, chunk, paced, rate_per_cycle, carry, debt, avail, counts,
                      stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
                      cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
                      dirty_cycles, extra, meter_buf, meter_on, stopped)
            xstate[X["waits"]] += int(state[F["pieces"]]) - pieces
            if state[F["status"]]:
                return
            continue
        if not state[F["nruns"]]:
            if xstate[X["pending"]]:
                xstate[X["sent"]] += xstate[X["pending"]]
                xstate[X["batches"]] += 1
                xstate[X["pending"]] = 0
            pos = int(state[F["pos"]])
            if pos >= n:
                state[F["status"]] = 0
                return
            if peek:
                while state[F["t_done"]] + quantum <= s:
                    if not tick(int(state[F["t_done"]]) + quantum):
                        state[F["status"]] = 2
                        return
                if state[F["t_done"]] < s and not tick(s):
                    state[F["status"]] = 2
                    return
                # the peek: windows of 2 x batch pages (in words), doubling until one holds a batch
                lo_w = hi_w = pos // 64
                width = max(1, math.ceil(2 * batch / 64))
                while True:
                    new_hi = min(n_words, hi_w + width)
                    for w in range(hi_w, new_hi):
                        to_skip[w] = 0
                        for f in range(w * 64, min(n, w * 64 + 64)):
                            if int(pte[f]) & PTE_DIRTY:
                                _set_bit(to_skip, f)
                        cand[w] = to_send[w] & ~to_skip[w]
                        skipped[w] = to_send[w] & to_skip[w]
                    hi_w = new_hi
                    nr, pages, nxt = bitmap_take_pages(cand, pos, min(n, hi_w * 64), batch, False, runs_s, runs_l)
                    if pages >= batch or hi_w == n_words:
                        break
                    width *= 2
                xstate[X["skipped"]] += bitmap_popcount(skipped, pos, nxt)
            else:
                nr, pages, nxt = bitmap_take_pages(to_send, pos, n, batch, False, runs_s, runs_l)
            state[F["pos"]] = nxt
            if pages == 0:
                continue
            state[F["nruns"]], state[F["run_i"]], state[F["run_off"]] = nr, 0, 0
            xstate[X["pending"]], xstate[X["header_due"]] = pages, 1
            slot = int(xstate[X["slot"]])
            if slot:
                # the rate limiter's token bucket, a slot at a time: each whole slot since the last grant
                # grants 100 KiB when a write overdraws; still overdrawn, sleep to the ends of the next slots
                xstate[X["budget"]] -= pages * int(link_i[0])
                if xstate[X["budget"]] < 0 and not xstate[X["has_put"]]:
                    xstate[X["budget"]] += 100 * 1024
                    xstate[X["last_put"]], xstate[X["has_put"]] = s, 1
                elif xstate[X["budget"]] < 0:
                    while xstate[X["last_put"]] + slot <= s:
                        xstate[X["budget"]] += 100 * 1024
                        xstate[X["last_put"]] += slot
                    if xstate[X["budget"]] <= 0:
                        while xstate[X["budget"]] <= 0:
                            xstate[X["budget"]] += 100 * 1024
                            xstate[X["last_put"]] += slot
                        state[F["now"]] = int(xstate[X["last_put"]])
                        state[F["admit"]] = 0
                        xstate[X["waits"]] += 1
                        xstate[X["limiter_waits"]] += 1
                        continue
        xstate[X["header_due"]] = 0
        if header_bytes > 0:
            cycles = int(round((0 * per_copy + header_bytes / bandwidth + 0 * first_copy) * clock))
            state[F["busy_until"]] = max(s, int(state[F["busy_until"]])) + cycles
            state[F["last_arrival"]] = state[F["busy_until"]] + int(link_i[3])
            state[F["bytes_sent"]] += header_bytes
            state[F["busy_cycles"]] += cycles
            state[F["timeouts"]] += 1
            state[F["admit"]] = 0
            state[F["now"]] = state[F["busy_until"]]
            xstate[X["waits"]] += 1
