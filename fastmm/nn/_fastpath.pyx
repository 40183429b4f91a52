# cython: language_level=3, boundscheck=False, wraparound=False
"""Fast entry points for fastmm.nn.linear, linear_backward and activate.

Checking arguments the numpy way (np.result_type, np.require, shape
messages) costs several microseconds, more than a small layer's whole
product.  These functions accept only inputs that need nothing done to them
(exact ndarrays of one native float type, aligned, with matching shapes and a
known activation name) and return None otherwise; fastmm/nn/__init__.py then
takes its full path, which converts or raises the proper error.
"""
import numpy as np
cimport numpy as cnp

from fastmm.nn._epilogue cimport (ACT_NONE, ACT_LEAKY_RELU, ACT_GELU_TANH,
                               ACT_GELU_ERF)
from fastmm.nn._ops import CODES, forward, backward, apply_activation
from fastmm._arrays cimport native_float, writes_twice, may_overlap

cnp.import_array()

cdef type _ndarray = np.ndarray


cdef inline bint _ready(object a, int typenum, int ndim):
    """a is an exact ndarray of this type and ndim, native order, aligned."""
    return (native_float(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim)


cdef int _code(object activation, object slope):
    """The activation's code, or -1 when fastmm.nn must look (aliases, errors,
    a slope that is not a finite float)."""
    if type(slope) is not float or not (-1e308 < <double>slope < 1e308):
        return -1
    if activation is None:
        return ACT_NONE
    code = CODES.get(activation) if type(activation) is str else None
    return -1 if code is None else code


cdef int _typenum(object x, object w):
    """The common float type of x and w when both are ready 2-D arrays."""
    if type(x) is not _ndarray:
        return -1
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        return -1
    if not (_ready(x, t, 2) and _ready(w, t, 2)):
        return -1
    if (cnp.PyArray_DIM(<cnp.ndarray>x, 1)
            != cnp.PyArray_DIM(<cnp.ndarray>w, 0)):
        return -1
    return t


cdef bint _ready_out(object out, int t, cnp.npy_intp* dims, x, w, b):
    """out can take the result as it is: ready, writeable, of the result's
    shape, one element per result, sharing no memory with an operand."""
    if not (_ready(out, t, 2) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and cnp.PyArray_DIM(<cnp.ndarray>out, 0) == dims[0]
            and cnp.PyArray_DIM(<cnp.ndarray>out, 1) == dims[1]
            and not writes_twice(<cnp.ndarray>out)):
        return False
    return not (may_overlap(<cnp.ndarray>out, <cnp.ndarray>x)
                or may_overlap(<cnp.ndarray>out, <cnp.ndarray>w)
                or (b is not None
                    and may_overlap(<cnp.ndarray>out, <cnp.ndarray>b)))


def try_forward(x, w, b, activation, slope, out=None):
    """linear(x, w, b, activation, out, slope=slope) for ready inputs (and
    a ready out, if given), else None."""
    cdef int code = _code(activation, slope)
    cdef int t = _typenum(x, w)
    cdef cnp.npy_intp dims[2]
    if code < 0 or t < 0:
        return None
    if b is not None and not (_ready(b, t, 1) and cnp.PyArray_DIM(
            <cnp.ndarray>b, 0) == cnp.PyArray_DIM(<cnp.ndarray>w, 1)):
        return None
    dims[0] = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
    dims[1] = cnp.PyArray_DIM(<cnp.ndarray>w, 1)
    if out is None:
        return forward(x, w, b, cnp.PyArray_EMPTY(2, dims, t, 0), code,
                       slope)
    if not _ready_out(out, t, dims, x, w, b):
        return None
    return forward(x, w, b, out, code, slope)


def try_activate(z, activation, slope):
    """activate(z, activation, slope=slope) for a ready 1-D or 2-D z, else
    None."""
    cdef int code = _code(activation, slope)
    if code < 0 or not native_float(z):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>z
    cdef int nd = cnp.PyArray_NDIM(a)
    if nd != 1 and nd != 2:
        return None
    y = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a), 0)
    if nd == 2:
        apply_activation(a, y, code, slope)
    else:
        apply_activation(a.reshape(1, -1), y.reshape(1, -1), code, slope)
    return y


def try_backward(x, w, dy, y, z, activation, slope, bint need_dx):
    """linear_backward(...) for ready inputs where the derivative comes
    from y (or from z for gelu), else None: fastmm.nn handles the rest."""
    cdef int code = _code(activation, slope)
    cdef int t = _typenum(x, w)
    cdef bint from_z = False
    cdef cnp.npy_intp dims[2]
    if code < 0 or t < 0 or not _ready(dy, t, 2):
        return None
    dims[0] = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
    dims[1] = cnp.PyArray_DIM(<cnp.ndarray>w, 1)
    if (cnp.PyArray_DIM(<cnp.ndarray>dy, 0) != dims[0]
            or cnp.PyArray_DIM(<cnp.ndarray>dy, 1) != dims[1]):
        return None
    v = None
    if code == ACT_GELU_TANH or code == ACT_GELU_ERF or (
            code == ACT_LEAKY_RELU and <double>slope < 0):
        v, from_z = z, True
    elif code != ACT_NONE:
        v = y
    if code != ACT_NONE and not (
            _ready(v, t, 2) and cnp.PyArray_DIM(<cnp.ndarray>v, 0) == dims[0]
            and cnp.PyArray_DIM(<cnp.ndarray>v, 1) == dims[1]):
        return None
    dx = (cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray>x), t, 0)
          if need_dx else None)
    dw = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray>w), t, 0)
    db = cnp.PyArray_EMPTY(1, &dims[1], t, 0)
    backward(x, w, dy, v, from_z, code, slope, dx, dw, db)
    return dx, dw, db
