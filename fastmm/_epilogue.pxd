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


cdef inline real activation_grad(real v, int act, double slope,
                                 bint from_z) noexcept nogil:
    """act'(z), from the pre-activation z (from_z) or from the output y = act(z).

    From y where the activation allows it (relu, leaky_relu with slope >= 0,
    sigmoid, tanh), so backward needs only what forward wrote; gelu is not a
    function of its output and always takes z.
    """
    cdef real s, t
    if act == ACT_RELU:
        return <real>1 if v > 0 else <real>0
    if act == ACT_LEAKY_RELU:
        return <real>1 if v > 0 else <real>slope
    if act == ACT_SIGMOID:
        s = activate(v, ACT_SIGMOID, slope) if from_z else v
        return s * (1 - s)
    if act == ACT_TANH:
        s = activate(v, ACT_TANH, slope) if from_z else v
        return 1 - s * s
    if act == ACT_GELU_TANH:
        # d/dz of 0.5 z (1 + tanh(u)), u = sqrt(2/pi) (z + 0.044715 z^3)
        s = <real>0.7978845608028654 * (v + <real>0.044715 * v * v * v)
        t = tanhf(s) if real is float else tanh(s)
        return (<real>0.5 * (1 + t) + <real>0.5 * v * (1 - t * t)
                * <real>0.7978845608028654 * (1 + <real>0.134145 * v * v))
    if act == ACT_GELU_ERF:
        # Phi(z) + z phi(z)
        s = v * <real>0.7071067811865476
        t = (expf(-<real>0.5 * v * v) if real is float
             else exp(-<real>0.5 * v * v))
        return (<real>0.5 * (1 + (erff(s) if real is float else erf(s)))
                + v * t * <real>0.3989422804014327)
    return 1


cdef inline void apply_epilogue(real* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                                Py_ssize_t mr, Py_ssize_t nr, Py_ssize_t row0,
                                Py_ssize_t col0, const Epilogue* ep) noexcept nogil:
    """c points at C[row0, col0]; the tile is mr x nr."""
    cdef Py_ssize_t i, j
    cdef const real* bias = <const real*>ep.bias
    cdef real* ci
    cdef real bi, v
    cdef int act = ep.activation
    if (cs_c == 1 and not ep.bias_along_rows
            and (bias == NULL or ep.bias_stride == 1)
            and (act == ACT_NONE or act == ACT_RELU)):
        # The dense layer's common case, written as unit-stride loops the
        # compiler vectorizes: the generic path below costs several cycles per
        # element, a noticeable share of a GEMM with small k.
        bias = bias + col0 if bias != NULL else NULL
        for i in range(mr):
            ci = c + i * rs_c
            if bias != NULL and act == ACT_RELU:
                for j in range(nr):
                    v = ci[j] + bias[j]
                    ci[j] = v if (v > 0 or v != v) else <real>0
            elif bias != NULL:
                for j in range(nr):
                    ci[j] = ci[j] + bias[j]
            elif act == ACT_RELU:
                for j in range(nr):
                    v = ci[j]
                    ci[j] = v if (v > 0 or v != v) else <real>0
        return
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
