# cython: language_level=3, boundscheck=False, wraparound=False
"""Thread count: the default, the environment, threadpoolctl, and fork safety.

Every compiled product asks :func:`threads_for` how many threads to use; this
module is the only place that stores or decides that number.
"""
import contextlib
import os

cdef extern from "_threads.h":
    int fmm_nthreads
    int fmm_team_started
    int fmm_forked_child
    int fmm_register_atfork()
    int fmm_have_openmp()
    void fastmm_set_num_threads(int n)

# Below this many flops per thread, waking a thread costs more than it saves.
# A team start plus the driver's two barriers cost ~20-30 us on a 2-core
# Zen 5 VM, while the AVX-512 kernels do ~200 GFLOP/s float32 (~110 float64)
# per core: measured, two threads beat one from about 200^3 squares.
cdef double FLOPS_PER_THREAD = 2.0 * 160 * 160 * 160

HAVE_OPENMP = bool(fmm_have_openmp())


cdef int threads_for(double flops) noexcept nogil:
    # without this, Cython makes fmm_team_started a local and the fork guard
    # never arms
    global fmm_team_started
    cdef int n = fmm_nthreads
    if fmm_forked_child:
        return 1
    if flops < n * FLOPS_PER_THREAD:
        n = <int>(flops / FLOPS_PER_THREAD)
    if n < 1:
        return 1
    if n > 1:
        fmm_team_started = 1
    return n


def _cgroup_cpu_limit():
    """CPUs allowed by a cgroup CPU quota (containers), or None."""
    try:  # cgroup v2
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, quota // period)
    except (OSError, ValueError):
        pass
    return None


def cpu_count():
    """CPUs this process may run on: affinity mask and cgroup quota applied."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, limit)
    return max(1, n)


def _parse_env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    # OMP_NUM_THREADS may list one count per nesting level: the first is ours.
    first = value.split(",")[0].strip()
    try:
        n = int(first)
    except ValueError:
        return None
    return n if n >= 1 else None


def default_num_threads():
    """FASTMM_NUM_THREADS, else OMP_NUM_THREADS, else :func:`cpu_count`."""
    for name in ("FASTMM_NUM_THREADS", "OMP_NUM_THREADS"):
        n = _parse_env(name)
        if n is not None:
            return n
    return cpu_count()


def set_num_threads(n):
    """Set the number of threads fastmm's products may use (>= 1)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    if not HAVE_OPENMP:
        n = 1
    fastmm_set_num_threads(n)


def get_num_threads():
    """The number of threads fastmm's products may use."""
    return 1 if fmm_forked_child else fmm_nthreads


@contextlib.contextmanager
def threads(n):
    """Context manager: use ``n`` threads inside the block, then restore."""
    previous = fmm_nthreads
    set_num_threads(n)
    try:
        yield
    finally:
        fastmm_set_num_threads(previous)


def in_forked_child():
    """True in a child forked after fastmm ran a multi-threaded product."""
    return bool(fmm_forked_child)


def _register_threadpoolctl():
    """Let ``threadpoolctl.threadpool_limits`` see and limit fastmm.

    The controller matches this extension module's file and drives the two
    exported C functions, as threadpoolctl does for OpenBLAS or libgomp.
    """
    try:
        import threadpoolctl
    except ImportError:
        return False
    if not hasattr(threadpoolctl, "register"):
        return False  # threadpoolctl < 3.5 has no custom controllers

    class FastmmController(threadpoolctl.LibController):
        user_api = "openmp"
        internal_api = "fastmm"
        filename_prefixes = ("_threads",)
        check_symbols = ("fastmm_get_num_threads", "fastmm_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.fastmm_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.fastmm_set_num_threads(int(num_threads))

        def get_version(self):
            from fastmm import __version__
            return __version__

    if not any(getattr(c, "internal_api", None) == "fastmm"
               for c in getattr(threadpoolctl, "_ALL_CONTROLLERS", ())):
        threadpoolctl.register(FastmmController)
    return True


if fmm_register_atfork() != 0:
    raise ImportError("fastmm: pthread_atfork failed")
set_num_threads(default_num_threads())
