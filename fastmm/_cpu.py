"""What the CPU offers the GEMM: cache geometry and the block sizes it implies.

Block sizes follow the analytical model of Low et al., "Analytical Modeling Is
Enough for High-Performance BLIS" (ACM TOMS 2016): the B micro-panel (kc x NR)
stays in L1 while the kernel sweeps the A block, the packed A block (MC x KC)
stays in L2, the packed B panel (KC x NC) in L3.
"""
import os
from dataclasses import dataclass

_SYSFS = "/sys/devices/system/cpu/cpu0/cache"


@dataclass(frozen=True)
class Cache:
    size: int       # bytes
    ways: int
    line: int       # bytes

    @property
    def sets(self):
        return max(1, self.size // (self.ways * self.line))


# Used when the OS does not describe the caches: a common modern x86 core.
DEFAULT_CACHES = {1: Cache(32 * 1024, 8, 64), 2: Cache(1024 * 1024, 8, 64),
                  3: Cache(16 * 1024 * 1024, 16, 64)}


def _parse_size(text):
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def read_caches(root=_SYSFS):
    """Data/unified caches of cpu0 by level, from sysfs; defaults where absent."""
    caches = dict(DEFAULT_CACHES)
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return caches
    for entry in entries:
        if not entry.startswith("index"):
            continue
        path = os.path.join(root, entry)
        try:
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            if kind == "Instruction":
                continue
            with open(os.path.join(path, "level")) as f:
                level = int(f.read())
            with open(os.path.join(path, "size")) as f:
                size = _parse_size(f.read())
            with open(os.path.join(path, "ways_of_associativity")) as f:
                ways = int(f.read())
            with open(os.path.join(path, "coherency_line_size")) as f:
                line = int(f.read())
        except (OSError, ValueError):
            continue
        if size > 0 and ways > 0 and line > 0:
            caches[level] = Cache(size, ways, line)
    return caches


def _round_down(x, multiple):
    return max(multiple, (x // multiple) * multiple)


def block_sizes(mr, nr, itemsize, caches=None):
    """(MC, KC, NC) for an MR x NR kernel on elements of ``itemsize`` bytes."""
    caches = caches or read_caches()
    l1, l2, l3 = caches[1], caches[2], caches.get(3, caches[2])
    # KC: the B micro-panel gets the L1 ways left after one way for the C tile
    # and a share for the streaming A micro-panel, in proportion mr : nr.
    ways_b = max(1, int((l1.ways - 1) / (1 + mr / nr)))
    kc = ways_b * l1.sets * l1.line // (nr * itemsize)
    kc = min(512, max(128, _round_down(kc, 8)))
    # MC: the packed A block fills L2 but for two ways kept for B and C.
    mc = (max(1, l2.ways - 2) * l2.sets * l2.line) // (kc * itemsize)
    mc = min(4096, _round_down(mc, mr))
    # NC: the packed B panel takes at most half of the shared L3.
    nc = (l3.size // 2) // (kc * itemsize)
    nc = min(8192, _round_down(nc, nr))
    return mc, kc, nc
