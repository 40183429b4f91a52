# cython: language_level=3
cimport numpy as cnp
from fastmm.nn._epilogue cimport Epilogue

# c[batch] = alpha * a[batch] @ b[batch] + beta * c (+ epilogue), with numpy's
# 1-D rules (core_x == 1: a vector operand) and broadcast batch dimensions.
# a, b, c: native, aligned arrays of one dtype (float32 or float64).
cdef int run_product(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, tuple batch,
                     int core_a, int core_b, double alpha, double beta,
                     const Epilogue* ep) except -1
