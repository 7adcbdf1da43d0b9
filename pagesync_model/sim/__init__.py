"""The SimPy side of the model: the CPUs, the interconnect and partner, the machine a policy runs on
(machine.py, the verbs a policy may call) and the engine (run loop, pass records, oracle).

SimPy processes decide *when* things happen and account time in CPU cycles; the kernels decide
*what* happens to pages. No process here loops over pages.
"""
