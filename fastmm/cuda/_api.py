"""fastmm.cuda's public functions: validate, place operands on the device,
launch the kernels of ``_kernels``, and bring results back when the caller
gave host arrays.

Where the result lives: on the device (a numba device array) when any
operand is a device array, else a numpy array.  numba is imported only by
``_cuda()``, on the first call that computes something.
"""
import importlib.util

import numpy as np

_ACT_ALIASES = {None: "identity", "identity": "identity", "linear": "identity",
                "relu": "relu", "leaky_relu": "leaky_relu",
                "sigmoid": "sigmoid", "tanh": "tanh", "gelu_tanh": "gelu_tanh",
                "gelu": "gelu_erf", "gelu_erf": "gelu_erf",
                "softmax": "softmax"}


class CudaUnavailableError(RuntimeError):
    """fastmm.cuda cannot run: numba-cuda is missing or no GPU is usable."""


def _cuda():
    """(numba.cuda, fastmm.cuda._kernels), or CudaUnavailableError naming
    the missing piece."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise CudaUnavailableError(
            "fastmm.cuda needs the numba-cuda package, which is not "
            "installed: pip install 'fastmm[cuda]' (or pip install "
            "numba-cuda)")
    try:
        from numba import cuda
    except ImportError as e:
        raise CudaUnavailableError(
            f"fastmm.cuda: numba-cuda is installed but 'from numba import "
            f"cuda' failed: {e}") from e
    if not cuda.is_available():
        why = cuda.cuda_error() if hasattr(cuda, "cuda_error") else None
        why = " ".join(str(why).split()) if why else "no CUDA device found"
        raise CudaUnavailableError(
            f"fastmm.cuda: no usable CUDA GPU ({why}). It needs an NVIDIA "
            f"GPU with its driver; to run on the CPU with numba's CUDA "
            f"simulator instead (slow, for testing), set "
            f"NUMBA_ENABLE_CUDASIM=1 before numba is imported")
    from fastmm.cuda import _kernels
    return cuda, _kernels


def is_available():
    """True when fastmm.cuda can run: numba-cuda is installed and numba sees
    a CUDA GPU (or runs its CPU simulator, NUMBA_ENABLE_CUDASIM=1)."""
    try:
        _cuda()
    except CudaUnavailableError:
        return False
    return True


# --- operands -------------------------------------------------------------

def _on_device(x, cuda):
    return (cuda.devicearray.is_cuda_ndarray(x)
            or hasattr(x, "__cuda_array_interface__"))


def _dtype_of(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _result_dtype(name, *xs):
    dtype = np.result_type(*[_dtype_of(x) for x in xs if x is not None])
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"fastmm.cuda.{name} supports float32 and float64 "
                        f"arrays; got {dtype}")
    return np.dtype(dtype)


def _as_strided(x, shape, strides, cuda):
    """A view of device array x with the given shape and byte strides."""
    if "simulator" in cuda.devicearray.__name__:
        return type(x)(np.lib.stride_tricks.as_strided(x._ary, shape,
                                                       strides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(shape, strides, x.dtype, stream=x.stream,
                         gpu_data=x.gpu_data)


def _device(x, dtype, cuda, k):
    """x as a numba device array of dtype: device arrays are viewed in place
    (copied only to change dtype), host data is copied over contiguously."""
    if _on_device(x, cuda):
        d = x if cuda.devicearray.is_cuda_ndarray(x) else cuda.as_cuda_array(x)
        if any(s < 0 for s in d.strides):
            raise ValueError("fastmm.cuda: device arrays with negative "
                             "strides are not supported; pass a copy")
        if d.dtype != dtype:
            d = _copy(d, dtype, cuda, k)
        return d
    return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))


def _copy(d, dtype, cuda, k):
    """A C-contiguous device copy of d (any strides) in dtype."""
    out = cuda.device_array(d.shape, dtype)
    if d.size == 0:
        return out
    kernel = k.copy_kernel()
    if d.ndim == 1:
        shape = (1, tuple(d.shape)[0])
        _launch_2d(kernel, shape, cuda, k)(
            _as_strided(d, shape, (0, d.strides[0]), cuda),
            _as_strided(out, shape, (0, out.strides[0]), cuda))
        return out
    for idx in np.ndindex(tuple(d.shape)[:-2]):
        src, dst = (d[idx], out[idx]) if idx else (d, out)
        _launch_2d(kernel, src.shape, cuda, k)(src, dst)
    return out


def _rows_view(d, cuda):
    """Device array d (N-D) as a 2-D (rows, last axis) view, or None when
    its leading axes do not collapse into one stride."""
    if d.ndim == 2:
        return d
    if d.ndim == 0:
        return _as_strided(d, (1, 1), (0, 0), cuda)
    if d.ndim == 1:
        return _as_strided(d, (1, tuple(d.shape)[0]), (0, d.strides[0]),
                           cuda)
    shape, strides = tuple(d.shape), tuple(d.strides)
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    # leading axes collapse when each stride is the next one times its length
    # (length-1 axes do not matter)
    axes = [(n, s) for n, s in zip(shape[:-1], strides[:-1]) if n != 1]
    if all(s0 == s1 * n1 for (_, s0), (n1, s1) in zip(axes, axes[1:])):
        s = axes[-1][1] if axes else 0
        return _as_strided(d, (rows, cols), (s, strides[-1]), cuda)
    return None


def _rows(d, cuda, k):
    """Device array d (N-D, N >= 1) as a 2-D (rows, last axis) array: a view
    when its leading axes collapse into one stride, else a copy."""
    view = _rows_view(d, cuda)
    if view is not None:
        return view
    c = _copy(d, d.dtype, cuda, k)
    isz = d.dtype.itemsize
    return _as_strided(c, (rows, cols), (cols * isz, isz), cuda)


def _bounds(x):
    """[lo, hi) byte addresses that device array x can touch."""
    if hasattr(x, "__cuda_array_interface__"):
        lo = x.__cuda_array_interface__["data"][0]
    else:   # numba's simulator wraps a numpy array
        lo = x._ary.__array_interface__["data"][0]
    hi = lo
    for n, s in zip(x.shape, x.strides):
        if n == 0:
            return lo, lo
        if s > 0:
            hi += (n - 1) * s
        else:
            lo += (n - 1) * s
    return lo, hi + x.dtype.itemsize


def _overlap(x, y):
    if x is None or y is None:
        return False
    lx, hx = _bounds(x)
    ly, hy = _bounds(y)
    return lx < hy and ly < hx


def _launch_2d(kernel, shape, cuda, k):
    bx, by = k.elem_block()
    grid = ((shape[0] + bx - 1) // bx, (shape[1] + by - 1) // by)
    return kernel[grid, (bx, by)]


_dummies = {}


def _dummy(dtype, cuda):
    """A one-element device array standing in for an unused bias."""
    key = np.dtype(dtype).str
    if key not in _dummies:
        _dummies[key] = cuda.device_array(1, dtype)
    return _dummies[key]


def _run_gemm(alpha, a, b, beta, c_in, c_out, trans_a, trans_b, cuda, k,
              bias=None, act="identity", slope=0.0):
    """c_out = act(alpha * op(a) @ op(b) + beta * c_in + bias) on 2-D device
    arrays of one dtype; c_in is not read when beta == 0, nor a and b when
    alpha == 0.  c_out must not overlap a, b or bias."""
    m, n = c_out.shape
    kk = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    dtype = c_out.dtype
    t = dtype.type
    tiles = k.gemm_tiles(dtype)
    # load order: consecutive threads walk opA's rows when those are the
    # contiguous direction (a transposed row-major A), else walk k
    rs_a, ps_a = (a.strides[1], a.strides[0]) if trans_a else a.strides
    ps_b, cs_b = (b.strides[1], b.strides[0]) if trans_b else b.strides
    beta_zero = beta == 0
    kernel = k.gemm_kernel(dtype.name, bool(trans_a), bool(trans_b),
                           rs_a < ps_a, cs_b <= ps_b, beta_zero,
                           bias is not None, act, tiles)
    grid, threads = k.gemm_launch_config(m, n, tiles)
    if grid[1] > 65535:
        raise ValueError(f"fastmm.cuda: {m} rows exceed the launch grid "
                         f"(at most {65535 * tiles[0]})")
    kernel[grid, threads](m, n, 0 if alpha == 0 else kk, t(alpha), a, b,
                          t(beta), c_out if beta_zero else c_in, c_out,
                          _dummy(dtype, cuda) if bias is None else bias,
                          t(slope))


def _activation(name):
    """The kernels' name for an activation; fastmm.nn's names: 'gelu' is
    the exact (erf) form, as in PyTorch, 'gelu_tanh' the approximation."""
    if isinstance(name, str):
        key = name.lower()
    elif name is None:
        key = None
    else:
        raise TypeError(f"activation must be a string or None, got "
                        f"{type(name).__name__}")
    if key not in _ACT_ALIASES:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"None, 'identity', 'relu', 'leaky_relu', "
                         f"'sigmoid', 'tanh', 'gelu' (erf form; alias "
                         f"'gelu_erf'), 'gelu_tanh', 'softmax'")
    return _ACT_ALIASES[key]


def _to_host(d, on_device):
    return d if on_device else d.copy_to_host()


def _store(result, out, on_device, cuda, k):
    """Deliver device array ``result`` into ``out`` (host or device) or as
    the return value."""
    if out is None:
        return _to_host(result, on_device)
    if _on_device(out, cuda):
        dst = out if cuda.devicearray.is_cuda_ndarray(out) else \
            cuda.as_cuda_array(out)
        if dst is not result and not (dst.shape == result.shape
                                      and _bounds(dst) == _bounds(result)
                                      and dst.strides == result.strides):
            for idx in np.ndindex(tuple(result.shape)[:-2]):
                r2, d2 = (result[idx], dst[idx]) if idx else (result, dst)
                if r2.ndim < 2:
                    r2, d2 = _rows(r2, cuda, k), _rows(d2, cuda, k)
                _launch_2d(k.copy_kernel(), r2.shape, cuda, k)(r2, d2)
        return out
    np.copyto(out, result.copy_to_host())
    return out


def _check_out(name, out, shape, dtype, cuda):
    if out is None:
        return
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"fastmm.cuda.{name}: out has shape "
                         f"{tuple(out.shape)}, expected {tuple(shape)}")
    if np.dtype(out.dtype) != dtype:
        raise TypeError(f"fastmm.cuda.{name}: out has dtype {out.dtype}, "
                        f"expected {dtype}")
    if not _on_device(out, cuda) and not (isinstance(out, np.ndarray)
                                          and out.flags.writeable):
        raise TypeError(f"fastmm.cuda.{name}: out must be a writeable numpy "
                        f"array or a device array")


# --- public API -----------------------------------------------------------

def matmul(a, b, out=None):
    """np.matmul(a, b) on the GPU for float32/float64 (mixed: float64).

    1-D operands and broadcast batches follow np.matmul's rules (batches
    launch one kernel per product).

    Parameters
    ----------
    a, b : array_like or device array
        numpy inputs are copied to the GPU; device arrays
        (``__cuda_array_interface__``) are read in place.
    out : ndarray or device array, optional
        Exact shape and dtype; receives the result and is returned.

    Returns
    -------
    ndarray or device array
        On the device if an operand is, else a numpy array.

    Raises
    ------
    CudaUnavailableError
        numba-cuda is missing or no GPU is usable.
    """
    cuda, k = _cuda()
    on_device = any(_on_device(x, cuda) for x in (a, b, out) if x is not None)
    if not hasattr(a, "shape"):
        a = np.asarray(a)
    if not hasattr(b, "shape"):
        b = np.asarray(b)
    dtype = _result_dtype("matmul", a, b)
    sa, sb = tuple(a.shape), tuple(b.shape)
    if len(sa) == 0 or len(sb) == 0:
        raise ValueError(f"matmul: Input operand {0 if len(sa) == 0 else 1} "
                         f"does not have enough dimensions (operand shapes "
                         f"{sa} and {sb})")
    ka = sa[-1]
    kb = sb[-2] if len(sb) >= 2 else sb[0]
    if ka != kb:
        raise ValueError(f"matmul: Input operand 1 has a mismatch in its core "
                         f"dimension 0 (size {kb} is different from {ka}) "
                         f"(operand shapes {sa} and {sb})")
    try:
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of operand shapes {sa} "
                         f"and {sb} do not broadcast") from None
    shape = batch + ((sa[-2],) if len(sa) >= 2 else ()) + \
        ((sb[-1],) if len(sb) >= 2 else ())
    _check_out("matmul", out, shape, dtype, cuda)
    da, db = _device(a, dtype, cuda, k), _device(b, dtype, cuda, k)
    dout = None
    if out is not None and _on_device(out, cuda):
        dout = out if cuda.devicearray.is_cuda_ndarray(out) else \
            cuda.as_cuda_array(out)
        if _overlap(dout, da) or _overlap(dout, db):
            dout = None
    result = dout if dout is not None else cuda.device_array(shape, dtype)
    m = sa[-2] if len(sa) >= 2 else 1
    n = sb[-1] if len(sb) >= 2 else 1
    isz = dtype.itemsize
    for idx in np.ndindex(batch):
        # each operand's own index: broadcast axes (length 1 or missing)
        # read element 0
        ia = tuple(0 if d == 1 else i for i, d in
                   zip(idx[len(batch) - (len(sa) - 2):], sa[:-2]))
        ib = tuple(0 if d == 1 else i for i, d in
                   zip(idx[len(batch) - (len(sb) - 2):], sb[:-2]))
        a2 = da[ia] if ia else da
        b2 = db[ib] if ib else db
        c2 = result[idx] if idx else result
        if a2.ndim == 1:
            a2 = _as_strided(a2, (1, ka), (0, a2.strides[0]), cuda)
        if b2.ndim == 1:
            b2 = _as_strided(b2, (kb, 1), (b2.strides[0], 0), cuda)
        if c2.ndim < 2:
            # drop-axis results: view as (m, n) with the missing axis' stride 0
            st = c2.strides[0] if c2.ndim == 1 else isz
            c2 = _as_strided(c2, (m, n), (st, 0) if n == 1 else (0, st),
                             cuda)
        _run_gemm(1.0, a2, b2, 0.0, None, c2, False, False, cuda, k)
    if len(shape) == 0 and out is None and not on_device:
        return result.copy_to_host()[()]     # numpy's scalar
    return _store(result, out, on_device, cuda, k)


def gemm(alpha, a, b, beta=0.0, c=None, trans_a=False, trans_b=False,
         overwrite_c=False):
    """C := alpha * op(A) @ op(B) + beta * C on the GPU, as fastmm.gemm.

    op(X) is X.T when trans_x is true, read through the kernel's index map
    (no copy).  When beta == 0, C is not read; when alpha == 0, A and B are
    not read.

    Parameters
    ----------
    alpha, beta : float
    a, b : array_like or device array
        2-D.
    c : array_like or device array, optional
    trans_a, trans_b : bool, optional
    overwrite_c : bool, optional
        With True and ``c`` of the result's dtype the update is in place
        (host or device ``c``) and ``c`` is returned.

    Returns
    -------
    ndarray or device array
        ``c``, or a new array (on the device if any operand is).
    """
    cuda, k = _cuda()
    if not hasattr(a, "shape"):
        a = np.asarray(a)
    if not hasattr(b, "shape"):
        b = np.asarray(b)
    if c is not None and not hasattr(c, "shape"):
        c = np.asarray(c)
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise ValueError(f"gemm: a and b must be 2-D, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    dtype = _result_dtype("gemm", a, b, c)
    m, ka = a.shape[::-1] if trans_a else a.shape
    kb, n = tuple(b.shape)[::-1] if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"gemm: op(a) has shape {(m, ka)} and op(b) has "
                         f"shape {(kb, n)}: inner dimensions {ka} and {kb} "
                         f"differ")
    if c is not None and tuple(c.shape) != (m, n):
        raise ValueError(f"gemm: c has shape {tuple(c.shape)}, expected "
                         f"{(m, n)} for op(a) {(m, ka)} @ op(b) {(kb, n)}")
    on_device = any(_on_device(x, cuda) for x in (a, b, c) if x is not None)
    if c is None:
        beta = 0.0
    da, db = _device(a, dtype, cuda, k), _device(b, dtype, cuda, k)
    in_place = (overwrite_c and c is not None
                and np.dtype(c.dtype) == dtype
                and (_on_device(c, cuda) or c.flags.writeable))
    dc = None
    if c is not None and (beta != 0 or (in_place and _on_device(c, cuda))):
        dc = _device(c, dtype, cuda, k)
    if in_place and _on_device(c, cuda) and not (_overlap(dc, da)
                                                 or _overlap(dc, db)):
        # each thread reads its C element before writing it: in place is safe
        _run_gemm(alpha, da, db, beta, dc, dc, trans_a, trans_b, cuda, k)
        return c
    result = cuda.device_array((m, n), dtype)
    _run_gemm(alpha, da, db, beta, dc, result, trans_a, trans_b, cuda, k)
    if in_place:
        return _store(result, c, True, cuda, k)
    return _to_host(result, on_device)


def linear(x, w, b=None, activation=None, out=None, *, slope=0.01):
    """y = activation(x @ w + b) on the GPU, bias and activation fused into
    the GEMM's store (softmax, row-wise over the last axis, runs after it).

    Parameters
    ----------
    x : array_like or device array, shape (..., in_features)
    w : array_like or device array, shape (in_features, out_features)
    b : array_like or device array, shape (out_features,), optional
    activation : str, optional
        None/'identity', 'relu', 'leaky_relu' (negative slope ``slope``),
        'sigmoid', 'tanh', 'gelu' (exact, erf form; alias 'gelu_erf'),
        'gelu_tanh' (tanh approximation), 'softmax': the names and meanings
        of fastmm.nn.
    out : ndarray or device array, optional
        Receives the result.
    slope : float, optional

    Returns
    -------
    ndarray or device array
        y, shape (..., out_features).
    """
    cuda, k = _cuda()
    act = _activation(activation)
    x, w, b = [v if v is None or hasattr(v, "shape") else np.asarray(v)
               for v in (x, w, b)]
    dtype = _result_dtype("linear", x, w, b)
    _check_linear_shapes(x, w, b)
    shape = tuple(x.shape)[:-1] + (tuple(w.shape)[1],)
    _check_out("linear", out, shape, dtype, cuda)
    on_device = any(_on_device(v, cuda) for v in (x, w, b, out)
                    if v is not None)
    dest = None
    if out is not None and _on_device(out, cuda):
        # the fused store writes straight into a device out (no second
        # pass over y), unless out overlaps an operand or cannot be viewed
        # as (rows, out_features)
        dout = out if cuda.devicearray.is_cuda_ndarray(out) else \
            cuda.as_cuda_array(out)
        if not any(v is not None and _on_device(v, cuda)
                   and _overlap(dout, v if cuda.devicearray.is_cuda_ndarray(v)
                                else cuda.as_cuda_array(v))
                   for v in (x, w, b)):
            dest = _rows_view(dout, cuda)
    y = _linear_forward(x, w, b, act, slope, dtype, cuda, k, dest=dest)
    if dest is not None:
        return out
    return _store(y.reshape(shape), out, on_device, cuda, k)


def _check_linear_shapes(x, w, b, dy=None):
    if len(w.shape) != 2:
        raise ValueError(f"linear: w must be 2-D (in_features, "
                         f"out_features), got shape {tuple(w.shape)}")
    if len(x.shape) < 1 or tuple(x.shape)[-1] != tuple(w.shape)[0]:
        raise ValueError(f"linear: x has shape {tuple(x.shape)} but w has "
                         f"shape {tuple(w.shape)}: x's last axis must be "
                         f"in_features = {tuple(w.shape)[0]}")
    if b is not None and tuple(b.shape) != (tuple(w.shape)[1],):
        raise ValueError(f"linear: b has shape {tuple(b.shape)}, expected "
                         f"({tuple(w.shape)[1]},)")
    if dy is not None:
        want = tuple(x.shape)[:-1] + (tuple(w.shape)[1],)
        if tuple(dy.shape) != want:
            raise ValueError(f"linear_backward: dy has shape "
                             f"{tuple(dy.shape)}, expected {want}")


def _linear_forward(x, w, b, act, slope, dtype, cuda, k, pre=False,
                    dest=None):
    """act(x @ w + b) as a 2-D device array (rows, out): ``dest`` (any
    strides, not overlapping the operands) when given, else a new
    contiguous one; with pre=True, the pre-activation x @ w + b."""
    dx2 = _rows(_device(x, dtype, cuda, k), cuda, k)
    dw = _device(w, dtype, cuda, k)
    dbias = None if b is None else _device(b, dtype, cuda, k)
    y = dest if dest is not None else \
        cuda.device_array((dx2.shape[0], tuple(dw.shape)[1]), dtype)
    fused = "identity" if (pre or act == "softmax") else act
    _run_gemm(1.0, dx2, dw, 0.0, None, y, False, False, cuda, k,
              bias=dbias, act=fused, slope=slope)
    if act == "softmax" and not pre and y.shape[0] and y.shape[1]:
        threads = k.row_threads()
        k.softmax_rows_kernel(dtype.name, threads)[y.shape[0], threads](
            y, y.shape[1])
    return y


def linear_backward(x, w, dy, y=None, activation=None, *, b=None, z=None,
                    slope=0.01):
    """Gradients of y = activation(x @ w + b): returns (dx, dw, db).

    dz = dy * activation'(.), dx = dz @ w.T, dw = x.T @ dz (transposes read
    in place by the GEMM), db = dz summed over rows (deterministic order).
    relu, leaky_relu, sigmoid, tanh and softmax take the derivative from the
    forward output ``y``; the gelu forms from the pre-activation ``z``.  A
    missing ``y`` or ``z`` is recomputed from x, w and ``b``.

    Returns
    -------
    dx, dw, db : ndarray or device array
        The gradients with respect to x, w and b.
    """
    cuda, k = _cuda()
    act = _activation(activation)
    x, w, dy, y, b, z = [v if v is None or hasattr(v, "shape")
                         else np.asarray(v) for v in (x, w, dy, y, b, z)]
    dtype = _result_dtype("linear_backward", x, w, dy)
    _check_linear_shapes(x, w, b, dy)
    for name, v in (("y", y), ("z", z)):
        if v is not None and tuple(v.shape) != tuple(dy.shape):
            raise ValueError(f"linear_backward: {name} has shape "
                             f"{tuple(v.shape)}, expected {tuple(dy.shape)}")
    on_device = any(_on_device(v, cuda) for v in (x, w, dy, y, b, z)
                    if v is not None)
    dx2 = _rows(_device(x, dtype, cuda, k), cuda, k)
    dw_ = _device(w, dtype, cuda, k)
    dy2 = _rows(_device(dy, dtype, cuda, k), cuda, k)
    rows, n_out = dy2.shape
    if act == "identity":
        dz = dy2
    else:
        gelu = act in ("gelu_tanh", "gelu_erf")
        src = z if gelu else y
        if src is None:
            src2 = _linear_forward(x, w, b, act, slope, dtype, cuda, k,
                                   pre=gelu)
        else:
            src2 = _rows(_device(src, dtype, cuda, k), cuda, k)
        dz = cuda.device_array((rows, n_out), dtype)
        if rows and n_out:
            if act == "softmax":
                threads = k.row_threads()
                k.softmax_backward_kernel(dtype.name, threads)[
                    rows, threads](dy2, src2, dz, n_out)
            else:
                _launch_2d(k.activation_grad_kernel(dtype.name, act),
                           dz.shape, cuda, k)(dy2, src2, src2, dz,
                                              dtype.type(slope))
    dx = cuda.device_array((rows, tuple(w.shape)[0]), dtype)
    _run_gemm(1.0, dz, dw_, 0.0, None, dx, False, True, cuda, k)
    dw = cuda.device_array(tuple(w.shape), dtype)
    _run_gemm(1.0, dx2, dz, 0.0, None, dw, True, False, cuda, k)
    db = _column_sum(dz, dtype, cuda, k)
    dx = dx.reshape(tuple(x.shape))
    return (_to_host(dx, on_device), _to_host(dw, on_device),
            _to_host(db, on_device))


def _column_sum(d, dtype, cuda, k):
    """Sum over rows of 2-D device array d, as a 1-D device array."""
    rows, n = d.shape
    out = cuda.device_array((1, n), dtype)
    if n == 0:
        return out.reshape(n)
    kernel = k.colsum_kernel(dtype.name)
    tpb = k.row_threads()
    blocks = (n + tpb - 1) // tpb
    chunk = k.COLSUM_ROWS
    chunks = max(1, (rows + chunk - 1) // chunk)
    if chunks == 1:
        kernel[(blocks, 1), tpb](d, out, max(rows, 1))
    else:
        # two passes: fixed-size row chunks, then the chunk partials
        part = cuda.device_array((chunks, n), dtype)
        kernel[(blocks, chunks), tpb](d, part, chunk)
        kernel[(blocks, 1), tpb](part, out, chunks)
    return out.reshape(n)
