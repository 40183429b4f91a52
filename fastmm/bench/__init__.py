"""``python -m fastmm bench``: fastmm against numpy (and MKL) in one run.

_harness    the cases, the checks, the timing loop and the tables
_worker     one library's timings in a process of its own
_peers      MKL called through ctypes, for ``--peers mkl``
_progress   the one-line progress display (also used by fit and tune)
"""
