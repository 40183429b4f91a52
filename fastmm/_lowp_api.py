"""numpy's rules around the low-precision kernels (fastmm/_lowp.pyx).

    fastmm.matmul(a, b, dtype=np.int32)      int8/uint8 operands: exact int32
                                             sums, wrapping modulo 2**32 as
                                             numpy's int32 matmul does
    fastmm.matmul(a, b)                      ml_dtypes.bfloat16 operands:
                                             float32 accumulation and result
                                             (np.matmul's result type), or
                                             bfloat16 with dtype= / out=
    fastmm.matmul(a, b, precision="bf16")    float32 operands rounded to
                                             bfloat16 while packing, float32
                                             accumulation and result

Everything else returns NotImplemented and goes to np.matmul, so numpy's own
behaviour (and its errors) hold wherever numpy defines one.
"""
import numpy as np

from fastmm import _lowp

PRECISIONS = ("highest", "bf16")
_INT8 = (np.dtype(np.int8), np.dtype(np.uint8))
_INT32 = np.dtype(np.int32)
_F32 = np.dtype(np.float32)


def _is_bf16(dtype):
    # by name: ml_dtypes is optional and is not imported to ask.  Only for
    # a user-defined type number (ml_dtypes' types are), and the scalar
    # type's name: dtype.name is built by a Python function (0.6-3 us a
    # call, ten times the scalar type's attribute)
    return (dtype.num >= 256 and dtype.itemsize == 2
            and dtype.type.__name__ == "bfloat16")


def check_precision(precision):
    if precision is None or precision in PRECISIONS:
        return precision
    raise ValueError(f"precision must be one of {PRECISIONS} or None, got "
                     f"{precision!r} (fastmm.matmul: 'bf16' rounds float32 "
                     f"operands to bfloat16 and accumulates in float32)")


def matmul(x1, x2, out, kwargs, precision):
    """The product, or NotImplemented when this is not a low-precision call."""
    if not (isinstance(x1, np.ndarray) and isinstance(x2, np.ndarray)):
        return NotImplemented
    if set(kwargs) - {"dtype"}:
        return NotImplemented
    t1, t2 = x1.dtype, x2.dtype
    want = kwargs.get("dtype")
    want = None if want is None else np.dtype(want)
    # (precision="bf16" on int8 operands is refused below, as on any
    # operands but float32: it was silently ignored)
    if t1 in _INT8 and t2 in _INT8 and precision != "bf16":
        if want != _INT32:
            return NotImplemented            # numpy: int8 results, or a cast
        # the scalar types' names ("int8", "uint8"): dtype.name is a Python
        # function of ~2 us, a third of a small product's call
        return _run(x1, x2, out, _INT32, _INT32, t1.type.__name__,
                    t2.type.__name__)
    if _is_bf16(t1) and _is_bf16(t2):
        # np.matmul gives float32 here (ml_dtypes has no bfloat16 matmul
        # loop); a bfloat16 result is asked for with dtype= or out=
        result = want or (out.dtype if isinstance(out, np.ndarray) else _F32)
        if result != _F32 and not _is_bf16(result):
            return NotImplemented
        return _run(x1, x2, out, result, _F32, "bfloat16", "bfloat16")
    if precision == "bf16":
        if t1 != _F32 or t2 != _F32 or (want is not None and want != _F32):
            raise TypeError(f"precision='bf16' multiplies float32 (or "
                            f"bfloat16) operands into float32; got {t1} and "
                            f"{t2}" + (f" with dtype={want}" if want else ""))
        return _run(x1, x2, out, _F32, _F32, "float32", "float32")
    return NotImplemented


def _run(x1, x2, out, result, compute, kind1, kind2):
    """Broadcast, allocate, and call the kernel per 2-D product."""
    a = x1.view(np.uint16) if kind1 == "bfloat16" else x1
    b = x2.view(np.uint16) if kind2 == "bfloat16" else x2
    if a.ndim == 0 or b.ndim == 0:
        return NotImplemented                # numpy's error
    a2 = a[np.newaxis, :] if a.ndim == 1 else a
    b2 = b[:, np.newaxis] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        return NotImplemented                # numpy's error, with its wording
    if a2.ndim == 2 and b2.ndim == 2:
        batch = ()                           # the common case, without the
    else:                                    # ~10 us of broadcasting below
        try:
            batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        except ValueError:
            return NotImplemented
    m, n = a2.shape[-2], b2.shape[-1]
    shape = batch + (() if a.ndim == 1 else (m,)) + (() if b.ndim == 1 else (n,))
    if out is not None:
        if (not isinstance(out, np.ndarray) or out.shape != shape
                or out.dtype != result or not out.flags.writeable):
            return NotImplemented            # numpy's casting or error
    direct = (out is not None and result == compute and out.flags.aligned
              and not np.may_share_memory(out, x1)
              and not np.may_share_memory(out, x2))
    if direct:
        # straight into out (a view with the dimensions of 1-D operands
        # put back), not through a temporary copied over it
        c = np.expand_dims(out, -1) if b.ndim == 1 else out
        c = np.expand_dims(c, -2) if a.ndim == 1 else c
    else:
        c = np.empty(batch + (m, n), compute)
    if batch:
        a3 = np.broadcast_to(a2, batch + a2.shape[-2:])
        b3 = np.broadcast_to(b2, batch + b2.shape[-2:])
        for idx in np.ndindex(*batch):
            _lowp.gemm_lowp(a3[idx], b3[idx], c[idx], kind1, kind2)
    else:
        _lowp.gemm_lowp(a2, b2, c, kind1, kind2)
    if direct:
        return out
    c = c.reshape(shape)
    if result != compute:
        c = c.astype(result)                 # float32 -> bfloat16, nearest even
    if out is None:
        return c[()] if c.ndim == 0 else c
    np.copyto(out, c)
    return out
