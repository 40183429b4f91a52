# cython: language_level=3
# Tests on arrays that decide whether fastmm's kernels may read or write them
# in place (used by the matmul and gemm entry points).
cimport numpy as cnp


cdef inline bint native_float(object x):
    """x is an exact ndarray of native-order, aligned float32 or float64."""
    if not cnp.PyArray_CheckExact(x):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(arr)
    return ((t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64)
            and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_ISALIGNED(arr))


cdef inline object aligned(object x):
    """x, or an aligned copy when x is an exact ndarray of native-order
    float32/float64 whose data is not aligned to its item size: arrays
    unpickled from a received buffer (Dask's transfers, pickle protocol 5)
    often start at any byte, and fastmm's kernels, not numpy's path, should
    multiply them."""
    if not cnp.PyArray_CheckExact(x):
        return x
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(arr)
    if ((t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64)
            and cnp.PyArray_ISNOTSWAPPED(arr)
            and not cnp.PyArray_ISALIGNED(arr)):
        return arr.copy(order="K")
    return x


cdef inline bint writes_twice(cnp.ndarray x):
    """A zero stride on an axis of length > 1: one element stands for
    several."""
    cdef int d
    for d in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_STRIDE(x, d) == 0 and cnp.PyArray_DIM(x, d) > 1:
            return True
    return False


cdef inline void extent(cnp.ndarray x, char** lo, char** hi) noexcept:
    """The bytes x may touch: [lo, hi) (empty when x has no elements)."""
    cdef char* start = <char*>cnp.PyArray_DATA(x)
    cdef char* end = start + cnp.PyArray_ITEMSIZE(x)
    cdef Py_ssize_t step
    cdef int d
    for d in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_DIM(x, d) == 0:
            lo[0] = hi[0] = start
            return
        step = cnp.PyArray_STRIDE(x, d) * (cnp.PyArray_DIM(x, d) - 1)
        if step < 0:
            start += step
        else:
            end += step
    lo[0], hi[0] = start, end


cdef inline bint may_overlap(cnp.ndarray x, cnp.ndarray y) noexcept:
    """np.may_share_memory's bounds test, without the Python call."""
    cdef char* x_lo
    cdef char* x_hi
    cdef char* y_lo
    cdef char* y_hi
    extent(x, &x_lo, &x_hi)
    extent(y, &y_lo, &y_hi)
    return x_lo < x_hi and y_lo < y_hi and x_lo < y_hi and y_lo < x_hi
