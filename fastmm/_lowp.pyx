# cython: language_level=3, boundscheck=False, wraparound=False
"""Low-precision products on kernels/lowp.h: int8/uint8 -> int32 (exact,
wrapping like numpy's int32 matmul) and bfloat16 -> float32.

Entry points take 2-D operands of any strides and a preallocated 2-D output;
fastmm/_lowp_api.py does numpy's dtype, shape and broadcasting rules around
them, and fastmm/nn/quantized.py passes its layers' write-back (dequantize,
bias, activation) to run on each finished tile (driver/_lowp.h).
"""
cimport numpy as cnp

from fastmm.driver._threads cimport threads_for, note_region, PATH_LOWP

cnp.import_array()

cdef extern from "driver/_lowp.h" nogil:
    enum:
        FMM_SRC_I8
        FMM_SRC_U8
        FMM_SRC_BF16
        FMM_SRC_F32
    ctypedef struct fmm_lp_epilogue_t:
        const float* row_scale
        const float* col_scale
        const float* bias
        int act
        float slope
    ctypedef struct fmm_lp_problem_t:
        int bf16
        int kind_a, kind_b
        const char* a
        const char* b
        Py_ssize_t rs_a, cs_a, rs_b, cs_b
        char* c
        Py_ssize_t rs_c, cs_c
        Py_ssize_t k
        const fmm_lp_epilogue_t* ep
    ctypedef struct fmm_lp_kernels_t:
        const char* i8_name
        const char* bf_name
        double i8_cost
        double bf_cost
    int fmm_lp_gemm(const fmm_lp_problem_t* P, Py_ssize_t m, Py_ssize_t n,
                    int nt)
    void fmm_lp_select(const char* isa)
    int fmm_lp_amx_allowed
    int fmm_lp_amx_runnable()
    long fmm_lp_amx_parts
    const fmm_lp_kernels_t* fmm_lp_kernels()
    const char* fmm_act_select(const char* isa)
    void fmm_lp_quantize_rows(const float* x, Py_ssize_t rs, Py_ssize_t m,
                              Py_ssize_t k, signed char* q, Py_ssize_t rs_q,
                              float* scale)
    void* (*fmm_lp_scratch_get)(size_t) noexcept nogil
    void (*fmm_lp_scratch_release)(void*, size_t) noexcept nogil

from fastmm.driver._packed cimport scratch_get, scratch_release

# packing buffers from the float driver's per-thread scratch
fmm_lp_scratch_get = scratch_get
fmm_lp_scratch_release = scratch_release

KINDS = {"int8": FMM_SRC_I8, "uint8": FMM_SRC_U8, "bfloat16": FMM_SRC_BF16,
         "float32": FMM_SRC_F32}


def select_lowp(name):
    """Follow kernel family ``name`` ("avx512": VNNI / BF16 where the CPU has
    them; anything else: portable C).  fastmm.driver._context.select_kernel
    calls it."""
    cdef bytes key = name.encode()
    fmm_lp_select(key)
    fmm_act_select(key)      # this module's copy of the write-back's ISA
    return lowp_kernels()


def amx_available():
    """Whether this build has AMX kernels and this CPU and OS run them."""
    return bool(fmm_lp_amx_runnable())


def amx_parts():
    """Test hook: how many products (or thread shares of one) the calling
    thread has run on AMX tiles."""
    return fmm_lp_amx_parts


def allow_amx(bint allowed, family):
    """Take the AMX kernels where the CPU has them (``allowed``, the
    default) or the AVX-512 ones; re-selects the kernels for kernel family
    ``family`` (the one in force), as select_lowp.  Tests run both."""
    global fmm_lp_amx_allowed
    fmm_lp_amx_allowed = allowed
    return select_lowp(family)


def lowp_kernels():
    """{"int8": kernel name, "bfloat16": kernel name} in use."""
    cdef const fmm_lp_kernels_t* k = fmm_lp_kernels()
    return {"int8": k.i8_name.decode(), "bfloat16": k.bf_name.decode()}


cdef const float* _vector(x, Py_ssize_t n, str what) except? NULL:
    """The data of a contiguous float32 vector of n elements (None: NULL)."""
    if x is None:
        return NULL
    if not (isinstance(x, cnp.ndarray) and (<cnp.ndarray>x).dtype.num
            == cnp.NPY_FLOAT32 and (<cnp.ndarray>x).ndim == 1
            and cnp.PyArray_DIM(x, 0) == n
            and cnp.PyArray_IS_C_CONTIGUOUS(x)):
        raise ValueError(f"{what} must be a contiguous float32 vector of "
                         f"{n} elements")
    return <const float*>cnp.PyArray_DATA(x)


def gemm_lowp(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, str kind_a,
              str kind_b, row_scale=None, col_scale=None, bias=None,
              int act=0, float slope=0):
    """c := a @ b.  a (m, k), b (k, n): kinds "int8"/"uint8" (c int32) or
    "bfloat16"/"float32" (c float32; float32 is rounded to bfloat16).  c may
    not overlap a or b; any strides (c's a multiple of its itemsize).

    A dense layer's write-back, on each tile as it is finished: with
    row_scale (m,) and col_scale (n,) (int8 operands; c float32),
    c := float32(a @ b) * row_scale[:, None] * col_scale; then with bias
    (n,) c += bias, and the activation code ``act`` (fastmm.nn._ops.CODES,
    softmax excepted) with ``slope``."""
    cdef fmm_lp_problem_t P
    cdef fmm_lp_epilogue_t E
    cdef Py_ssize_t m = cnp.PyArray_DIM(c, 0), n = cnp.PyArray_DIM(c, 1)
    cdef int team, nt
    P.kind_a = KINDS[kind_a]
    P.kind_b = KINDS[kind_b]
    P.bf16 = P.kind_a >= FMM_SRC_BF16
    if P.bf16 != (P.kind_b >= FMM_SRC_BF16):
        raise TypeError(f"cannot mix {kind_a} and {kind_b} operands")
    P.ep = NULL
    if (row_scale is None) != (col_scale is None) or (
            row_scale is not None and P.bf16):
        raise ValueError("row_scale and col_scale go together, with int8 "
                         "operands")
    if row_scale is not None or bias is not None or act != 0:
        if c.dtype.num != cnp.NPY_FLOAT32:
            raise TypeError("a write-back needs a float32 output")
        if not 0 <= act < 64:
            raise ValueError(f"unknown activation code {act}")
        E.row_scale = _vector(row_scale, m, "row_scale")
        E.col_scale = _vector(col_scale, n, "col_scale")
        E.bias = _vector(bias, n, "bias")
        E.act = act
        E.slope = slope
        P.ep = &E
    P.a = <const char*>cnp.PyArray_DATA(a)
    P.b = <const char*>cnp.PyArray_DATA(b)
    P.c = <char*>cnp.PyArray_DATA(c)
    P.rs_a, P.cs_a = cnp.PyArray_STRIDE(a, 0), cnp.PyArray_STRIDE(a, 1)
    P.rs_b, P.cs_b = cnp.PyArray_STRIDE(b, 0), cnp.PyArray_STRIDE(b, 1)
    P.rs_c = cnp.PyArray_STRIDE(c, 0) // 4
    P.cs_c = cnp.PyArray_STRIDE(c, 1) // 4
    P.k = cnp.PyArray_DIM(a, 1)
    # an int8 or bfloat16 multiply-add costs a kernel-dependent fraction (or
    # multiple) of a float32 FMA: threads pay back later or sooner
    cdef const fmm_lp_kernels_t* K = fmm_lp_kernels()
    nt = threads_for(2.0 * m * n * P.k * (K.bf_cost if P.bf16 else K.i8_cost))
    with nogil:
        team = fmm_lp_gemm(&P, m, n, nt)
    if team < 0:
        raise MemoryError("fastmm: no memory for the packed panels")
    note_region(PATH_LOWP, team)
    return c


def quantize_rows(cnp.ndarray x, cnp.ndarray x_q, cnp.ndarray scale):
    """x_q, scale := per-row int8 quantization of x (driver/_lowp.h states
    the scheme).  x float32 (m, k) and x_q int8 (m, k), each with unit column
    stride; scale float32 (m,) contiguous."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(x, 0), k = cnp.PyArray_DIM(x, 1)
    if not (x.dtype.num == cnp.NPY_FLOAT32 and x_q.dtype.num == cnp.NPY_INT8
            and scale.dtype.num == cnp.NPY_FLOAT32 and x.ndim == 2
            and x_q.ndim == 2 and scale.ndim == 1
            and cnp.PyArray_DIM(x_q, 0) == m and cnp.PyArray_DIM(x_q, 1) == k
            and cnp.PyArray_DIM(scale, 0) == m
            and (k < 2 or m == 0 or (cnp.PyArray_STRIDE(x, 1) == 4
                           and cnp.PyArray_STRIDE(x_q, 1) == 1))
            and cnp.PyArray_IS_C_CONTIGUOUS(scale)
            and cnp.PyArray_STRIDE(x, 0) % 4 == 0):
        raise ValueError("quantize_rows takes float32 x (m, k) and int8 x_q "
                         "(m, k) with unit column strides, float32 scale (m,)")
    with nogil:
        fmm_lp_quantize_rows(<const float*>cnp.PyArray_DATA(x),
                             cnp.PyArray_STRIDE(x, 0) // 4, m, k,
                             <signed char*>cnp.PyArray_DATA(x_q),
                             cnp.PyArray_STRIDE(x_q, 0),
                             <float*>cnp.PyArray_DATA(scale))
    return x_q, scale


from fastmm.driver._context import kernel_info as _kernel_info
select_lowp(_kernel_info()["name"])
