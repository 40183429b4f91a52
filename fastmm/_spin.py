"""How long fastmm's idle OpenMP workers spin before they sleep.

libgomp's workers spin GOMP_SPINCOUNT times (300000 by default) after each
parallel region before they block.  While they spin they hold the cores,
and on a machine with few cores the next thing the process runs pays for
it: numpy's OpenBLAS call right after a two-thread fastmm product waited
for a core until the scheduler preempted the spinner.  Measured on 2 Zen 3
cores (AMD EPYC family 25 model 1, KVM), 256^3 float32 on 2 threads, median
of 200 calls, 3 alternating runs: numpy right after fastmm 3.8-4.0 ms with
the default (0.5 in one run), 0.44-0.52 ms with 100000 spins; fastmm calls
with 0.1-2 ms of other work between them were level.  Fewer spins (10000)
also sped up fastmm right after numpy or after 50 ms idle (4-6 ms -> 1-1.6)
but slowed fastmm calls 0.5-2 ms apart by 25-80% (its workers were asleep
by then), the common case of layers with numpy work between them.

libgomp reads the variable once, when it is loaded, so fastmm sets it for
the import of its compiled modules only and then restores the environment:
other OpenMP runtimes loaded later see the user's environment.  A user's
own GOMP_SPINCOUNT or OMP_WAIT_POLICY wins, and a libgomp that another
module loaded first keeps its settings.
"""
import os

SPIN_COUNT = 100000

_state = {"source": "not set"}


def _libgomp_loaded():
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:
        return False


class importing:
    """Context manager around the first import of fastmm's compiled
    modules: GOMP_SPINCOUNT=SPIN_COUNT inside, the environment as it was
    after."""

    def __enter__(self):
        env = os.environ
        self._set = False
        for key in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
            if key in env:
                _state["source"] = f"{key}={env[key]} (the environment's)"
                return self
        before = _libgomp_loaded()
        env["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
        self._set = True
        _state["source"] = f"GOMP_SPINCOUNT={SPIN_COUNT} (fastmm's default)"
        if before:
            # another module's libgomp (maybe the one fastmm links) had
            # already read its environment
            _state["source"] += ("; a libgomp loaded before fastmm keeps "
                                 "its own")
        return self

    def __exit__(self, *exc):
        if self._set:
            os.environ.pop("GOMP_SPINCOUNT", None)
        return False


def spin_setting():
    """One line: the idle-spin setting of fastmm's OpenMP workers and where
    it comes from."""
    return _state["source"]
