# cython: language_level=3, boundscheck=False, wraparound=False
"""fastmm.gemm: the BLAS ?gemm convention (alpha, beta, transposes) on top of
the one product entry point, fastmm._linalg.run_product."""
import numpy as np
cimport numpy as cnp

from fastmm._linalg cimport run_product
from fastmm._arrays cimport native_float, writes_twice, may_overlap

cnp.import_array()

cdef object _f32 = np.dtype(np.float32)
cdef object _f64 = np.dtype(np.float64)
cdef object _copyto = np.copyto


cdef object _gemm_dtype(arrays):
    dtype = np.result_type(*arrays)
    if dtype.kind in "biuf":
        # integers and float16 compute in the narrowest kernel type holding them
        dtype = np.promote_types(dtype, np.float32)
        if dtype == _f32 or dtype == _f64:
            return dtype
    raise TypeError(f"fastmm.gemm supports real floating-point arrays "
                    f"(float32, float64); got {dtype}")


cdef double _real_scalar(x, str name) except? -1:
    """alpha or beta as a double: a real number (Python, numpy, 0-d array)."""
    if type(x) is float:          # the common cases, without a 0-d array
        return <double>x
    if type(x) is int and -2**53 <= x <= 2**53:
        return <double>x
    v = np.asarray(x)
    if v.ndim != 0:
        raise TypeError(f"gemm: {name} must be a real scalar, got an array of "
                        f"shape {v.shape}")
    if v.dtype.kind not in "biuf":
        raise TypeError(f"gemm: {name} must be a real scalar, got {x!r}")
    return float(v)


cdef inline bint _kernel_type(object x) noexcept:
    """x is an exact ndarray of float32 or float64 (any byte order)."""
    if not cnp.PyArray_CheckExact(x):
        return False
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>x)
    return t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64


cdef object _result_dtype(cnp.ndarray a, cnp.ndarray b, object c):
    """The dtype gemm computes in: float32 when every operand is float32
    or narrower (float16, bool, 8- and 16-bit integers), float64 otherwise
    (see _gemm_dtype); arrays already float32 or float64 are decided
    without np.result_type (most of a small gemm's cost)."""
    if _kernel_type(a) and _kernel_type(b) and (c is None or _kernel_type(c)):
        if (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
                and cnp.PyArray_TYPE(b) == cnp.NPY_FLOAT32
                and (c is None or cnp.PyArray_TYPE(<cnp.ndarray>c)
                     == cnp.NPY_FLOAT32)):
            return _f32
        return _f64
    return _gemm_dtype([a.dtype, b.dtype] + ([np.asarray(c).dtype]
                                             if c is not None else []))


cdef cnp.ndarray _empty(Py_ssize_t m, Py_ssize_t n, object dtype):
    """np.empty((m, n), dtype) for float32/float64, without the Python call."""
    cdef cnp.npy_intp dims[2]
    dims[0] = m
    dims[1] = n
    return cnp.PyArray_EMPTY(2, dims, (<cnp.dtype>dtype).type_num, 0)


cdef cnp.ndarray _operand(x, dtype):
    """x as an array fastmm's kernels can read in place, copying only if not."""
    if native_float(x) and x.dtype == dtype:
        return <cnp.ndarray>x
    # np.asarray keeps an unaligned array of the right dtype as it is
    return np.require(np.asarray(x, dtype=dtype), requirements="A")


def gemm(alpha, a, b, beta=0.0, c=None, trans_a=False, trans_b=False,
         overwrite_c=False):
    """C := alpha * op(A) @ op(B) + beta * C, as scipy.linalg.blas.?gemm.

    float32 when every operand is float32 or a type float32 holds exactly
    (float16, bool, 8- and 16-bit integers: numpy's promotion with
    float32), float64 otherwise.  When
    beta == 0, C is not read (NaN in C does not leak); when alpha == 0, A
    and B are not read.

    Parameters
    ----------
    alpha, beta : float
        Real scalars.
    a, b : array_like
        2-D real floating-point arrays.
    c : array_like, optional
        2-D, the shape of op(A) @ op(B); not read when beta == 0.
    trans_a, trans_b : bool or int, optional
        op(X) is X, or X.T when trans_x is true (1 or 2, as in BLAS; for
        real data both mean the transpose).
    overwrite_c : bool, optional
        With True and a writeable ``c`` of the result's dtype the update is
        in place and ``c`` is returned.

    Returns
    -------
    ndarray
        ``c`` when updated in place, otherwise a new array.

    Raises
    ------
    ValueError
        Operands that are not 2-D or whose shapes do not fit.
    TypeError
        Complex or non-numeric operands, or an array given as a scalar.
    """
    alpha = _real_scalar(alpha, "alpha")
    beta = _real_scalar(beta, "beta")
    if not cnp.PyArray_CheckExact(a):
        a = np.asarray(a)
    if not cnp.PyArray_CheckExact(b):
        b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: a and b must be 2-D, got shapes {a.shape} "
                         f"and {b.shape}")
    dtype = _result_dtype(a, b, c)
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    m, k = op_a.shape
    k2, n = op_b.shape
    if k != k2:
        raise ValueError(f"gemm: op(a) has shape {op_a.shape} and op(b) has "
                         f"shape {op_b.shape}: inner dimensions {k} and {k2} "
                         f"differ")
    if c is None:
        beta = 0.0
        target = _empty(m, n, dtype)
    else:
        c_shape = (<object>c).shape if cnp.PyArray_CheckExact(c) \
            else np.shape(c)
        if c_shape != (m, n):
            raise ValueError(f"gemm: c has shape {c_shape}, expected "
                             f"{(m, n)} for op(a) {op_a.shape} @ op(b) "
                             f"{op_b.shape}")
        if (overwrite_c and native_float(c) and c.dtype == dtype
                and c.flags.writeable and not writes_twice(c)):
            target = c
        elif beta == 0:
            target = _empty(m, n, dtype)
        else:
            target = (cnp.PyArray_NewCopy(<cnp.ndarray>c, cnp.NPY_CORDER)
                      if native_float(c) and c.dtype == dtype
                      else np.array(c, dtype=dtype, order="C"))
    op_a = _operand(op_a, dtype)
    op_b = _operand(op_b, dtype)
    result = target
    if (may_overlap(<cnp.ndarray>target, op_a)
            or may_overlap(<cnp.ndarray>target, op_b)):
        result = target.copy() if beta != 0 else _empty(m, n, dtype)
    run_product(op_a, op_b, result, (), 2, 2, alpha, beta, NULL)
    if result is not target:
        _copyto(target, result)
    return target
