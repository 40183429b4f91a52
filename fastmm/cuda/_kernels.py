"""numba.cuda kernels for fastmm.cuda: tiled GEMM with a fused epilogue,
row-wise softmax, activation derivatives, column sums and a strided cast.

Importing this module imports numba; fastmm.cuda imports it only when a
function needs a kernel.  Each kernel is built by a factory whose arguments
(dtype, transposes, load order, activation, tile sizes) are compile-time
constants of the generated code: numba freezes closure variables, so the
branches on them vanish and every loop over a tile dimension has a constant
trip count that NVVM unrolls, keeping the accumulator tile in registers.

GEMM contract (the one the API relies on):
    c_out[i, j] = act(alpha * sum_p opA[i, p] * opB[p, j] + beta * c_in[i, j]
                      + bias[j])
opA[i, p] is a[p, i] when trans_a else a[i, p] (likewise B), so transposes
are index maps in the loads, never copies.  Operands may have any positive
strides (numba indexes them with their own strides).  When beta_zero, c_in
is never read (NaN in it does not leak); callers pass k = 0 for alpha == 0
so A and B are not read either.
"""
import functools
import math

import numpy as np
from numba import cuda

# (BM, BN, BK, TM, TN): a block computes a BM x BN tile of C with
# (BM / TM) * (BN / TN) threads, each owning a TM x TN register micro-tile;
# BK is the depth of the A and B tiles staged in shared memory per step.
# float32: 128 x 128 x 8 with 8 x 8 per thread (256 threads), the classic
# SGEMM shape: four 16-byte shared loads feed 64 FMAs per k step per thread.
# float64: an 8 x 8 tile of doubles alone needs the 128 registers that let
# two blocks share an SM, so 4 x 4 per thread on a 64 x 64 block tile.
TILES = {"float32": (128, 128, 8, 8, 8), "float64": (64, 64, 8, 4, 4)}
# Numba's simulator runs every GPU thread as a Python thread; a smaller tile
# with the same code keeps the tests fast and still exercises edge tiles
# (the tests also run the production tile once).
SIMULATOR_TILES = (16, 16, 4, 4, 4)
# a register cap letting two 256-thread blocks share an SM (65536
# registers); ptxas (sm_90, CUDA 12.9) fits both kernels in it, the float32
# one with 24 bytes of spill
MAX_REGISTERS = 128
# shared-memory copies of the A and B tiles: 2 lets the next slab be stored
# while this one is read, one barrier per k step instead of two
STAGES = 1
# threads per block of the row-wise (softmax) and element-wise kernels
ROW_THREADS = 128
SIMULATOR_ROW_THREADS = 8
ELEM_BLOCK = (16, 16)
SIMULATOR_ELEM_BLOCK = (4, 4)
# rows summed by one thread in the first pass of the column sum
COLSUM_ROWS = 256

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh",
               "gelu_tanh", "gelu_erf")


def simulated():
    """True when numba.cuda is numba's CPU simulator (chosen by numba when
    it was imported, from NUMBA_ENABLE_CUDASIM)."""
    return "simulator" in cuda.devicearray.__name__


def gemm_tiles(dtype):
    return SIMULATOR_TILES if simulated() else TILES[np.dtype(dtype).name]


def row_threads():
    return SIMULATOR_ROW_THREADS if simulated() else ROW_THREADS


def elem_block():
    return SIMULATOR_ELEM_BLOCK if simulated() else ELEM_BLOCK


@functools.lru_cache(maxsize=None)
def _activation(act, dtype):
    """Device function v -> act(v) for dtype, constants in dtype."""
    t = np.dtype(dtype).type
    zero, one, half = t(0), t(1), t(0.5)
    c_tanh, c_cube = t(0.7978845608028654), t(0.044715)   # sqrt(2/pi)
    c_erf = t(0.7071067811865476)                          # 1/sqrt(2)

    if act == "identity":
        def f(v, slope):
            return v
    elif act == "relu":
        def f(v, slope):
            # v > 0 keeps NaN as NaN, as the CPU epilogue does
            return v if (v > zero or v != v) else zero
    elif act == "leaky_relu":
        def f(v, slope):
            return v if (v > zero or v != v) else v * slope
    elif act == "sigmoid":
        def f(v, slope):
            # never exp of a large positive number
            if v >= zero:
                return one / (one + math.exp(-v))
            s = math.exp(v)
            return s / (one + s)
    elif act == "tanh":
        def f(v, slope):
            return math.tanh(v)
    elif act == "gelu_tanh":
        def f(v, slope):
            s = c_tanh * (v + c_cube * v * v * v)
            return half * v * (one + math.tanh(s))
    elif act == "gelu_erf":
        def f(v, slope):
            return half * v * (one + math.erf(v * c_erf))
    else:
        raise ValueError(f"unknown activation {act!r}")
    return cuda.jit(device=True)(f)


@functools.lru_cache(maxsize=None)
def gemm_kernel(dtype, trans_a, trans_b, a_rows_fast, b_cols_fast,
                beta_zero, has_bias, act, tiles):
    """The tiled GEMM kernel; launch with gemm_launch_config.

    STAGES and MAX_REGISTERS are read when a kernel is built (a benchmark
    comparing other values sets them and clears this cache; a
    MAX_REGISTERS of 0 leaves the register count to ptxas).

    a_rows_fast: load the A tile with consecutive threads walking rows i
    (coalesced when opA's row stride is the small one); otherwise they walk
    p.  b_cols_fast likewise for B's columns j.  Arguments at launch:
    (m, n, k, alpha, a, b, beta, c_in, c_out, bias, slope).
    """
    BM, BN, BK, TM, TN = tiles
    S, regs_cap = STAGES, MAX_REGISTERS
    if S not in (1, 2):
        raise ValueError(f"stages must be 1 or 2, got {S}")
    TX, TY = BN // TN, BM // TM          # threads along n and along m
    NT = TX * TY
    A_PER, B_PER = BM * BK // NT, BK * BN // NT
    if A_PER * NT != BM * BK or B_PER * NT != BK * BN:
        raise ValueError(f"tile {tiles}: A and B tiles must split evenly "
                         f"over {NT} threads")
    # +4 columns: a k-fast load stores a column of As per thread group, and
    # the pad spreads those stores over all 32 shared-memory banks
    PAD = 4
    AS_W, BS_W = BM + PAD, BN + PAD     # literal shapes for shared.array
    # 16-byte aligned tiles let NVVM merge a run of 4 floats into one
    # ld.shared.v4 (the simulator accepts no alignment)
    ALIGN = None if simulated() else 16
    nbt = cuda.float32 if np.dtype(dtype) == np.float32 else cuda.float64
    zero = np.dtype(dtype).type(0)
    activate = _activation(act, np.dtype(dtype).name)

    @cuda.jit(device=True)
    def load_a(a, m, k, row0, p0, tid, regs):
        # global -> registers, zero outside opA so edge tiles need no masks
        for r in range(A_PER):
            e = tid + r * NT
            if a_rows_fast:
                ii, pp = e % BM, e // BM
            else:
                pp, ii = e % BK, e // BK
            gi, gp = row0 + ii, p0 + pp
            v = zero
            if gi < m and gp < k:
                v = a[gp, gi] if trans_a else a[gi, gp]
            regs[r] = v

    @cuda.jit(device=True)
    def store_a(As, s, tid, regs):
        for r in range(A_PER):
            e = tid + r * NT
            if a_rows_fast:
                ii, pp = e % BM, e // BM
            else:
                pp, ii = e % BK, e // BK
            As[s, pp, ii] = regs[r]

    @cuda.jit(device=True)
    def load_b(b, n, k, col0, p0, tid, regs):
        for r in range(B_PER):
            e = tid + r * NT
            if b_cols_fast:
                jj, pp = e % BN, e // BN
            else:
                pp, jj = e % BK, e // BK
            gj, gp = col0 + jj, p0 + pp
            v = zero
            if gj < n and gp < k:
                v = b[gj, gp] if trans_b else b[gp, gj]
            regs[r] = v

    @cuda.jit(device=True)
    def store_b(Bs, s, tid, regs):
        for r in range(B_PER):
            e = tid + r * NT
            if b_cols_fast:
                jj, pp = e % BN, e // BN
            else:
                pp, jj = e % BK, e // BK
            Bs[s, pp, jj] = regs[r]

    # micro-tile layout: thread (ty, tx) owns rows g*TY*VEC + ty*VEC + v for
    # g < TM/VEC, v < VEC (and columns alike), i.e. VEC-long runs spread
    # over the block tile
    VEC = 4 if TM % 4 == 0 and TN % 4 == 0 else 1

    @cuda.jit(device=True, inline="always")
    def row_of(ty, i):
        return (i // VEC) * (TY * VEC) + ty * VEC + i % VEC

    @cuda.jit(device=True, inline="always")
    def col_of(tx, j):
        return (j // VEC) * (TX * VEC) + tx * VEC + j % VEC

    # (numba's simulator takes no register cap)
    @cuda.jit(**({} if simulated() or not regs_cap
                 else {"max_registers": regs_cap}))
    def kernel(m, n, k, alpha, a, b, beta, c_in, c_out, bias, slope):
        As = cuda.shared.array((S, BK, AS_W), nbt, alignment=ALIGN)
        Bs = cuda.shared.array((S, BK, BS_W), nbt, alignment=ALIGN)
        acc = cuda.local.array((TM, TN), nbt)
        ra = cuda.local.array(TM, nbt)
        rb = cuda.local.array(TN, nbt)
        next_a = cuda.local.array(A_PER, nbt)
        next_b = cuda.local.array(B_PER, nbt)
        tid = cuda.threadIdx.x
        ty = tid // TX
        tx = tid - ty * TX
        row0, col0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero

        load_a(a, m, k, row0, 0, tid, next_a)
        load_b(b, n, k, col0, 0, tid, next_b)
        store_a(As, 0, tid, next_a)
        store_b(Bs, 0, tid, next_b)
        cuda.syncthreads()
        # k loop: one BK-deep slab of A and B per step; the next slab is
        # fetched into registers before this one is multiplied so global
        # latency hides behind the FMAs
        s = 0
        for p0 in range(0, k, BK):
            more = p0 + BK < k
            if more:
                load_a(a, m, k, row0, p0 + BK, tid, next_a)
                load_b(b, n, k, col0, p0 + BK, tid, next_b)
            for pp in range(BK):
                # a thread's rows come in runs of 4 (see row_of): each run
                # is one aligned 16-byte shared load, and a quarter warp's
                # runs of Bs are 128 contiguous bytes (no bank conflict)
                for i in range(TM):
                    ra[i] = As[s, pp, row_of(ty, i)]
                for j in range(TN):
                    rb[j] = Bs[s, pp, col_of(tx, j)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ra[i] * rb[j]
            if S == 2:
                # the other copy was last read before the previous barrier
                if more:
                    store_a(As, 1 - s, tid, next_a)
                    store_b(Bs, 1 - s, tid, next_b)
                cuda.syncthreads()
                s = 1 - s
            else:
                cuda.syncthreads()
                if more:
                    store_a(As, 0, tid, next_a)
                    store_b(Bs, 0, tid, next_b)
                    cuda.syncthreads()

        # epilogue on the finished register tile: scale, C update, bias,
        # activation, then one store per element
        for i in range(TM):
            gi = row0 + row_of(ty, i)
            if gi < m:
                for j in range(TN):
                    gj = col0 + col_of(tx, j)
                    if gj < n:
                        v = alpha * acc[i, j]
                        if not beta_zero:
                            v += beta * c_in[gi, gj]
                        if has_bias:
                            v += bias[gj]
                        c_out[gi, gj] = activate(v, slope)

    kernel.stages = S       # what the tests and benchmarks report
    return kernel


def gemm_launch_config(m, n, tiles):
    BM, BN, _, TM, TN = tiles
    grid = ((n + BN - 1) // BN, (m + BM - 1) // BM)
    return grid, (BN // TN) * (BM // TM)


@functools.lru_cache(maxsize=None)
def softmax_rows_kernel(dtype, threads):
    """y[i, :] = softmax(y[i, :]) in place, one block per row.

    Max-subtracted, so no exp overflows; a row containing NaN becomes NaN.
    """
    nbt = cuda.float32 if np.dtype(dtype) == np.float32 else cuda.float64
    t = np.dtype(dtype).type
    neg_inf, zero = t(-np.inf), t(0)

    @cuda.jit
    def kernel(y, n):
        red = cuda.shared.array(threads, nbt)
        i = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        v = neg_inf
        for j in range(tid, n, threads):
            x = y[i, j]
            # propagate NaN: max() would drop it
            v = x if (x > v or x != x) else v
        red[tid] = v
        cuda.syncthreads()
        s = threads // 2
        while s > 0:
            if tid < s:
                o = red[tid + s]
                if o > red[tid] or o != o:
                    red[tid] = o
            cuda.syncthreads()
            s //= 2
        mx = red[0]
        cuda.syncthreads()
        acc = zero
        for j in range(tid, n, threads):
            acc += math.exp(y[i, j] - mx)
        red[tid] = acc
        cuda.syncthreads()
        s = threads // 2
        while s > 0:
            if tid < s:
                red[tid] += red[tid + s]
            cuda.syncthreads()
            s //= 2
        total = red[0]
        for j in range(tid, n, threads):
            y[i, j] = math.exp(y[i, j] - mx) / total

    return kernel


@functools.lru_cache(maxsize=None)
def softmax_backward_kernel(dtype, threads):
    """dz[i, :] = y[i, :] * (dy[i, :] - sum_j dy[i, j] * y[i, j])."""
    nbt = cuda.float32 if np.dtype(dtype) == np.float32 else cuda.float64
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def kernel(dy, y, dz, n):
        red = cuda.shared.array(threads, nbt)
        i = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        acc = zero
        for j in range(tid, n, threads):
            acc += dy[i, j] * y[i, j]
        red[tid] = acc
        cuda.syncthreads()
        s = threads // 2
        while s > 0:
            if tid < s:
                red[tid] += red[tid + s]
            cuda.syncthreads()
            s //= 2
        dot = red[0]
        for j in range(tid, n, threads):
            dz[i, j] = y[i, j] * (dy[i, j] - dot)

    return kernel


@functools.lru_cache(maxsize=None)
def activation_grad_kernel(dtype, act):
    """dz = dy * act'(z), element-wise over a 2-D grid.

    relu, leaky_relu, sigmoid and tanh read the layer output y; the gelu
    forms read the pre-activation z (their derivative is not a function of
    y).  The unused one of y and z is any array of the right shape.
    """
    t = np.dtype(dtype).type
    zero, one, half = t(0), t(1), t(0.5)
    c_tanh, c_cube = t(0.7978845608028654), t(0.044715)
    c_erf = t(0.7071067811865476)
    c_pdf = t(0.3989422804014327)     # 1/sqrt(2 pi)
    three = t(3)

    if act == "identity":
        def grad(y, z, slope):
            return one
    elif act == "relu":
        def grad(y, z, slope):
            return one if y > zero else zero
    elif act == "leaky_relu":
        def grad(y, z, slope):
            return one if y > zero else slope
    elif act == "sigmoid":
        def grad(y, z, slope):
            return y * (one - y)
    elif act == "tanh":
        def grad(y, z, slope):
            return one - y * y
    elif act == "gelu_tanh":
        def grad(y, z, slope):
            u = c_tanh * (z + c_cube * z * z * z)
            th = math.tanh(u)
            du = c_tanh * (one + three * c_cube * z * z)
            return half * (one + th) + half * z * (one - th * th) * du
    elif act == "gelu_erf":
        def grad(y, z, slope):
            return (half * (one + math.erf(z * c_erf))
                    + z * c_pdf * math.exp(-half * z * z))
    else:
        raise ValueError(f"unknown activation {act!r}")
    grad_dev = cuda.jit(device=True)(grad)

    @cuda.jit
    def kernel(dy, y, z, dz, slope):
        i, j = cuda.grid(2)
        if i < dz.shape[0] and j < dz.shape[1]:
            dz[i, j] = dy[i, j] * grad_dev(y[i, j], z[i, j], slope)

    return kernel


@functools.lru_cache(maxsize=None)
def colsum_kernel(dtype):
    """dst[r, j] = sum of src[r*rows : (r+1)*rows, j].

    One thread per (row chunk, column): consecutive threads read consecutive
    columns (coalesced) and the sum order is fixed, so db is reproducible
    (no atomics).  Run twice: chunks of rows, then the chunk partials.
    """
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def kernel(src, dst, rows):
        j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        r = cuda.blockIdx.y
        if j < src.shape[1]:
            acc = zero
            for i in range(r * rows, min((r + 1) * rows, src.shape[0])):
                acc += src[i, j]
            dst[r, j] = acc

    return kernel


@functools.lru_cache(maxsize=None)
def copy_kernel():
    """dst[i, j] = src[i, j] for any strides and dtypes (casts on store)."""
    @cuda.jit
    def kernel(src, dst):
        i, j = cuda.grid(2)
        if i < dst.shape[0] and j < dst.shape[1]:
            dst[i, j] = src[i, j]

    return kernel
