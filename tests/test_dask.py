"""fastmm.dask on a real cluster: two worker processes on this machine.

Every result is compared with the long-double reference within the k*eps
bound (conftest.assert_close), and its shape and dtype with fastmm.matmul's
on the gathered arrays.  Each wait on the cluster has a timeout, so a hang
fails the test instead of stalling the run.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastmm
import fastmm.dask as fdask
from fastmm.driver import _threads
from conftest import assert_close, random, reference

TIMEOUT = 60                 # seconds for any one result from the cluster
MEMORY_LIMIT = "300MiB"      # per worker; the streaming test exceeds it


@pytest.fixture(scope="module")
def client():
    # not the default scheduler: tests that say nothing run locally
    with distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1,
            host="127.0.0.1", dashboard_address=None,
            memory_limit=MEMORY_LIMIT) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        yield c


def on_cluster(client, x):
    return client.compute(x).result(timeout=TIMEOUT)


def check(c, a, b):
    """c is a @ b: fastmm.matmul's shape and dtype, within the k*eps bound."""
    want = fastmm.matmul(a, b)
    assert c.shape == want.shape and c.dtype == want.dtype
    assert_close(c, reference(a, b), a, b)


def check_nonnegative(c, a, b):
    """c is a @ b for a and b >= 0, against fastmm.matmul on the gathered
    arrays: there |A| @ |B| is the product itself, so the k*eps bound needs
    no long-double copies of large inputs; twice the bound, as both results
    carry an error."""
    want = fastmm.matmul(a, b)
    assert c.shape == want.shape and c.dtype == want.dtype
    assert a.min() >= 0 and b.min() >= 0
    bound = 2 * (a.shape[-1] + 2) * np.finfo(c.dtype).eps * want
    assert np.all(np.abs(c - want) <= bound)


# (shape, chunks) of a and of b: chunkings that divide the shapes and that do
# not; b's k chunks unlike a's; many k blocks (a tree of additions several
# levels deep); stacks, broadcast batch dimensions and 1-D operands
CASES = {
    "divides": (((64, 96), (32, 32)), ((96, 48), (32, 16))),
    "ragged": (((70, 101), (32, 40)), ((101, 45), (25, 20))),
    "deep-k": (((20, 300), (8, 16)), ((300, 10), (16, 5))),
    "stack": (((3, 20, 30), (2, 8, 7)), ((3, 30, 10), (1, 11, 10))),
    "broadcast": (((4, 1, 20, 30), (2, 1, 10, 10)), ((5, 30, 12), (2, 9, 6))),
    "matrix-stack": (((20, 30), (8, 8)), ((3, 30, 12), (2, 9, 5))),
    "vector-stack": (((30,), (7,)), ((3, 30, 12), (2, 9, 5))),
    "stack-vector": (((3, 20, 30), (2, 8, 7)), ((30,), (9,))),
    "dot": (((30,), (7,)), ((30,), (9,))),
    "empty-k": (((5, 0), (2, 1)), ((0, 4), (1, 2))),
}


def operands(case, dtype):
    (shape_a, chunks_a), (shape_b, chunks_b) = CASES[case]
    a, b = random(shape_a, dtype, seed=1), random(shape_b, dtype, seed=2)
    return a, b, da.from_array(a, chunks=chunks_a), da.from_array(b, chunks_b)


# "auto": these small operands' k in one block, one product per output
# block; None: A's k blocks, partial products and the reduction
@pytest.mark.parametrize("k_chunks", ["auto", None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_matmul_on_cluster(client, case, dtype, k_chunks):
    a, b, A, B = operands(case, dtype)
    C = fdask.matmul(A, B, k_chunks=k_chunks)
    assert isinstance(C, da.Array) and C.dtype == fastmm.matmul(a, b).dtype
    check(on_cluster(client, C), a, b)


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
@pytest.mark.parametrize("case", ["ragged", "broadcast", "stack-vector"])
def test_matmul_local_schedulers(case, scheduler):
    a, b, A, B = operands(case, np.float64)
    check(fdask.matmul(A, B).compute(scheduler=scheduler), a, b)


def _products(C):
    """How many block products C's graph holds."""
    return sum(dask.utils.key_split(key) == "fastmm-product"
               for key in dict(C.__dask_graph__()))


def test_k_chunks():
    """How k is split: the products in the graph (output blocks x k blocks)
    and the result of each layout."""
    A = da.ones((64, 600), dtype=np.float32, chunks=(32, 100))   # 6 k blocks
    B = da.ones((600, 64), dtype=np.float32, chunks=(100, 32))   # 2x2 output
    layouts = {"auto": 4, None: 24, 300: 8, -1: 4, (100, 500): 8}
    for k_chunks, products in layouts.items():
        C = fdask.matmul(A, B, k_chunks=k_chunks)
        assert _products(C) == products, k_chunks
        np.testing.assert_array_equal(C.compute(scheduler="threads"), 600)
    # a task of "auto" holds 32 rows of A and 32 columns of B (256 bytes)
    # per k, and its 4 KiB output block, within Dask's chunk-size
    with dask.config.set({"array.chunk-size": 4096 + 256 * 250}):
        assert _products(fdask.matmul(A, B)) == 4 * 3      # pairs of blocks
    with dask.config.set({"array.chunk-size": 1000}):
        assert _products(fdask.matmul(A, B)) == 24         # never split
    # as few groups as fit, as even as the chunks allow, none split
    assert fdask._merged_k_chunks((3, 5, 2, 9, 1), 8) == (3, 7, 9, 1)
    assert fdask._merged_k_chunks((2048,) * 4, 7168) == (4096, 4096)
    assert fdask._merged_k_chunks((1,) * 6 + (7,), 8) == (6, 7)
    assert fdask._merged_k_chunks((100,) * 6, 250) == (200, 200, 200)
    assert fdask._merged_k_chunks((9, 9, 9), 8) == (9, 9, 9)
    assert fdask._merged_k_chunks((3, 3), 100) == (6,)
    with pytest.raises(ValueError, match="k_chunks"):
        fdask.matmul(A, B, k_chunks="whole")


def test_numpy_operands_and_mixed_dtypes():
    a = random((40, 30), np.float32, seed=1)
    b = random((30, 20), np.float64, seed=2)
    C = fdask.matmul(a, da.from_array(b, chunks=7))
    assert C.dtype == np.float64
    check(C.compute(scheduler="threads"), a, b)


def test_block_products_are_fastmm_calls():
    """Under the synchronous scheduler the tasks run on this thread, where
    fastmm's path recorder sees every block product."""
    a, b, A, B = operands("ragged", np.float32)
    with _threads.record() as seen:
        C = fdask.matmul(A, B).compute(scheduler="sync")
    assert seen, "no fastmm product ran"
    check(C, a, b)


def test_unknown_chunks_rejected():
    a = random((40, 30), np.float32)
    A = da.from_array(a, chunks=8)
    filtered = A[A[:, 0] > 0]            # rows: unknown chunk sizes
    with pytest.raises(ValueError, match="unknown chunk sizes.*"
                                         "compute_chunk_sizes"):
        fdask.matmul(filtered, A.T)
    with pytest.raises(ValueError, match="b has unknown chunk sizes"):
        fdask.matmul(A.T, filtered)


def test_shape_errors():
    A = da.ones((4, 3), chunks=2)
    with pytest.raises(ValueError, match="shared dimensions differ"):
        fdask.matmul(A, A)
    with pytest.raises(ValueError, match="do not broadcast"):
        fdask.matmul(da.ones((2, 4, 3)), da.ones((3, 3, 4)))
    with pytest.raises(ValueError, match="0-d"):
        fdask.matmul(da.ones(()), A)
    with pytest.raises(ValueError, match="split_every"):
        fdask.matmul(A, A.T, split_every=1)


# ---- dense layers

@pytest.mark.parametrize("activation", ["relu", "softmax", None])
def test_linear_on_cluster(client, activation):
    x = random((100, 20), np.float32, seed=1)
    w = random((20, 8), np.float32, seed=2)
    b = random(8, np.float32, seed=3)
    # split along the features too: linear must make them one chunk
    X = da.from_array(x, chunks=(30, 7))
    y = on_cluster(client, fdask.linear(X, w, b, activation))
    want = fastmm.nn.linear(x, w, b, activation)
    assert y.dtype == want.dtype
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_linear_unknown_rows_and_copied_weights():
    x = random((100, 20), np.float64, seed=1)
    w = random((20, 8), np.float64, seed=2)
    X = da.from_array(x, chunks=(30, 20))
    Y = fdask.linear(X[X[:, 0] > 0], w, None, "tanh")
    w[:] = 0                         # after the graph is built: not seen
    want = fastmm.nn.linear(x[x[:, 0] > 0], random((20, 8), np.float64, 2),
                            None, "tanh")
    np.testing.assert_allclose(Y.compute(scheduler="threads"), want,
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="inner dimensions"):
        fdask.linear(X, w.T)
    with pytest.raises(ValueError, match="unknown activation"):
        fdask.linear(X, w, None, "swish")


def test_predict_on_cluster(client):
    model = fastmm.nn.Sequential([fastmm.nn.Dense(20, 16, "relu", seed=0),
                                  fastmm.nn.Dense(16, 5, "softmax", seed=1)])
    x = random((130, 20), np.float64, seed=4)
    got = on_cluster(client, fdask.predict(model, da.from_array(x, 40)))
    want = model.predict(x)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        fdask.predict(model, da.ones((4, 3)))


# ---- threads

def test_thread_split():
    assert fdask._split(None, 4) == 1        # default: one per Dask thread
    assert fdask._split(8, 2) == 4           # FASTMM_NUM_THREADS=8, 2 threads
    assert fdask._split(8, 3) == 2
    assert fdask._split(2, 8) == 1


def test_threads_local_schedulers():
    assert fdask.block_threads() is None     # the main thread: synchronous
    task = dask.delayed(fdask.block_threads)()
    assert task.compute(scheduler="threads") == 1


def _product_team():
    """On a worker: the fastmm team a block product ran with."""
    a = np.ones((300, 300))
    with _threads.parallel_threshold(0), _threads.record() as seen:
        fdask._partial_product(a, a)
    return fdask.block_threads(), seen


def test_threads_on_workers(client):
    # threads_per_worker=1 and no FASTMM_NUM_THREADS: one thread per product
    count, seen = client.submit(_product_team, pure=False).result(TIMEOUT)
    assert count == 1
    assert set(seen.values()) == {1}, seen


# the scheduler's HTTP routes (not the dashboard) move off the first
# cluster's port, with a warning
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_threads_from_worker_environment():
    """The documented way to give each block product more threads: a CPU
    budget in the workers' environment, split among their threads."""
    with distributed.LocalCluster(
            processes=True, n_workers=1, threads_per_worker=1,
            host="127.0.0.1", dashboard_address=None,
            env={"FASTMM_NUM_THREADS": "2"}) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        count, seen = c.submit(_product_team, pure=False).result(TIMEOUT)
    assert count == 2
    assert set(seen.values()) == {2 if _threads.HAVE_OPENMP else 1}, seen


# ---- packaging

def test_import_fastmm_skips_dask_and_missing_dask_names_extra():
    code = ("import sys, fastmm\n"
            "assert not any(m == 'dask' or m.startswith('dask.') "
            "for m in sys.modules), 'import fastmm imported dask'\n"
            "sys.modules['dask'] = None   # as if not installed\n"
            "try:\n"
            "    import fastmm.dask\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert "pip install 'fastmm[dask]'" in out.stdout


# ---- memory and faults

def _memory_state(dask_worker):
    """A worker's peak resident bytes and bytes spilled to disk so far."""
    spilled = getattr(dask_worker.data, "spilled_total", None)
    return fdask._peak_rss(), spilled.disk if spilled is not None else 0


def test_inputs_larger_than_a_worker_stream(client):
    """384 MiB of inputs through workers limited to 300 MiB each: made
    lazily block by block, multiplied and dropped, never held at once.
    Dask's chunk-size sized to the workers: k blocks merged in pairs."""
    rng = da.random.default_rng(7)
    A = rng.random((512, 131072), dtype=np.float32, chunks=(512, 8192))
    B = rng.random((131072, 256), dtype=np.float32, chunks=(8192, 256))
    limit = dask.utils.parse_bytes(MEMORY_LIMIT)
    assert A.nbytes + B.nbytes > limit
    pids = client.run(os.getpid)
    with dask.config.set({"array.chunk-size": "64MiB"}):
        C = fdask.matmul(A, B)
    got = on_cluster(client, C)
    assert client.run(os.getpid) == pids       # no worker was restarted
    for peak, spilled in client.run(_memory_state).values():
        assert spilled == 0
        assert peak is None or peak < limit, peak     # None: no /proc
    a, b = dask.compute(A, B, scheduler="threads")     # the same blocks
    check_nonnegative(got, a, b)


class _PeakMemory(distributed.WorkerPlugin):
    """At every task transition on a worker: the most managed memory it has
    held (its blocks, and those on their way to it) and the largest input a
    task of it started with."""
    name = "fastmm-peak-memory"

    def setup(self, worker):
        self.worker, self.held, self.task_input = worker, 0, 0

    def transition(self, key, start, finish, **kwargs):
        state = self.worker.state
        self.held = max(self.held,
                        state.nbytes + state.transfer_incoming_bytes)
        if finish == "executing":
            inputs = state.tasks[key].dependencies
            self.task_input = max(self.task_input,
                                  sum(dep.nbytes or 0 for dep in inputs))


def _peaks(dask_worker):
    plugin = dask_worker.plugins[_PeakMemory.name]
    return plugin.held, plugin.task_input, dask_worker.data.spilled_total.disk


SMALL_LIMIT = "48MiB"


# the scheduler's HTTP routes move off the first cluster's port
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_inputs_larger_than_the_cluster_stream():
    """128 MiB of inputs through 2 workers of 48 MiB: the product completes
    by streaming blocks, and no worker ever holds (or a task takes) more
    than a few.  The limit governs managed memory (the blocks a worker
    holds), which the plugin watches; nothing may spill to disk (past 90%
    of it).  The process-memory thresholds are off, as an idle worker
    process alone exceeds 48 MiB."""
    memory = {f"distributed.worker.memory.{name}": False
              for name in ("spill", "pause", "terminate")}
    memory["distributed.worker.memory.target"] = 0.9   # spill past 43 MiB
    rng = da.random.default_rng(5)
    A = rng.random((256, 65536), dtype=np.float32, chunks=(256, 2048))
    B = rng.random((65536, 256), dtype=np.float32, chunks=(2048, 256))
    limit = dask.utils.parse_bytes(SMALL_LIMIT)
    assert A.nbytes + B.nbytes > 2 * limit     # more than the cluster holds
    # Dask's chunk-size sized to the workers: k blocks merged in pairs
    budget = dask.utils.parse_bytes("12MiB")
    with dask.config.set({"array.chunk-size": budget}):
        C = fdask.matmul(A, B)
    with dask.config.set(memory), distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1,
            host="127.0.0.1", dashboard_address=None,
            memory_limit=SMALL_LIMIT) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        c.register_plugin(_PeakMemory())
        got = c.compute(C).result(timeout=TIMEOUT)
        peaks = c.run(_peaks)
    for held, task_input, spilled in peaks.values():
        assert spilled == 0
        assert 0 < held < limit, held
        # more than a product of two 2 MiB blocks: k blocks were merged
        assert 2 * A.blocks[0, 0].nbytes < task_input <= budget, task_input
    a, b = dask.compute(A, B, scheduler="threads")     # the same blocks
    check_nonnegative(got, a, b)


def test_worker_killed_mid_computation(client):
    """A worker dies while block products run: Dask recomputes what it held
    on the other worker (the nanny restarts the dead one).  The result must
    be right, or the error must say a worker was lost; never a wrong
    result.  Last in the file: it changes the cluster."""
    rng = da.random.default_rng(11)
    # ~1,000 tasks (A's k blocks kept): a few seconds on two workers
    A = rng.random((2048, 2048), dtype=np.float32, chunks=256)
    B = rng.random((2048, 2048), dtype=np.float32, chunks=256)
    future = client.compute(fdask.matmul(A, B, k_chunks=None))
    deadline = time.monotonic() + TIMEOUT
    # wait until the computation is under way, with results held on workers
    while not any(client.run(lambda dask_worker: len(dask_worker.data))
                  .values()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not future.done(), "finished before the kill: make it larger"
    victim = next(iter(client.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)
    try:
        got = future.result(timeout=TIMEOUT)
    except distributed.KilledWorker:
        return                               # a clear error is acceptable
    a, b = dask.compute(A, B, scheduler="threads")
    check_nonnegative(got, a, b)
    client.wait_for_workers(2, timeout=TIMEOUT)
