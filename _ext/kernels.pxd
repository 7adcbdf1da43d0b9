# cython: language_level=3
"""C-level dtypes and PTE/TLB bits of the pagesync kernels.

These ctypedefs and constants MUST match pagesync_model/kernels/dtypes.py;
tests/test_kernels.py parses this file and checks that they do.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

ctypedef uint64_t pte_t        # PTE_DTYPE = np.uint64
ctypedef uint64_t word_t       # WORD_DTYPE = np.uint64 (frame f is bit f & 63 of word f >> 6)
ctypedef uint32_t version_t    # VERSION_DTYPE = np.uint32 (wraps mod 2^32)
ctypedef int64_t index_t       # INDEX_DTYPE = np.int64
ctypedef int64_t tlb_tag_t     # TLB_TAG_DTYPE = np.int64 (-1: slot never held a frame)
ctypedef uint8_t tlb_flag_t    # TLB_FLAG_DTYPE = np.uint8

# x86-64 PTE bits (Intel SDM vol. 3, 4.5). Anonymous enum values are C ints; the kernels cast them
# to pte_t before complementing so ~PTE_DIRTY is a 64-bit mask.
cdef enum:
    PTE_PRESENT = 1 << 0
    PTE_RW = 1 << 1
    PTE_ACCESSED = 1 << 5
    PTE_DIRTY = 1 << 6
    PTE_SOFT_DIRTY = 1 << 11

# Direct-mapped TLB slot flags.
cdef enum:
    TLB_VALID = 1 << 0
    TLB_DIRTY = 1 << 1

# splitmix64 constants: above 2^63, so they are C literals with a ULL suffix rather than enum values.
cdef extern from *:
    """
    #define PAGESYNC_SPLITMIX_GAMMA 0x9E3779B97F4A7C15ULL
    #define PAGESYNC_SPLITMIX_M1 0xBF58476D1CE4E5B9ULL
    #define PAGESYNC_SPLITMIX_M2 0x94D049BB133111EBULL
    """
    const uint64_t SPLITMIX_GAMMA "PAGESYNC_SPLITMIX_GAMMA"
    const uint64_t SPLITMIX_M1 "PAGESYNC_SPLITMIX_M1"
    const uint64_t SPLITMIX_M2 "PAGESYNC_SPLITMIX_M2"

# Bit tricks: one instruction each on x86-64 with popcnt/bmi, a small libgcc routine otherwise.
cdef extern from *:
    """
    static inline int pagesync_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    static inline int pagesync_popcount64(unsigned long long x) { return __builtin_popcountll(x); }
    """
    int ctz64 "pagesync_ctz64"(unsigned long long x) nogil
    int popcount64 "pagesync_popcount64"(unsigned long long x) nogil

# A hint to start loading a cache line that will be written soon (no effect on results; never faults).
cdef extern from *:
    """
    #define pagesync_prefetch_w(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void prefetch_w "pagesync_prefetch_w"(const void* p) nogil
