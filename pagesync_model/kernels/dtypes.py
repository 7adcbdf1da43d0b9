"""Array dtypes and x86-64 PTE bit layout shared by every kernel backend.

These values MUST match ``_ext/kernels.pxd``; a test checks that they do.
"""
import numpy as np

PTE_DTYPE = np.uint64      # one page-table entry per page frame
WORD_DTYPE = np.uint64     # bitmap words: frame f is bit (f & 63) of word (f >> 6)
VERSION_DTYPE = np.uint32  # page contents as a version number (0 = all-zero page)
INDEX_DTYPE = np.int64     # frame numbers, counts, run starts and lengths
TLB_TAG_DTYPE = np.int64   # frame cached in a TLB slot, -1 when the slot never held one
TLB_FLAG_DTYPE = np.uint8  # TLB_VALID | TLB_DIRTY

# x86-64 page-table entry bits (Intel SDM vol. 3, 4.5; Linux arch/x86/include/asm/pgtable_types.h).
PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6         # set by the CPU's page walker on the first write through a clean entry
PTE_SOFT_DIRTY = 1 << 11   # an OS-available bit (Linux _PAGE_BIT_SOFT_DIRTY = _PAGE_BIT_SOFTW3)

# TLB slot flags: a valid entry remembers whether the PTE was dirty when it was cached.
TLB_VALID = 1 << 0
TLB_DIRTY = 1 << 1

# A partner frame that has never received a copy holds this version (never a real one).
PARTNER_GARBAGE = np.iinfo(VERSION_DTYPE).max

# splitmix64 constants for the counter-based write generators (identical in every backend).
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_M1 = 0xBF58476D1CE4E5B9
SPLITMIX_M2 = 0x94D049BB133111EB

# The fields of ``copy_loop``'s int64 state array, in order (_ext/kernels.pyx: the CL_* enum).
COPY_LOOP_FIELDS = ("now", "t_done", "busy_until", "last_arrival", "pos", "run_i", "run_off", "nruns", "bytes_sent",
                    "pages_sent", "zero_pages_sent", "calls", "busy_cycles", "timeouts", "running_cycles", "writes",
                    "walks", "dirty_sets", "flush_refills", "meter_fill", "copy_zeros", "pieces", "admit", "status",
                    "next_tick")
COPY_LOOP_DONE, COPY_LOOP_HORIZON, COPY_LOOP_PY_TICK = 0, 1, 2

# The fields of ``qemu_turn``'s int64 state array, in order (_ext/kernels.pyx: the QT_* enum).
QEMU_TURN_FIELDS = ("now", "t_done", "busy_until", "last_arrival", "bytes_sent", "pages_sent", "zero_pages_sent", "calls",
                    "busy_cycles", "timeouts", "running_cycles", "writes", "walks", "dirty_sets", "flush_refills",
                    "meter_fill", "pieces", "admit", "status", "next_tick", "cursor", "remaining", "nruns", "wrapped")
QEMU_TURN_OVER, QEMU_TURN_HORIZON, QEMU_TURN_PY_TICK, QEMU_TURN_PY_PIECE = 0, 1, 2, 3
# The fields of ``xen_batches``' int64 ``xstate`` array, in order (_ext/kernels.pyx: the XB_* enum).
XEN_BATCH_FIELDS = ("pending", "sent", "skipped", "batches", "waits", "header_due", "slot", "budget", "last_put",
                    "has_put", "limiter_waits")
