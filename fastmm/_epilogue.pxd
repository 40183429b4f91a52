# cython: language_level=3
# The epilogue: bias and activation applied to a finished tile of C.
# The driver calls it once per tile after the last k block, while the tile is
# still in L1, so a dense layer's output is written once.
from libc.math cimport exp, tanh, erf, sqrt

from fastmm._pack cimport real
cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_LEAKY_RELU = 2
    ACT_SIGMOID = 3
    ACT_TANH = 4
    ACT_GELU_TANH = 5
    ACT_GELU_ERF = 6

# Applied by the driver to each finished tile of C (after the last k block),
# while the tile is still in cache: C[i, j] = act(C[i, j] + bias[j]).
cdef struct Epilogue:
    const void* bias          # NULL, or one element of C's dtype per column of C
    Py_ssize_t bias_stride    # in elements
    int activation            # ACT_*
    double slope              # leaky_relu's negative slope
    bint bias_along_rows      # the driver's own: set when it computes C^T


cdef extern from "<math.h>" nogil:
    float expf(float)
    float tanhf(float)
    float erff(float)


cdef inline real activate(real x, int act, double slope) noexcept nogil:
    cdef real s
    if act == ACT_RELU:
        # x > 0 keeps NaN as NaN (max(x, 0) would not)
        return x if (x > 0 or x != x) else <real>0
    if act == ACT_LEAKY_RELU:
        return x if (x > 0 or x != x) else <real>(x * slope)
    if act == ACT_SIGMOID:
        # stable on both sides: never exp of a large positive number
        if real is float:
            if x >= 0:
                return 1 / (1 + expf(-x))
            s = expf(x)
            return s / (1 + s)
        else:
            if x >= 0:
                return 1 / (1 + exp(-x))
            s = exp(x)
            return s / (1 + s)
    if act == ACT_TANH:
        return tanhf(x) if real is float else tanh(x)
    if act == ACT_GELU_TANH:
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        s = <real>0.7978845608028654 * (x + <real>0.044715 * x * x * x)
        return <real>0.5 * x * (1 + (tanhf(s) if real is float else tanh(s)))
    if act == ACT_GELU_ERF:
        s = x * <real>0.7071067811865476
        return <real>0.5 * x * (1 + (erff(s) if real is float else erf(s)))
    return x


cdef inline void apply_epilogue(real* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                                Py_ssize_t mr, Py_ssize_t nr, Py_ssize_t row0,
                                Py_ssize_t col0, const Epilogue* ep) noexcept nogil:
    """c points at C[row0, col0]; the tile is mr x nr."""
    cdef Py_ssize_t i, j
    cdef const real* bias = <const real*>ep.bias
    cdef real* ci
    cdef real bi
    cdef int act = ep.activation
    for i in range(mr):
        ci = c + i * rs_c
        if bias != NULL and ep.bias_along_rows:
            bi = bias[(row0 + i) * ep.bias_stride]
            for j in range(nr):
                ci[j * cs_c] = ci[j * cs_c] + bi
        elif bias != NULL:
            for j in range(nr):
                ci[j * cs_c] = ci[j * cs_c] + bias[(col0 + j) * ep.bias_stride]
        if act != ACT_NONE:
            for j in range(nr):
                ci[j * cs_c] = activate(ci[j * cs_c], act, ep.slope)
