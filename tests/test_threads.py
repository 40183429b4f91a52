"""Thread control (environment, threadpoolctl, threads()), fork safety,
concurrent callers, bitwise repeatability, and memory leaks."""
import concurrent.futures
import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmm
from fastmm import _threads
from conftest import assert_close, random, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, env_update=(), unset=(), preexec_fn=None, timeout=60):
    """Run code in a fresh interpreter that imports this checkout's fastmm."""
    env = dict(os.environ)
    for name in ("FASTMM_NUM_THREADS", "OMP_NUM_THREADS") + tuple(unset):
        env.pop(name, None)
    env.update(dict(env_update))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


PRINT_THREADS = "import fastmm; print(fastmm.get_num_threads())"


@pytest.mark.parametrize("env, expected", [
    ({"FASTMM_NUM_THREADS": "3"}, 3),
    ({"OMP_NUM_THREADS": "5"}, 5),
    ({"FASTMM_NUM_THREADS": "2", "OMP_NUM_THREADS": "5"}, 2),
    ({"OMP_NUM_THREADS": "4,2"}, 4),                       # nested levels: ours first
    ({"FASTMM_NUM_THREADS": " 6 "}, 6),
    ({"FASTMM_NUM_THREADS": "abc", "OMP_NUM_THREADS": "3"}, 3),   # invalid: next source
    ({"FASTMM_NUM_THREADS": "0", "OMP_NUM_THREADS": "2"}, 2),
    ({"FASTMM_NUM_THREADS": "1"}, 1),
])
def test_environment(env, expected):
    if not _threads.HAVE_OPENMP:
        expected = 1
    assert int(run_python(PRINT_THREADS, env)) == expected


def test_default_is_cpus_this_process_may_use():
    out = run_python("""
        import os, fastmm
        from fastmm import _threads
        print(fastmm.get_num_threads(), len(os.sched_getaffinity(0)),
              _threads._cgroup_cpu_limit() or 0)
    """)
    nt, affinity, quota = map(int, out.split())
    expected = min(affinity, quota) if quota else affinity
    assert nt == (expected if _threads.HAVE_OPENMP else 1)
    assert 1 <= _threads.cpu_count() <= (os.cpu_count() or 1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity API")
def test_default_follows_affinity_mask():
    cpu = min(os.sched_getaffinity(0))
    out = run_python(PRINT_THREADS, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert int(out) == 1


def test_set_num_threads_and_validation():
    before = fastmm.get_num_threads()
    try:
        fastmm.set_num_threads(3)
        assert fastmm.get_num_threads() == (3 if _threads.HAVE_OPENMP else 1)
        for bad in (0, -1, -100):
            with pytest.raises(ValueError, match="must be >= 1"):
                fastmm.set_num_threads(bad)
        with pytest.raises(ValueError):
            fastmm.set_num_threads("many")
        with pytest.raises(TypeError):
            fastmm.set_num_threads(None)
        assert fastmm.get_num_threads() == (3 if _threads.HAVE_OPENMP else 1)
    finally:
        fastmm.set_num_threads(before)


def test_threads_context_manager():
    before = fastmm.get_num_threads()
    with fastmm.threads(1):
        assert fastmm.get_num_threads() == 1
        with fastmm.threads(2):
            assert fastmm.get_num_threads() == (2 if _threads.HAVE_OPENMP else 1)
        assert fastmm.get_num_threads() == 1
    assert fastmm.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with fastmm.threads(1):
            raise RuntimeError("inside")
    assert fastmm.get_num_threads() == before
    with pytest.raises(ValueError):
        with fastmm.threads(0):
            pass
    assert fastmm.get_num_threads() == before


def test_threadpoolctl_sees_and_limits_fastmm():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    mine = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "fastmm"]
    assert len(mine) == 1
    assert mine[0]["user_api"] == "openmp"
    assert mine[0]["num_threads"] == fastmm.get_num_threads()
    assert mine[0]["version"] == fastmm.__version__
    before = fastmm.get_num_threads()
    with fastmm.threads(2):
        with threadpoolctl.threadpool_limits(1):
            assert fastmm.get_num_threads() == 1
            a = random((50, 40), np.float64)
            assert_close(fastmm.matmul(a, a.T), reference(a, a.T), a, a.T)
        assert fastmm.get_num_threads() == (2 if _threads.HAVE_OPENMP else 1)
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            assert fastmm.get_num_threads() == 1
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert fastmm.get_num_threads() == (2 if _threads.HAVE_OPENMP else 1)
        controller = threadpoolctl.ThreadpoolController()
        with controller.select(internal_api="fastmm").limit(limits=1):
            assert fastmm.get_num_threads() == 1
    assert fastmm.get_num_threads() == before


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="serial build")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_threadpoolctl_limit_reaches_the_driver():
    # Count the OS threads of a fresh process (sampled while products run):
    # products under threadpool_limits(1) must start no OpenMP worker; with
    # 2 threads one must appear.
    out = run_python("""
        import os, threading, time, numpy as np, fastmm
        from threadpoolctl import threadpool_limits
        count = lambda: len(os.listdir("/proc/self/task"))

        def settle(n):
            for _ in range(200):     # a joined Python thread may still be exiting
                if count() <= n:
                    break
                time.sleep(0.01)

        def peak(work, n):
            settle(n)
            seen, done = [], threading.Event()
            def watch():
                while not done.is_set():
                    seen.append(count())
            w = threading.Thread(target=watch)
            w.start()
            work()
            done.set()
            w.join()
            return max(seen) - 1            # not the watcher itself

        a = np.ones((300, 300))
        stack = np.ones((64, 40, 40))       # small products: parallel over the stack
        big_stack = np.ones((2, 300, 300))  # large ones: parallel inside each
        def work():
            for _ in range(5):
                fastmm.matmul(a, a)
                fastmm.matmul(stack, a[:40, :40])
                fastmm.matmul(big_stack, a)
        fastmm.set_num_threads(2)
        base = count()
        with threadpool_limits(1):
            limited = peak(work, base)
        unlimited = peak(work, base)
        settle(base + 1)
        print(base, limited, unlimited, count())
    """, {"OPENBLAS_NUM_THREADS": "1"})
    base, limited, unlimited, after = map(int, out.split())
    assert limited == base, out
    assert unlimited == base + 1, out
    # the worker stays in OpenMP's pool: a product that nested the driver's
    # region inside another would create and destroy threads on every call
    assert after == base + 1, out


# ---- fork -------------------------------------------------------------------

def _child_product(seed):
    a = random((160, 150), np.float64, seed)
    b = random((150, 170), np.float64, seed + 1)
    c = fastmm.matmul(a, b)
    ok = bool(np.all(np.abs(c - a @ b) <= 1e-12 * 150 * (np.abs(a) @ np.abs(b))))
    return ok, fastmm.get_num_threads(), _threads.in_forked_child()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_fork_after_threaded_product():
    a = random((200, 200), np.float64, 1)
    with fastmm.threads(2):
        fastmm.matmul(a, a)       # starts the OpenMP team in this process
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(2)
        try:
            results = pool.map_async(_child_product, range(4)).get(timeout=60)
        except multiprocessing.TimeoutError:
            pytest.fail("products in a forked child hung")
        finally:
            pool.terminate()
            pool.join()
        for ok, nt, forked in results:
            assert ok
            if _threads.HAVE_OPENMP:
                assert forked and nt == 1
        # the parent still uses its threads
        assert fastmm.get_num_threads() == (2 if _threads.HAVE_OPENMP else 1)
        assert not _threads.in_forked_child()
        assert_close(fastmm.matmul(a, a), reference(a, a), a, a)


# ---- concurrency and repeatability ------------------------------------------

def _jobs():
    jobs = []
    for i, (m, n, k) in enumerate([(3, 5, 7), (64, 64, 64), (200, 150, 170),
                                   (17, 300, 250), (1, 333, 1), (129, 1, 127),
                                   (90, 80, 70), (250, 9, 260)]):
        dtype = (np.float32, np.float64)[i % 2]
        a = random((m, k), dtype, i)
        b = random((k, n), dtype, i + 20)
        if i % 3 == 1:
            b = np.asfortranarray(b)
        jobs.append((a, b))
    jobs.append((random((32, 20, 30), np.float32, 40), random((30, 25), np.float32, 41)))
    return jobs


@pytest.mark.parametrize("nt", [1, 2])
def test_eight_python_threads(nt):
    jobs = _jobs()
    with fastmm.threads(nt):
        expected = [fastmm.matmul(a, b) for a, b in jobs]
        for (a, b), c in zip(jobs, expected):
            assert_close(c, reference(a, b), a, b)

        def worker(w):
            for rep in range(6):
                i = (w + rep) % len(jobs)
                a, b = jobs[i]
                if rep % 2:
                    out = np.empty_like(expected[i], order="F")
                    c = fastmm.matmul(a, b, out=out)
                else:
                    c = fastmm.matmul(a, b)
                if not np.array_equal(c, expected[i]):
                    return f"worker {w}: job {i} differs"
            return None

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            errors = [e for e in ex.map(worker, range(8)) if e]
    assert not errors, errors


@pytest.mark.parametrize("nt", [1, 2])
def test_repeat_is_bitwise_identical(nt):
    with fastmm.threads(nt):
        for a, b in _jobs():
            first = fastmm.matmul(a, b)
            for _ in range(2):
                again = fastmm.matmul(a, b)
                assert np.array_equal(again.view(np.uint8), first.view(np.uint8))
            if a.ndim == 2:
                g1 = fastmm.gemm(0.5, a, b, 0.0)
                assert np.array_equal(fastmm.gemm(0.5, a, b, 0.0), g1)


# ---- leaks ------------------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_leak_over_100000_small_calls():
    a = random((4, 4), np.float64)
    f = random((5, 3), np.float32)
    out = np.empty((4, 4))
    ints = np.ones((3, 3), np.int64)
    stack = random((3, 4, 4), np.float64)

    def calls(n):
        for _ in range(n // 10):
            fastmm.matmul(a, a)
            fastmm.matmul(a, a, out=out)
            fastmm.matmul(f, f.T)
            fastmm.matmul(a[0], a[1])
            fastmm.matmul(stack, a)
            fastmm.matmul(a, a.T, out=a.T.copy())
            fastmm.gemm(1.0, a, a, 0.5, out, overwrite_c=True)
            fastmm.gemm(2.0, f, f, trans_b=True)
            fastmm.matmul(ints, ints)
            try:
                fastmm.matmul(a, f)
            except ValueError:
                pass

    calls(20_000)                 # warm caches, allocator pools, arenas
    gc.collect()
    before = _rss_bytes()
    calls(100_000)
    gc.collect()
    grown = _rss_bytes() - before
    # 2 MiB over 100,000 calls: a leak of even ~20 bytes per call shows
    assert grown < 2 * 2 ** 20, f"RSS grew by {grown / 2 ** 20:.1f} MiB"


@pytest.mark.skipif(not hasattr(os, "fork") or not _threads.HAVE_OPENMP,
                    reason="needs fork and OpenMP")
def test_fork_before_any_threaded_product_keeps_threads():
    # the guard is for children of a process whose OpenMP team exists
    out = run_python("""
        import os, fastmm
        from fastmm import _threads
        fastmm.set_num_threads(2)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            state = f"{fastmm.get_num_threads()} {int(_threads.in_forked_child())}"
            os.write(w, state.encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(r, 100).decode())
    """)
    assert out == "2 0"
