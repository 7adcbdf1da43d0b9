"""The SimPy side of the model: the CPUs, the interconnect and partner, and the engine.

SimPy processes decide *when* things happen and account time in CPU cycles; the kernels decide
*what* happens to pages. No process here loops over pages.
"""
