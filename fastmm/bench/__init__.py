"""``python -m fastmm bench``: fastmm against numpy (and MKL) in one run.

_harness    the cases, the timing loop, the checks and the tables
_peers      MKL called through ctypes, for ``--peers mkl``
_progress   the one-line progress display (also used by fit and tune)
"""
