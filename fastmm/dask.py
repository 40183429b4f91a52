"""Dask arrays whose block products are fastmm calls: larger than one machine::

    import dask.array as da
    import fastmm.dask

    C = fastmm.dask.matmul(A, B)              # np.matmul's rules; lazy
    Y = fastmm.dask.linear(X, w, b, "relu")   # X chunked by rows; w, b numpy
    P = fastmm.dask.predict(model, X)         # a fastmm.nn.Sequential
    C.compute()                               # local threads, or a Client

Install with ``pip install 'fastmm[dask]'`` (``dask[array]`` and
``distributed``); ``import fastmm`` never imports Dask.

How a product is laid out.  The output's blocks are A's row blocks by B's
column blocks.  First the shared dimension k: by default (``k_chunks=
"auto"``) A's consecutive k blocks are merged while one task's operands and
result (a row panel of A, a column panel of B, an output block) stay within
Dask's ``array.chunk-size`` (128 MiB unless configured).  When the whole k
fits, each output block is one task that receives A's row panel and B's
column panel as their blocks and accumulates ``A[i, k] @ B[k, j]`` over k
in one array (``fastmm.gemm`` with beta = 1): large products at the packed
kernel's full speed, no panel copied into one piece, and no partial
products to move between workers and add.  Otherwise, for every output
block (i, j) and every block k, one task computes ``fastmm.matmul(A[i, k],
B[k, j])`` (a ``da.blockwise`` over the output grid, with batch dimensions
broadcast as np.matmul broadcasts them), and the partial products of an
output block are added by a tree reduction (``da.reduction`` over the
k-block axis): each addition task takes at most ``split_every`` partials,
so no task holds more than that many blocks, and no k-sized array is ever
assembled.  B's blocks along k follow A's (B is rechunked when they
differ), so every product pairs whole blocks.  Inputs may be numpy arrays
(wrapped with Dask's automatic chunks) or Dask arrays with known chunk
sizes.

Threads.  A block product is one task, and a Dask worker runs ``nthreads``
tasks at once.  Each block product runs fastmm on
``max(1, budget // nthreads)`` threads, where ``budget`` is the worker
process's CPU budget: ``FASTMM_NUM_THREADS`` in the worker's environment
when set, else ``nthreads`` itself.  By default, then, one fastmm thread per
Dask thread, and a worker keeps as many cores busy as it has threads: the
split of the machine's cores that LocalCluster and ``dask worker`` already
made.  Never fastmm's usual count (every CPU the process may use): several
workers share a machine, and each using every core would oversubscribe it
by that factor.  (Dask's nanny also sets OMP_NUM_THREADS=1 in its workers;
that says nothing about the budget, so it is not read.)  For fewer, larger
tasks at once, give workers fewer threads and a budget:
``FASTMM_NUM_THREADS=8 dask worker tcp://host:8786 --nthreads 2`` runs two
products at a time on four threads each.  Under Dask's local schedulers: a
task on a pool thread (the threaded scheduler; the processes scheduler's
children) runs on one fastmm thread, as the pool already has a thread per
core; a task on the main thread (the synchronous scheduler) is the only one
running and uses fastmm's own count.  :func:`block_threads` tells which
count applies where it is called.
"""
import math
import multiprocessing
import os
import sys
import threading
import time
import warnings

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.utils import parse_bytes
except ImportError as e:
    raise ImportError(f"fastmm.dask needs Dask ({e}); install it with "
                      f"pip install 'fastmm[dask]'") from e

import fastmm
from fastmm.driver import _threads
from fastmm import nn

__all__ = ["matmul", "linear", "predict", "block_threads", "benchmark"]


# ---- threads

def _split(budget, nthreads):
    """fastmm threads for each of ``nthreads`` concurrent block products
    sharing ``budget`` cores (None: one each)."""
    return max(1, (budget or nthreads) // nthreads)


def _worker_budget():
    """FASTMM_NUM_THREADS of this process's environment, or None."""
    return _threads._parse_env("FASTMM_NUM_THREADS")


def _current_worker():
    """The distributed Worker running the calling task, or None.  A task
    runs in a worker only where distributed is already imported, so a local
    computation never pays for importing it."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return distributed.get_worker()
    except ValueError:           # not inside a worker
        return None


def block_threads():
    """The fastmm thread count a block product started on the calling thread
    uses: an integer, or None for fastmm's own count (see the module's
    docstring).  In a worker: ``client.submit(fastmm.dask.block_threads)``.
    """
    worker = _current_worker()
    if worker is not None:
        return _split(_worker_budget(), worker.state.nthreads)
    if (threading.current_thread() is threading.main_thread()
            and multiprocessing.parent_process() is None):
        return None
    return 1


def _call(func, *args, **kwargs):
    n = block_threads()
    if n is None:
        return func(*args, **kwargs)
    with fastmm.threads(n):
        return func(*args, **kwargs)


# ---- tasks

def _panel_product(a_blocks, b_blocks):
    """One output block from a row panel of A and a column panel of B, given
    as their k blocks: the block products accumulate into one array, the k
    loop of a packed GEMM, so no panel is ever copied into one piece and no
    partial product leaves the task."""
    pairs = zip(a_blocks, b_blocks)
    a, b = next(pairs)
    c = _call(fastmm.matmul, a, b)
    for a, b in pairs:
        if c.ndim == 2 and c.dtype in (np.float32, np.float64):
            # C := A_k @ B_k + C in the kernel: no temporary, one pass over C
            c = _call(fastmm.gemm, 1.0, a, b, 1.0, c, overwrite_c=True)
        else:
            c += _call(fastmm.matmul, a, b)
    return c


def _partial_product(a, b):
    """One k block's share of one output block, with a length-1 axis in
    place of the k-block index, which the reduction sums over."""
    return _call(fastmm.matmul, a, b)[..., None, :]


def _keep(partial, axis, keepdims):
    """The reduction's first step: a partial product is its own summary."""
    return partial


def _add_partials(parts, axis, keepdims):
    """The sum of one output block's partial products (a list, as the
    reduction runs with concatenate=False; Dask's dtype probe passes one
    array); without the k-block axis unless ``keepdims``."""
    if isinstance(parts, np.ndarray):
        parts = [parts]
    total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    for part in parts[2:]:
        total += part            # a sum this task made: never an input block
    return total if keepdims else total.squeeze(axis)


def _linear_block(x, w, b, activation, slope):
    return _call(nn.linear, x, w, b, activation, slope=slope)


# ---- operands

def _dask_array(x, who, name):
    """x as a Dask array (numpy arrays get Dask's automatic chunks);
    ValueError if the sizes of its chunks are unknown."""
    x = x if isinstance(x, da.Array) else da.asarray(x)
    if any(math.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError(
            f"{who}: {name} has unknown chunk sizes (chunks={x.chunks}), as "
            f"after boolean indexing; the blocks of a product must pair "
            f"known sizes: call {name}.compute_chunk_sizes() first")
    return x


def _core_dims(a, b):
    """Check a @ b's shapes as np.matmul does; return a and b with 1-D
    operands made matrices and equal numbers of batch axes, and the axes to
    drop from the product (where a 1-D operand's matrix axis went)."""
    for i, x in enumerate((a, b)):
        if x.ndim == 0:
            raise ValueError(f"matmul: input operand {i} is 0-d (shape "
                             f"{x.shape}); np.matmul needs at least 1-D")
    shapes = (a.shape, b.shape)
    drop = []
    if a.ndim == 1:
        a = a[None, :]
        drop.append(-2)
    if b.ndim == 1:
        b = b[:, None]
        drop.append(-1)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: the shared dimensions differ (size "
                         f"{a.shape[-1]} and {b.shape[-2]}; operand shapes "
                         f"{shapes[0]} and {shapes[1]})")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions {a.shape[:-2]} and "
                         f"{b.shape[:-2]} do not broadcast (operand shapes "
                         f"{shapes[0]} and {shapes[1]})") from None
    a = a[(None,) * (len(batch) + 2 - a.ndim)]
    b = b[(None,) * (len(batch) + 2 - b.ndim)]
    return a, b, tuple(drop)


def _merged_k_chunks(chunks, fit):
    """A's k chunks with consecutive ones merged into as few groups as hold
    at most ``fit`` elements each, and those groups as even as the chunks
    allow: partial products of equal depth, so no worker waits on a longer
    one (four 2048 chunks with room for 7168 make 4096 + 4096, not 6144 +
    2048).  A chunk already larger stays as it is: no block is split."""
    greedy = []
    for size in chunks:
        if greedy and greedy[-1] + size <= fit:
            greedy[-1] += size
        else:
            greedy.append(size)
    groups, total = len(greedy), sum(chunks)
    if groups <= 1 or total == 0:
        return tuple(greedy)
    # each chunk joins the group its midpoint falls in, of `groups` equal
    # shares of k
    even, count, done = [0] * groups, [0] * groups, 0
    for size in chunks:
        g = min(groups - 1, (2 * done + size) * groups // (2 * total))
        even[g] += size
        count[g] += 1
        done += size
    if 0 in count or any(s > fit and c > 1 for s, c in zip(even, count)):
        return tuple(greedy)
    return tuple(even)


def _auto_k_chunks(a, b, dtype):
    """k_chunks="auto": the k chunks one task can hold within Dask's
    ``array.chunk-size``: a row panel of a, a column panel of b and the
    output block, at their largest."""
    budget = parse_bytes(dask.config.get("array.chunk-size"))
    rows, cols = max(a.chunks[-2], default=0), max(b.chunks[-1], default=0)
    batch = max((math.prod(max(c, default=0) for c in x.chunks[:-2])
                 for x in (a, b)), default=1)
    per_k = batch * (rows * a.dtype.itemsize + cols * b.dtype.itemsize)
    room = budget - batch * rows * cols * np.dtype(dtype).itemsize
    fit = room // per_k if per_k else a.shape[-1]
    return _merged_k_chunks(a.chunks[-1], fit)


def matmul(a, b, *, k_chunks="auto", split_every=4):
    """a @ b for Dask arrays, each block product a fastmm call; lazy.

    np.matmul's rules: stacks of matrices with broadcast batch dimensions,
    a 1-D operand as a row (left) or column (right) vector whose axis is
    removed from the result, and np.matmul's result dtype.  Inputs with
    unknown chunk sizes are a ValueError.  The result's row and column
    chunks are A's row and B's column chunks; each element is within the
    k*eps bound of a dot product (the partial sums are one summation order
    of the k terms).

    ``k_chunks``: how the shared dimension k is split into blocks.
    ``"auto"`` (default): when a row panel of A, a column panel of B and an
    output block fit Dask's ``array.chunk-size`` together (lower that
    setting for workers with little memory), one task per output block
    takes the panels as their k blocks, unchanged, and accumulates their
    products: no reduction.  Otherwise A's consecutive k blocks are merged
    (never split) while a task still fits.  ``None``: A's k blocks as they
    are, one partial product each.  Anything ``rechunk`` takes for one axis
    (an int block size, ``-1`` for all of k, a tuple of sizes): that.
    ``split_every``: the most partial products one addition task of the k
    reduction takes (>= 2).
    """
    a = _dask_array(a, "fastmm.dask.matmul", "a")
    b = _dask_array(b, "fastmm.dask.matmul", "b")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    # fastmm itself decides the result dtype (and rejects unsupported ones)
    dtype = fastmm.matmul(np.empty((0, 0), a.dtype),
                          np.empty((0, 0), b.dtype)).dtype
    a, b, drop = _core_dims(a, b)
    whole_k = False
    if isinstance(k_chunks, str):
        if k_chunks != "auto":
            raise ValueError(f"k_chunks must be 'auto', None, or a chunk "
                             f"size for rechunk, got {k_chunks!r}")
        k_chunks = _auto_k_chunks(a, b, dtype)
        # all of k in one task: its blocks stay as they are (no rechunk)
        whole_k = len(k_chunks) <= 1
        if whole_k:
            k_chunks = None
    if k_chunks is not None:
        a = a.rechunk({a.ndim - 1: k_chunks})
    if b.chunks[-2] != a.chunks[-1]:
        b = b.rechunk({b.ndim - 2: a.chunks[-1]})
    nbatch = a.ndim - 2
    batch = tuple(range(nbatch))
    i, k, j = nbatch, nbatch + 1, nbatch + 2
    if whole_k or a.numblocks[-1] <= 1:
        # one task per output block, handed A's row panel and B's column
        # panel as lists of their k blocks (k contracted, not concatenated)
        c = da.blockwise(_panel_product, batch + (i, j), a, batch + (i, k),
                         b, batch + (k, j), concatenate=False,
                         token="fastmm-product", dtype=dtype,
                         meta=np.empty((0,) * (nbatch + 2), dtype))
    else:
        c = _k_reduction(a, b, dtype, split_every)
    if drop:
        core = [slice(None), slice(None)]
        for axis in drop:
            core[axis] = 0
        c = c[(Ellipsis, *core)]
    return c


def _k_reduction(a, b, dtype, split_every):
    """a @ b as partial products over a's k blocks, added by a tree
    reduction."""
    nbatch = a.ndim - 2
    batch = tuple(range(nbatch))
    i, k, j = nbatch, nbatch + 1, nbatch + 2
    with warnings.catch_warnings():
        # Dask warns when an output has many more blocks than its inputs;
        # one block per (i, k, j) is the point here, and the reduction
        # consumes them as they are made: the array is never held whole.
        warnings.filterwarnings("ignore", "Increasing number of chunks",
                                da.PerformanceWarning)
        partials = da.blockwise(_partial_product, batch + (i, k, j),
                                a, batch + (i, k), b, batch + (k, j),
                                adjust_chunks={k: 1}, token="fastmm-product",
                                dtype=dtype,
                                meta=np.empty((0,) * (nbatch + 3), dtype))
    return da.reduction(partials, _keep, _add_partials, combine=_add_partials,
                        axis=k, keepdims=False, dtype=dtype,
                        split_every={k: split_every}, concatenate=False,
                        name="fastmm-sum",
                        meta=np.empty((0,) * (nbatch + 2), dtype))


# ---- dense layers

def linear(x, w, b=None, activation=None, *, slope=0.01):
    """act(x @ w + b) for a 2-D Dask array x, one fastmm.nn.linear call per
    row-chunk; lazy.

    Parameters
    ----------
    x : dask.array.Array, shape (samples, in)
        Row-chunk sizes may be unknown (as after boolean indexing); a
        feature axis split into chunks is merged into one.
    w : array_like, shape (in, out)
    b : array_like, shape (out,), optional
        ``w`` and ``b`` are copied now, so later changes to them do not
        reach the result; each becomes one block of the graph, which a
        worker receives once for all its row-chunks.
    activation : str, optional
        As :func:`fastmm.nn.linear`.
    slope : float, optional
        leaky_relu's negative slope.

    Returns
    -------
    dask.array.Array, shape (samples, out)
        Each output chunk has its input chunk's rows; the dtype is
        fastmm.nn.linear's.
    """
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"fastmm.dask.linear: x must be 2-D (batch, "
                         f"features), got shape {x.shape}")
    w = np.array(w)
    b = None if b is None else np.array(b)
    if math.isnan(x.shape[1]):
        raise ValueError("fastmm.dask.linear: x's number of features is "
                         "unknown; call x.compute_chunk_sizes() first")
    # fastmm.nn.linear on no rows checks the shapes, activation and slope
    # with its own messages and gives the result dtype
    dtype = nn.linear(np.empty((0, x.shape[1]), x.dtype), w, b, activation,
                      slope=slope).dtype
    if x.numblocks[1] > 1:
        # The bias and activation are applied to finished sums (and softmax
        # needs whole rows), so a task must see all of a row's features:
        # one chunk along that axis.  Row-chunks keep their sizes.
        x = x.rechunk({1: -1})
    w_block = da.from_array(w, chunks=w.shape)
    b_args = (None, None) if b is None else (da.from_array(b, chunks=b.shape),
                                             "j")
    return da.blockwise(_linear_block, "ij", x, "ik", w_block, "kj",
                        *b_args, activation, None, slope, None,
                        concatenate=True, token="fastmm-linear", dtype=dtype,
                        meta=np.empty((0, 0), dtype))


def predict(model, X):
    """``model.predict(X)`` for a Dask array X of shape (samples,
    features): every layer of a fastmm.nn.Sequential, as :func:`linear`
    over X's row-chunks (Dask fuses the layers into one task per
    row-chunk).  The weights are copied now, as they are when this is
    called.  Each layer's input is cast to the layer's dtype first, as
    Sequential.predict does.

    Parameters
    ----------
    model : fastmm.nn.Sequential
    X : dask.array.Array, shape (samples, features)

    Returns
    -------
    dask.array.Array
        The outputs, lazy, chunked as X's rows."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"predict needs a fastmm.nn.Sequential, got "
                        f"{type(model).__name__}")
    if not isinstance(X, da.Array):
        X = da.asarray(X)
    first = model.layers[0]
    if X.ndim != 2 or X.shape[1] != first.in_features:
        raise ValueError(f"X must have shape (samples, "
                         f"{first.in_features}), got {X.shape}")
    for layer in model.layers:
        X = linear(X.astype(layer.dtype), layer.W, layer.b, layer.activation,
                   slope=layer.slope)
    return X


# ---- benchmark

def _peak_rss():
    """This process's peak resident memory in bytes (Linux's VmHWM), or None
    where /proc is missing.  Not getrusage's ru_maxrss: that survives
    exec, so a worker spawned by a process holding gigabytes reports them."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024       # in kB
    except OSError:
        pass
    return None


def _rounds(ops, repeats, settle):
    """Each op's best time over ``repeats`` rounds that run every op once,
    calling ``settle()`` untimed after each.

    Not fastmm.bench._harness.time_products: that loops calls to time microsecond
    products and runs each one untimed first; a cluster run takes seconds,
    and the checks before timing have already run each one.  Rounds
    interleave the ops, so load that drifts hits all of them alike.
    """
    times = [[] for _ in ops]
    for _ in range(repeats):
        for samples, op in zip(times, ops):
            t0 = time.perf_counter()
            op()
            samples.append(time.perf_counter() - t0)
            settle()
    return [min(samples) for samples in times]


def _scheduler_tasks(dask_scheduler):
    return len(dask_scheduler.tasks)


def benchmark(n=4096, chunk=None, *, dtype="float32", n_workers=2,
              threads_per_worker=1, memory_limit="auto", k_chunks="auto",
              repeats=3, seed=0, verbose=False):
    """Time an n x n @ n x n product on a LocalCluster whose workers already
    hold the inputs: fastmm.dask.matmul against numpy blocks (Dask's own
    ``a @ b``) on the same cluster, and against one fastmm.matmul in this
    process on the cluster's total thread count (n_workers x
    threads_per_worker), on the same data.

    What is timed.  The inputs are made on the workers (``da.random``, in
    ``chunk`` x ``chunk`` blocks) and persisted before any timing, as a
    user's data lives on a cluster; making them is ``generate_s``, timed
    once, apart.  Each cluster time runs from submitting the product's graph
    (building it is not timed; rechunking the persisted blocks is part of
    the product) until every block of the result is in a worker's memory,
    left there (``client.persist``): ``fastmm_s`` (with ``k_chunks``),
    ``ksplit_s`` (fastmm blocks with A's k blocks as they are:
    ``k_chunks=None``), ``numpy_s``.  ``gathered_s``: fastmm.dask's product
    brought whole into this process (``client.compute(...).result()``), as
    a user who needs a numpy array waits for it.  ``single_s``: the
    in-process product of the gathered inputs.  All of these alternate in
    rounds, ``repeats`` of them, best time each; between runs (untimed) the
    scheduler forgets the last result, so no run finds blocks of another.

    Before timing, each cluster result is checked: two output blocks
    elementwise against the in-process product (the k*eps bound) and its
    float64 sum against the in-process one; a wrong result raises
    AssertionError instead of reporting a speed.  Returns a dict of the
    times (seconds), GFLOP/s, ``speedup`` (numpy blocks' time / fastmm
    blocks'), ``vs_single`` (in-process time / fastmm.dask's: 1.0 is no
    cost for distributing), ``block_threads`` (the fastmm threads a block
    product uses on each worker), the workers' largest peak resident memory
    and the 1-minute load average before the run; prints only with
    ``verbose``.
    """
    try:
        from distributed import Client, LocalCluster, futures_of, wait
    except ImportError as e:
        raise ImportError(f"fastmm.dask.benchmark needs distributed ({e}); "
                          f"install it with pip install 'fastmm[dask]'") from e
    from fastmm.bench._harness import check_result

    dtype = np.dtype(dtype)
    chunk = chunk or max(256, min(1024, n // 4))
    say = print if verbose else (lambda *args: None)
    load = os.getloadavg()[0]     # before this run adds its own
    flops = 2.0 * n ** 3
    total_threads = n_workers * threads_per_worker
    say(f"fastmm.dask benchmark: {n}x{n} @ {n}x{n} {dtype}, chunk {chunk}, "
        f"{n_workers} workers x {threads_per_worker} threads, "
        f"memory_limit {memory_limit}, k_chunks {k_chunks!r}; load average "
        f"{load:.2f}")

    with LocalCluster(n_workers=n_workers,
                      threads_per_worker=threads_per_worker, processes=True,
                      host="127.0.0.1", dashboard_address=None,
                      memory_limit=memory_limit) as cluster, \
            Client(cluster, set_as_default=False) as client, \
            client.as_current():               # for wait()
        rng = da.random.default_rng(seed)
        # positive entries: |A| @ |B| is the product itself, for the checksum
        A = rng.random((n, n), dtype=dtype, chunks=chunk)
        B = rng.random((n, n), dtype=dtype, chunks=chunk)
        t0 = time.perf_counter()
        A, B = client.persist([A, B])
        wait(futures_of([A, B]))
        t_generate = time.perf_counter() - t0
        idle = client.run_on_scheduler(_scheduler_tasks)

        def settle():
            """Wait until the scheduler holds only the inputs again."""
            while client.run_on_scheduler(_scheduler_tasks) > idle:
                time.sleep(0.01)

        a, b = client.gather(client.compute([A, B]))     # the same blocks
        settle()

        def single():
            with fastmm.threads(total_threads):
                return fastmm.matmul(a, b)
        c = single()
        checksum = float(c.sum(dtype=np.float64))
        edge = slice(chunk * ((n - 1) // chunk), n)   # the last, maybe partial
        corners = [(slice(0, chunk), slice(0, chunk)), (edge, edge)]
        products = {"fastmm": matmul(A, B, k_chunks=k_chunks),
                    "ksplit": matmul(A, B, k_chunks=None),
                    "numpy": A @ B}
        for who, C in products.items():
            say(f"checking {who} ...")
            C = client.persist(C)
            wait(futures_of(C))
            for rows, cols in corners:
                got = client.compute(C[rows, cols]).result()
                error = check_result(got, c[rows, cols], a[rows], b[:, cols])
                if error is not None:
                    raise AssertionError(f"{who}: {error}")
            total = client.compute(C.sum(dtype=np.float64)).result()
            if not abs(total - checksum) <= (2 * n * np.finfo(dtype).eps
                                             * checksum):
                raise AssertionError(f"{who}: checksum {total!r}, "
                                     f"in-process {checksum!r}")
            del C
            settle()
        del c
        threads = client.gather(
            [client.submit(block_threads, workers=[w], pure=False)
             for w in client.scheduler_info()["workers"]])

        def on_cluster(C):
            def persisted():
                wait(futures_of(client.persist(C)))   # then released
            return persisted
        ops = [on_cluster(C) for C in products.values()]
        ops.append(lambda: client.compute(products["fastmm"]).result())
        ops.append(single)
        say(f"timing {repeats} rounds ...")
        t_fastmm, t_ksplit, t_numpy, t_gathered, t_single = _rounds(
            ops, repeats, settle)
        peaks = [p for p in client.run(_peak_rss).values() if p]
        worker_peak = max(peaks) if peaks else None

    result = {
        "n": n, "dtype": dtype.name, "chunk": chunk, "n_workers": n_workers,
        "threads_per_worker": threads_per_worker, "k_chunks": k_chunks,
        "block_threads": threads,
        "input_bytes": A.nbytes + B.nbytes,
        "worker_peak_bytes": worker_peak,
        "fastmm_s": t_fastmm, "ksplit_s": t_ksplit, "numpy_s": t_numpy,
        "gathered_s": t_gathered, "single_s": t_single,
        "generate_s": t_generate,
        "fastmm_gflops": flops / t_fastmm / 1e9,
        "ksplit_gflops": flops / t_ksplit / 1e9,
        "numpy_gflops": flops / t_numpy / 1e9,
        "gathered_gflops": flops / t_gathered / 1e9,
        "single_gflops": flops / t_single / 1e9,
        "speedup": t_numpy / t_fastmm,
        "vs_single": t_single / t_fastmm,
        "load_average": load,
    }
    rows = [(f"fastmm.dask (k_chunks={k_chunks!r})", "fastmm"),
            ("fastmm.dask (k_chunks=None)", "ksplit"),
            ("numpy blocks (Dask's a @ b)", "numpy"),
            ("fastmm.dask, result gathered", "gathered"),
            (f"in-process fastmm, {total_threads} threads", "single")]
    say(f"inputs on the workers ({result['input_bytes'] / 2**20:.0f} MiB, "
        f"made in {t_generate:.2f} s, not timed); result left on the "
        f"workers unless gathered; best of {repeats} interleaved rounds:")
    for label, key in rows:
        say(f"  {label:34s} {result[key + '_gflops']:6.0f} GFLOP/s "
            f"({result[key + '_s']:.3f} s)")
    say(f"fastmm.dask / numpy blocks: {result['speedup']:.2f}x; fastmm.dask "
        f"/ in-process: {result['vs_single']:.2f}x; fastmm threads per "
        f"block product {threads}; worker peak "
        f"{'?' if worker_peak is None else round(worker_peak / 2**20)} MiB")
    return result
