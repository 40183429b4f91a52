# cython: language_level=3
# The GEMM driver's interface for the other compiled modules.

from fastmm.nn._epilogue cimport Epilogue

# The operands of the product a stack runs next (strides in elements, as
# below).  A one-thread product given them asks for them into L2 while it
# computes, a part before each micro-kernel call (driver/_prefetch.h), when
# they take at most stack_ahead() bytes.
cdef extern from "driver/_prefetch.h" nogil:
    ctypedef struct Ahead "fmm_ahead_t":
        const void* a
        const void* b
        Py_ssize_t rs_a, cs_a, rs_b, cs_b

# C := alpha * A @ B + beta * C (then the epilogue, if ep != NULL).
# A is m x k, B is k x n, C is m x n; strides in elements, any sign.
# Returns 0, or -1 when scratch memory could not be allocated.
cdef int sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
               const float* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
               const float* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
               float beta, float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
               const Epilogue* ep, int nthreads,
               const Ahead* ahead=*) noexcept nogil
cdef int dgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
               const double* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
               const double* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
               double beta, double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
               const Epilogue* ep, int nthreads,
               const Ahead* ahead=*) noexcept nogil

# The driver's per-thread packing scratch (kept between calls), for the
# other drivers: 64-byte aligned, NULL when out of memory; give it back with
# the size it was asked for.
cdef void* scratch_get(size_t size) noexcept nogil
cdef void scratch_release(void* ptr, size_t size) noexcept nogil
