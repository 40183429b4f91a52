"""The per-user tuning file: rows measured by ``python -m fastmm tune``.

Placeholder until the tuner lands: no file is read.
"""


def load(sig, row):
    return None
