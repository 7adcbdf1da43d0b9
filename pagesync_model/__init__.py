"""pagesync-sim: a hardware-level discrete-event model of mirroring the memory of a running machine.

The package models CPUs writing memory through their TLBs, the Stratus pagesync scanner (and the
pre-copy rules of Xen and QEMU), and the interconnect to the partner, with page contents held as
versions so that every lost write is caught. Entry point: ``pagesync-sim CONFIG.yaml``.
"""
__version__ = "0.1.0"
