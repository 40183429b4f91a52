# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The kernels and block sizes in force: BLIS's "context" for the packed
driver's loops (driver/_packed.pyx), which read it once per product through
``active_blocking``.

The kernel families are compiled here, from kernels/dispatch.h's table; one
of them is in force, chosen once at import (FASTMM_KERNEL, or the best this
CPU runs) and switched by ``select_kernel``, which switches the unpacked
path, the low-precision kernels and the activations with it.  fastmm.config
applies its row's block sizes through ``set_blocking``.
"""
from libc.stdlib cimport malloc, free

from fastmm.nn._epilogue cimport fmm_act_select

cdef extern from "kernels/dispatch.h" nogil:
    # the kernel signatures are _context.pxd's (ukernel.h's contract)
    ctypedef struct fmm_kernel_t:
        const char* name
        int (*cpu_supports)()
        int s_mr, s_nr
        sgemm_ukr_t sgemm
        int d_mr, d_nr
        dgemm_ukr_t dgemm
        sgemm_rows_t sgemm_rows
        dgemm_rows_t dgemm_rows
        int split_rows
        sgemm_ukr_t sgemm_stream
        dgemm_ukr_t dgemm_stream
    const fmm_kernel_t* fmm_kernels
    int fmm_kernel_count()
    int FMM_MAX_TILE

cdef extern from "driver/_parallel.h" nogil:
    const void* fmm_load_config(const void* const* slot)
    void fmm_publish_config(const void** slot, const void* cfg)


# One kernel family with its blocking for both dtypes.  Each is filled once
# and never written again; select_kernel and set_blocking publish a pointer
# to one with a single atomic store, and a product reads that pointer once,
# so a switch while other threads multiply can never mix two families' MR,
# NR, block sizes and kernels in one product.  A replaced Config is not
# freed (a product may still be reading it): a few hundred bytes per
# set_blocking call, which only the configuration and the tuner make.
cdef struct Config:
    const fmm_kernel_t* kernel
    Blocking s
    Blocking d

# per kernel family, the Config in force for it; replaced (never modified)
# by set_blocking
cdef const Config* _family_cfg[8]
cdef const Config* _active = NULL


cdef inline const Config* _config() noexcept nogil:
    return <const Config*>fmm_load_config(<const void* const*>&_active)


cdef const Blocking* active_blocking(bint f64) noexcept nogil:
    cdef const Config* cfg = _config()
    return &cfg.d if f64 else &cfg.s


# ---- kernel selection (once at import; FASTMM_KERNEL or select_kernel) ----

def available_kernels():
    """Names of the kernel families this CPU can run, best first."""
    return [fmm_kernels[i].name.decode() for i in range(fmm_kernel_count())
            if fmm_kernels[i].cpu_supports()]


def compiled_kernels():
    """Names of all kernel families in this build, best first."""
    return [fmm_kernels[i].name.decode() for i in range(fmm_kernel_count())]


def select_kernel(name=None):
    """Use kernel family ``name`` (None: the best this CPU supports).

    Returns the name chosen.  A family this CPU cannot run, or one this build
    lacks, falls back to the best supported one with a RuntimeWarning.
    """
    import warnings
    supported = available_kernels()
    if name is None or name == "":
        name = supported[0]
    elif name not in supported:
        known = compiled_kernels()
        why = ("this CPU lacks its instructions" if name in known
               else f"unknown kernel; choose from {known}")
        warnings.warn(f"fastmm: kernel {name!r} unavailable ({why}); "
                      f"using {supported[0]!r}", RuntimeWarning, stacklevel=2)
        name = supported[0]
    fmm_publish_config(<const void**>&_active, _family_cfg[_family(name)])
    # the unpacked small-product path and the activations share the ISA
    # names: one decision switches all three
    import sys
    for module, select in (("fastmm.driver._unpacked", "select_small_kernel"),
                           ("fastmm._lowp", "select_lowp"),
                           ("fastmm._linalg", "_select_activation_isa"),
                           ("fastmm.nn._ops", "_select_activation_isa")):
        # a module still importing sets its copy from kernel_info() itself
        fn = getattr(sys.modules.get(module), select, None)
        if fn is not None:
            fn(name)
    cdef bytes key = name.encode()
    fmm_act_select(key)
    return name


cdef int _family(str name) except -1:
    cdef int i
    for i in range(fmm_kernel_count()):
        if fmm_kernels[i].name.decode() == name:
            return i
    raise ValueError(f"unknown kernel family {name!r}; this build has "
                     f"{compiled_kernels()}")


def set_blocking(name, float32, float64, stream=False, l2_budget=None):
    """Use cache block sizes (MC, KC, NC) per dtype for kernel family
    ``name`` from now on (fastmm.config applies its row's; the tuner tries
    candidates).  MC and NC are rounded down to multiples of the kernel's
    MR and NR.  ``stream``: use the family's streaming kernels (which
    prefetch the packed panels ahead; kernels/ukernel.h) where it has them.
    ``l2_budget``: bytes of L2 that size the packed driver's one-A-block
    path for few rows (B chunks of half of it; with wide B, A blocks up to
    twice it); None: the A block's, MC x KC.  Safe while other threads
    multiply."""
    cdef int i = _family(name)
    cdef const fmm_kernel_t* kern = &fmm_kernels[i]
    cdef void* sgemm = <void*>kern.sgemm
    cdef void* dgemm = <void*>kern.dgemm
    if stream and kern.sgemm_stream != NULL:
        sgemm = <void*>kern.sgemm_stream
    if stream and kern.dgemm_stream != NULL:
        dgemm = <void*>kern.dgemm_stream
    cdef Config* cfg = <Config*>malloc(sizeof(Config))
    if cfg == NULL:
        raise MemoryError()
    cfg.kernel = kern
    try:
        _fill_blocking(&cfg.s, cfg.kernel.s_mr, cfg.kernel.s_nr, sgemm,
                       float32, 4, l2_budget)
        _fill_blocking(&cfg.d, cfg.kernel.d_mr, cfg.kernel.d_nr, dgemm,
                       float64, 8, l2_budget)
        cfg.s.ukr_rows = <void*>cfg.kernel.sgemm_rows
        cfg.d.ukr_rows = <void*>cfg.kernel.dgemm_rows
        cfg.s.split_rows = cfg.kernel.split_rows if cfg.s.ukr_rows else 0
        cfg.d.split_rows = cfg.kernel.split_rows if cfg.d.ukr_rows else 0
    except BaseException:
        free(cfg)
        raise
    _family_cfg[i] = cfg
    if _active != NULL and _active.kernel == cfg.kernel:
        fmm_publish_config(<const void**>&_active, cfg)


cdef int _fill_blocking(Blocking* blk, int mr, int nr, void* ukr,
                        sizes, int itemsize, l2_budget) except -1:
    mc, kc, nc = (int(x) for x in sizes)
    if min(mc, kc, nc) < 1 or max(mc, kc, nc) > 1 << 20:
        raise ValueError(f"block sizes must lie in [1, 2**20], got {sizes}")
    blk.MR, blk.NR, blk.ukr = mr, nr, ukr
    blk.MC = max(mr, mc // mr * mr)
    blk.KC = kc
    blk.NC = max(nr, nc // nr * nr)
    budget = blk.MC * kc * itemsize if l2_budget is None else int(l2_budget)
    if not 1 <= budget <= 1 << 40:
        raise ValueError(f"l2_budget must lie in [1, 2**40], got {l2_budget}")
    blk.one_block_m = max(2 * blk.MC,
                          2 * budget // (kc * itemsize) // mr * mr)
    blk.chunk = max(1, budget // (2 * nr * kc * itemsize))
    return 0


cdef void _fill_configs():
    from fastmm._cpu import block_sizes
    cdef int i
    cdef const fmm_kernel_t* k
    if fmm_kernel_count() > 8:
        raise ImportError("fastmm: more kernel families than _family_cfg holds")
    for i in range(fmm_kernel_count()):
        k = &fmm_kernels[i]
        set_blocking(k.name.decode(), block_sizes(k.s_mr, k.s_nr, 4),
                     block_sizes(k.d_mr, k.d_nr, 8))


def kernel_shapes(name):
    """{"float32": (MR, NR), "float64": (MR, NR)} of kernel family ``name``."""
    cdef const fmm_kernel_t* k = &fmm_kernels[_family(name)]
    return {"float32": (k.s_mr, k.s_nr), "float64": (k.d_mr, k.d_nr)}


def kernel_info():
    """The kernel family in use and its register and cache block sizes."""
    cdef const Config* cfg = _config()
    return {"name": cfg.kernel.name.decode(),
            "float32": _blocking_dict(&cfg.s,
                                      <void*>cfg.kernel.sgemm_stream),
            "float64": _blocking_dict(&cfg.d,
                                      <void*>cfg.kernel.dgemm_stream)}


cdef dict _blocking_dict(const Blocking* blk, void* stream_ukr):
    return {"MR": blk.MR, "NR": blk.NR, "MC": blk.MC, "KC": blk.KC,
            "NC": blk.NC, "split_rows": blk.split_rows,
            "one_block_m": blk.one_block_m, "chunk": blk.chunk,
            "stream": stream_ukr != NULL and blk.ukr == stream_ukr}


def run_ukernel(name, Py_ssize_t k, alpha, a_packed, b_packed, beta, c,
                rows=None, stream=False):
    """Call kernel family ``name``'s micro-kernel once (for tests).

    a_packed: (k, MR), b_packed: (k, NR), c: (MR, NR) with unit column stride;
    all of one dtype, float32 or float64.  Updates c in place.  ``rows``
    (1..MR): call the family's edge-row kernel instead, which may touch only
    c's first ``rows`` rows; ``stream``: its streaming kernel; ValueError if
    the family has none.
    """
    import numpy as np
    cdef int i
    cdef const fmm_kernel_t* kern = NULL
    for i in range(fmm_kernel_count()):
        if fmm_kernels[i].name.decode() == name:
            kern = &fmm_kernels[i]
    if kern == NULL or not kern.cpu_supports():
        raise ValueError(f"kernel {name!r} is not available on this CPU")
    dtype = c.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError("run_ukernel works on float32 or float64")
    cdef int mr = kern.s_mr if dtype == np.float32 else kern.d_mr
    cdef int nr = kern.s_nr if dtype == np.float32 else kern.d_nr
    if k < 1 or a_packed.shape != (k, mr) or b_packed.shape != (k, nr) \
            or c.shape != (mr, nr) or c.strides[1] != c.itemsize:
        raise ValueError(f"shapes must be ({k}, {mr}), ({k}, {nr}), ({mr}, {nr})")
    # the contract promises the kernel 64-byte aligned panels
    ap = _aligned_copy(np, a_packed, dtype)
    bp = _aligned_copy(np, b_packed, dtype)
    cdef float[:, ::1] sa, sb
    cdef double[:, ::1] da, db
    cdef float[:, :] sc
    cdef double[:, :] dc
    cdef int r = mr if rows is None else rows
    cdef sgemm_ukr_t sgemm = kern.sgemm_stream if stream else kern.sgemm
    cdef dgemm_ukr_t dgemm = kern.dgemm_stream if stream else kern.dgemm
    if stream and (rows is not None or
                   (sgemm if dtype == np.float32 else dgemm) == NULL):
        raise ValueError(f"kernel {name!r} has no streaming kernel"
                         + (" for edge rows" if rows is not None else ""))
    if rows is not None:
        if (kern.sgemm_rows if dtype == np.float32 else kern.dgemm_rows) == NULL:
            raise ValueError(f"kernel {name!r} has no edge-row kernel")
        if not 1 <= r <= mr:
            raise ValueError(f"rows must lie in [1, {mr}], got {rows}")
    if dtype == np.float32:
        sa, sb, sc = ap, bp, c
        if rows is None:
            sgemm(k, alpha, &sa[0, 0], &sb[0, 0], beta, &sc[0, 0],
                  c.strides[0] // 4)
        else:
            kern.sgemm_rows(k, alpha, &sa[0, 0], &sb[0, 0], beta, &sc[0, 0],
                            c.strides[0] // 4, r)
    else:
        da, db, dc = ap, bp, c
        if rows is None:
            dgemm(k, alpha, &da[0, 0], &db[0, 0], beta, &dc[0, 0],
                  c.strides[0] // 8)
        else:
            kern.dgemm_rows(k, alpha, &da[0, 0], &db[0, 0], beta, &dc[0, 0],
                            c.strides[0] // 8, r)
    return c


def has_edge_rows(name, dtype):
    """Whether kernel family ``name`` has an edge-row kernel for dtype."""
    cdef const fmm_kernel_t* k = &fmm_kernels[_family(name)]
    return (k.sgemm_rows if dtype == "float32" else k.dgemm_rows) != NULL


def has_stream(name, dtype):
    """Whether kernel family ``name`` has a streaming kernel for dtype."""
    cdef const fmm_kernel_t* k = &fmm_kernels[_family(name)]
    return (k.sgemm_stream if dtype == "float32" else k.dgemm_stream) != NULL


def _aligned_copy(np, arr, dtype):
    nbytes = arr.size * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    out = raw[start:start + nbytes].view(dtype).reshape(arr.shape)
    out[...] = arr
    return out


import os as _os
_fill_configs()
select_kernel(_os.environ.get("FASTMM_KERNEL") or None)
