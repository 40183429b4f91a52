"""Thread control (environment, threadpoolctl, threads()), fork safety,
concurrent callers, bitwise repeatability, and memory leaks."""
import concurrent.futures
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastmm
from fastmm.driver import _packed, _threads
from conftest import (assert_close, assert_ran, forced_threads, random,
                      reference, small_mnk)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, env_update=(), unset=(), preexec_fn=None, timeout=60,
               stderr=False):
    """Run code in a fresh interpreter that imports this checkout's fastmm;
    its stdout (and stderr, if asked).  A hang fails the test at `timeout`."""
    env = dict(os.environ)
    for name in ("FASTMM_NUM_THREADS", "OMP_NUM_THREADS") + tuple(unset):
        env.pop(name, None)
    env.update(dict(env_update))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                              env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=preexec_fn)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the subprocess did not finish in {timeout} s (a hang?)")
    assert proc.returncode == 0, proc.stderr
    if stderr:
        return proc.stdout.strip(), proc.stderr
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


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "2x", "-"])
@pytest.mark.parametrize("name", ["FASTMM_NUM_THREADS", "OMP_NUM_THREADS"])
def test_environment_garbage_warns_naming_the_variable(name, value):
    out, err = run_python("""
        import warnings
        warnings.simplefilter("always")
        import fastmm, os
        print(fastmm.get_num_threads())
    """, {name: value}, stderr=True)
    assert "RuntimeWarning" in err and name in err and repr(value) in err, err
    assert int(out) == (_threads.cpu_count() if _threads.HAVE_OPENMP else 1)


@pytest.mark.parametrize("value", ["99999999999", "40000",
                                   "1" + "0" * 30])
def test_environment_huge_count_is_capped(value):
    # used to raise OverflowError from `import fastmm`
    out, err = run_python("""
        import numpy as np, fastmm
        from fastmm.driver import _threads
        a = np.ones((40, 40))
        with fastmm.threads(_threads._max_threads()), \
                _threads.parallel_threshold(0), _threads.record() as seen:
            ok = (fastmm.matmul(a, a) == 40).all()
        print(fastmm.get_num_threads(), _threads._max_threads(), ok)
    """, {"FASTMM_NUM_THREADS": value}, stderr=True)
    nt, cap, ok = out.split()
    assert ok == "True"
    if _threads.HAVE_OPENMP:
        assert nt == cap and int(cap) >= 16
        assert "FASTMM_NUM_THREADS" in err and "limit" in err, err


def test_default_is_cpus_this_process_may_use():
    out = run_python("""
        import os, fastmm
        from fastmm.driver import _threads
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
        for bad in ("many", "2", None, 1.5, 2.0):
            with pytest.raises(TypeError, match="must be an integer"):
                fastmm.set_num_threads(bad)
        assert fastmm.get_num_threads() == (3 if _threads.HAVE_OPENMP else 1)
        fastmm.set_num_threads(np.int64(2))
        assert fastmm.get_num_threads() == (2 if _threads.HAVE_OPENMP else 1)
    finally:
        fastmm.set_num_threads(before)


def test_set_num_threads_huge_is_capped_and_survives():
    # set_num_threads(40000) used to end the process from libgomp ("Thread
    # creation failed", exit status 1, no exception)
    out, err = run_python("""
        import warnings
        warnings.simplefilter("always")
        import numpy as np, fastmm
        from fastmm.driver import _threads
        fastmm.set_num_threads(40000)
        a = np.ones((300, 300), np.float32)
        with _threads.parallel_threshold(0), _threads.record() as seen:
            ok = (fastmm.matmul(a, a) == 300).all()
        print(fastmm.get_num_threads(), _threads._max_threads(), ok,
              seen["packed"])
    """, stderr=True)
    nt, cap, ok, team = out.split()
    assert ok == "True"
    if _threads.HAVE_OPENMP:
        assert nt == cap == team and int(cap) < 40000
        assert "RuntimeWarning" in err and "40000" in err, err


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
        with forced_threads(2) as seen:
            fastmm.matmul(a, a)   # starts the OpenMP team in this process
        assert_ran(seen, "packed", 2)
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


@pytest.mark.skipif(not hasattr(os, "fork") or not _threads.HAVE_OPENMP
                    or not sys.platform.startswith("linux"),
                    reason="needs fork, OpenMP and Linux's libgomp")
def test_fork_after_another_librarys_openmp_pool():
    # A 2-thread region run by "another library" (libgomp called directly)
    # before fastmm ever threads: its pool does not survive fork(), and a
    # child that entered a 2-thread region used to wait forever.
    out = run_python("""
        import ctypes, os, signal, sys, time
        import numpy as np, fastmm
        from fastmm.driver import _threads
        gomp = ctypes.CDLL("libgomp.so.1")
        body = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda data: None)
        gomp.GOMP_parallel(body, None, 2, 0)
        pid = os.fork()
        if pid == 0:
            a = np.ones((200, 200))
            with fastmm.threads(2), _threads.parallel_threshold(0):
                ok = (fastmm.matmul(a, a) == 200).all()
            os._exit(0 if ok and _threads.in_forked_child() else 3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("exit", os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("hung")
    """)
    assert out == "exit 0", out


# ---- deadlocks and races ------------------------------------------------------

@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="serial build")
def test_stacks_of_mid_size_products_do_not_hang():
    # Products too large for the unpacked path but too small to thread alone,
    # in stacks whose size is not a multiple of the thread count: one product
    # per thread, and the serial driver used to meet at barriers that bound
    # to the stack's team (a deadlock SIGINT could not stop).
    out = run_python("""
        import numpy as np, fastmm
        from fastmm import _linalg
        from fastmm.driver import _threads
        _linalg.set_routing(**dict(_linalg.routing(), small_mnk=128 ** 3))
        for count, n, nt in [(3, 150, 2), (5, 150, 2), (7, 140, 2), (4, 150, 3),
                             (5, 150, 3), (9, 150, 4)]:
            for dtype in (np.float32, np.float64):
                a = np.random.default_rng(count).standard_normal((count, n, n))
                a = a.astype(dtype)
                # the thresholds these shapes were chosen for (packed, one
                # thread each), whatever this CPU's configuration row says
                with fastmm.threads(nt), _threads.record() as seen, \
                        _threads.parallel_threshold(2 * 160 ** 3):
                    c = fastmm.matmul(a, a)
                ref = np.matmul(a.astype(np.float64), a.astype(np.float64))
                bound = 4 * n * np.finfo(dtype).eps * np.matmul(abs(a), abs(a))
                assert (abs(c - ref) <= bound).all()
                assert seen.get("stack") == nt, (count, n, nt, seen)
        print("ok")
    """, timeout=60)
    assert out == "ok"


def test_kernel_switch_while_other_threads_multiply():
    # select_kernel used to update MR/NR/block sizes field by field while other
    # threads read them: wrong results, then "malloc(): corrupted top size".
    out = run_python("""
        import threading, time
        import numpy as np, fastmm
        from fastmm.driver import _context
        names = _context.available_kernels()
        rng = np.random.default_rng(0)
        shapes = [(150, 170, 130), (40, 30, 20), (300, 64, 200), (97, 301, 129)]
        jobs = []
        for m, k, n in shapes:
            for dtype in (np.float32, np.float64):
                a = rng.standard_normal((m, k)).astype(dtype)
                b = rng.standard_normal((k, n)).astype(dtype)
                ref = a.astype(np.float64) @ b.astype(np.float64)
                bound = 4 * k * np.finfo(dtype).eps * (abs(a) @ abs(b))
                jobs.append((a, b, ref, bound))
        stop = threading.Event()
        bad = []

        def multiply(w):
            i = w
            with fastmm.threads(1 + w % 2):
                while not stop.is_set():
                    a, b, ref, bound = jobs[i % len(jobs)]
                    if not (abs(fastmm.matmul(a, b) - ref) <= bound).all():
                        bad.append(i % len(jobs))
                    i += 1

        workers = [threading.Thread(target=multiply, args=(w,)) for w in range(3)]
        for t in workers:
            t.start()
        switches = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            _context.select_kernel(names[switches % len(names)])
            switches += 1
        stop.set()
        for t in workers:
            t.join()
        _context.select_kernel(None)
        print(len(bad), switches > 10)
    """, timeout=60)
    assert out == "0 True", out


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="needs POSIX signals")
def test_ctrl_c_stops_a_loop_of_products():
    # documented behaviour: the product in flight finishes, then
    # KeyboardInterrupt is raised; nothing hangs
    env = dict(os.environ, PYTHONPATH=ROOT)
    code = textwrap.dedent("""
        import time, numpy as np, fastmm
        a = np.ones((1500, 1500))
        fastmm.matmul(a, a)
        print("ready", flush=True)
        start = time.monotonic()
        try:
            for _ in range(1000):
                fastmm.matmul(a, a)
            print("not interrupted", flush=True)
        except KeyboardInterrupt:
            print(f"interrupted {time.monotonic() - start:.2f}", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("a product loop did not stop on SIGINT within 30 s")
    assert out.startswith("interrupted"), (out, err)


# ---- per-thread settings -------------------------------------------------------

@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="serial build")
def test_threads_block_is_per_python_thread():
    # two Python threads in threads() blocks used to interleave their counts
    # and leave the process-wide count wrong afterwards
    before = fastmm.get_num_threads()
    barrier = threading.Barrier(2, timeout=10)
    a = random((200, 200), np.float64, 2)
    seen_counts = {}

    def user(n):
        counts = []
        with fastmm.threads(n):
            for _ in range(3):
                barrier.wait()          # both blocks are open at once
                with _threads.parallel_threshold(0), _threads.record() as seen:
                    fastmm.matmul(a, a)
                counts.append((fastmm.get_num_threads(), seen["packed"]))
        barrier.wait()
        counts.append(fastmm.get_num_threads())
        seen_counts[n] = counts

    threads_ = [threading.Thread(target=user, args=(n,)) for n in (1, 3)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    assert seen_counts[1] == [(1, 1)] * 3 + [before]
    assert seen_counts[3] == [(3, 3)] * 3 + [before]
    assert fastmm.get_num_threads() == before


def test_threads_block_does_not_reach_other_threads():
    before = fastmm.get_num_threads()
    inner = []
    with fastmm.threads(1):
        t = threading.Thread(target=lambda: inner.append(fastmm.get_num_threads()))
        t.start()
        t.join()
        fastmm.set_num_threads(2)          # the block's own count
        assert fastmm.get_num_threads() == (2 if _threads.HAVE_OPENMP else 1)
    assert inner == [before]
    assert fastmm.get_num_threads() == before


# ---- scratch memory --------------------------------------------------------------

def test_scratch_fallback_allocation_is_freed():
    # A thread whose kept-buffer record cannot be set up (calloc or
    # pthread_setspecific failing) got a buffer per call that was never freed.
    a = random((200, 200), np.float32, 1)
    result = []

    def fresh_thread():
        _packed._scratch_fail_record(True)
        try:
            with forced_threads(1) as seen:
                for _ in range(5):
                    c = fastmm.matmul(a, a)
            result.append((seen, _packed._scratch_outstanding(), c))
        finally:
            _packed._scratch_fail_record(False)

    t = threading.Thread(target=fresh_thread)
    t.start()
    t.join()
    seen, outstanding, c = result[0]
    assert_ran(seen, "packed", 1)
    assert outstanding == 0
    assert_close(c, reference(a, a), a, a)


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="serial build")
def test_release_buffers_frees_every_idle_threads_scratch():
    a = random((3, 150, 150), np.float64, 1)
    with fastmm.threads(2), _threads.record() as seen, \
            _threads.parallel_threshold(2 * 160 ** 3), small_mnk(128 ** 3):
        want = fastmm.matmul(a, a)      # one product per pool thread
    assert seen.get("stack") == 2, seen
    assert fastmm.kept_buffer_bytes() > 0
    freed = fastmm.release_buffers()
    assert freed > 0 and fastmm.kept_buffer_bytes() == 0
    with fastmm.threads(2):
        assert np.array_equal(fastmm.matmul(a, a), want)


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
    with forced_threads(nt):
        expected = [fastmm.matmul(a, b) for a, b in jobs]
    for (a, b), c in zip(jobs, expected):
        assert_close(c, reference(a, b), a, b)

    def worker(w):
        # thread counts are per Python thread: each worker sets its own
        with forced_threads(nt) as seen:
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
        if max(seen.values()) != (nt if _threads.HAVE_OPENMP else 1):
            return f"worker {w}: ran with {seen}, not {nt} threads"
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
    # The guard is for children of a multi-threaded parent (its OS threads
    # counted at fork).  This parent must have one thread: numpy's OpenBLAS
    # starts a pthread pool of its own at import, which its fork handler
    # shuts down, but not always before fastmm's handler counts (1 run in 4
    # on 2 CPUs saw its thread): so no OpenBLAS pool here, and the count
    # is checked.
    out = run_python("""
        import os, fastmm
        from fastmm.driver import _threads
        fastmm.set_num_threads(2)
        if os.path.isdir("/proc/self/task"):
            assert len(os.listdir("/proc/self/task")) == 1
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            state = f"{fastmm.get_num_threads()} {int(_threads.in_forked_child())}"
            os.write(w, state.encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(r, 100).decode())
    """, env_update={"OPENBLAS_NUM_THREADS": "1"})
    assert out == "2 0"


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="serial build")
@pytest.mark.parametrize("shape", [(64, 64, 64), (200, 200, 200)])
def test_float64_products_get_threads_at_half_the_flops(shape):
    # the threshold counts float32 flops; a float64 flop takes two, so a
    # product between the two thresholds runs on 2 threads in float64 only
    m, k, n = shape
    flops = 2.0 * m * n * k
    with fastmm.threads(2), _threads.parallel_threshold(0.75 * flops):
        for dtype, want in ((np.float32, 1), (np.float64, 2)):
            a, b = random((m, k), dtype), random((k, n), dtype)
            with _threads.record() as seen:
                got = fastmm.matmul(a, b)
            assert max(seen.values()) == want, (dtype, seen)
            assert_close(got, reference(a, b), a, b)
