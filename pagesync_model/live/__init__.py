"""A real pagesync for live Linux processes: mirror a running process's memory with the Stratus
algorithm (``pagesync-sim live mirror``) to a partner that keeps the mirror (``live receive``).

``mirror.run_mirror`` is the controller, ``protocol`` the wire format and the partner's image,
``watchdog`` the process that continues the target if the controller dies while it is stopped,
``_lib`` the ctypes bindings of the C hot loops (``_ext/live/pagesync_live.c``).  Every failure is a
``LiveError`` whose text is one line.
"""
from .errors import LiveError

__all__ = ["LiveError"]
