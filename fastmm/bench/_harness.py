"""``python -m fastmm bench``: fastmm against numpy, side by side, and
against MKL with ``--peers mkl`` (fastmm/bench/_peers.py).

Every case is timed for fastmm, for numpy and for each peer at the same
thread count (numpy's BLAS pinned with threadpoolctl, fastmm with
``fastmm.threads``, a peer with its own call), each library in processes of
its own (fastmm/bench/_worker.py) so that no other library's idle thread
pool spins on its cores, best of several repeats, each repeat long enough
(inner iterations) for the clock to resolve tiny products.  Each case's
fastmm and peer results are checked against numpy's first, in this
process: a wrong answer is reported as WRONG, never as a speed, and makes
the command exit with status 1.
A case whose timing rounds disagree (other work took the cores) is timed
again, and if it still disagrees it is reported as unstable, never as a
ratio, and left out of the summary (see UNSTABLE_SPREAD).

The numpy baseline is ``np.dot`` for 1-D and 2-D operands (numpy's cheapest
call into its BLAS) and ``np.matmul`` for stacks (``np.dot`` means something
else there).  MKL runs ``cblas_?gemm`` (``cblas_?gemm_batch_strided`` for
stacks; a vector is a one-row or one-column matrix).  Every library writes
into a preallocated ``out`` so allocation is timed for none.

The "% of peak" column uses the machine's FMA peak, measured at start-up by
:func:`measure_peak` (see there), or given with ``--peak``.  "GB/s" is
fastmm's rate in the least traffic a product needs (A and B read once, C
written once: :func:`traffic_bytes`), and "%bw" that against the memory
read bandwidth measured at start-up by :func:`measure_bandwidth`: near
100% for a product that streams an operand larger than the caches (a few
rows times a large B), small for one that computes on cached data.

The ``lowp`` family (``--families lowp``; not in the default run) times,
per case, fastmm's int8 -> int32 product (``dtype=np.int32``), its bfloat16
one (ml_dtypes operands, where ml_dtypes is installed) and
``precision="bf16"`` beside fastmm's float32, numpy's float32, numpy's
int32 matmul (no BLAS: timed on the first rows of A only, see
NUMPY_INT_SECONDS), ml_dtypes' own bfloat16 matmul, and MKL's
``cblas_gemm_bf16bf16f32`` with ``--peers mkl``; every result is checked
first (int8 bit for bit) and the same processes and stability rule
apply.  It prints a table and geometric means of its own.
"""
import argparse
import contextlib
import math
import os
import sys
import time

import numpy as np

from fastmm.bench._progress import Progress

FAMILIES = ("square", "nn", "small", "matvec", "stack", "lowp")
# lowp has a table of its own (no float32/float64 axis): asked for by name
DEFAULT_FAMILIES = ("square", "nn", "small", "matvec", "stack")
PEERS = ("mkl",)
FAMILY_HELP = {
    "square": "n x n @ n x n, n = 256, 512, 1024, 2048",
    "nn": "dense-layer shapes: batch m in {1, 32, 64, 256, 4096}, "
          "(in k, out n) in 64 .. 4096, classifier heads of 10 outputs "
          "(512 x 512 @ 512 x 10, 4096 x 1024 @ 1024 x 10), 1000 x 64 @ "
          "64 x 64, and the memory-bound 32 x 4096 @ 4096 x 4096",
    "small": "n x n @ n x n, n = 2 .. 96",
    "matvec": "matrix @ vector and vector @ matrix",
    "stack": "stacks of small matrices, e.g. (10000, 8, 8) @ (10000, 8, 8)",
    "lowp": "low precision, not in the default run: int8 -> int32 and "
            "bfloat16 -> float32 beside float32 and numpy, n = 1024, 2048 "
            "and dense-layer shapes (--dtypes does not apply)",
}
# Each library is timed in processes of its own (time_cases), so no other
# library's idle thread pool spins on the cores its threads need.  Timed in
# one process, even in blocks of their own with a 0.15 s pause before each,
# the two pools fought on a 2-core Zen 3 VM: 256 x 64 @ 64 x 256 float32 on
# 2 threads read 61-67 GFLOP/s for fastmm and 52-110 for numpy, against
# 175 and 99 with each library alone in its process.
# Untimed calls before a case's samples, in seconds (see time_products), and
# the least time one sample loops the call for.
WARM = 0.05
SAMPLE = 0.01
# A library's best in one round and its best in the other agree within a few
# percent when the cores are its own; another process taking a core during a
# block makes that block 2x to 50x slower (a multi-threaded product on 2 cores
# waits a whole time slice for its descheduled thread), which is how
# nonsense ratios like 0.02x arose.  More than 25 % between rounds is such
# load, not jitter: the case is timed again, at most RETRIES more times (so
# a loaded run takes at most 3x as long), then reported as unstable.
UNSTABLE_SPREAD = 0.25
RETRIES = 2
# numpy's integer matmul has no BLAS (0.2-2 GOP/s): it is timed on the first
# rows of A only, as many as one call does in about this many seconds, and
# at least NUMPY_INT_MIN_ROWS (fewer rows share its int32 copy of B less)
NUMPY_INT_SECONDS = 0.1
NUMPY_INT_MIN_ROWS = 16


def family_cases(family, quick=False):
    """(label, shape of a, shape of b, size for plots) for one family."""
    if family == "square":
        ns = (256, 1024) if quick else (256, 512, 1024, 2048)
        return [(f"{n}", (n, n), (n, n), n) for n in ns]
    if family == "nn":
        if quick:
            mkn = [(32, 1024, 1024), (256, 1024, 4096)]
        else:
            kn = [(64, 256), (512, 512), (1024, 4096), (4096, 1024)]
            # a 4096-row batch with 4096-wide layers is 34 GFLOP: keep the
            # default run short by pairing it with the narrower layers only
            mkn = [(m, k, n) for m in (1, 32, 64, 256) for k, n in kn]
            mkn += [(4096, 64, 256), (4096, 512, 512), (4096, 1024, 1024)]
            # classifier heads (n = 10: narrower than one micro-panel) and
            # a narrow hidden layer, the shapes issue 11 named
            mkn += [(512, 512, 10), (4096, 1024, 10), (1000, 64, 64)]
            # memory-bound: a 64 MiB (float32) B streamed past 32 rows
            mkn += [(32, 4096, 4096)]
        return [(f"{m}x{k} @ {k}x{n}", (m, k), (k, n), m) for m, k, n in mkn]
    if family == "small":
        ns = (4, 16, 64) if quick else (2, 3, 4, 8, 16, 32, 48, 64, 96)
        return [(f"{n}", (n, n), (n, n), n) for n in ns]
    if family == "matvec":
        ns = (1024,) if quick else (256, 1024, 4096)
        cases = [(f"{n}x{n} @ {n}", (n, n), (n,), n) for n in ns]
        cases += [(f"{n} @ {n}x{n}", (n,), (n, n), n) for n in ns[-1:]]
        return cases
    if family == "stack":
        # up to the 64 x 128^3 of the stack target, whose products take
        # the packed driver (their B is past the unpacked path's limit)
        shapes = [(10000, 8)] if quick else [(10000, 4), (10000, 8),
                                             (1000, 32), (100, 64), (64, 128)]
        return [(f"{b}x{n}x{n} @ {b}x{n}x{n}", (b, n, n), (b, n, n), n)
                for b, n in shapes]
    if family == "lowp":
        ns = (1024,) if quick else (1024, 2048)
        mkn = [(256, 1024, 1024)] if quick else [(256, 1024, 1024),
                                                 (4096, 512, 512)]
        return ([(f"{n}", (n, n), (n, n), n) for n in ns]
                + [(f"{m}x{k} @ {k}x{n}", (m, k), (k, n), m) for m, k, n in mkn])
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def result_shape(shape_a, shape_b):
    """np.matmul's result shape for operands of these shapes."""
    za = np.empty(tuple(shape_a[:-1]) + (0,), np.int8)
    zb = np.empty(tuple(shape_b[:-2]) + (0,) + tuple(shape_b[-1:])
                  if len(shape_b) > 1 else (0,), np.int8)
    return np.matmul(za, zb).shape


def flop_count(shape_a, shape_b):
    """2*m*k*n per product, times the stack size."""
    k = shape_a[-1]
    m = shape_a[-2] if len(shape_a) > 1 else 1
    n = shape_b[-1] if len(shape_b) > 1 else 1
    batch = math.prod(np.broadcast_shapes(shape_a[:-2], shape_b[:-2]))
    return 2.0 * batch * m * k * n


# ---------------------------------------------------------------- peak

# A short loop of 12 independent vfmadd231ps on registers only (no memory),
# enough chains to cover FMA latency x throughput on current x86 cores, so
# it runs at exactly the core's FMA issue rate: a known-peak loop.  Bytes
# assembled from:  vxorps xmm0..xmm13 (zero: no denormal stalls);
# 1: vfmadd231ps {zmm|ymm}0..11, {zmm|ymm}12, {zmm|ymm}13; dec rdi; jnz 1b;
# vzeroupper; ret.  It follows the System V ABI (rdi = iterations, vector
# registers caller-saved), so it runs only on x86-64 Linux.
_ZERO = bytes.fromhex(
    "c5f857c0c5f057c9c5e857d2c5e057dbc5d857e4c5d057edc5c857f6c5c057ff"
    "c4413857c0c4413057c9c4412857d2c4412057dbc4411857e4c4411057ed")
_FMA = {
    "zmm": [bytes([0x62, 0xd2 if r < 8 else 0x52, 0x1d, 0x48, 0xb8,
                   0xc5 + 8 * (r % 8)]) for r in range(12)],
    "ymm": [bytes([0xc4, 0xc2 if r < 8 else 0x42, 0x1d, 0xb8,
                   0xc5 + 8 * (r % 8)]) for r in range(12)],
}
_LANES32 = {"zmm": 16, "ymm": 8}


def _fma_loop(isa):
    """The known-peak loop as a ctypes function f(iterations), or None."""
    import ctypes
    import mmap
    body = b"".join(_FMA[isa])
    back = (-(len(body) + 5)) & 0xFF         # jnz rel8 back over the body
    code = _ZERO + body + bytes([0x48, 0xFF, 0xCF, 0x75, back,
                                 0xC5, 0xF8, 0x77, 0xC3])
    try:
        buf = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE
                        | mmap.PROT_EXEC)
    except (OSError, AttributeError, ValueError):
        return None                          # W^X policy or no mmap.PROT_EXEC
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    func = ctypes.CFUNCTYPE(None, ctypes.c_int64)(addr)
    func._keep = buf                         # the code lives as long as func
    return func


def _peak_isa():
    """'zmm' or 'ymm' when the CPU and OS run that FMA loop, else None."""
    import platform
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    from fastmm._config import cpu_features
    # /proc/cpuinfo lists avx* only when the kernel enabled their state (XCR0)
    feats = set(cpu_features())
    if "avx512f" in feats:
        return "zmm"
    if "avx2" in feats and "fma" in feats:
        return "ymm"
    return None


def measure_peak(nthreads, seconds=0.02, rounds=5):
    """float32 FMA peak in GFLOP/s on ``nthreads`` cores, and how it was got.

    Runs the known-peak loop above in ``nthreads`` Python threads at once
    (ctypes drops the GIL), so the all-core clock applies.  Each thread's
    rate is its flops over its own CPU time (time.thread_time), so time the
    thread spends descheduled on a shared machine does not count: this is
    what the cores do while running.  Best of ``rounds``.  float64's peak is
    half (same FMA rate, half the lanes).  Returns ``(gflops, how)``, or
    ``(None, why)`` where the loop cannot run.
    """
    import threading
    isa = _peak_isa()
    if isa is None:
        return None, "no AVX2/AVX-512 FMA loop for this platform"
    func = _fma_loop(isa)
    if func is None:
        return None, "cannot map executable memory"
    flops_per_iter = 2 * 12 * _LANES32[isa]
    func(1000)
    t0 = time.thread_time()
    func(100_000)
    per_iter = max(time.thread_time() - t0, 1e-6) / 100_000
    iters = max(1000, int(seconds / per_iter))

    def worker(rates, i):
        t0 = time.thread_time()
        func(iters)
        rates[i] = iters * flops_per_iter / (time.thread_time() - t0) / 1e9

    best = 0.0
    for _ in range(rounds):
        rates = [0.0] * nthreads
        workers = [threading.Thread(target=worker, args=(rates, i))
                   for i in range(nthreads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, sum(rates))
    return best, (f"{isa} FMA loop on {nthreads} thread(s), flops per "
                  f"thread CPU second")


# ---------------------------------------------------------------- memory

def traffic_bytes(shape_a, shape_b, dtype):
    """The least memory traffic of a product: A and B read once, C written
    once (bytes).  A product that streams an operand too large for the
    caches can go no faster than this over the memory bandwidth."""
    k = shape_a[-1]
    m = shape_a[-2] if len(shape_a) > 1 else 1
    n = shape_b[-1] if len(shape_b) > 1 else 1
    batch = math.prod(np.broadcast_shapes(shape_a[:-2], shape_b[:-2]))
    return np.dtype(dtype).itemsize * (math.prod(shape_a) + math.prod(shape_b)
                                       + batch * m * n)


def measure_bandwidth(nthreads, rounds=3):
    """Memory read bandwidth in GB/s on ``nthreads`` cores, and how.

    Each of ``nthreads`` Python threads sums its own float64 array (numpy
    drops the GIL in the loop), together four times the last-level cache
    (64-512 MiB), so the data come from memory; best of ``rounds``, each
    timed by wall clock from the first start to the last end.  This is
    what streaming an operand (a few rows times a large B) is bound by.
    """
    import threading
    from fastmm._cpu import read_caches
    caches = read_caches()
    llc = max((c.size for c in caches.values() if c is not None and c.size),
              default=32 << 20)
    total = min(max(4 * llc, 64 << 20), 512 << 20)
    parts = [np.ones(total // nthreads // 8) for _ in range(nthreads)]
    for x in parts:
        x.sum()                              # pages touched, code warm
    best = 0.0
    for _ in range(rounds):
        workers = [threading.Thread(target=x.sum) for x in parts]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, total / (time.perf_counter() - t0) / 1e9)
    return best, (f"sum of {total >> 20} MiB of float64 on {nthreads} "
                  f"thread(s), 4x the last-level cache")


# ---------------------------------------------------------------- timing

def time_products(calls, samples, sample=SAMPLE, warm=WARM):
    """Best seconds per call of each ``call()``, each timed in a block of its
    own: untimed calls for ``warm`` seconds (at least one), then ``samples``
    samples, each looping the call for about ``sample`` seconds (a 2 x 2
    product needs thousands of calls for the clock to resolve it).

    The warm-up is long because a 2-core virtual machine runs a burst of
    calls slowly for its first 10-30 ms after an idle spell (measured here:
    a 256 x 64 @ 64 x 256 float32 product on 2 threads at 113 GFLOP/s over
    its first 20 ms, 180 over 100 ms), for every library alike.
    """
    bests = []
    for call in calls:
        t0 = time.perf_counter()
        n = 0
        while True:
            call()
            n += 1
            spent = time.perf_counter() - t0
            if spent >= warm:
                break
        inner = max(1, int(sample * n / max(spent, 1e-9)))
        best = math.inf
        for _ in range(samples):
            t0 = time.perf_counter()
            for _ in range(inner):
                call()
            best = min(best, (time.perf_counter() - t0) / inner)
        bests.append(best)
    return bests


def round_spread(round_bests):
    """How much slower a library's slowest round was than its fastest: 0.25
    means 25 %."""
    return max(round_bests) / min(round_bests) - 1.0


def is_stable(rounds, threshold=UNSTABLE_SPREAD):
    """True when each library's per-round bests agree within ``threshold``."""
    return all(round_spread(r) <= threshold for r in rounds)


def check_result(got, want, a, b):
    """None when fastmm's ``got`` is within the k*eps bound of ``want``."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"shape/dtype {got.shape} {got.dtype} != {want.shape} {want.dtype}"
    k = a.shape[-1]
    eps = np.finfo(want.dtype).eps
    # |fl(a@b) - a@b| <= k*eps*(|a|@|b|) for any summation order; both
    # results carry such an error, hence the factor 2
    bound = 2 * k * eps * np.matmul(np.abs(a), np.abs(b)) + np.finfo(want.dtype).tiny
    err = np.abs(got.astype(np.float64) - want)
    if not np.all(np.isfinite(got)) or np.any(err > bound):
        worst = float(np.max(err / bound)) if np.all(np.isfinite(got)) else math.inf
        return f"error {worst:.3g} x the k*eps bound"
    return None


def machine_load():
    """A description of the load from other processes, or '' when idle."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return ""
    from fastmm.driver._threads import cpu_count
    ncpu = cpu_count()
    # this process is idle while it sets up, so the load is others' work
    return f"load average {load:.1f} on {ncpu} CPU(s)" if load > 0.5 * ncpu else ""


def unstable_note(r, names):
    """The table entry of a case whose timing rounds disagreed."""
    spreads = ", ".join(f"{100 * r[name + '_spread']:.0f} % ({name})"
                        for name in names if name + "_spread" in r)
    return (f"unstable: rounds differ by {spreads} after {r['attempts']} "
            f"tries; no ratio")


def numpy_blas():
    """One line naming numpy's BLAS library, from threadpoolctl."""
    from threadpoolctl import threadpool_info
    import numpy
    blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
    if not blas:
        return "unknown (threadpoolctl finds no BLAS)"
    # numpy's own (in its package or numpy.libs): a peer loaded into this
    # process, such as MKL with --peers mkl, is a BLAS too
    home = os.path.dirname(os.path.dirname(numpy.__file__))
    ours = [d for d in blas
            if os.path.realpath(d.get("filepath", "")).startswith(
                os.path.realpath(home))]
    d = (ours or blas)[0]
    extra = ", ".join(f"{key} {d[key]}" for key in ("architecture",
                                                    "threading_layer")
                      if d.get(key))
    return f"{d['internal_api']} {d.get('version') or ''} ({extra})".replace(" ()", "")


# ---------------------------------------------------------------- cases

def make_case(family, label, shape_a, shape_b, size, dtype, threads, seed):
    """One case as plain data (it goes to the timing processes as JSON):
    its operands are drawn from ``seed``, so every process has the same."""
    return {"family": family, "label": label, "shape_a": list(shape_a),
            "shape_b": list(shape_b), "size": size, "dtype": str(dtype),
            "threads": threads, "seed": seed}


@contextlib.contextmanager
def pinned(fastmm, threads, peers=()):
    """Every library at ``threads``: fastmm, numpy's BLAS (threadpoolctl's
    "blas" limit finds a loaded MKL too; the peer's own call pins it whether
    or not threadpoolctl knows it)."""
    from threadpoolctl import threadpool_limits
    with fastmm.threads(threads), threadpool_limits(threads, user_api="blas"), \
            contextlib.ExitStack() as stack:
        for peer in peers:
            stack.enter_context(peer.threads(threads))
        yield


def float_products(fastmm, case, peers):
    """The products of one float case: (name, library, call, check) with
    check() None when the call's result is right, else why; and the peers
    that cannot do the case, {name: why}.  The numpy product is the
    reference (its check is None)."""
    rng = np.random.default_rng(case["seed"])
    dtype = np.dtype(case["dtype"])
    a = rng.uniform(-1, 1, case["shape_a"]).astype(dtype)
    b = rng.uniform(-1, 1, case["shape_b"]).astype(dtype)
    np_op = np.matmul if a.ndim > 2 or b.ndim > 2 else np.dot
    shape = result_shape(a.shape, b.shape)
    want = []                                # numpy's result, once computed

    def check(out):
        if not want:
            want.append(np_op(a, b))
        return check_result(out, want[0], a, b)

    out_f = np.zeros(shape, dtype)           # zeros: pages touched before timing
    out_n = np.zeros(shape, dtype)
    products = [("fastmm", "fastmm", lambda: fastmm.matmul(a, b, out=out_f),
                 lambda: check(out_f)),
                ("numpy", "numpy", lambda: np_op(a, b, out=out_n), None)]
    skipped = {}
    for peer in peers:
        out_p = np.zeros(shape, dtype)
        try:
            call = peer.prepare(a, b, out_p)
        except NotImplementedError as e:
            skipped[peer.name] = str(e)
            continue
        products.append((peer.name, peer.name, call,
                         lambda out_p=out_p: check(out_p)))
    return products, skipped


def lowp_operands(case):
    """float32 and int8 operands of a lowp case, from its seed."""
    rng = np.random.default_rng(case["seed"])
    shape_a, shape_b = case["shape_a"], case["shape_b"]
    a32 = rng.uniform(-1, 1, shape_a).astype(np.float32)
    b32 = rng.uniform(-1, 1, shape_b).astype(np.float32)
    a8 = rng.integers(-128, 128, shape_a, dtype=np.int8)
    b8 = rng.integers(-128, 128, shape_b, dtype=np.int8)
    return a32, b32, a8, b8


def lowp_products(fastmm, case, peers):
    """The products of one lowp case (LOWP_LIBS, then per peer with
    ``prepare_lowp`` its int8 and bfloat16 GEMMs), as float_products gives
    them; numpy's int32 matmul runs on the first ``case["np_int_rows"]``
    rows of A."""
    m, n = case["shape_a"][0], case["shape_b"][1]
    a32, b32, a8, b8 = lowp_operands(case)
    ar, a_bits = round_to_bf16(a32)
    br, b_bits = round_to_bf16(b32)
    c8 = np.zeros((m, n), np.int32)          # zeros: pages touched before timing
    c32, cbp, cnp = (np.zeros((m, n), np.float32) for _ in range(3))
    products = [("int8", "fastmm",
                 lambda: fastmm.matmul(a8, b8, out=c8, dtype=np.int32),
                 lambda: check_int32(c8, a8, b8))]
    bf16 = bfloat16_type()
    if bf16 is not None:
        a_bf, b_bf = a_bits.view(bf16), b_bits.view(bf16)
        cbf = np.zeros((m, n), np.float32)
        # what a user of ml_dtypes gets without fastmm, into a preallocated
        # out of the result dtype its matmul gives
        cml = np.zeros((m, n), np.matmul(a_bf[:1], b_bf).dtype)
        products += [("bf16", "fastmm",
                      lambda: fastmm.matmul(a_bf, b_bf, out=cbf),
                      lambda: check_bf16(cbf, ar, br)),
                     ("np_bf16", "numpy",
                      lambda: np.matmul(a_bf, b_bf, out=cml),
                      lambda: check_bf16(cml, ar, br, result_rounded=True))]
    rows = case["np_int_rows"]
    a8_rows = a8[:rows]
    c_np = np.zeros((rows, n), np.int32)
    products += [
        ("bf16p", "fastmm",
         lambda: fastmm.matmul(a32, b32, out=cbp, precision="bf16"),
         lambda: check_bf16(cbp, ar, br)),
        ("f32", "fastmm", lambda: fastmm.matmul(a32, b32, out=c32),
         lambda: check_result(c32, np.dot(a32, b32), a32, b32)),
        ("np_int", "numpy",
         lambda: np.matmul(a8_rows, b8, dtype=np.int32, out=c_np),
         lambda: check_int32(c_np, a8_rows, b8)),
        ("np_f32", "numpy", lambda: np.dot(a32, b32, out=cnp), None)]
    skipped = {}
    for peer in peers:
        prepare = getattr(peer, "prepare_lowp", None)
        for what, x, y, out, check in (
                ("int8", a8, b8, np.zeros((m, n), np.int32),
                 lambda got: check_int32(got, a8, b8)),
                ("bf16", a_bits, b_bits, np.zeros((m, n), np.float32),
                 lambda got: check_bf16(got, ar, br))):
            key = f"{peer.name}_{what}"
            try:
                if prepare is None:
                    raise NotImplementedError(f"{peer.label} peer has no "
                                              "low-precision products")
                call = prepare(x, y, out)
            except NotImplementedError as e:
                skipped[key] = str(e)
                continue
            products.append((key, peer.name, call,
                             lambda out=out, check=check: check(out)))
    return products, skipped


def case_products(fastmm, case, peers):
    """float_products or lowp_products, by the case's family."""
    build = lowp_products if case["family"] == "lowp" else float_products
    return build(fastmm, case, peers)


def numpy_int_rows(case):
    """How many rows of A numpy's int32 matmul (no BLAS: 0.2-2 GOP/s) is
    timed on: as many as one call does in about NUMPY_INT_SECONDS, at least
    NUMPY_INT_MIN_ROWS (fewer rows share its int32 copy of B less)."""
    m = case["shape_a"][0]
    _, _, a8, b8 = lowp_operands(case)
    probe = min(m, NUMPY_INT_MIN_ROWS)
    t0 = time.perf_counter()
    np.matmul(a8[:probe], b8, dtype=np.int32)
    per_row = (time.perf_counter() - t0) / probe
    return min(m, max(NUMPY_INT_MIN_ROWS, int(NUMPY_INT_SECONDS / per_row)))


def check_case(fastmm, case, peers=()):
    """Run each product of ``case`` once and check it: a dict of results to
    be completed by :func:`time_cases`.  ``error`` names fastmm's wrong
    results (the case is not timed then), ``<peer>_error`` a peer's (that
    peer is not timed), ``<peer>_skipped`` why a peer cannot do the case;
    ``timed`` lists the (product, library) pairs to time; ``ops`` the
    operation count of a product timed on less than the whole case."""
    lowp = case["family"] == "lowp"
    if lowp:
        case["np_int_rows"] = numpy_int_rows(case)
        m, k = case["shape_a"]
        flops = 2.0 * m * k * case["shape_b"][1]
        res = {"flops": flops, "np_int_rows": case["np_int_rows"],
               "ops": {"np_int": 2.0 * case["np_int_rows"] * k
                       * case["shape_b"][1]},
               "bf16_skipped": None if bfloat16_type() else (
                   "ml_dtypes not installed (pip install 'fastmm[bf16]')")}
        res.update(dict.fromkeys(LOWP_LIBS))
        peer_keys = [f"{p.name}_{what}" for p in peers for what in ("int8", "bf16")]
    else:
        flops = flop_count(case["shape_a"], case["shape_b"])
        res = {"flops": flops, "ops": {}, "bytes": traffic_bytes(
            case["shape_a"], case["shape_b"], case["dtype"]),
            "fastmm": None, "numpy": None}
        peer_keys = [p.name for p in peers]
    res.update(error=None, stable=None, timed=[])
    for key in peer_keys:
        res.update({key: None, f"{key}_error": None, f"{key}_skipped": None})
    with pinned(fastmm, case["threads"], peers):
        products, skipped = case_products(fastmm, case, peers)
        errors, timed = [], []
        for name, library, call, check in products:
            call()
            why = check() if check else None
            if name in peer_keys:
                res[f"{name}_error"] = why
                if why is None:
                    timed.append((name, library))
            elif why:
                errors.append(f"{name}: {why}" if lowp else why)
            else:
                timed.append((name, library))
    for key, why in skipped.items():
        res[f"{key}_skipped"] = why
    if errors:
        res["error"] = "; ".join(errors)
    else:
        res["timed"] = timed
    return res


def time_library(fastmm, library, cases, samples, peers=()):
    """Time one library's products of each case (``case["names"]``): yields
    ``{"index": case["index"], "times": {name: best seconds}}`` per case.
    This is what runs in a library's own process (fastmm/bench/_worker.py),
    so its thread pool is the only one there."""
    for case in cases:
        with pinned(fastmm, case["threads"], peers):
            products, _ = case_products(fastmm, case, peers)
            calls = {name: call for name, _, call, _ in products}
            names = [name for name in case["names"] if name in calls]
            bests = time_products([calls[name] for name in names], samples)
        yield {"index": case["index"], "times": dict(zip(names, bests))}


def time_cases(cases, results, repeats, peers=(), timer=None, progress=None):
    """Time every checked case (``results[i]`` from check_case of
    ``cases[i]``) and record each product's rate (``<name>``, in GFLOP/s or
    GOP/s), best seconds (``<name>_s``) and round spread.

    Each library runs in processes of its own (``timer``, by default
    :func:`fastmm.bench._worker.run_worker`): one process per library and
    round times all its cases, so no other library's thread pool is there
    to spin on the cores its threads need, and libraries take turns
    (fastmm, numpy, peers; then the other way round) so load that drifts
    hits them alike.  ``repeats`` samples per case in two rounds; a case
    whose rounds disagree by more than UNSTABLE_SPREAD is timed again, at
    most RETRIES more times, then marked unstable (``stable`` False).
    """
    if timer is None:
        from fastmm.bench._worker import run_worker
        peer_names = [p.name for p in peers]

        def timer(library, batch, samples):
            return run_worker(library, batch, samples, peer_names)
    rounds = [s for s in (repeats - repeats // 2, repeats // 2) if s]
    libraries = list(dict.fromkeys(lib for r in results
                                   for _, lib in r["timed"]))
    pending = [i for i, r in enumerate(results) if r["timed"]]
    for attempt in range(1, 2 + RETRIES):
        if not pending:
            break
        times = {i: {name: [] for name, _ in results[i]["timed"]}
                 for i in pending}
        for turn, samples in enumerate(rounds):
            for library in libraries if turn % 2 == 0 else libraries[::-1]:
                batch = [dict(cases[i], index=i,
                              names=[n for n, lib in results[i]["timed"]
                                     if lib == library]) for i in pending]
                batch = [c for c in batch if c["names"]]
                if progress is not None:
                    progress.total += len(batch)
                for done in timer(library, batch, samples):
                    for name, seconds in done["times"].items():
                        times[done["index"]][name].append(seconds)
                    if progress is not None:
                        case = cases[done["index"]]
                        progress.step(f"{library} {case['family']} "
                                      f"{case['label']} {case['dtype']} "
                                      f"{case['threads']}t")
        unstable = []
        for i in pending:
            res = results[i]
            got = times[i]
            res.update(stable=is_stable(got.values()), attempts=attempt)
            for name, bests in got.items():
                ops = res["ops"].get(name, res["flops"])
                res.update({name: ops / min(bests) / 1e9,
                            f"{name}_s": min(bests),
                            f"{name}_spread": round_spread(bests)})
            if not res["stable"]:
                unstable.append(i)
        pending = unstable
    return results


# ---------------------------------------------------------------- low precision

# The products a lowp case times, by result key: what the table calls them.
LOWP_LIBS = {
    "int8": "fastmm.matmul(a8, b8, dtype=np.int32), int8 operands",
    "bf16": "fastmm.matmul(a, b, out=float32), ml_dtypes.bfloat16 operands",
    "bf16p": 'fastmm.matmul(a, b, precision="bf16"), float32 operands',
    "f32": "fastmm.matmul(a, b), float32",
    "np_int": "np.matmul(a8, b8, dtype=np.int32)",
    "np_f32": "np.dot(a, b), float32",
    "np_bf16": "np.matmul(a, b), ml_dtypes.bfloat16 operands (ml_dtypes' "
               "own product)",
}


def bfloat16_type():
    """ml_dtypes.bfloat16, or None where ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def round_to_bf16(x):
    """float32 ``x`` rounded to bfloat16 (nearest even), as float32 values
    and as their uint16 bits; numpy alone (ml_dtypes is optional)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    r &= np.uint32(0xFFFF0000)
    return r.view(np.float32), (r >> np.uint32(16)).astype(np.uint16)


def check_bf16(got, a, b, result_rounded=False):
    """None when ``got`` is within float32 accumulation error, (k + 2) *
    2**-24 * |A| @ |B|, of the exact product of ``a`` and ``b`` (float32
    arrays of bfloat16 values); ``result_rounded``: plus 2**-8 |C|, for a
    product whose result may also have been rounded to bfloat16 (ml_dtypes'
    own matmul, whose result dtype depends on its version)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact = a64 @ b64
    bound = ((a.shape[-1] + 2) * 2.0 ** -24 * (np.abs(a64) @ np.abs(b64))
             + np.finfo(np.float32).tiny)
    if result_rounded:
        bound += 2.0 ** -8 * np.abs(exact)
    err = np.abs(np.asarray(got, np.float64) - exact)
    if not np.all(err <= bound):
        return (f"error {float(np.nanmax(err / bound)):.3g} x the "
                f"bf16 bound")
    return None


def check_int32(got, a8, b8):
    """None when ``got`` is a8 @ b8 modulo 2**32 (numpy's int32 matmul), bit
    for bit; the exact sums come from float64, exact below 2**53."""
    exact = (a8.astype(np.float64) @ b8.astype(np.float64)).astype(np.int64)
    want = ((exact + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)
    if got.dtype != np.int32 or not np.array_equal(got, want):
        bad = int(np.count_nonzero(got != want))
        return f"{bad} of {want.size} elements differ from the exact int32 sums"
    return None


def lowp_ratios(peers=()):
    """(label, numerator key, denominator key) of the ratios lowp reports."""
    ratios = [("int8 / fastmm f32", "int8", "f32"),
              ("bf16 / fastmm f32", "bf16", "f32"),
              ("prec=bf16 / fastmm f32", "bf16p", "f32"),
              ("int8 / numpy int32", "int8", "np_int"),
              ("bf16 / ml_dtypes bf16", "bf16", "np_bf16")]
    for name in peers:
        ratios += [(f"int8 / {name} int8", "int8", f"{name}_int8"),
                   (f"bf16 / {name} bf16", "bf16", f"{name}_bf16")]
    return ratios


def print_lowp_table(rows, peers=()):
    """One line per lowp case: GOP/s of each product, then the ratios
    (>1: the first is faster)."""
    cols = [("int8", "int8 GOP/s"), ("bf16", "bf16 GF/s"),
            ("bf16p", "prec=bf16"), ("f32", "f32 GF/s"),
            ("np_int", "np int32*"), ("np_f32", "np f32"),
            ("np_bf16", "ml_dt bf16")]
    for name in peers:
        cols += [(f"{name}_int8", f"{name} int8"), (f"{name}_bf16", f"{name} bf16")]
    ratios = [("int8/f32", "int8", "f32"), ("bf16/f32", "bf16", "f32"),
              ("int8/np", "int8", "np_int"), ("bf16/ml_dt", "bf16", "np_bf16")]
    ratios += [(f"int8/{name}", "int8", f"{name}_int8") for name in peers]
    ratios += [(f"bf16/{name}", "bf16", f"{name}_bf16") for name in peers]
    width = max(10, *(len(h) for _, h in cols + [(0, r[0]) for r in ratios]))
    header = (f"{'shape':<22} {'thr':>3} "
              + "".join(f"{h:>{width}} " for _, h in cols)
              + "".join(f"{r[0]:>{width}} " for r in ratios))
    print("\nlow precision (GOP/s for integers, GFLOP/s for floats; ratios "
          ">1: the first faster)")
    print(header)
    print("-" * len(header))
    for r in rows:
        head = f"{r['label']:<22} {r['threads']:>3} "
        if r["error"]:
            print(head + f"WRONG RESULT: {r['error']}")
            continue
        if not r["stable"]:
            print(head + unstable_note(r, [key for key, _ in cols]))
            continue
        cells, notes = "", []
        for key, _ in cols:
            if r.get(key):
                cells += f"{r[key]:{width}.1f} "
            elif r.get(key + "_error"):
                cells += f"{'WRONG':>{width}} "
                notes.append(f"{key} WRONG RESULT: {r[key + '_error']}")
            else:
                cells += f"{'n/a':>{width}} "
        for _, top, bottom in ratios:
            ratio = r[top] / r[bottom] if r.get(top) and r.get(bottom) else None
            cells += f"{ratio:{width - 1}.2f}x " if ratio else f"{'-':>{width}} "
        print(head + cells)
        for note in notes:
            print(" " * len(head) + note)
    timed = [r for r in rows if r.get("np_int_rows")]
    if timed:
        counts = sorted({r["np_int_rows"] for r in timed})
        print(f"* numpy's int32 matmul (no BLAS) timed on the first "
              f"{'/'.join(map(str, counts))} rows of A only (~"
              f"{NUMPY_INT_SECONDS:g} s a call): its GOP/s hardly depends "
              f"on the row count")
    skipped = {r["bf16_skipped"] for r in rows if r.get("bf16_skipped")}
    for why in skipped:
        print(f"bf16 (ml_dtypes.bfloat16 operands) not timed: {why}")
    for r in rows:
        for name in peers:
            for what in ("int8", "bf16"):
                why = r.get(f"{name}_{what}_skipped")
                if why and why not in skipped:
                    skipped.add(why)
                    print(f"{name} {what} not timed: {why}")


def print_lowp_summary(rows, thread_counts, peers=()):
    """Geometric means of the lowp ratios per thread count, stable rows only."""
    print("\nlow precision, geometric means (>1: the first faster)")
    print(f"{'ratio':<24}" + "".join(f"{f'{t}t':>9}" for t in thread_counts)
          + f"{'all':>9}")
    ok = [r for r in rows if is_result(r)]
    for label, top, bottom in lowp_ratios(peers):
        cells = []
        for sel in [[r for r in ok if r["threads"] == t] for t in thread_counts] + [ok]:
            g = geomean([r[top] / r[bottom] for r in sel
                         if r.get(top) and r.get(bottom)])
            cells.append(f"{g:8.2f}x" if g else f"{'-':>9}")
        print(f"{label:<24}" + "".join(cells))
    unstable = sum(1 for r in rows if not r["error"] and not r["stable"])
    if unstable:
        print(f"{unstable} case(s) left out as unstable: rerun when the "
              f"machine is idle")


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def is_result(row):
    """True for a correct answer timed stably: the only rows whose speeds
    mean something."""
    return not row["error"] and row["stable"]


def speedups(rows, over="numpy"):
    """fastmm / ``over`` (numpy or a peer) of each row that is a result and
    where ``over`` was timed."""
    return [r["fastmm"] / r[over] for r in rows if is_result(r) and r.get(over)]


def load_peers(names):
    """The peers named that load; for one that does not, a line saying so,
    and the bench goes on without it."""
    from fastmm.bench import _peers
    loaded = []
    for name in dict.fromkeys(names):        # PEERS holds only "mkl" so far
        try:
            peer = _peers.load_mkl()
        except (OSError, RuntimeError) as e:
            print(f"--peers {name}: cannot use MKL ({e}); continuing without it")
            continue
        if peer is None:
            print(_peers.MKL_NOT_FOUND)
            continue
        loaded.append(peer)
    return loaded


def run(args):
    import fastmm

    families = args.families
    thread_counts = args.threads or sorted({1, fastmm.get_num_threads()})
    peaks = {}
    for t in thread_counts:
        if args.peak:
            peaks[t] = (args.peak * t, "given with --peak (per core) x threads")
        else:
            peaks[t] = measure_peak(t)
    bandwidth = ({t: measure_bandwidth(t) for t in thread_counts}
                 if set(families) - {"lowp"} else {})

    # numpy's BLAS named before a peer loads: threadpoolctl would list both
    print(f"fastmm {fastmm.__version__} vs numpy {np.__version__}, "
          f"numpy's BLAS: {numpy_blas()}")
    peers = load_peers(args.peers)
    for peer in peers:
        print(f"peer {peer.label}: {peer.describe()}")
    from fastmm.driver import _context
    if "lowp" in families:
        from fastmm._lowp import lowp_kernels
        lp = lowp_kernels()
        print(f"fastmm low-precision kernels: int8 -> int32 {lp['int8']}, "
              f"bfloat16 -> float32 {lp['bfloat16']}; ml_dtypes: "
              + ("installed" if bfloat16_type() else "not installed (no "
                 "bfloat16-operand timings)"))
    print(f"fastmm kernel: {_context.kernel_info()['name']}; threads: "
          f"{', '.join(map(str, thread_counts))} (every library pinned to the "
          f"same count); best of {args.repeats}"
          + ("" if args.repeats > 1 else " (one round: stability not checked)"))
    for t, (peak, how) in peaks.items():
        shown = f"{peak:.0f} GFLOP/s float32, {peak / 2:.0f} float64" if peak else "n/a"
        print(f"FMA peak, {t} thread(s): {shown} ({how})")
    for t, (bw, how) in bandwidth.items():
        print(f"memory bandwidth, {t} thread(s): {bw:.1f} GB/s read ({how}); "
              f"GB/s below: A and B read and C written once per product")
    print("numpy baseline: np.dot for 1-D/2-D, np.matmul for stacks"
          + "".join(f"; {p.label}: cblas_?gemm, ?gemm_batch_strided for stacks"
                    for p in peers)
          + "; all write into a preallocated out")
    busy = machine_load()
    if busy:
        print(f"WARNING: {busy}: other work shares the CPUs, so timings "
              f"(multi-threaded ones most) are noisy; compare ratios, rerun "
              f"when the machine is idle")

    cases = [make_case(fam, label, sa, sb, size, dt, t, seed)
             for seed, (fam, label, sa, sb, size, dt, t) in enumerate(
                 (fam, label, sa, sb, size, dt, t)
                 for fam in families
                 for label, sa, sb, size in family_cases(fam, args.quick)
                 for dt in (["int8/bf16"] if fam == "lowp" else args.dtypes)
                 for t in thread_counts)]
    # checked here, all libraries in this process; timed in processes of
    # their own (time_cases)
    progress = Progress(len(cases))
    rows = []
    for case in cases:
        progress.step(f"checking {case['family']} {case['label']} "
                      f"{case['dtype']} {case['threads']}t")
        res = check_case(fastmm, case, peers)
        t = case["threads"]
        peak = peaks[t][0]
        if peak and case["dtype"] == "float64":
            peak /= 2
        res.update(family=case["family"], label=case["label"],
                   size=case["size"], dtype=case["dtype"], threads=t,
                   peak=peak, bandwidth=bandwidth.get(t, (None,))[0])
        rows.append(res)
    time_cases(cases, rows, args.repeats, peers, progress=progress)
    progress.close()
    names = [p.name for p in peers]
    float_rows = [r for r in rows if r["family"] != "lowp"]
    lowp_rows = [r for r in rows if r["family"] == "lowp"]
    if float_rows:
        print_table(float_rows, names)
        print_summary(float_rows, [f for f in families if f != "lowp"],
                      args.dtypes, thread_counts, names)
    if lowp_rows:
        print_lowp_table(lowp_rows, names)
        print_lowp_summary(lowp_rows, thread_counts, names)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        plot(rows, args.plot, args.dtypes, thread_counts, names)
        print(f"plot written to {args.plot}")
    wrong = {lib: sum(1 for r in rows if any(r.get(key) for key in keys))
             for lib, keys in [("fastmm", ["error"])]
             + [(n, [f"{n}_error", f"{n}_int8_error", f"{n}_bf16_error"])
                for n in names]}
    if any(wrong.values()):
        counts = ", ".join(f"{lib}: {c}" for lib, c in wrong.items() if c)
        print(f"\n{sum(wrong.values())} case(s) gave WRONG results ({counts}): "
              f"see the table", file=sys.stderr)
        return 1
    return 0


def print_table(rows, peers=()):
    """One line per case; for each peer (by name) its GFLOP/s and fastmm's
    speedup over it, after numpy's."""
    header = (f"{'family':<7} {'shape':<26} {'dtype':<8} {'thr':>3} "
              f"{'fastmm GF/s':>11} {'numpy GF/s':>10} {'vs numpy':>8} "
              + "".join(f"{name + ' GF/s':>10} {'vs ' + name:>8} " for name in peers)
              + f"{'fastmm %pk':>10} {'numpy %pk':>9} {'fastmm GB/s':>11} "
              f"{'%bw':>4}")
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        head = f"{r['family']:<7} {r['label']:<26} {r['dtype']:<8} {r['threads']:>3} "
        if r["error"]:
            print(head + f"WRONG RESULT: {r['error']}")
            continue
        if not r["stable"]:
            print(head + unstable_note(r, ("fastmm", "numpy", *peers)))
            continue
        pk = r["peak"]
        pf = f"{100 * r['fastmm'] / pk:9.0f}%" if pk else f"{'n/a':>10}"
        pn = f"{100 * r['numpy'] / pk:8.0f}%" if pk else f"{'n/a':>9}"
        cells, notes = "", []
        for name in peers:
            if r.get(name):
                cells += f"{r[name]:10.2f} {r['fastmm'] / r[name]:7.2f}x "
            elif r.get(name + "_error"):
                cells += f"{'WRONG':>10} {'':>8} "
                notes.append(f"{name} WRONG RESULT: {r[name + '_error']}")
            else:
                cells += f"{'n/a':>10} {'':>8} "
                if r.get(name + "_skipped"):
                    notes.append(f"{name}: {r[name + '_skipped']}")
        gbs = r["fastmm"] * r["bytes"] / r["flops"]
        bw = (f"{100 * gbs / r['bandwidth']:3.0f}%" if r.get("bandwidth")
              else f"{'n/a':>4}")
        print(head + f"{r['fastmm']:11.2f} {r['numpy']:10.2f} "
              f"{r['fastmm'] / r['numpy']:7.2f}x {cells}{pf} {pn} "
              f"{gbs:11.2f} {bw}")
        for note in notes:
            print(" " * len(head) + note)


def print_summary(rows, families, dtypes, thread_counts, peers=()):
    """Geometric-mean speedups per family, dtype and thread count: one table
    over numpy, then one over each peer (by name)."""
    cols = [(dt, t) for dt in dtypes for t in thread_counts]
    names = [f"{dt[5:]}-bit {t}t" for dt, t in cols]
    for over in ("numpy", *peers):
        print(f"\ngeometric-mean speedup of fastmm over {over} "
              f"(>1: fastmm faster)")
        print(f"{'family':<8}" + "".join(f"{n:>13}" for n in names) + f"{'all':>9}")
        for fam in list(families) + ["all"]:
            sel = [r for r in rows if fam in ("all", r["family"])]
            cells = []
            for dt, t in cols:
                g = geomean(speedups([r for r in sel if r["dtype"] == dt
                                      and r["threads"] == t], over))
                cells.append(f"{g:12.2f}x" if g else f"{'-':>13}")
            g = geomean(speedups(sel, over))
            print(f"{fam:<8}" + "".join(cells) + (f"{g:8.2f}x" if g else f"{'-':>9}"))
    unstable = sum(1 for r in rows if not r["error"] and not r["stable"])
    if unstable:
        print(f"{unstable} case(s) left out as unstable (timing rounds "
              f"differed by more than {100 * UNSTABLE_SPREAD:.0f} %): rerun "
              f"when the machine is idle")


def plot(rows, path, dtypes, thread_counts, peers=()):
    """GFLOP/s against n for the n x n families, one panel per dtype/threads;
    WRONG and unstable cases are left out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(dtypes), len(thread_counts), squeeze=False,
                             figsize=(5 * len(thread_counts), 3.6 * len(dtypes)))
    for i, dt in enumerate(dtypes):
        for j, t in enumerate(thread_counts):
            ax = axes[i][j]
            sel = sorted((r for r in rows if r["family"] in ("small", "square")
                          and r["dtype"] == dt and r["threads"] == t
                          and is_result(r)), key=lambda r: r["size"])
            if sel:
                n = [r["size"] for r in sel]
                ax.plot(n, [r["fastmm"] for r in sel], "o-", label="fastmm")
                ax.plot(n, [r["numpy"] for r in sel], "s--", label="numpy")
                for name in peers:
                    timed = [r for r in sel if r.get(name)]
                    ax.plot([r["size"] for r in timed], [r[name] for r in timed],
                            "^:", label=name)
                if sel[0]["peak"]:
                    ax.axhline(sel[0]["peak"], color="k", lw=0.8, ls=":",
                               label="FMA peak")
            ax.set_xscale("log", base=2)
            ax.set_title(f"n x n @ n x n, {dt}, {t} thread(s)")
            ax.set_xlabel("n")
            ax.set_ylabel("GFLOP/s")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _positive(kind):
    """An argparse type: a ``kind`` (int or float) > 0, finite."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} > 0")
        return value
    return parse


def _one_of(choices):
    """An argparse type: one of ``choices``."""
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose from {', '.join(choices)}")
        return text
    return parse


def _csv(item):
    """An argparse type: a comma-separated list, each item parsed by ``item``
    (an argparse type itself)."""
    def parse(text):
        items = [x.strip() for x in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a comma-separated list with no empty items")
        return [item(x) for x in items]
    return parse


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="a few sizes per family (the demo: under a "
                             "minute on 2 idle cores)")
    parser.add_argument("--families", type=_csv(_one_of(FAMILIES)),
                        default=list(DEFAULT_FAMILIES), metavar="LIST",
                        help="comma-separated (default: all but lowp), "
                        "from: " + "; ".join(
                            f"{k} ({v})" for k, v in FAMILY_HELP.items()))
    parser.add_argument("--dtypes", type=_csv(_one_of(("float32", "float64"))),
                        default=["float32", "float64"], metavar="LIST",
                        help="float32,float64 (default both; the lowp family "
                        "has its own dtypes)")
    parser.add_argument("--threads", type=_csv(_positive(int)), default=None,
                        metavar="LIST", help="thread counts, e.g. 1,2 "
                        "(default: 1 and fastmm.get_num_threads())")
    parser.add_argument("--repeats", type=_positive(int), default=5,
                        help="samples per case, in two rounds; the best is "
                        "reported, and a case whose rounds' bests differ by "
                        f"more than {100 * UNSTABLE_SPREAD:.0f} %% is timed "
                        f"again, up to {RETRIES} times, then shown as unstable "
                        "(default 5; 1 gives one round: no such check)")
    parser.add_argument("--peak", type=_positive(float), default=None,
                        metavar="GFLOPS",
                        help="float32 FMA peak of one core in GFLOP/s (default: "
                        "measured with a register-only FMA loop)")
    parser.add_argument("--peers", type=_csv(_one_of(PEERS)), default=[],
                        metavar="LIST",
                        help="also time these libraries where installed: mkl "
                        "(pip install 'fastmm[mkl]'); adds their GFLOP/s, "
                        "fastmm's speedup over them and their geometric means")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="plot GFLOP/s against n (needs matplotlib)")
    parser.add_argument("--json", metavar="FILE.json",
                        help="also write every result as JSON")
