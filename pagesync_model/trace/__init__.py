"""Write traces of real programs: record them, store them, summarise them.

``record`` runs a program under the preload tracer (Linux 6.7+ userfaultfd async write-protect +
PAGEMAP_SCAN) and writes a ``.npz`` trace; ``read_trace``/``write_trace`` handle the format;
``stats``/``print_stats``/``plot_stats`` summarise a trace.  Every failure is a ``TraceError`` whose
``str()`` is one line.  See README.md in this directory for the format and the recorder's limits.
"""
from .format import FORMAT_VERSION, Trace, TraceError, read_trace, validate, write_trace
from .record import RecordSummary, check_support, library_path, probe, record
from .stats import plot_stats, print_stats, stats

__all__ = [
    "FORMAT_VERSION", "Trace", "TraceError", "read_trace", "validate", "write_trace",
    "RecordSummary", "check_support", "library_path", "probe", "record",
    "stats", "print_stats", "plot_stats",
]
