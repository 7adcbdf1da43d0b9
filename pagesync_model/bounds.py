"""Upper bounds of the configuration's numbers, in one place.

Every number has an upper bound beyond which it describes no machine or migration this models (a
unit slip, a typo or hostile input): such a value is refused with its field's name instead of
overflowing a kernel's counters or running for days. Whether a sensible run fits the machine at
hand is the cost guard's question (pagesync_model/cost.py), not these bounds'. The machine's fields
(config/fields.py), the policies' sections and the workload kinds all take their bounds from here.
"""
MAX_FRAMES = 2**32           # frame numbers are held in 32 bits
MAX_BYTES = 2**52            # x86-64 physical addresses have at most 52 bits: 4 PiB
MAX_PAGE = 2**30             # the largest x86-64 page is 1 GiB
MAX_CPUS = 8192              # Linux's NR_CPUS ceiling (CONFIG_MAXSMP)
MAX_PROCESSES = 2**22        # Linux's PID_MAX_LIMIT
MIN_CLOCK = 1e6              # Hz: below every CPU with hardware dirty bits (the 386 ran at 12 MHz)
MAX_CLOCK = 1e10             # Hz: above every CPU, overclocked ones included
MAX_TLB_ENTRIES = 2**16      # twenty times the largest second-level TLB (3072 entries)
MAX_CPU_OP = 1e-3            # s: a walk or PTE update of 1000 cycles at the slowest clock (~100 ns in life)
MAX_WRITE_RATE = 2e10        # page writes per second per CPU: two stores per cycle at 10 GHz
MAX_DMA_RATE = 1e10          # pages per second: 40 TB/s of 4 KiB pages, beyond any I/O fabric
MAX_BANDWIDTH = 1e14         # bytes/s: 100 TB/s, ten times the memory bandwidth of the largest servers
MAX_LATENCY = 10.0           # s: a link slower to answer is down (a satellite hop takes 0.6 s)
MAX_STEP = 3600.0            # s: a rendezvous, cut-over, setup, catch-up or warm-up beyond an hour is a stall
MAX_SIM_TIME = 1e8           # s: three years, ten times SimGrid's hard-coded 1e7 s migration timeout
MAX_DOWNTIME = 2000.0        # s: QEMU's MAX_MIGRATE_DOWNTIME_SECONDS, the largest downtime any tool takes
MAX_ROUNDS = 10_000          # passes before a forced stop: Xen's default is 29, the published module's 4
MAX_COPYRANGE = 2**20        # blackout ranges: ten thousand times the published module's 100
MAX_QUANTUM = 1.0            # s: a coarser step no longer interleaves writes with passes of milliseconds
MAX_SEED = 2**64 - 1         # seeds are 64-bit
MAX_TIME_SCALE = 1e6         # a trace replayed a million times slower or faster than it was recorded
