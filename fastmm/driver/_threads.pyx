# cython: language_level=3, boundscheck=False, wraparound=False
"""Thread count: the default, the environment, threadpoolctl, and fork safety.

Every compiled product asks :func:`threads_for` how many threads to use; this
module is the only place that stores or decides that number.  Each parallel
region reports the team it ran with (note_region), so tests can assert that
a path really ran on the threads they asked for.
"""
import contextlib
import operator
import os
import warnings

cdef extern from "driver/_threads.h":
    int fmm_nthreads
    int fmm_max_threads
    int fmm_tls_nthreads
    double fmm_tls_min_flops
    int fmm_tls_seen[8]
    int fmm_forked_child
    int FMM_PATHS
    int fmm_register_atfork()
    int fmm_have_openmp()
    int fmm_clamp_threads(int n) nogil
    int fmm_effective_threads() nogil
    void fmm_note_region(int path, int team) nogil
    double fmm_min_flops_hook(double builtin) nogil
    void fmm_hooks_enter(int delta)
    void fmm_scopes_enter(int delta)
    void fastmm_set_num_threads(int n)

# Below this many flops per thread, waking a thread costs more than it saves.
# The configuration row's value (fastmm.config) replaces this default.
cdef double FLOPS_PER_THREAD = 2.0 * 160 * 160 * 160

HAVE_OPENMP = bool(fmm_have_openmp())


def set_flops_per_thread(flops):
    """One thread per this many flops of a product (the configuration row's
    threshold; fastmm.config sets it)."""
    global FLOPS_PER_THREAD
    flops = float(flops)
    if not flops > 0:
        raise ValueError(f"flops per thread must be > 0, got {flops}")
    FLOPS_PER_THREAD = flops


def flops_per_thread():
    return FLOPS_PER_THREAD

# Names of the parallel paths note_region records (_threads.pxd's PATH_*).
PATHS = ("packed", "small", "small_batch", "stack", "lowp", "stack_ahead")


cdef int threads_for(double flops) noexcept nogil:
    cdef int n = fmm_effective_threads()
    cdef double per = fmm_min_flops_hook(FLOPS_PER_THREAD)
    if n > 1 and flops < n * per:
        n = <int>(flops / per)
    return n if n > 1 else 1


cdef void note_region(int path, int team) noexcept nogil:
    fmm_note_region(path, team)


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


def _max_threads():
    """The cap on any thread count: more threads than this cannot help a GEMM,
    and far more (tens of thousands) make libgomp end the process when it
    fails to create them."""
    return max(16, 4 * (os.cpu_count() or 1))


def _parse_env(name):
    """A thread count from environment variable ``name``; None (with a warning
    naming the variable) when it is set to something that is not one."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    # OMP_NUM_THREADS may list one count per nesting level: the first is ours.
    first = raw.split(",")[0].strip()
    try:
        n = int(first)
    except ValueError:
        n = 0
    if n < 1:
        warnings.warn(f"fastmm: ignoring {name}={raw!r}: not a whole number "
                      f"of threads >= 1", RuntimeWarning, stacklevel=3)
        return None
    return n


def default_num_threads():
    """FASTMM_NUM_THREADS, else OMP_NUM_THREADS, else :func:`cpu_count`."""
    return _default_and_source()[0]


def _default_and_source():
    for name in ("FASTMM_NUM_THREADS", "OMP_NUM_THREADS"):
        n = _parse_env(name)
        if n is not None:
            return n, name
    return cpu_count(), None


def _checked(n, what="number of threads"):
    """n as a thread count in [1, cap]: TypeError for a non-integer,
    ValueError below 1, a RuntimeWarning and the cap above it."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got "
                        f"{type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    if n > fmm_max_threads:
        warnings.warn(f"fastmm: {what}={n} is more than fastmm's limit of "
                      f"{fmm_max_threads} threads (4 x the CPUs, at least 16); "
                      f"using {fmm_max_threads}", RuntimeWarning, stacklevel=3)
        n = fmm_max_threads
    return n if HAVE_OPENMP else 1


def set_num_threads(n):
    """Set the number of threads fastmm's products may use.

    Outside any :func:`threads` block this is the process-wide count; inside
    one, it changes that block's count on the calling thread, which the block
    restores at its end.

    Parameters
    ----------
    n : int
        The count, >= 1.  Counts above the limit (4 x the CPUs, at least 16)
        are capped with a RuntimeWarning.  A build without OpenMP uses 1.

    Raises
    ------
    TypeError
        ``n`` is not an integer.
    ValueError
        ``n`` is below 1.
    """
    fastmm_set_num_threads(_checked(n))


def get_num_threads():
    """The number of threads fastmm's products may use on the calling thread.

    Returns
    -------
    int
        The count in force: the :func:`threads` block's, else the
        process-wide one (1 in a child forked from a multi-threaded process).
    """
    return fmm_effective_threads()


@contextlib.contextmanager
def threads(n):
    """Context manager: fastmm uses ``n`` threads for products called from
    this Python thread inside the block, then the previous setting returns.

    The setting is per Python thread: other threads, and threads started
    inside the block, keep their own counts, as concurrent blocks must not
    see each other's settings.

    Parameters
    ----------
    n : int
        The count, >= 1, checked as :func:`set_num_threads` checks it.

    Examples
    --------
    >>> with fastmm.threads(1):
    ...     c = fastmm.matmul(a, b)
    """
    global fmm_tls_nthreads
    n = _checked(n)
    previous = fmm_tls_nthreads
    fmm_tls_nthreads = n
    fmm_scopes_enter(1)
    try:
        yield
    finally:
        fmm_scopes_enter(-1)
        fmm_tls_nthreads = previous


@contextlib.contextmanager
def parallel_threshold(flops_per_thread):
    """Test hook: a product uses one thread per ``flops_per_thread`` flops
    (0: every product uses all of its threads) on the calling thread inside
    the block, so tests reach the parallel paths with small data."""
    global fmm_tls_min_flops
    previous = fmm_tls_min_flops
    fmm_tls_min_flops = max(0.0, float(flops_per_thread))
    fmm_hooks_enter(1)
    try:
        yield
    finally:
        fmm_hooks_enter(-1)
        fmm_tls_min_flops = previous


@contextlib.contextmanager
def record():
    """Test hook: yields a dict that, at the block's end, maps each path the
    calling thread's products took inside the block (see PATHS) to the
    largest number of threads it ran with."""
    global fmm_tls_seen
    cdef int i
    for i in range(FMM_PATHS):
        fmm_tls_seen[i] = 0
    seen = {}
    fmm_hooks_enter(1)
    try:
        yield seen
    finally:
        fmm_hooks_enter(-1)
        for i in range(len(PATHS)):
            if fmm_tls_seen[i]:
                seen[PATHS[i]] = fmm_tls_seen[i]


def in_forked_child():
    """True in a child forked from a multi-threaded process: it runs every
    product on one thread (GNU OpenMP's pool does not survive fork())."""
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
fmm_max_threads = _max_threads()
_n, _source = _default_and_source()
fastmm_set_num_threads(_checked(_n, _source or "number of threads"))
del _n, _source
