# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The GEMM driver: the five Goto/BLIS loops around the micro-kernel.

    C := alpha * A @ B + beta * C,   A: m x k, B: k x n, C: m x n, any strides.

    jc  over n in NC columns     B panel and C columns
    pc  over k in KC             pack B[pc:pc+KC, jc:jc+NC] once, shared by all threads
    ic  over m in MC rows        each thread packs its own A block
    jr  over the panel in NR     one packed B micro-panel, kept in L1
    ir  over the block in MR     one micro-kernel call per MR x NR tile of C

All threads run the same loops (one OpenMP region per call) and meet at a
barrier around each shared B panel.  Every element of C is computed by one
thread in a fixed order, so results do not depend on the thread count.
"""
from libc.string cimport memset
from cython.parallel cimport parallel

from fastmm.driver._pack cimport real, pack_a, pack_b, strip
from fastmm.nn._epilogue cimport apply_epilogue
from fastmm.driver._threads cimport note_region, PATH_PACKED, PATH_AHEAD
from fastmm.driver._context cimport (Blocking, active_blocking, sgemm_ukr_t,
                                     dgemm_ukr_t, sgemm_rows_t, dgemm_rows_t)

cdef extern from "driver/_parallel.h" nogil:
    int fmm_thread_num()
    int fmm_team_size()
    void fmm_barrier()

cdef extern from "driver/_prefetch.h" nogil:
    ctypedef struct Fetch "fmm_fetch_t":
        const Ahead* ahead
        Py_ssize_t m, n, k, part, parts
        size_t size
    void fetch_part "fmm_fetch_part"(Fetch* f)

cdef extern from "driver/_scratch.h" nogil:
    void* fmm_scratch_get(size_t size)
    void fmm_scratch_release(void* ptr, size_t size)
    size_t fmm_scratch_trim()
    size_t fmm_scratch_kept()
    long fmm_scratch_outstanding
    int fmm_scratch_fail_record


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline void _run_ukr(const Blocking* blk, Py_ssize_t kc, real alpha,
                          const real* a_panel, const real* b_panel, real beta,
                          real* c, Py_ssize_t ldc) noexcept nogil:
    if real is float:
        (<sgemm_ukr_t>blk.ukr)(kc, alpha, a_panel, b_panel, beta, c, ldc)
    else:
        (<dgemm_ukr_t>blk.ukr)(kc, alpha, a_panel, b_panel, beta, c, ldc)


cdef inline void _run_ukr_rows(const Blocking* blk, Py_ssize_t kc, real alpha,
                               const real* a_panel, const real* b_panel,
                               real beta, real* c, Py_ssize_t ldc,
                               int rows) noexcept nogil:
    if real is float:
        (<sgemm_rows_t>blk.ukr_rows)(kc, alpha, a_panel, b_panel, beta, c,
                                         ldc, rows)
    else:
        (<dgemm_rows_t>blk.ukr_rows)(kc, alpha, a_panel, b_panel, beta, c,
                                         ldc, rows)


cdef void _scale_c(Py_ssize_t m, Py_ssize_t n, real beta, real* c,
                   Py_ssize_t rs_c, Py_ssize_t cs_c) noexcept nogil:
    # C := beta * C, where beta == 0 writes zeros without reading C
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            if beta == 0:
                c[i * rs_c + j * cs_c] = 0
            else:
                c[i * rs_c + j * cs_c] = beta * c[i * rs_c + j * cs_c]


# With m <= 2 MC, products of at least this many columns, and all products run
# by more than one thread, take the packed driver's per-thread B chunks (see
# _gemm_thread); the config row's short_n
cdef Py_ssize_t _short_n = 2048


def short_n():
    """The short_n in force (set_short_n)."""
    return _short_n


def set_short_n(columns):
    """Fewest columns n for which, with m <= 2 MC, each thread packs its own
    chunks of B (fastmm.config sets the row's short_n)."""
    global _short_n
    _short_n = int(columns)


# B chunks of the one-A-block loop are short runs of B's rows; where rows lie
# at least _pf_stride bytes apart the hardware prefetchers miss them, and
# pack_b asks for the rows _pf_ahead ahead (the config row's pack_prefetch)
cdef Py_ssize_t _pf_ahead = 0
cdef Py_ssize_t _pf_stride = 1 << 14


def pack_prefetch():
    """(rows ahead, minimum row stride in bytes) in force for the B chunks
    (set_pack_prefetch); rows ahead 0: off."""
    return _pf_ahead, _pf_stride


def set_pack_prefetch(ahead, min_stride):
    """Software prefetch while packing the one-A-block path's B chunks:
    ``ahead`` rows ahead (0: off) where B's rows lie at least ``min_stride``
    bytes apart (fastmm.config sets the row's pack_prefetch)."""
    global _pf_ahead, _pf_stride
    ahead, min_stride = int(ahead), int(min_stride)
    if not (0 <= ahead <= 64 and min_stride >= 0):
        raise ValueError(f"pack prefetch must be 0..64 rows ahead and a "
                         f"stride >= 0, got {ahead}, {min_stride}")
    _pf_ahead, _pf_stride = ahead, min_stride


# The next product of a stack (Ahead) is asked for while this one runs when
# its A and B take at most this many bytes: half of L2 (fastmm.config sets
# it from the detected cache), so that they stay there beside this
# product's packed blocks.  Zen 3, 1 thread, against the fetch off, median
# of 15-21 alternating rounds: stacks of 64 products of 128^3 float32
# +7-13%, float64 +5-8%; of 120^3 float32 +0-7%, float64 +8-11%; 32 of
# 160^3 float32 +7%; on 2 threads +1-5%.  Larger operands were evicted
# before use: 16 of 32x256 @ 256x1024 lost 5-7%.
cdef Py_ssize_t _ahead_bytes = 256 * 1024


def stack_ahead():
    """Bytes of the next product's A and B up to which a stack's packed
    products fetch them while they run (set_stack_ahead); 0: never."""
    return _ahead_bytes


def set_stack_ahead(Py_ssize_t max_bytes):
    """Fetch the next product's operands while a stack's packed product
    runs when they take at most ``max_bytes`` (0: never)."""
    global _ahead_bytes
    if max_bytes < 0:
        raise ValueError(f"stack_ahead must be >= 0 bytes, got {max_bytes}")
    _ahead_bytes = max_bytes


cdef inline bint _one_a_block(const Blocking* blk, Py_ssize_t m, Py_ssize_t n,
                              int nt) noexcept nogil:
    # All of C's rows in one A block, each thread packing its own B chunks
    # (see _gemm_thread), up to twice MC rows: such an A block overflows L2,
    # but B is then packed once and never goes through L3, where two A
    # blocks over a shared B panel stream the panel from L3 once each.
    # Zen 4, m in (MC, 2 MC]: float64 256..320 x 1024 @ 1024 x 4096 +4-25%
    # on 1 thread and +5-19% on 2, float32 512..700 rows +7-12% on 1.  The
    # chunks (blk.chunk micro-panels) take half of an L2 budget, by default
    # the A block's; a row whose A block is a small share of L2 keeps the
    # budget of one filling it: with 32 rows, chunks sized by a
    # quarter-of-L2 A block ran 20-30% behind (Intel Xeon with AMX,
    # float64, k = 1024..4096).  Such a row also takes up to one_block_m
    # rows (twice that budget's) this way when B is wide (n >= short_n):
    # 256 x 1024 @ 1024 x 4096 on 2 threads float32 +20%, float64 +10%
    # over the shared B panel, but 512^3 float64 -10%, 768 x 1024 @ 1024 x
    # 1024 float32 -5%.
    return ((m <= 2 * blk.MC and (n >= _short_n or nt > 1))
            or (m <= blk.one_block_m and n >= _short_n))


cdef inline void _strips(const Blocking* blk, Py_ssize_t kc, real alpha,
                         const real* a_packed, const real* b_panel,
                         real beta_pc, real* c, Py_ssize_t rs_c,
                         Py_ssize_t cs_c, Py_ssize_t ic, Py_ssize_t mc,
                         Py_ssize_t j, Py_ssize_t nr, bint last_pc,
                         const Epilogue* ep, real* tile,
                         Fetch* fetch) noexcept nogil:
    """LOOP 1: the strips of a packed A block (MR rows, the last one or two
    fewer: see _pack.strip) against one B micro-panel, into
    C[ic:ic+mc, j:j+nr]; edge tiles and strided C go through tile; a part
    of the next product's operands before each call (fetch, or NULL)."""
    cdef int MR = blk.MR, NR = blk.NR
    cdef Py_ssize_t irb, ir, mr, i, jp
    cdef const real* a_panel
    cdef real* c_ij
    cdef real* c_tile
    for irb in range(_ceil_div(mc, MR)):
        mr = strip(irb, mc, MR, blk.split_rows, &ir)
        a_panel = a_packed + irb * MR * kc
        c_ij = c + (ic + ir) * rs_c + j * cs_c
        if fetch != NULL:
            fetch_part(fetch)
        if nr == NR and cs_c == 1 and (mr == MR or blk.ukr_rows != NULL):
            if mr == MR:
                _run_ukr(blk, kc, alpha, a_panel, b_panel, beta_pc, c_ij,
                         rs_c)
            else:
                _run_ukr_rows(blk, kc, alpha, a_panel, b_panel, beta_pc,
                              c_ij, rs_c, <int>mr)
            if last_pc and ep != NULL:
                apply_epilogue(c_ij, rs_c, 1, mr, NR, ic + ir, j, ep)
        else:
            if mr < MR and blk.ukr_rows != NULL:
                _run_ukr_rows(blk, kc, alpha, a_panel, b_panel, <real>0,
                              tile, NR, <int>mr)
            else:
                _run_ukr(blk, kc, alpha, a_panel, b_panel, <real>0, tile, NR)
            for i in range(mr):
                c_tile = c_ij + i * rs_c
                if beta_pc == 0:
                    for jp in range(nr):
                        c_tile[jp * cs_c] = tile[i * NR + jp]
                else:
                    for jp in range(nr):
                        c_tile[jp * cs_c] = (tile[i * NR + jp]
                                             + beta_pc * c_tile[jp * cs_c])
            if last_pc and ep != NULL:
                apply_epilogue(c_ij, rs_c, cs_c, mr, nr, ic + ir, j, ep)


cdef void _gemm_thread(const Blocking* blk, Py_ssize_t m, Py_ssize_t n,
                       Py_ssize_t k, real alpha,
                       const real* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                       const real* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                       real beta, real* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                       const Epilogue* ep, real* a_packed, real* b_packed,
                       int tid, int nt, Fetch* fetch) noexcept nogil:
    """One thread's share of the product; all threads of the team call it."""
    cdef int MR = blk.MR, NR = blk.NR
    cdef Py_ssize_t MC = blk.MC, KC = blk.KC, NC = blk.NC
    cdef Py_ssize_t jb, pb, ib, jc, pc, ic, jr, nc, kc, mc, j
    cdef Py_ssize_t n_panels, row0, row1, jp0, jp1, mt, cp, ahead, n_ib, mb
    cdef int ti_n, tj_n, ti, tj
    cdef real beta_pc
    cdef real tile[1024]   # FMM_MAX_TILE: edge tiles and strided C go through it
    cdef bint last_pc

    if _one_a_block(blk, m, n, nt):
        # One A block holds all of C's rows, so a packed B micro-panel is
        # used by one strip loop and never again: packing a whole shared B
        # panel would only add a trip through L3 and two barriers per k
        # block.  Each thread takes its own columns, packs the A block for
        # itself (m x kc, small next to its kc x n/nt of B) and packs B a
        # chunk of micro-panels at a time, just before the strips that use
        # them, into a slot of its own that stays in L2.  Chunks, not single
        # micro-panels: B's rows are then read in runs of cp*NR elements,
        # which the hardware prefetchers follow (NR-element runs a page
        # apart are read at latency).  No barriers.  On one thread the
        # shared panel is ahead below short_n columns; on more, the shared
        # panel's row split (a few MR strips each) is unbalanced and its
        # barriers dominate: this way was 1.2-1.5x faster at m = 32..64,
        # n = 1024 on 2 Zen 4 threads, and level with it at m = MC.
        cp = blk.chunk
        ahead = _pf_ahead if (cs_b == 1 and rs_b * <Py_ssize_t>sizeof(real)
                              >= _pf_stride) else 0
        n_panels = _ceil_div(n, NR)
        jp0 = n_panels * tid // nt
        jp1 = n_panels * (tid + 1) // nt
        if jp1 <= jp0:
            return
        b_packed += tid * cp * NR * min(KC, k)    # this thread's slot
        for pb in range(_ceil_div(k, KC)):            # LOOP 4: k in KC (A, B)
            pc = pb * KC
            kc = min(KC, k - pc)
            beta_pc = beta if pc == 0 else 1
            last_pc = pc + kc >= k
            pack_a(m, kc, a + pc * cs_a, rs_a, cs_a, a_packed, MR,
                   blk.split_rows)
            for ib in range(_ceil_div(jp1 - jp0, cp)):  # chunks of cp panels
                jb = jp0 + ib * cp
                jc = jb * NR
                pack_b(kc, min(cp * NR, min(jp1 * NR, n) - jc),
                       b + pc * rs_b + jc * cs_b, rs_b, cs_b, b_packed, NR,
                       ahead)
                for jr in range(jb, min(jb + cp, jp1)):  # LOOP 2: NR panels
                    j = jr * NR
                    _strips(blk, kc, alpha, a_packed,
                            b_packed + (jr - jb) * NR * kc, beta_pc, c, rs_c,
                            cs_c, 0, m, j, min(NR, n - j), last_pc, ep, tile,
                            fetch)
        return

    # Thread grid: split the rows of C (threads share the B panel, each packs
    # its own A block); when there are fewer MR-row strips than threads, split
    # the NR-column micro-panels too.
    mt = _ceil_div(m, MR)
    ti_n = nt
    while ti_n > 1 and (ti_n > mt or nt % ti_n != 0):
        ti_n -= 1
    tj_n = nt // ti_n
    ti = tid // tj_n
    tj = tid % tj_n
    row0 = (mt * ti // ti_n) * MR
    row1 = min(m, (mt * (ti + 1) // ti_n) * MR)
    # the thread's rows in as few A blocks as MC allows, of even size (as
    # OpenBLAS halves its last two): 256 rows under MC = 192 go as 132 + 124,
    # not 192 + 64, whose B micro-panels would each feed 6 strips for their
    # trip from L3 (float64 200..256 x 512..4096 @ .. x 512..4096, 1 thread,
    # Zen 4: +4-10% in one A/B round, level in another)
    n_ib = _ceil_div(row1 - row0, MC)
    mb = _ceil_div(_ceil_div(row1 - row0, MR), max(1, n_ib)) * MR

    for jb in range(_ceil_div(n, NC)):                # LOOP 5: n in NC (B, C)
        jc = jb * NC
        nc = min(NC, n - jc)
        n_panels = _ceil_div(nc, NR)
        for pb in range(_ceil_div(k, KC)):            # LOOP 4: k in KC (A, B)
            pc = pb * KC
            kc = min(KC, k - pc)
            beta_pc = beta if pc == 0 else 1
            last_pc = pc + kc >= k
            # all threads pack the shared B panel, a range of micro-panels each
            jp0 = n_panels * tid // nt
            jp1 = n_panels * (tid + 1) // nt
            if jp1 > jp0:
                pack_b(kc, min(nc, jp1 * NR) - jp0 * NR,
                       b + pc * rs_b + (jc + jp0 * NR) * cs_b, rs_b, cs_b,
                       b_packed + jp0 * NR * kc, NR)
            if nt > 1:
                fmm_barrier()
            jp0 = n_panels * tj // tj_n
            jp1 = n_panels * (tj + 1) // tj_n
            for ib in range(n_ib):                    # LOOP 3: m in MC (A, C)
                ic = row0 + ib * mb
                mc = min(mb, row1 - ic)
                pack_a(mc, kc, a + ic * rs_a + pc * cs_a, rs_a, cs_a,
                       a_packed, MR, blk.split_rows)
                for jr in range(jp0, jp1):            # LOOP 2: NR panels of B
                    j = jc + jr * NR
                    _strips(blk, kc, alpha, a_packed, b_packed + jr * NR * kc,
                            beta_pc, c, rs_c, cs_c, ic, mc, j,
                            min(NR, n - j), last_pc, ep, tile, fetch)
            # the next pc iteration repacks B: wait until nobody reads it
            if nt > 1:
                fmm_barrier()


cdef int _gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, real alpha,
               const real* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
               const real* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
               real beta, real* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
               const Epilogue* ep, int nthreads,
               const Ahead* ahead) noexcept nogil:
    cdef Blocking blk
    cdef Fetch fetch
    cdef Fetch* fetch_p = NULL
    cdef Py_ssize_t mc_max, kc_max, nc_max, t
    cdef real* a_packed
    cdef real* b_packed
    cdef void* scratch
    cdef size_t a_size, b_size
    cdef Epilogue ep_t
    cdef int nt, team = 1
    cdef int* team_p = &team
    if m <= 0 or n <= 0:
        return 0
    if k == 0 or alpha == 0:
        # BLAS: A and B are not read
        _scale_c(m, n, beta, c, rs_c, cs_c)
        if ep != NULL:
            for t in range(m):
                apply_epilogue(c + t * rs_c, rs_c, cs_c, 1, n, t, 0, ep)
        return 0
    if (ahead != NULL and nthreads <= 1
            and (m * k + k * n) * <Py_ssize_t>sizeof(real) <= _ahead_bytes):
        # (before the swap below: ahead holds the next product as given)
        fetch.ahead = ahead
        fetch.m, fetch.n, fetch.k, fetch.size = m, n, k, sizeof(real)
        fetch.part = 0
        fetch_p = &fetch
    if cs_c != 1 and rs_c == 1:
        # Kernels write rows of C contiguously.  A column-major C is the
        # row-major C^T = B^T A^T: swap the operands instead of scattering.
        if ep != NULL:
            ep_t = ep[0]
            ep_t.bias_along_rows = not ep_t.bias_along_rows
            ep = &ep_t
        m, n = n, m
        a, b = b, a
        rs_a, cs_a, rs_b, cs_b = cs_b, rs_b, cs_a, rs_a
        rs_c, cs_c = cs_c, rs_c
    blk = active_blocking(real is double)[0]
    kc_max = min(blk.KC, k)
    mc_max = min(blk.one_block_m if _one_a_block(&blk, m, n, nthreads)
                 else blk.MC,
                 _ceil_div(m, blk.MR) * blk.MR)
    nc_max = min(blk.NC, _ceil_div(n, blk.NR) * blk.NR)
    nt = max(1, nthreads)
    # one scratch block, B panel first; both parts 64-byte aligned
    # (a B panel, or with one A block a slot of micro-panels per thread)
    b_size = sizeof(real) * kc_max * blk.NR * max(
        _ceil_div(nc_max, blk.NR), max(1, nthreads) * blk.chunk)
    b_size = (b_size + 63) & ~(<size_t>63)
    a_size = sizeof(real) * nt * kc_max * _ceil_div(mc_max, blk.MR) * blk.MR
    scratch = fmm_scratch_get(b_size + a_size)
    if scratch == NULL:
        return -1
    b_packed = <real*>scratch
    a_packed = <real*>(<char*>scratch + b_size)
    if nt == 1:
        if fetch_p != NULL:
            # about one part per micro-kernel call
            fetch.parts = (_ceil_div(m, blk.MR) * _ceil_div(n, blk.NR)
                           * _ceil_div(k, blk.KC))
            note_region(PATH_AHEAD, 1)
        _gemm_thread(&blk, m, n, k, alpha, a, rs_a, cs_a, b, rs_b, cs_b,
                     beta, c, rs_c, cs_c, ep, a_packed, b_packed, 0, 1,
                     fetch_p)
    else:
        with parallel(num_threads=nt):
            if fmm_thread_num() == 0:
                team_p[0] = fmm_team_size()
            _gemm_thread(&blk, m, n, k, alpha, a, rs_a, cs_a, b, rs_b, cs_b,
                         beta, c, rs_c, cs_c, ep,
                         a_packed + fmm_thread_num() * kc_max * (
                             _ceil_div(mc_max, blk.MR) * blk.MR),
                         b_packed, fmm_thread_num(), fmm_team_size(), NULL)
    fmm_scratch_release(scratch, b_size + a_size)
    note_region(PATH_PACKED, team)
    return 0


cdef void* scratch_get(size_t size) noexcept nogil:
    return fmm_scratch_get(size)


cdef void scratch_release(void* ptr, size_t size) noexcept nogil:
    fmm_scratch_release(ptr, size)


cdef int sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
               const float* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
               const float* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
               float beta, float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
               const Epilogue* ep, int nthreads,
               const Ahead* ahead=NULL) noexcept nogil:
    return _gemm(m, n, k, alpha, a, rs_a, cs_a, b, rs_b, cs_b,
                 beta, c, rs_c, cs_c, ep, nthreads, ahead)


cdef int dgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
               const double* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
               const double* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
               double beta, double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
               const Epilogue* ep, int nthreads,
               const Ahead* ahead=NULL) noexcept nogil:
    return _gemm(m, n, k, alpha, a, rs_a, cs_a, b, rs_b, cs_b,
                 beta, c, rs_c, cs_c, ep, nthreads, ahead)


def strips(Py_ssize_t mc, dtype):
    """[(first row, rows)] of the strips a block of mc rows of A is cut into
    for the active kernel of ``dtype`` (see _pack.strip)."""
    import numpy as np
    cdef const Blocking* blk = active_blocking(np.dtype(dtype) == np.float64)
    cdef Py_ssize_t q, top, h
    out = []
    for q in range(_ceil_div(mc, blk.MR)):
        h = strip(q, mc, blk.MR, blk.split_rows, &top)
        out.append((top, h))
    return out


def takes_one_a_block(Py_ssize_t m, Py_ssize_t n, int nthreads, dtype):
    """Whether an m-row, n-column product on nthreads threads runs in one A
    block with per-thread B chunks (_one_a_block) under the blocking in force
    for dtype, "float32" or "float64" (for tests).  Decided before the swap
    a column-major C takes: pass the m and n the driver sees."""
    return bool(_one_a_block(active_blocking(dtype == "float64"), m, n,
                             nthreads))


def run_packed(alpha, a, b, beta, c, int nthreads=1):
    """c := alpha * a @ b + beta * c through this driver alone (for tests).

    a, b, c: 2-D arrays of one dtype, float32 or float64, any strides that
    are whole elements.  Updates c in place, whatever matmul would route.
    """
    import numpy as np
    dtype = c.dtype
    if dtype not in (np.float32, np.float64) or a.dtype != dtype \
            or b.dtype != dtype:
        raise TypeError("run_packed works on float32 or float64 arrays of one dtype")
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2 or a.shape[1] != b.shape[0] \
            or c.shape != (a.shape[0], b.shape[1]):
        raise ValueError("run_packed needs a (m, k), b (k, n), c (m, n)")
    if any(s % dtype.itemsize for x in (a, b, c) for s in x.strides):
        raise ValueError("strides must be whole elements")
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1], k = a.shape[1]
    cdef Py_ssize_t[6] st = [x // dtype.itemsize for x in a.strides + b.strides + c.strides]
    cdef const float[:, :] sa, sb
    cdef const double[:, :] da, db
    cdef float[:, :] sc
    cdef double[:, :] dc
    cdef int err
    if m == 0 or n == 0:
        return c
    if dtype == np.float32:
        sa, sb, sc = a, b, c
        err = sgemm(m, n, k, alpha, &sa[0, 0] if k else NULL, st[0], st[1],
                    &sb[0, 0] if k else NULL, st[2], st[3], beta, &sc[0, 0],
                    st[4], st[5], NULL, nthreads)
    else:
        da, db, dc = a, b, c
        err = dgemm(m, n, k, alpha, &da[0, 0] if k else NULL, st[0], st[1],
                    &db[0, 0] if k else NULL, st[2], st[3], beta, &dc[0, 0],
                    st[4], st[5], NULL, nthreads)
    if err:
        raise MemoryError("fastmm: no memory for the packed panels")
    return c


def release_buffers():
    """Free the packing buffers fastmm keeps between products, in every
    thread not multiplying at this moment (each keeps its largest, up to
    64 MiB, to avoid page faults on the next call).

    Returns
    -------
    int
        The bytes freed.
    """
    return fmm_scratch_trim()


def kept_buffer_bytes():
    """Bytes of packing buffers kept between products, all threads.

    Returns
    -------
    int
        The total over all threads (see :func:`release_buffers`).
    """
    return fmm_scratch_kept()


def _scratch_outstanding():
    """Test hook: buffers allocated for one call and not yet freed."""
    return fmm_scratch_outstanding


def _scratch_fail_record(bint fail):
    """Test hook: make this thread's kept-buffer record fail to set up, as
    when calloc or pthread_setspecific fails (a thread without one yet)."""
    global fmm_scratch_fail_record
    fmm_scratch_fail_record = fail


