"""What the CPU offers the GEMM: cache geometry and the block sizes it implies.

Block sizes follow the analytical model of Low et al., "Analytical Modeling Is
Enough for High-Performance BLIS" (ACM TOMS 2016) -- the packed A block
(MC x KC) stays in L2, the packed B panel (KC x NC) in L3 -- except that the
B micro-panel (KC x NR) is sized against L2, not L1: with AVX-512 kernels
whose NR spans two vectors, an L1-sized KC leaves the k loop too short, and
L2 streams both micro-panels fast enough (the constants below were tuned by
measurement; see block_sizes).
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


# Tuned constants of the model (measured on a Zen 5 core with the 12 x 32
# float32 / 12 x 16 float64 AVX-512 kernels, n = 1024..2048): KC between 512
# and 1024 beat the L1-resident KC = 256 by 8-15%, since a longer k loop
# amortises each micro-kernel call's C tile update; the kc x NR B micro-panel
# is then served from L2, at a small fraction of its bandwidth.  KC is capped
# at 512 as in the peers' tables (1024 measured no better).
B_PANEL_L2_FRACTION = 1 / 16   # of L2 held by one B micro-panel
A_BLOCK_FREE_WAYS = 2          # L2 ways left to the B micro-panel and C
KC_MIN, KC_MAX = 128, 512


def l2_budget(caches=None):
    """Bytes of L2 a packed A block may fill: all but the ways left to the B
    micro-panel and the C tiles."""
    l2 = (caches or read_caches())[2]
    return max(1, l2.ways - A_BLOCK_FREE_WAYS) * l2.sets * l2.line


def block_sizes(mr, nr, itemsize, caches=None, kc_max=KC_MAX,
                b_panel_l2_fraction=B_PANEL_L2_FRACTION,
                a_block_l2_fraction=None):
    """(MC, KC, NC) for an MR x NR kernel on elements of ``itemsize`` bytes
    (kc_max, the B panel's and the A block's L2 shares: a configuration
    row's rule; no A block share: all of L2 but A_BLOCK_FREE_WAYS ways)."""
    caches = caches or read_caches()
    l2, l3 = caches[2], caches.get(3, caches[2])
    # KC: the B micro-panel (KC x NR) takes a fixed share of L2, from where the
    # kernel streams it alongside the A micro-panel.
    kc = int(l2.size * b_panel_l2_fraction) // (nr * itemsize)
    kc = min(kc_max, max(KC_MIN, _round_down(kc, 8)))
    # MC: the packed A block (MC x KC) fills L2 but for the ways left to the
    # B micro-panel and the C tiles, so it is not evicted while reused.
    if a_block_l2_fraction is None:
        a_bytes = l2_budget(caches)
    else:
        a_bytes = int(l2.size * a_block_l2_fraction)
    mc = a_bytes // (kc * itemsize)
    mc = min(4096, _round_down(mc, mr))
    # NC: the packed B panel (KC x NC, shared by all threads) takes at most
    # half of the shared L3.
    nc = (l3.size // 2) // (kc * itemsize)
    nc = min(8192, _round_down(nc, nr))
    return mc, kc, nc
