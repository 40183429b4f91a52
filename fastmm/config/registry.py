"""Configuration rows, one per micro-architecture family, BLIS-style.

A row names the kernel family (ISA) used by the packed driver, the unpacked
small-product path and the vectorised activations, the rule for the cache
block sizes, and the thresholds that route a product (unpacked path or
packed driver) and decide its thread count.  Rows are data: a CPU-specific
number lives here, never in a driver.

Rows are chosen from the vendor, family and feature flags, not from model
numbers alone: on virtual machines the model is whatever the hypervisor
reports (an Intel Xeon seen here calls itself family 6, model 167 and names
no product).  What no row knows, ``python -m fastmm tune`` measures.
"""
from dataclasses import dataclass, field, replace
from typing import Optional

# The analytical block-size model's tunables (see fastmm._cpu.block_sizes);
# measured on a Zen 5 core with the 12 x 32 / 12 x 16 AVX-512 kernels.
ZEN5_FLOPS_PER_THREAD = 2.0 * 160 ** 3


@dataclass(frozen=True)
class Signature:
    """What the registry matches on: from /proc/cpuinfo (or a recording)."""
    vendor: str                      # "GenuineIntel", "AuthenticAMD", ...
    family: int
    model: int
    flags: frozenset = field(default_factory=frozenset)

    def has(self, *names):
        return all(n in self.flags for n in names)


@dataclass(frozen=True)
class Row:
    name: str
    summary: str          # what this family is and why its numbers differ
    isa: str              # kernel family: "avx512", "avx2" or "generic"
    # block sizes: the cache model's rule, capped here; or explicit
    # (MC, KC, NC) per dtype, as the tuner writes them
    kc_max: int = 512
    # float64's cap where it differs: its kernels stream twice float32's
    # bytes of A per flop, and may need the B micro-panel kept in L1
    kc_max_float64: Optional[int] = None
    b_panel_l2_fraction: float = 1 / 16
    # the packed A block's share of L2; None: all of L2 but the ways left to
    # the B micro-panel and C (the cache model's A_BLOCK_FREE_WAYS)
    a_block_l2_fraction: Optional[float] = None
    # the packed driver calls the kernel family's streaming kernels, which
    # prefetch both packed micro-panels ahead in the k loop (ukernel.h)
    stream_prefetch: bool = False
    blocks: Optional[dict] = None
    # threads: one per this many float32 flops of a product (team start +
    # barriers against the kernel's speed); a float64 flop counts twice
    flops_per_thread: float = ZEN5_FLOPS_PER_THREAD
    # the unpacked path takes m*n*k up to small_mnk, m up to skinny_m rows,
    # k up to shallow_k, and n up to narrow_n columns (classifier heads:
    # a 32-wide packed tile would be mostly padding)
    small_mnk: int = 128 ** 3
    skinny_m: int = 64
    # ... but m <= skinny_m only while B holds at most skinny_kn elements or
    # k is one of the unpacked path's B panels (256 rows) deep: a larger B
    # is copied panel by panel for every 256 rows of k, and the packed
    # driver won by 1.2-2x (32 x 1024 x 1024, 24..64 x 1024 x 4096; B in
    # place lost by 1.6x at m = 8), while B up to 512 x 512 stays faster
    # unpacked (Zen 4, 1 thread)
    skinny_kn: int = 512 * 512
    shallow_k: int = 16
    narrow_n: int = 16
    # with m <= 2 MC (one A block), products of n >= short_n columns let
    # each thread pack its own B chunks, consumed from L2, not one shared
    # B panel: ahead by 5-35% at n = 4096 on Zen 4 (m = 32..256, k = 1024,
    # 1 thread), mixed at n <= 1024; on more than one thread always
    short_n: int = 2048
    # (rows ahead, minimum row stride in bytes): while packing those B
    # chunks, prefetch the rows this far ahead where B's rows lie at least
    # that far apart; 0 rows: off.  Zen 4, 1 and 2 threads: +10-45% at
    # m = 32..128, k = 1024, n = 4096 (rows 16-32 KiB apart), -5-10% at
    # n = 1024 (4-8 KiB apart), hence the stride floor
    pack_prefetch: tuple = (0, 1 << 14)
    measured: str = ""    # where the numbers come from

    def with_(self, **changes):
        return replace(self, **changes)


def _avx512(sig):
    return sig.has("avx512f", "avx512dq", "avx512bw", "avx512vl")


def _avx2(sig):
    return sig.has("avx2", "fma")


# Best match first; each entry: (row, predicate, why it matched).
ROWS = [
    (Row("zen5", "AMD Zen 5: two full 512-bit FMA pipes", "avx512",
         measured="block sizes and thresholds measured on 2 Zen 5 cores"),
     lambda s: s.vendor == "AuthenticAMD" and s.family >= 0x1A and _avx512(s),
     "AMD family >= 26 with AVX-512"),
    (Row("zen4", "AMD Zen 4: 512-bit ops as two 256-bit halves (half the "
         "FMA rate of Zen 5)", "avx512",
         # At half Zen 5's flop rate a team start is paid back by fewer
         # flops: `fastmm tune` on 2 idle Zen 4 cores found two threads
         # ahead from 64^3-80^3; 100^3 keeps a margin for busy machines,
         # where a small threaded product suffers most.
         flops_per_thread=2.0 * 100 ** 3,
         # the unpacked path beat the packed driver for n <= 64 columns by
         # 20-50% at m = k = 512 (1 thread), and by ~1.7x at n = 32 on
         # 2 threads; 32 keeps to what both measurements agree on
         narrow_n=32,
         pack_prefetch=(4, 1 << 14),
         measured="routing and threading thresholds measured on 2 Zen 4 "
                  "cores (KVM); block sizes from the cache model"),
     lambda s: s.vendor == "AuthenticAMD" and s.family == 0x19 and _avx512(s),
     "AMD family 25 with AVX-512"),
    (Row("zen-avx2", "AMD Zen 1-3: AVX2 + FMA", "avx2",
         # Zen 3 (2 cores, KVM), 2 threads against 1, best of 3-4
         # interleaved rounds: two threads were ahead by 1.5-1.9x from
         # ~0.9 MFLOP (48 x 96 x 96, 80^3 float32; 64^3 float64); 3e5 puts
         # the second thread at 0.6 MFLOP, near OpenBLAS's 64^3
         flops_per_thread=3e5,
         # the unpacked path beat the packed driver at m = k = 512 for
         # n = 24..64 by 15-50% (float32) and 10-30% (float64) on 1 thread,
         # level or ahead on 2: a 16-wide tile is half padding at n = 24
         narrow_n=64,
         # the unpacked path beat the packed driver on n^3 squares up to
         # 192^3 (float32 +4-18% at n = 136..192, float64 +1-4%; 2 threads
         # +5-12%); float64 lost 3% from 224^3
         small_mnk=192 ** 3,
         # packing B chunks with rows 4 KiB and more apart, 4 rows ahead:
         # +10-25% at m = 32..128, k = 512..4096, n = 1024..4096 (1 thread)
         pack_prefetch=(4, 1 << 12),
         # KC 512 makes the 6 x 8 float64 B micro-panel 32 KiB, all of
         # L1: with 256 (16 KiB) float64 gained 5-15% at 256..2048 rows,
         # k, n = 1024..4096 (1 and 2 threads); float32 (half the bytes of
         # A per flop) was level or 2% behind with 256, so keeps 512
         kc_max_float64=256,
         measured="routing, threading and prefetch thresholds measured on "
                  "2 Zen 3 cores (KVM); block sizes from the cache model"),
     lambda s: s.vendor in ("AuthenticAMD", "HygonGenuine") and _avx2(s),
     "AMD without AVX-512"),
    (Row("sapphirerapids", "Intel Sapphire Rapids and later: two 512-bit "
         "FMA ports, AMX, 2 MiB L2", "avx512",
         # `fastmm tune` on 2 cores of an Intel Xeon with AMX (KVM,
         # reported as family 6 model 167), float32 GFLOP/s: two threads
         # were ahead from 80^3 (184 vs 157) and by 1.5-1.8x from 96^3,
         # where the built-in 8.2 MFLOP kept products up to ~160^3 on one
         # core; 5.12e5 starts the second thread at 80^3
         flops_per_thread=5.12e5,
         # the unpacked path beat the packed driver on every n^3 up to 256^3
         # (float32 +10-35%, float64 +7-25%, 1 thread) ...
         small_mnk=256 ** 3,
         # ... and at m = k = 512 for every n up to 64 (float32 1.3-2.8x,
         # float64 1.04-2x): the 32-wide packed tile is padding there
         narrow_n=64,
         # an A block filling L2 (14 of 16 ways: MC 888 float32, 444
         # float64 at KC 512) ran 5-15% behind one of a quarter of it on
         # n^3 squares, float64 most (2048^3, 1 thread: 62 -> 74 GFLOP/s;
         # 2 threads 124 -> 133); a half was level with the quarter
         a_block_l2_fraction=1 / 4,
         # with the streaming kernels the B micro-panel comes from L2
         # anyway: float32 KC 1024 (a 128 KiB micro-panel, MC 120) halves
         # the C updates; 2048^3 +5% on 1 and 2 threads (interleaved, best
         # of 4: 162 -> 171, 314 -> 328 GFLOP/s), 32..64-row products
         # 0-5% behind; float64 was level at 2048^3 and 5-12% behind on
         # few-row products (32 x 4096 @ 4096 x 4096, 256 x 4096 @ ..)
         kc_max=1024, kc_max_float64=512,
         # in-loop prefetch of both panels (see kernels/avx512.h)
         stream_prefetch=True,
         # B chunks packed with rows 4 KiB and more apart, 4 rows ahead:
         # `fastmm tune` +5% (32..64 rows, n = 2048..4096); interleaved,
         # best of 3: 32 x 4096 @ 4096 x 4096 +6-7% (float32 and float64,
         # 1 thread; +4% on 2), 64 x 4096 @ 4096 x 1024 float64 +3%, level
         # at 32 x 1024 @ 1024 x 4096 and 256 rows
         pack_prefetch=(4, 1 << 12),
         measured="routing and threading thresholds, the A block's L2 "
                  "share, float32 KC, the streaming kernels and the B-chunk "
                  "prefetch measured on 2 cores of an Intel Xeon with AMX "
                  "(KVM); NC from the cache model"),
     lambda s: s.vendor == "GenuineIntel" and _avx512(s)
     and (s.has("amx_tile") or s.has("avx512_fp16")),
     "Intel with AVX-512 and AMX or AVX512-FP16"),
    (Row("icelake", "Intel Ice Lake / Tiger Lake: AVX-512 with VBMI2",
         "avx512", measured="not measured: run `python -m fastmm tune`"),
     lambda s: s.vendor == "GenuineIntel" and _avx512(s)
     and s.has("avx512_vbmi2"),
     "Intel with AVX-512 VBMI2, no AMX"),
    (Row("skylake-x", "Intel Skylake-X / Cascade Lake: AVX-512, two ports "
         "on most server parts", "avx512",
         measured="not measured: run `python -m fastmm tune`"),
     lambda s: s.vendor == "GenuineIntel" and _avx512(s),
     "Intel with AVX-512 F/DQ/BW/VL only"),
    (Row("avx512", "an AVX-512 CPU no other row describes", "avx512",
         measured="Zen 5 values"),
     _avx512, "AVX-512 F/DQ/BW/VL"),
    (Row("avx2", "an AVX2 + FMA CPU", "avx2",
         # two 256-bit FMA pipes, as on Zen 3: a team start is paid back
         # after as many flops as there (zen-avx2), not after Zen 5's
         flops_per_thread=3e5,
         measured="threads threshold from Zen 3 (same FMA width and "
                  "rate); other thresholds Zen 5 values"),
     _avx2, "AVX2 and FMA"),
    (Row("generic", "portable C kernels", "generic",
         # the portable kernels run at ~40 GFLOP/s: threads pay sooner
         flops_per_thread=ZEN5_FLOPS_PER_THREAD / 4,
         measured="portable kernels"),
     lambda s: True, "no AVX2+FMA"),
]


def select(sig, runnable=None):
    """(row, reason) for signature ``sig``.  ``runnable``: the kernel
    families this build can run here (a row whose ISA is not among them is
    skipped, e.g. when the OS does not save AVX-512 state)."""
    for row, matches, why in ROWS:
        if runnable is not None and row.isa not in runnable:
            continue
        if matches(sig):
            return row, (f"{sig.vendor} family {sig.family} model {sig.model}: "
                         f"{why}")
    raise LookupError("no configuration row matches")  # "generic" always does


def signature(cpuinfo="/proc/cpuinfo"):
    """This machine's signature from /proc/cpuinfo (empty where unreadable)."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break                      # the first processor only
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return parse_signature(fields)


def parse_signature(fields):
    def num(key):
        try:
            return int(fields.get(key, "0"))
        except ValueError:
            return 0
    return Signature(fields.get("vendor_id", "unknown"), num("cpu family"),
                     num("model"), frozenset(fields.get("flags", "").split()))
