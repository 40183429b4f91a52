# cython: language_level=3
# The epilogue: bias and activation applied to a finished tile of C.
# The driver calls it once per tile after the last k block, while the tile is
# still in L1, so a dense layer's output is written once.
from libc.math cimport exp, tanh, erfc

from fastmm.driver._pack cimport real

# One definition of the codes and the element functions, in C, shared by the
# vectorized tile routine and the scalar paths (see _activation.h for why).
cdef extern from "nn/_activation.h" nogil:
    enum:
        ACT_NONE "FMM_ACT_NONE"
        ACT_RELU "FMM_ACT_RELU"
        ACT_LEAKY_RELU "FMM_ACT_LEAKY_RELU"
        ACT_SIGMOID "FMM_ACT_SIGMOID"
        ACT_TANH "FMM_ACT_TANH"
        ACT_GELU_TANH "FMM_ACT_GELU_TANH"
        ACT_GELU_ERF "FMM_ACT_GELU_ERF"
    const char* fmm_act_select(const char* isa)
    float fmm_act_f32(float v, int act, float slope)
    double fmm_act_f64(double v, int act, double slope)
    float fmm_tanhf(float x)
    float fmm_erfcf(float x)
    float fmm_expf_neg(float x)
    void fmm_act_tile_f32(float* c, Py_ssize_t rs, Py_ssize_t mr,
                          Py_ssize_t nr, const float* bias, int act,
                          float slope)
    void fmm_act_tile_f64(double* c, Py_ssize_t rs, Py_ssize_t mr,
                          Py_ssize_t nr, const double* bias, int act,
                          double slope)
    void fmm_softmax_row_f32(float* y, Py_ssize_t n)
    void fmm_softmax_row_f64(double* y, Py_ssize_t n)

# Applied by the driver to each finished tile of C (after the last k block),
# while the tile is still in cache: C[i, j] = act(C[i, j] + bias[j]).
cdef struct Epilogue:
    const void* bias          # NULL, or one element of C's dtype per column of C
    Py_ssize_t bias_stride    # in elements
    int activation            # ACT_*
    double slope              # leaky_relu's negative slope
    bint bias_along_rows      # the driver's own: set when it computes C^T


cdef inline real activate(real x, int act, double slope) noexcept nogil:
    """act(x), one element: relu and leaky_relu keep NaN as NaN (as
    np.maximum does); sigmoid never overflows; gelu is the erf form,
    gelu_tanh the tanh approximation."""
    if real is float:
        return fmm_act_f32(x, act, <float>slope)
    else:
        return fmm_act_f64(x, act, slope)


cdef inline real activation_grad(real v, int act, double slope,
                                 bint from_z) noexcept nogil:
    """act'(z), from the pre-activation z (from_z) or the output y = act(z).

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
        t = fmm_tanhf(s) if real is float else tanh(s)
        return (<real>0.5 * (1 + t) + <real>0.5 * v * (1 - t * t)
                * <real>0.7978845608028654 * (1 + <real>0.134145 * v * v))
    if act == ACT_GELU_ERF:
        # Phi(z) + z phi(z), Phi(z) = erfc(-z/sqrt(2)) / 2 (accurate for z < 0)
        s = -v * <real>0.7071067811865476
        t = (fmm_expf_neg(-<real>0.5 * v * v) if real is float
             else exp(-<real>0.5 * v * v))
        return (<real>0.5 * (fmm_erfcf(s) if real is float else erfc(s))
                + v * t * <real>0.3989422804014327)
    return 1


cdef inline void apply_epilogue(real* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                                Py_ssize_t mr, Py_ssize_t nr, Py_ssize_t row0,
                                Py_ssize_t col0, const Epilogue* ep) noexcept nogil:
    """c points at C[row0, col0]; the tile is mr x nr."""
    cdef Py_ssize_t i, j
    cdef const real* bias = <const real*>ep.bias
    cdef real* ci
    cdef real bi
    cdef int act = ep.activation
    if cs_c == 1 and not ep.bias_along_rows and (bias == NULL
                                                 or ep.bias_stride == 1):
        # the dense layer's case: rows of the tile through vectorized loops
        if real is float:
            fmm_act_tile_f32(c, rs_c, mr, nr,
                             bias + col0 if bias != NULL else NULL, act,
                             <float>ep.slope)
        else:
            fmm_act_tile_f64(c, rs_c, mr, nr,
                             bias + col0 if bias != NULL else NULL, act,
                             ep.slope)
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
