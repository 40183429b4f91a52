# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastmm.matmul: validate, promote, allocate, hand to the driver.

matmul keeps np.matmul's exact semantics by taking its own path only where
its answer is certain to match numpy's (native, aligned float32/float64
ndarrays; an ``out`` of the result's dtype); everything else goes to np.matmul
itself, so other dtypes, array subclasses, ufunc keywords and numpy's error
messages stay numpy's.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport parallel, prange

from fastmm.driver._packed cimport sgemm, dgemm, Ahead
from fastmm.nn._epilogue cimport Epilogue, apply_epilogue, fmm_act_select
from fastmm.driver._threads cimport threads_for, note_region, PATH_STACK
from fastmm.driver._pack cimport real
from fastmm._arrays cimport native_float, aligned, writes_twice, may_overlap
from fastmm.driver._unpacked cimport (small_sgemm, small_dgemm,
                                      small_sgemm_batch, small_dgemm_batch)

cnp.import_array()


def _select_activation_isa(name):
    """This module's copy of the activation routines' ISA choice (see
    fastmm.driver._context.select_kernel, which calls it)."""
    cdef bytes key = name.encode()
    return fmm_act_select(key).decode()


from fastmm.driver._context import kernel_info as _kernel_info
_select_activation_isa(_kernel_info()["name"])

cdef extern from "driver/_parallel.h" nogil:
    int fmm_thread_num()
    int fmm_team_size()

cdef object _np_matmul = np.matmul
cdef object _copyto = np.copyto
cdef type _ndarray = np.ndarray
cdef object _f32 = np.dtype(np.float32)
cdef object _f64 = np.dtype(np.float64)


# The unpacked path (kernels/small.h) takes a product when packing cannot pay:
# matrix-vector (m or n == 1); m*n*k up to SMALL_MNK; few rows (m <= SKINNY_M:
# each element of B is used by few rows, and the path copies large B panels
# itself) while B has at most SKINNY_KN elements or k <= UNPACKED_KC (one of
# those panels deep; a deeper, larger B goes to the packed driver); few
# columns (n <= NARROW_N: a packed NR-wide tile would be mostly padding); or
# a shallow k (C is written once).  Any strides.  The values are the
# configuration row's (fastmm.config, set_routing).
cdef Py_ssize_t SMALL_MNK = 128 * 128 * 128
cdef Py_ssize_t SKINNY_M = 64
cdef Py_ssize_t SKINNY_KN = 512 * 512
# the depth of the unpacked path's B panels (kernels/small.h, FMM_SMALL_KC)
cdef Py_ssize_t UNPACKED_KC = 256
cdef Py_ssize_t NARROW_N = 0
cdef Py_ssize_t SHALLOW_K = 16
cdef double GEMV_COST = 8
# A stack of small products splits into independent pieces with one fork and
# one join, not the packed driver's barrier per k block: threads pay for
# about STACK_COST times less work.
cdef double STACK_COST = 8
# In a stack each product's B arrives cold (from L3 or memory, not from the
# previous call's cache), and the unpacked path reads it with a stride, once
# per strip of rows: past a few L1-sized panels packing it once is cheaper.
# (Zen 3, 1 and 2 threads: 16 products of 32x256 @ 256x1024 float64 ran at
# 0.4-0.6x numpy unpacked, 0.95-1.05x packed; 64 of 120^3 float32 0.88 ->
# 1.00; at 104^3 float32 or 64^3 float64 the unpacked path still won.)
cdef Py_ssize_t STACK_B_BYTES = 48 * 1024
# The threads threshold counts float32 flops: a float64 flop takes two
# (half the lanes a vector), so a float64 product pays for its threads at
# half the flops.  (Zen 4, 2 threads against 1: float64 96^3 and
# 64x64 @ 64x256 ran 1.5-1.8x faster, where float32 ones broke even.)
cdef double F64_COST = 2


def set_routing(small_mnk, skinny_m, narrow_n, shallow_k, skinny_kn):
    """Thresholds of the unpacked path (see above).  Either path is correct
    for any shape, so a product racing with this call is still right."""
    global SMALL_MNK, SKINNY_M, NARROW_N, SHALLOW_K, SKINNY_KN
    SMALL_MNK, SKINNY_M = int(small_mnk), int(skinny_m)
    NARROW_N, SHALLOW_K = int(narrow_n), int(shallow_k)
    SKINNY_KN = int(skinny_kn)


def routing():
    """The thresholds in force, as set_routing takes them."""
    return {"small_mnk": SMALL_MNK, "skinny_m": SKINNY_M,
            "narrow_n": NARROW_N, "shallow_k": SHALLOW_K,
            "skinny_kn": SKINNY_KN}


cdef inline bint _unpacked(Py_ssize_t m, Py_ssize_t n,
                           Py_ssize_t k) noexcept nogil:
    return (m == 1 or n == 1 or m * n * k <= SMALL_MNK
            or (m <= SKINNY_M and (k <= UNPACKED_KC or k * n <= SKINNY_KN))
            or n <= NARROW_N or k <= SHALLOW_K)


cdef Ahead _no_ahead
_no_ahead.a = _no_ahead.b = NULL


cdef inline int _product(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, real alpha,
                         const real* a, const Py_ssize_t* s_a,
                         const real* b, const Py_ssize_t* s_b, real beta,
                         real* c, const Py_ssize_t* s_c, const Epilogue* ep,
                         bint small, int nt,
                         Ahead ahead=_no_ahead) noexcept nogil:
    """One product on the path chosen by _unpacked (small) with nt threads;
    ahead: the product a stack runs next, if any (a NULL: none)."""
    cdef const Ahead* next_p = &ahead if ahead.a != NULL else NULL
    if not small:
        if real is float:
            return sgemm(m, n, k, alpha, a, s_a[0], s_a[1], b, s_b[0], s_b[1],
                         beta, c, s_c[0], s_c[1], ep, nt, next_p)
        else:
            return dgemm(m, n, k, alpha, a, s_a[0], s_a[1], b, s_b[0], s_b[1],
                         beta, c, s_c[0], s_c[1], ep, nt, next_p)
    if real is float:
        small_sgemm(m, n, k, alpha, a, s_a[0], s_a[1], b, s_b[0], s_b[1],
                    beta, c, s_c[0], s_c[1], nt)
    else:
        small_dgemm(m, n, k, alpha, a, s_a[0], s_a[1], b, s_b[0], s_b[1],
                    beta, c, s_c[0], s_c[1], nt)
    if ep != NULL:
        apply_epilogue(c, s_c[0], s_c[1], m, n, 0, 0, ep)
    return 0


cdef inline Py_ssize_t _offset(Py_ssize_t t, int nb, const Py_ssize_t* shape,
                               const Py_ssize_t* strides) noexcept nogil:
    """Element offset of product t (row-major over shape) in one operand."""
    cdef Py_ssize_t off = 0
    cdef int d
    for d in range(nb - 1, -1, -1):
        off += (t % shape[d]) * strides[d]
        t = t // shape[d]
    return off


cdef inline Ahead _next(Py_ssize_t t, Py_ssize_t count, int nb,
                        const Py_ssize_t* shape, const real* a,
                        const Py_ssize_t* s_a, const Py_ssize_t* bs_a,
                        const real* b, const Py_ssize_t* s_b,
                        const Py_ssize_t* bs_b) noexcept nogil:
    """The operands of the stack's product t + 1 (a NULL after the last)."""
    cdef Ahead nxt
    nxt.a = nxt.b = NULL
    nxt.rs_a, nxt.cs_a, nxt.rs_b, nxt.cs_b = s_a[0], s_a[1], s_b[0], s_b[1]
    if t + 1 < count:
        nxt.a = a + _offset(t + 1, nb, shape, bs_a)
        nxt.b = b + _offset(t + 1, nb, shape, bs_b)
    return nxt


cdef int _batched(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, real alpha,
                  const real* a, const Py_ssize_t* s_a,
                  const real* b, const Py_ssize_t* s_b, real beta,
                  real* c, const Py_ssize_t* s_c, Py_ssize_t count, int nb,
                  const Py_ssize_t* shape, const Py_ssize_t* bs_a,
                  const Py_ssize_t* bs_b, const Py_ssize_t* bs_c,
                  const Epilogue* ep) noexcept nogil:
    """``count`` products over a broadcast batch of ``nb`` dimensions.

    s_* are the (row, column) strides of each matrix, bs_* the batch strides
    (0 where an operand is broadcast); all in elements.  Small products run
    one per thread over the stack; large ones get the threads themselves.
    """
    cdef Py_ssize_t t
    cdef int err = 0, team = 1
    cdef int* err_p = &err
    cdef int* team_p = &team
    cdef double flops = 2.0 * m * n * k * (F64_COST if real is double else 1)
    # matrix-vector products stream their matrix once (no reuse): a flop
    # costs about GEMV_COST times what it does in a GEMM, so threads pay
    # that much sooner
    cdef int nt_one = threads_for(flops * (GEMV_COST if m == 1 or n == 1
                                           else 1))
    cdef bint small = _unpacked(m, n, k)
    if count == 1:
        return _product(m, n, k, alpha, a, s_a, b, s_b, beta, c, s_c, ep,
                        small, nt_one)
    if (small and m != 1 and n != 1 and k > SHALLOW_K
            and k * n * <Py_ssize_t>sizeof(real) > STACK_B_BYTES):
        small = False
    cdef int nt_all = threads_for(flops * count * (STACK_COST if small else 1))
    # One thread per product where one product needs fewer threads than the
    # stack, or where the stack shares out evenly (the busiest thread gets
    # at most a tenth more than its share): one fork and no barrier, rather
    # than a team per product (Zen 3, 2 threads: 100 products of 64^3
    # float64 ran at 1.8-1.9x numpy with 2 threads each, 2.2-2.5x split)
    cdef Py_ssize_t per_thread = (count + nt_all - 1) // nt_all
    cdef int nt_stack = nt_all if nt_all > 1 and (
        nt_one < nt_all or 10 * per_thread * nt_all <= 11 * count) else 1
    if small and ep == NULL and (nt_one == 1 or nt_stack > 1):
        # a stack of small products: one C loop, parallel over the stack
        if real is float:
            small_sgemm_batch(count, nb, shape, bs_a, bs_b, bs_c, m, n, k,
                              alpha, a, s_a[0], s_a[1], b, s_b[0], s_b[1],
                              beta, c, s_c[0], s_c[1], nt_all)
        else:
            small_dgemm_batch(count, nb, shape, bs_a, bs_b, bs_c, m, n, k,
                              alpha, a, s_a[0], s_a[1], b, s_b[0], s_b[1],
                              beta, c, s_c[0], s_c[1], nt_all)
        return 0
    if nt_stack > 1:
        # one thread per product: each runs the driver serially, which
        # therefore must never meet at a barrier (it would bind to this team)
        with parallel(num_threads=nt_stack):
            if fmm_thread_num() == 0:
                team_p[0] = fmm_team_size()
            # (static: each thread's products are consecutive, so t + 1 is
            # its own next one but at the end of its share)
            for t in prange(count, schedule="static"):
                if _product(m, n, k, alpha, a + _offset(t, nb, shape, bs_a),
                            s_a, b + _offset(t, nb, shape, bs_b), s_b, beta,
                            c + _offset(t, nb, shape, bs_c), s_c, ep, small,
                            1, _next(t, count, nb, shape, a, s_a, bs_a, b,
                                     s_b, bs_b)):
                    err_p[0] = -1
        note_region(PATH_STACK, team)
    else:
        # No region here: the driver's own would nest inside it, and a nested
        # OpenMP team gets one thread (and no pool).
        for t in range(count):
            err |= _product(m, n, k, alpha, a + _offset(t, nb, shape, bs_a),
                            s_a, b + _offset(t, nb, shape, bs_b), s_b, beta,
                            c + _offset(t, nb, shape, bs_c), s_c, ep, small,
                            nt_one, _next(t, count, nb, shape, a, s_a, bs_a,
                                          b, s_b, bs_b))
    return err


cdef int _strides(cnp.ndarray x, int core, int vec_axis, Py_ssize_t* s,
                  Py_ssize_t* bs, int nb) except -1:
    """Element strides of x's core (row, column) and its right-aligned batch.

    core: how many trailing axes are matrix axes (1 for a vector operand, whose
    missing axis gets stride 0 at position vec_axis)."""
    cdef int nd = cnp.PyArray_NDIM(x), d, xd
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(x)
    if core == 2:
        s[0] = cnp.PyArray_STRIDE(x, nd - 2) // item
        s[1] = cnp.PyArray_STRIDE(x, nd - 1) // item
    else:
        s[vec_axis] = 0
        s[1 - vec_axis] = cnp.PyArray_STRIDE(x, nd - 1) // item
    for d in range(nb):
        xd = d - (nb - (nd - core))
        if xd < 0 or cnp.PyArray_DIM(x, xd) == 1:
            bs[d] = 0
        else:
            bs[d] = cnp.PyArray_STRIDE(x, xd) // item
    return 0


cdef int run_product(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, tuple batch,
                     int core_a, int core_b, double alpha, double beta,
                     const Epilogue* ep) except -1:
    """c[batch] = alpha * a[batch] @ b[batch] + beta * c, all of c's dtype.

    core_a/core_b: 1 for a vector operand (numpy's 1-D matmul rules)."""
    cdef int nb = len(batch), d, err
    cdef Py_ssize_t shape[64]
    cdef Py_ssize_t bs_a[64]
    cdef Py_ssize_t bs_b[64]
    cdef Py_ssize_t bs_c[64]
    cdef Py_ssize_t s_a[2]
    cdef Py_ssize_t s_b[2]
    cdef Py_ssize_t s_c[2]
    cdef Py_ssize_t count = 1, m, n, k
    cdef int nd_c = cnp.PyArray_NDIM(c), core_c = nd_c - nb
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(c)
    for d in range(nb):
        shape[d] = batch[d]
        count *= shape[d]
    k = cnp.PyArray_DIM(a, cnp.PyArray_NDIM(a) - 1)
    m = cnp.PyArray_DIM(a, cnp.PyArray_NDIM(a) - 2) if core_a == 2 else 1
    n = cnp.PyArray_DIM(b, cnp.PyArray_NDIM(b) - 1) if core_b == 2 else 1
    _strides(a, core_a, 0, s_a, bs_a, nb)
    _strides(b, core_b, 1, s_b, bs_b, nb)
    # c's core axes: (m, n), (n,) or (m,) or none, as numpy drops vector axes
    s_c[0] = 0
    s_c[1] = 0
    if core_a == 2 and core_b == 2:
        s_c[0] = cnp.PyArray_STRIDE(c, nd_c - 2) // item
        s_c[1] = cnp.PyArray_STRIDE(c, nd_c - 1) // item
    elif core_a == 2:
        s_c[0] = cnp.PyArray_STRIDE(c, nd_c - 1) // item
    elif core_b == 2:
        s_c[1] = cnp.PyArray_STRIDE(c, nd_c - 1) // item
    for d in range(nb):
        bs_c[d] = cnp.PyArray_STRIDE(c, d) // item
    if count == 0 or m == 0 or n == 0:
        return 0
    if cnp.PyArray_TYPE(c) == cnp.NPY_FLOAT32:
        with nogil:
            err = _batched[float](m, n, k, <float>alpha,
                                  <float*>cnp.PyArray_DATA(a), s_a,
                                  <float*>cnp.PyArray_DATA(b), s_b, <float>beta,
                                  <float*>cnp.PyArray_DATA(c), s_c, count, nb,
                                  shape, bs_a, bs_b, bs_c, ep)
    else:
        with nogil:
            err = _batched[double](m, n, k, alpha,
                                   <double*>cnp.PyArray_DATA(a), s_a,
                                   <double*>cnp.PyArray_DATA(b), s_b, beta,
                                   <double*>cnp.PyArray_DATA(c), s_c, count, nb,
                                   shape, bs_a, bs_b, bs_c, ep)
    if err:
        raise MemoryError("fastmm: could not allocate GEMM packing buffers")
    return 0


cdef object _numpy_matmul(x1, x2, out, dict kwargs):
    try:
        if out is None:
            return _np_matmul(x1, x2, **kwargs)
        return _np_matmul(x1, x2, out=out, **kwargs)
    except ValueError as e:
        if type(e) is not ValueError:
            raise
        # numpy's gufunc messages name core dimensions, not the arrays
        shapes = f"operand shapes {_shape(x1)} and {_shape(x2)}"
        if out is not None:
            shapes += f", out shape {_shape(out)}"
        raise ValueError(f"{e} ({shapes})") from None


# numpy's first user-defined type number (NPY_USERDEF; numpy.pxd lacks it)
cdef int _NPY_USERDEF = 256


cdef bint _maybe_lowp(x1, x2, dict kwargs, precision):
    """Whether fastmm/_lowp_api.py may take the call: a keyword (int8 with
    dtype=np.int32), a precision, or two arrays of user-defined types
    (ml_dtypes' bfloat16).  Other dtypes go straight to np.matmul, without
    the ~1 us of asking it."""
    if kwargs or precision is not None:
        return True
    return (cnp.PyArray_Check(x1) and cnp.PyArray_Check(x2)
            and cnp.PyArray_TYPE(<cnp.ndarray>x1) >= _NPY_USERDEF
            and cnp.PyArray_TYPE(<cnp.ndarray>x2) >= _NPY_USERDEF)


cdef tuple _broadcast_batch(tuple sa, tuple sb):
    """np.broadcast_shapes(sa, sb) for two shapes (that function builds
    arrays to ask, ~2 us); None where they do not broadcast."""
    cdef Py_ssize_t na = len(sa), nb = len(sb), n = max(na, nb), i, da, db
    cdef list dims = [None] * n
    for i in range(n):
        da = sa[na - n + i] if i >= n - na else 1
        db = sb[nb - n + i] if i >= n - nb else 1
        if da != db and da != 1 and db != 1:
            return None
        dims[i] = db if da == 1 else da
    return tuple(dims)


cdef str _shape(x):
    try:
        return str(np.shape(x))
    except Exception:
        return type(x).__name__


cdef object _matmul_2d(cnp.ndarray a, cnp.ndarray b, object out):
    """matmul's common case, with no Python-level work: 1-D or 2-D operands
    (not both 1-D) of one native float dtype, and no ``out`` or an ``out``
    of exactly the result's type and shape that overlaps neither operand.
    None: not this case (or numpy's error to raise), take the general path."""
    cdef int t = cnp.PyArray_TYPE(a), nd_a = cnp.PyArray_NDIM(a)
    cdef int nd_b = cnp.PyArray_NDIM(b), err
    if (t != cnp.PyArray_TYPE(b)
            or (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64)
            or nd_a > 2 or nd_b > 2 or nd_a + nd_b < 3
            or not (cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a)
                    and cnp.PyArray_ISNOTSWAPPED(b)
                    and cnp.PyArray_ISALIGNED(b))):
        return None
    cdef Py_ssize_t s_a[2]
    cdef Py_ssize_t s_b[2]
    cdef Py_ssize_t s_c[2]
    cdef cnp.npy_intp dims[2]
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    cdef Py_ssize_t m = cnp.PyArray_DIM(a, 0) if nd_a == 2 else 1
    cdef Py_ssize_t k = cnp.PyArray_DIM(a, nd_a - 1)
    cdef Py_ssize_t n = cnp.PyArray_DIM(b, 1) if nd_b == 2 else 1
    if cnp.PyArray_DIM(b, 0) != k:
        return None
    # a 1-D operand is a row (a) or column (b) with a zero stride across
    s_a[0] = cnp.PyArray_STRIDE(a, 0) // item if nd_a == 2 else 0
    s_a[1] = cnp.PyArray_STRIDE(a, nd_a - 1) // item
    s_b[0] = cnp.PyArray_STRIDE(b, 0) // item
    s_b[1] = cnp.PyArray_STRIDE(b, 1) // item if nd_b == 2 else 0
    if nd_a == 2 and nd_b == 2:
        dims[0], dims[1], s_c[0], s_c[1] = m, n, n, 1
    elif nd_a == 2:
        dims[0], s_c[0], s_c[1] = m, 1, 0
    else:
        dims[0], s_c[0], s_c[1] = n, 0, 1
    cdef cnp.ndarray c
    cdef int d
    if out is None:
        c = cnp.PyArray_EMPTY(nd_a + nd_b - 2, dims, t, 0)
    else:
        if type(out) is not _ndarray:
            return None
        c = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(c) != t or cnp.PyArray_NDIM(c) != nd_a + nd_b - 2
                or not (cnp.PyArray_ISNOTSWAPPED(c) and cnp.PyArray_ISALIGNED(c)
                        and cnp.PyArray_ISWRITEABLE(c))):
            return None
        for d in range(nd_a + nd_b - 2):
            if cnp.PyArray_DIM(c, d) != dims[d] or (
                    cnp.PyArray_STRIDE(c, d) == 0 and dims[d] > 1):
                return None
        if may_overlap(c, a) or may_overlap(c, b):
            return None
        # out's own strides, in elements, on the axes it has
        if nd_a == 2 and nd_b == 2:
            s_c[0] = cnp.PyArray_STRIDE(c, 0) // item
            s_c[1] = cnp.PyArray_STRIDE(c, 1) // item
        elif nd_a == 2:
            s_c[0] = cnp.PyArray_STRIDE(c, 0) // item
        else:
            s_c[1] = cnp.PyArray_STRIDE(c, 0) // item
    if m == 0 or n == 0:
        return c
    if t == cnp.NPY_FLOAT32:
        with nogil:
            err = _batched[float](m, n, k, 1, <float*>cnp.PyArray_DATA(a), s_a,
                                  <float*>cnp.PyArray_DATA(b), s_b, 0,
                                  <float*>cnp.PyArray_DATA(c), s_c, 1, 0,
                                  NULL, NULL, NULL, NULL, NULL)
    else:
        with nogil:
            err = _batched[double](m, n, k, 1,
                                   <double*>cnp.PyArray_DATA(a), s_a,
                                   <double*>cnp.PyArray_DATA(b), s_b, 0,
                                   <double*>cnp.PyArray_DATA(c), s_c, 1, 0,
                                   NULL, NULL, NULL, NULL, NULL)
    if err:
        raise MemoryError("fastmm: could not allocate GEMM packing buffers")
    return c


def matmul(x1, x2, out=None, *, device=None, precision=None, **kwargs):
    """Matrix product with exactly np.matmul's semantics.

    float32/float64 operands (and their mixes, promoted as numpy promotes)
    run on fastmm's blocked, multi-threaded kernels; int8/uint8 operands with
    ``dtype=np.int32`` and ml_dtypes.bfloat16 operands on its low-precision
    kernels (see fastmm/_lowp_api.py); every other input is passed to
    np.matmul unchanged.

    Parameters
    ----------
    x1, x2 : array_like
        The operands, as for np.matmul: stacks of matrices broadcast over
        their batch dimensions; a 1-D operand is a vector.
    out : ndarray, optional
        Receives the result; positional or keyword, any strides, and
        returned as given.
    device : {None, "cpu", "cuda"}, optional
        ``"cuda"`` runs :func:`fastmm.cuda.matmul` instead (and takes no
        other keywords); None or ``"cpu"``: here.
    precision : {None, "highest", "bf16"}, optional
        ``"bf16"`` rounds float32 operands to bfloat16 while packing and
        accumulates in float32 (error within ``k * 2**-8 * (|A| @ |B|)``);
        None or ``"highest"``: the ordinary float32/float64 product.
    **kwargs
        np.matmul's keywords; ``dtype=np.int32`` with int8/uint8 operands
        selects the exact int32 product, ``dtype`` bfloat16 a bfloat16
        result.  Other keywords are handed to np.matmul with the operands.

    Returns
    -------
    ndarray or scalar
        ``out`` if given, else a new array (a scalar for two vectors).

    Raises
    ------
    ValueError, TypeError
        As np.matmul raises them, with numpy's wording; ValueError for an
        unknown ``device`` or ``precision``.
    """
    cdef object r
    if device is not None and device != "cpu":
        if device != "cuda":
            raise ValueError(f"matmul: device must be None, 'cpu' or 'cuda', "
                             f"got {device!r}")
        if kwargs:
            raise TypeError(f"matmul: device='cuda' takes no ufunc keywords "
                            f"(got {sorted(kwargs)})")
        from fastmm.cuda import matmul as cuda_matmul   # numba only now
        return cuda_matmul(x1, x2, out=out)
    if (precision is None and not kwargs and type(x1) is _ndarray
            and type(x2) is _ndarray):
        r = _matmul_2d(<cnp.ndarray>x1, <cnp.ndarray>x2, out)
        if r is not None:
            return r
    if precision is not None and _check_precision(precision) == "highest":
        precision = None
    if type(x1) is list or type(x1) is tuple:
        x1 = np.asarray(x1)
    if type(x2) is list or type(x2) is tuple:
        x2 = np.asarray(x2)
    x1 = aligned(x1)
    x2 = aligned(x2)
    if type(out) is tuple and len(<tuple>out) == 1:
        out = (<tuple>out)[0]
    if kwargs or precision is not None or not (native_float(x1)
                                               and native_float(x2)):
        if _maybe_lowp(x1, x2, kwargs, precision):
            r = _lowp_matmul(x1, x2, out, kwargs, precision)
            if r is not NotImplemented:
                return r
        return _numpy_matmul(x1, x2, out, kwargs)
    cdef cnp.ndarray a = <cnp.ndarray>x1, b = <cnp.ndarray>x2, c, target
    cdef int nd_a = cnp.PyArray_NDIM(a), nd_b = cnp.PyArray_NDIM(b)
    if nd_a == 0 or nd_b == 0:
        return _numpy_matmul(x1, x2, out, kwargs)   # numpy's error
    dtype = _f64 if (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
                     or cnp.PyArray_TYPE(b) == cnp.NPY_FLOAT64) else _f32
    if out is not None and not (native_float(out) and out.dtype == dtype
                                and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        return _numpy_matmul(x1, x2, out, kwargs)   # casting or numpy's error
    cdef int core_a = 2 if nd_a >= 2 else 1, core_b = 2 if nd_b >= 2 else 1
    cdef tuple shape_a = x1.shape, shape_b = x2.shape
    cdef Py_ssize_t ka = shape_a[nd_a - 1]
    cdef Py_ssize_t kb = shape_b[nd_b - 2] if core_b == 2 else shape_b[0]
    if ka != kb:
        _raise_numpy_error(x1, x2)
    cdef tuple batch = ()
    if nd_a > 2 or nd_b > 2:
        batch = _broadcast_batch(shape_a[:nd_a - core_a],
                                 shape_b[:nd_b - core_b])
        if batch is None:
            _raise_numpy_error(x1, x2)
    shape = batch
    if core_a == 2:
        shape += (shape_a[nd_a - 2],)
    if core_b == 2:
        shape += (shape_b[nd_b - 1],)
    if out is not None and (out.shape != shape or writes_twice(out)):
        return _numpy_matmul(x1, x2, out, kwargs)   # numpy's error or aliasing
    if a.dtype != dtype:
        a = a.astype(dtype)
    if b.dtype != dtype:
        b = b.astype(dtype)
    if out is None:
        c = target = np.empty(shape, dtype)
    else:
        c = <cnp.ndarray>out
        overlaps = may_overlap(c, a) or may_overlap(c, b)
        target = np.empty(shape, dtype) if overlaps else c
    run_product(a, b, target, batch, core_a, core_b, 1.0, 0.0, NULL)
    if target is not c:
        _copyto(c, target)
    if out is not None:
        return out
    if len(shape) == 0:
        return c[()]
    return c


from fastmm._lowp_api import (matmul as _lowp_matmul,
                              check_precision as _check_precision)


cdef _raise_numpy_error(x1, x2):
    """Raise the error np.matmul raises for these operands, naming the shapes."""
    _numpy_matmul(x1, x2, None, {})
    raise AssertionError("np.matmul accepted operands fastmm rejected")
