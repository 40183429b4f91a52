# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled pieces of fastmm.nn: the dense layer's forward and backward.

No GEMM code lives here.  Forward hands the driver an Epilogue (bias and
activation applied to each finished tile on the last k block, so y is written
once); backward runs one pass over dy for the activation's derivative and the
bias gradient, then two products through the same driver with transposed
*views* (the driver reads any strides, so w.T and x.T cost nothing).

Softmax is the exception to the epilogue: it needs a whole row (its maximum
and its sum) and a tile holds only NR columns of it, so it runs as a row-wise
pass right after the GEMM, while the rows are still warm in cache.

Callers (fastmm/nn/__init__.py) validate: every array is a native-order,
aligned ndarray of one dtype, float32 or float64, with the shapes given below.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.math cimport exp

from fastmm.driver._pack cimport real
from fastmm.nn._epilogue cimport (Epilogue, activate, activation_grad,
                               fmm_act_select,
                               fmm_act_tile_f32, fmm_act_tile_f64,
                               fmm_expf_neg, fmm_softmax_row_f32,
                               fmm_softmax_row_f64,
                               ACT_NONE, ACT_RELU, ACT_LEAKY_RELU, ACT_SIGMOID,
                               ACT_TANH, ACT_GELU_TANH, ACT_GELU_ERF)
from fastmm._linalg cimport run_product
from fastmm.driver._threads cimport threads_for

cnp.import_array()


def _select_activation_isa(name):
    """This module's copy of the activation routines' ISA choice (see
    fastmm.driver._context.select_kernel, which calls it)."""
    cdef bytes key = name.encode()
    return fmm_act_select(key).decode()


from fastmm.driver._context import kernel_info as _kernel_info
_select_activation_isa(_kernel_info()["name"])

cdef enum:
    # not an epilogue code: the driver never sees it (see the module docstring)
    ACT_SOFTMAX = 64

# name -> code; fastmm.nn owns the names users see and their validation
CODES = {"identity": ACT_NONE, "relu": ACT_RELU, "leaky_relu": ACT_LEAKY_RELU,
         "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH, "gelu": ACT_GELU_ERF,
         "gelu_tanh": ACT_GELU_TANH, "softmax": ACT_SOFTMAX}


cdef inline Py_ssize_t _st(cnp.ndarray a, int axis):
    """Stride of ``a`` along ``axis`` in elements."""
    return cnp.PyArray_STRIDE(a, axis) // cnp.PyArray_ITEMSIZE(a)


cdef inline double _cost(int act, bint from_z) noexcept nogil:
    """Rough flops per element, for threads_for: transcendentals cost ~20."""
    if act == ACT_GELU_TANH or act == ACT_GELU_ERF or act == ACT_SOFTMAX:
        return 20.0
    if from_z and (act == ACT_SIGMOID or act == ACT_TANH):
        return 20.0
    return 4.0


# ---- row-wise passes (softmax, a standalone activation) ----

cdef void _softmax_row(Py_ssize_t n, real* y, Py_ssize_t cs) noexcept nogil:
    # unit-stride rows: the vectorized routine in _activation.h; otherwise
    # the same steps, plainly (max first, so every exp() argument is <= 0)
    cdef Py_ssize_t j
    cdef real mx = y[0], inv
    cdef double s = 0
    if cs == 1:
        if real is float:
            fmm_softmax_row_f32(y, n)
        else:
            fmm_softmax_row_f64(y, n)
        return
    for j in range(1, n):
        if y[j * cs] > mx:
            mx = y[j * cs]
    for j in range(n):
        y[j * cs] = (fmm_expf_neg(y[j * cs] - mx) if real is float
                     else exp(y[j * cs] - mx))
        s += y[j * cs]
    inv = <real>(1.0 / s)
    for j in range(n):
        y[j * cs] = y[j * cs] * inv


cdef void _softmax(Py_ssize_t m, Py_ssize_t n, real* y, Py_ssize_t rs,
                   Py_ssize_t cs, int nt) noexcept nogil:
    cdef Py_ssize_t i
    if n == 0:
        return
    if nt <= 1:     # no parallel region: entering one costs ~1 us
        for i in range(m):
            _softmax_row(n, y + i * rs, cs)
        return
    for i in prange(m, nogil=True, num_threads=nt, schedule="static"):
        _softmax_row(n, y + i * rs, cs)


cdef void _activate_row(Py_ssize_t n, const real* z, Py_ssize_t cs_z, real* y,
                        Py_ssize_t cs_y, int act, double slope) noexcept nogil:
    cdef Py_ssize_t j
    if cs_y != 1:
        for j in range(n):
            y[j * cs_y] = activate(z[j * cs_z], act, slope)
        return
    if y != z:
        for j in range(n):
            y[j] = z[j * cs_z]
    # in place on a unit-stride row: the epilogue's vectorized routine
    if real is float:
        fmm_act_tile_f32(y, 0, 1, n, NULL, act, <float>slope)
    else:
        fmm_act_tile_f64(y, 0, 1, n, NULL, act, slope)


cdef void _activate(Py_ssize_t m, Py_ssize_t n, const real* z, Py_ssize_t rs_z,
                    Py_ssize_t cs_z, real* y, Py_ssize_t rs_y, Py_ssize_t cs_y,
                    int act, double slope, int nt) noexcept nogil:
    cdef Py_ssize_t i
    if nt <= 1:     # as in _softmax
        for i in range(m):
            _activate_row(n, z + i * rs_z, cs_z, y + i * rs_y, cs_y, act,
                          slope)
        return
    for i in prange(m, nogil=True, num_threads=nt, schedule="static"):
        _activate_row(n, z + i * rs_z, cs_z, y + i * rs_y, cs_y, act, slope)


def forward(cnp.ndarray x, cnp.ndarray w, b, cnp.ndarray y, int act,
            double slope):
    """y = act(x @ w + b): x (m, k), w (k, n), b (n,) or None, y (m, n)."""
    cdef Epilogue ep
    cdef Epilogue* ep_ptr = &ep
    cdef cnp.ndarray bias
    cdef Py_ssize_t m = cnp.PyArray_DIM(y, 0), n = cnp.PyArray_DIM(y, 1)
    ep.bias = NULL
    ep.bias_stride = 1
    ep.activation = ACT_NONE if act == ACT_SOFTMAX else act
    ep.slope = slope
    ep.bias_along_rows = False
    if b is not None:
        bias = <cnp.ndarray>b
        ep.bias = cnp.PyArray_DATA(bias)
        ep.bias_stride = _st(bias, 0)
    if ep.bias == NULL and ep.activation == ACT_NONE:
        ep_ptr = NULL
    run_product(x, w, y, (), 2, 2, 1.0, 0.0, ep_ptr)
    if act == ACT_SOFTMAX:
        apply_activation(y, y, act, slope)
    return y


def apply_activation(cnp.ndarray z, cnp.ndarray y, int act, double slope):
    """y = act(z) for 2-D z and y of one shape (y may be z: in place)."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(z, 0), n = cnp.PyArray_DIM(z, 1)
    cdef Py_ssize_t rs_z = _st(z, 0), cs_z = _st(z, 1)
    cdef Py_ssize_t rs_y = _st(y, 0), cs_y = _st(y, 1)
    cdef int nt = threads_for(m * n * _cost(act, True))
    cdef int elementwise = ACT_NONE if act == ACT_SOFTMAX else act
    cdef bint copy = elementwise != ACT_NONE or y is not z
    if cnp.PyArray_TYPE(z) == cnp.NPY_FLOAT32:
        with nogil:
            if copy:
                _activate[float](m, n, <float*>cnp.PyArray_DATA(z), rs_z, cs_z,
                                 <float*>cnp.PyArray_DATA(y), rs_y, cs_y,
                                 elementwise, slope, nt)
            if act == ACT_SOFTMAX:
                _softmax[float](m, n, <float*>cnp.PyArray_DATA(y), rs_y, cs_y,
                                nt)
    else:
        with nogil:
            if copy:
                _activate[double](m, n, <double*>cnp.PyArray_DATA(z), rs_z,
                                  cs_z, <double*>cnp.PyArray_DATA(y), rs_y,
                                  cs_y, elementwise, slope, nt)
            if act == ACT_SOFTMAX:
                _softmax[double](m, n, <double*>cnp.PyArray_DATA(y), rs_y,
                                 cs_y, nt)
    return y


# ---- backward: g = dy * act'(.) and db = column sums of g, in one pass ----

cdef inline Py_ssize_t _row_block(Py_ssize_t m) noexcept nogil:
    # Fixed by m alone, never by the thread count: db's summation order, and
    # so every bit of db, is the same for any number of threads.  At most
    # ~256 blocks bounds the partial sums' memory.
    return max(64, (m + 255) // 256)


cdef inline void _grad_row(Py_ssize_t n, const real* dy, Py_ssize_t cs_dy,
                           const real* v, Py_ssize_t cs_v, int act,
                           double slope, bint from_z, real* g,
                           real* part) noexcept nogil:
    """One row: g = dy * act'(v) and part += g (v is y, or z if from_z).
    Unit-stride cases are separate loops so the compiler vectorizes them."""
    cdef Py_ssize_t j
    cdef real gj
    cdef double dot = 0
    if act == ACT_NONE and cs_dy == 1:
        for j in range(n):
            part[j] += dy[j]
    elif act == ACT_NONE:
        for j in range(n):
            part[j] += dy[j * cs_dy]
    elif act == ACT_SOFTMAX:
        # dz = y * (dy - <dy, y>): the Jacobian of softmax is row-local
        for j in range(n):
            dot += <double>dy[j * cs_dy] * v[j * cs_v]
        for j in range(n):
            gj = v[j * cs_v] * (dy[j * cs_dy] - <real>dot)
            g[j] = gj
            part[j] += gj
    elif act == ACT_RELU and cs_dy == 1 and cs_v == 1:
        for j in range(n):
            gj = dy[j] * (<real>1 if v[j] > 0 else <real>0)
            g[j] = gj
            part[j] += gj
    elif act == ACT_LEAKY_RELU and cs_dy == 1 and cs_v == 1:
        for j in range(n):
            gj = dy[j] * (<real>1 if v[j] > 0 else <real>slope)
            g[j] = gj
            part[j] += gj
    elif act == ACT_SIGMOID and not from_z and cs_dy == 1 and cs_v == 1:
        for j in range(n):
            gj = dy[j] * (v[j] * (1 - v[j]))
            g[j] = gj
            part[j] += gj
    elif act == ACT_TANH and not from_z and cs_dy == 1 and cs_v == 1:
        for j in range(n):
            gj = dy[j] * (1 - v[j] * v[j])
            g[j] = gj
            part[j] += gj
    else:
        for j in range(n):
            gj = dy[j * cs_dy] * activation_grad(v[j * cs_v], act, slope,
                                                 from_z)
            g[j] = gj
            part[j] += gj


cdef void _grad_block(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n,
                      const real* dy, Py_ssize_t rs_dy, Py_ssize_t cs_dy,
                      const real* v, Py_ssize_t rs_v, Py_ssize_t cs_v,
                      int act, double slope, bint from_z, real* g,
                      real* part) noexcept nogil:
    cdef Py_ssize_t i
    memset(part, 0, n * sizeof(real))
    for i in range(i0, i1):
        _grad_row(n, dy + i * rs_dy, cs_dy,
                  v + i * rs_v if v != NULL else NULL, cs_v, act, slope,
                  from_z, g + i * n if g != NULL else NULL, part)


cdef int _grad_colsum(Py_ssize_t m, Py_ssize_t n,
                      const real* dy, Py_ssize_t rs_dy, Py_ssize_t cs_dy,
                      const real* v, Py_ssize_t rs_v, Py_ssize_t cs_v,
                      int act, double slope, bint from_z, real* g,
                      real* db, Py_ssize_t s_db, int nt) noexcept nogil:
    """g (C-contiguous m x n, unused for identity) and db, parallel over
    row blocks with one row of partial sums per block (in the data's type,
    so the row loops vectorize), added across blocks in double."""
    cdef Py_ssize_t rb = _row_block(m), nblocks = (m + rb - 1) // rb
    cdef Py_ssize_t blk, j
    cdef double s
    cdef real* part
    if n == 0:
        return 0
    if m == 0:
        for j in range(n):
            db[j * s_db] = 0
        return 0
    part = <real*>malloc(sizeof(real) * nblocks * n)
    if part == NULL:
        return -1
    if nt <= 1:     # as in _softmax
        for blk in range(nblocks):
            _grad_block(blk * rb, min(m, (blk + 1) * rb), n, dy, rs_dy, cs_dy,
                        v, rs_v, cs_v, act, slope, from_z, g, part + blk * n)
    else:
        for blk in prange(nblocks, nogil=True, num_threads=nt,
                          schedule="static"):
            _grad_block(blk * rb, min(m, (blk + 1) * rb), n, dy, rs_dy,
                        cs_dy, v, rs_v, cs_v, act, slope, from_z, g,
                        part + blk * n)
    # blocks in order: the reduction order does not depend on the threads
    for j in range(n):
        s = 0
        for blk in range(nblocks):
            s += part[blk * n + j]
        db[j * s_db] = <real>s
    free(part)
    return 0


def backward(cnp.ndarray x, cnp.ndarray w, cnp.ndarray dy, v, bint from_z,
             int act, double slope, dx, cnp.ndarray dw, cnp.ndarray db):
    """Gradients of y = act(x @ w + b) given dy = dL/dy.

    v: y (or z, the pre-activation, when from_z), of dy's shape; None for
    identity.  dx (m, k) or None (not needed), dw (k, n), db (n,).
    Returns g = dL/dz (dy itself for identity).
    """
    cdef Py_ssize_t m = cnp.PyArray_DIM(dy, 0), n = cnp.PyArray_DIM(dy, 1)
    cdef Py_ssize_t rs_v = 0, cs_v = 0
    cdef void* v_data = NULL
    cdef void* g_data = NULL
    cdef cnp.ndarray g = dy, vv
    cdef int err, nt = threads_for(m * n * _cost(act, from_z))
    if act != ACT_NONE:
        vv = <cnp.ndarray>v
        v_data = cnp.PyArray_DATA(vv)
        rs_v, cs_v = _st(vv, 0), _st(vv, 1)
        g = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(dy), cnp.PyArray_TYPE(dy), 0)
        g_data = cnp.PyArray_DATA(g)
    cdef Py_ssize_t rs_dy = _st(dy, 0), cs_dy = _st(dy, 1), s_db = _st(db, 0)
    if cnp.PyArray_TYPE(dy) == cnp.NPY_FLOAT32:
        with nogil:
            err = _grad_colsum[float](
                m, n, <float*>cnp.PyArray_DATA(dy), rs_dy, cs_dy,
                <float*>v_data, rs_v, cs_v, act, slope, from_z,
                <float*>g_data, <float*>cnp.PyArray_DATA(db), s_db, nt)
    else:
        with nogil:
            err = _grad_colsum[double](
                m, n, <double*>cnp.PyArray_DATA(dy), rs_dy, cs_dy,
                <double*>v_data, rs_v, cs_v, act, slope, from_z,
                <double*>g_data, <double*>cnp.PyArray_DATA(db), s_db, nt)
    if err:
        raise MemoryError("fastmm.nn: could not allocate the bias-gradient "
                          "partial sums")
    # dx = g @ w.T and dw = x.T @ g: transposed views, read in place
    if dx is not None:
        run_product(g, w.T, <cnp.ndarray>dx, (), 2, 2, 1.0, 0.0, NULL)
    run_product(x.T, g, dw, (), 2, 2, 1.0, 0.0, NULL)
    return g


# ---- optimizer ----

cdef void _sgd(Py_ssize_t size, real* p, const real* g, real* v, real lr,
               real momentum, bint nesterov, real decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef real gi
    for i in range(size):
        gi = g[i] + decay * p[i]
        v[i] = momentum * v[i] - lr * gi
        p[i] = p[i] + (momentum * v[i] - lr * gi if nesterov else v[i])


def sgd_step(cnp.ndarray p, cnp.ndarray g, cnp.ndarray v, double lr,
             double momentum, bint nesterov, double weight_decay):
    """v = momentum v - lr (g + weight_decay p); p += v (Nesterov:
    p += momentum v - lr (g + weight_decay p)).  C-contiguous, one dtype."""
    cdef Py_ssize_t size = cnp.PyArray_SIZE(p)
    if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT32:
        _sgd[float](size, <float*>cnp.PyArray_DATA(p),
                    <float*>cnp.PyArray_DATA(g), <float*>cnp.PyArray_DATA(v),
                    lr, momentum, nesterov, weight_decay)
    else:
        _sgd[double](size, <double*>cnp.PyArray_DATA(p),
                     <double*>cnp.PyArray_DATA(g),
                     <double*>cnp.PyArray_DATA(v),
                     lr, momentum, nesterov, weight_decay)
