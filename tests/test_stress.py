"""Randomized stress test of fastmm.matmul across shapes, strides, broadcasting
and thread counts, run in a child process so a deadlock or a crash fails the
test instead of hanging CI.

    python -m pytest tests/test_stress.py                       # ~20 s, new seed
    FASTMM_STRESS_SECONDS=600 python -m pytest tests/test_stress.py
    FASTMM_STRESS_SEED=1234 python -m pytest tests/test_stress.py    # replay a run
    FASTMM_STRESS_SEED=1234 FASTMM_STRESS_CASE=57 python tests/test_stress.py

Case i of a run depends only on (seed, i), so one failing case replays alone.
Half the cases run at fastmm's own thresholds, half with every product forced
onto its threads.  Four cases in every 32 are aimed at one parallel path
each (they cost about as much as the other 28), so that every path runs on
more than one thread within the first 18 cases and hundreds of times a run.
"""
import contextlib
import math
import os
import re
import secrets
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest

import fastmm
from fastmm.driver import _threads
from conftest import assert_close, forced_threads, random, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SECONDS = 20.0
MAX_DIM = 300

# The routing the stress loop runs under (_linalg.pyx's _unpacked and
# _batched, _threads.pyx's threads_for), pinned with pin_routing() in the
# child whatever this CPU's configuration row says: the cases aimed at a
# path are drawn from these numbers.  If the code's rules drift, the aimed
# cases miss their path and the coverage check says which.
SMALL_MNK = 128 ** 3
SKINNY_M = 64
SKINNY_KN = 512 * 512
UNPACKED_KC = 256
NARROW_N = 16
SHALLOW_K = 16
SHARE_MNK = 160 ** 3          # m*n*k of one thread's share of flops
STACK_COST = 8
# the paths float products take (the low-precision one has tests of its own)
FLOAT_PATHS = ("packed", "small", "small_batch", "stack")


def pin_routing():
    from fastmm import _linalg
    _linalg.set_routing(SMALL_MNK, SKINNY_M, NARROW_N, SHALLOW_K, SKINNY_KN)
    _threads.set_flops_per_thread(2.0 * SHARE_MNK)

# Edges where the code changes behaviour: kernel tiles (MR 4/6/12, NR 8..32)
# and the unpacked path's limits, the float64 MC and the small path's KC.
EDGES = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)

# Longdouble products (the float64 oracle) run at ~10 ns per multiply-add:
# capping them keeps the run at thousands of cases rather than dozens.
LONGDOUBLE_WORK = 6e6
FLOAT_WORK = 9 * MAX_DIM ** 3

# The aims of cases 1 and 17 (forced thresholds), 0 and 16 (natural) of 32.
AIMED_FORCED = ("packed", "small")
AIMED_NATURAL = ("small_batch", "stack")


# ---- drawing a case ----------------------------------------------------------

def draw_dim(g):
    r = g.random()
    if r < 0.3:
        return int(g.integers(1, 9))
    if r < 0.6:
        return int(g.integers(1, 41))
    if r < 0.8:
        edge = EDGES[g.integers(len(EDGES))]
        return int(np.clip(edge + g.integers(-2, 3), 1, MAX_DIM))
    return int(g.integers(1, MAX_DIM + 1))


def unpacked(m, n, k):
    return (m == 1 or n == 1 or m * n * k <= SMALL_MNK
            or (m <= SKINNY_M and (k <= UNPACKED_KC or k * n <= SKINNY_KN))
            or n <= NARROW_N or k <= SHALLOW_K)


def factor(count, g):
    """A batch shape of ``count`` products: one or two dimensions."""
    pairs = [(p, count // p) for p in range(2, count) if count % p == 0]
    if pairs and g.random() < 0.4:
        return pairs[g.integers(len(pairs))]
    return (count,)


def operand_batches(batch, g):
    """Batch shapes for a and b that broadcast to ``batch``: one operand has
    it in full, the other full, with size-1 dimensions, shorter, or none."""
    def reduced():
        r = g.random()
        if r < 0.3:
            return batch
        if r < 0.55:
            return tuple(1 if g.random() < 0.5 else d for d in batch)
        if r < 0.75:
            return batch[g.integers(0, len(batch) + 1):]
        return ()
    full, other = batch, reduced()
    return (full, other) if g.random() < 0.5 else (other, full)


def draw_shapes(g, dtype, aim):
    """(shape_a, shape_b) for the path ``aim`` (None: anything)."""
    work = LONGDOUBLE_WORK if dtype == np.float64 else FLOAT_WORK
    vec_a = vec_b = False
    for _ in range(1000):
        count = 1
        if aim is None:
            m, n, k = draw_dim(g), draw_dim(g), draw_dim(g)
            count = int(g.integers(1, 10)) if g.random() < 0.65 else 1
            vec_a, vec_b = g.random() < 0.1, g.random() < 0.1
        elif aim == "small":
            m, n, k = draw_dim(g), draw_dim(g), draw_dim(g)
            count = int(g.integers(1, 10))
            if not unpacked(m, n, k):
                continue
        elif aim == "packed":
            # past every limit of the unpacked path
            m = int(g.integers(SKINNY_M + 1, MAX_DIM + 1))
            k = int(g.integers(SHALLOW_K + 1, MAX_DIM + 1))
            n = (max(NARROW_N + 1, SMALL_MNK // (m * k) + 1)
                 + int(g.integers(0, 60)))
            count = int(g.integers(1, 3))
        elif aim == "small_batch":
            # skinny (unpacked) products under two threads' shares each, a
            # stack over two shares once STACK_COST discounts it
            m = int(g.integers(8, SKINNY_M + 1))
            n = int(g.integers(32, MAX_DIM + 1))
            count = int(g.integers(3, 10))
            k = math.ceil(2.3 * SHARE_MNK / STACK_COST / (count * m * n))
            k += int(g.integers(0, 40))
        elif aim == "stack":
            # packed products under two threads' shares each, the stack over
            # two; float64 keeps the fewest products that reach it (its
            # oracle is slow)
            m = int(g.integers(SKINNY_M + 1, MAX_DIM + 1))
            k = int(g.integers(SHALLOW_K + 1, MAX_DIM + 1))
            lo = max(NARROW_N + 1, math.ceil(1.1 * SMALL_MNK / (m * k)))
            hi = min(MAX_DIM, math.floor(1.8 * SHARE_MNK / (m * k)))
            if lo > hi:
                continue
            n = int(g.integers(lo, hi + 1))
            count = math.ceil(2.2 * SHARE_MNK / (m * n * k))
            if dtype != np.float64:
                count += int(g.integers(0, 3))
            work = max(work, count * m * n * k)
        if max(m, n, k) > MAX_DIM or count > 9 or count * m * n * k > work:
            continue
        break
    else:
        raise RuntimeError(f"no shapes drawn for aim {aim!r}")
    batch = ()
    if count > 1:
        batch = factor(count, g)
    elif g.random() < 0.25:
        batch = (1,) * int(g.integers(1, 3))
    batch_a, batch_b = operand_batches(batch, g)
    # a 1-D operand has no batch of its own: the other carries the stack
    shape_a = (k,) if vec_a and not batch_a else batch_a + (m, k)
    shape_b = (k,) if vec_b and not batch_b else batch_b + (k, n)
    return shape_a, shape_b


def place(x, layout, g):
    """x's values in ``layout``: "C", "F", "T" (each matrix column-major, the
    batch row-major), "neg" (every stride negative) or "strided" (a view with
    steps and offsets into a larger buffer)."""
    if x.ndim == 0 or layout == "C":
        return x
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "T":
        if x.ndim < 2:
            return x
        return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    if layout == "neg":
        flip = (slice(None, None, -1),) * x.ndim
        return np.ascontiguousarray(x[flip])[flip]
    big, index = strided_buffer(x.shape, x.dtype, 0, g)
    big[index] = x
    return big[index]


def strided_buffer(shape, dtype, fill, g):
    """(buffer, index): buffer[index] is a ``shape`` view with a random step
    and offset on every axis, the rest of the buffer left at ``fill``."""
    index, full = [], []
    for d in shape:
        step, off = int(g.integers(1, 4)), int(g.integers(0, 2))
        index.append(slice(off, off + step * (d - 1) + 1, step))
        full.append(off + step * (d - 1) + 1 + int(g.integers(0, 2)))
    return np.full(full, fill, dtype), tuple(index)


@contextlib.contextmanager
def natural_threads(n):
    """fastmm.threads(n) at fastmm's own thresholds, recording the paths."""
    with fastmm.threads(n), _threads.record() as seen:
        yield seen


class Case:
    """Everything about case ``index`` of run ``seed``, drawn from them alone."""

    def __init__(self, seed, index):
        g = np.random.default_rng([seed, index])
        self.seed, self.index, self.g = seed, index, g
        self.forced = index % 2 == 1
        slot = index % 32
        self.aim = None
        if slot in (0, 16):
            self.aim = AIMED_NATURAL[slot // 16]
        elif slot in (1, 17):
            self.aim = AIMED_FORCED[slot // 16]
        self.nt = int(g.integers(2 if self.aim else 1, 5))
        dtypes = (np.float32, np.float64)
        # a float64 stack costs the longdouble oracle ~0.1 s: one in three
        self.dtype_a = dtypes[int(g.random() < (1 / 3 if self.aim == "stack"
                                                else 1 / 2))]
        self.dtype_b = (self.dtype_a if g.random() < 0.9
                        else dtypes[g.integers(2)])
        self.dtype = np.result_type(self.dtype_a, self.dtype_b)
        self.shape_a, self.shape_b = draw_shapes(g, self.dtype, self.aim)
        shape = np.broadcast_shapes(self.shape_a[:-2], self.shape_b[:-2])
        if len(self.shape_a) >= 2:
            shape += self.shape_a[-2:-1]
        if len(self.shape_b) >= 2:
            shape += self.shape_b[-1:]
        self.shape = shape
        layouts = ("C", "F", "T", "neg", "strided")
        self.layout_a = layouts[g.integers(len(layouts))]
        self.layout_b = layouts[g.integers(len(layouts))]
        self.out_layout = (("none",) + layouts)[g.integers(len(layouts) + 1)]
        if not shape and self.out_layout != "none":
            self.out_layout = "C"     # a 0-d out has no layout to vary
        self.data_seed = int(g.integers(2 ** 31))
        self.a = self.b = self.out = None

    def build(self):
        """Sets a, b and out (None for "none"); returns out's buffer and the
        index of out in it."""
        g = self.g
        self.a = place(random(self.shape_a, self.dtype_a, self.data_seed),
                       self.layout_a, g)
        self.b = place(random(self.shape_b, self.dtype_b, self.data_seed + 1),
                       self.layout_b, g)
        if self.out_layout == "none":
            return None, None
        if self.out_layout == "strided":
            buffer, index = strided_buffer(self.shape, self.dtype, np.nan, g)
            self.out = buffer[index]
            return buffer, index
        # NaN, so an element the product never writes cannot pass
        self.out = place(np.full(self.shape, np.nan, self.dtype),
                         self.out_layout, g)
        return self.out, ...

    def describe(self):
        def arr(name, x, shape, dtype, layout):
            s = f"{name}={shape} {np.dtype(dtype).name} {layout}"
            return s if x is None else f"{s} strides={x.strides}"
        mode = "forced_threads" if self.forced else "fastmm.threads"
        return (f"case {self.index} of seed {self.seed}: "
                f"aim={self.aim or 'any'} {mode}({self.nt}); "
                f"{arr('a', self.a, self.shape_a, self.dtype_a, self.layout_a)}; "
                f"{arr('b', self.b, self.shape_b, self.dtype_b, self.layout_b)}; "
                f"{arr('out', self.out, self.shape, self.dtype, self.out_layout)}")

    def run(self):
        """The case's checks; returns the paths taken, with their teams."""
        buffer, index = self.build()
        a, b, out = self.a, self.b, self.out
        a0, b0 = a.copy(), b.copy()
        context = (forced_threads if self.forced else natural_threads)(self.nt)
        with context as seen:
            c = fastmm.matmul(a, b) if out is None else fastmm.matmul(a, b, out=out)
        # the oracle reads C-ordered copies: numpy's BLAS skips negative and
        # odd strides, and its own loops would dominate the run
        want = np.matmul(a0, b0)
        assert np.shape(c) == np.shape(want), (np.shape(c), np.shape(want))
        assert np.asarray(c).dtype == np.asarray(want).dtype
        if out is None:
            assert type(c) is type(want), (type(c), type(want))
        else:
            assert c is out, "matmul did not return out"
            outside = np.ones(buffer.shape, bool)
            outside[index] = False
            assert np.isnan(buffer[outside]).all(), "wrote outside out"
        assert np.array_equal(a, a0) and np.array_equal(b, b0), "changed an operand"
        assert_close(np.asarray(c), reference(a0, b0), a0, b0)
        return seen


# ---- the child process -------------------------------------------------------

def main():
    """The stress loop: exit 0 with a summary line, or 1 at the first failing
    case (printed in full) or when a path never ran on several threads."""
    pin_routing()
    seed = int(os.environ["FASTMM_STRESS_SEED"])
    seconds = float(os.environ.get("FASTMM_STRESS_SECONDS", DEFAULT_SECONDS))
    only = os.environ.get("FASTMM_STRESS_CASE")
    indices = [int(only)] if only else range(sys.maxsize)
    threaded = dict.fromkeys(FLOAT_PATHS, 0)
    start = time.perf_counter()
    done = 0
    for i in indices:
        if not only and time.perf_counter() - start > seconds:
            break
        # a marker per case: after a hang or crash the parent names the case
        print(f"case {i}", flush=True)
        case = Case(seed, i)
        try:
            seen = case.run()
        except (Exception, pytest.fail.Exception):
            print(f"FAILED {case.describe()}\n{traceback.format_exc()}"
                  f"replay: FASTMM_STRESS_SEED={seed} FASTMM_STRESS_CASE={i} "
                  f"python tests/test_stress.py", flush=True)
            return 1
        for path, team in seen.items():
            if path in threaded:    # not stack_ahead: a one-thread mark
                threaded[path] += team > 1
        done += 1
    paths = " ".join(f"{p}={n}" for p, n in threaded.items())
    print(f"stress: {done} cases in {time.perf_counter() - start:.1f} s, "
          f"seed {seed}; products on >1 thread per path: {paths}", flush=True)
    missed = [p for p, n in threaded.items() if n == 0]
    if only or not _threads.HAVE_OPENMP or not missed:
        return 0
    print(f"FAILED: paths never run on more than one thread: {missed}")
    return 1


# ---- the test ----------------------------------------------------------------

SUMMARY = re.compile(r"^stress: (\d+) cases .*per path: (.*)$", re.M)


def _last_case(output, seed):
    markers = re.findall(r"^case (\d+)$", output or "", re.M)
    if not markers:
        return "before the first case"
    return Case(seed, int(markers[-1])).describe()


def test_stress_matmul():
    seed = int(os.environ.get("FASTMM_STRESS_SEED") or secrets.randbits(32))
    seconds = float(os.environ.get("FASTMM_STRESS_SECONDS", DEFAULT_SECONDS))
    # room for interpreter start-up and the last case, no more: a deadlock
    # must still fail inside 30 s at the default budget
    timeout = 1.25 * seconds + 3
    env = dict(os.environ)
    for name in ("FASTMM_NUM_THREADS", "OMP_NUM_THREADS", "FASTMM_STRESS_CASE"):
        env.pop(name, None)
    env.update(FASTMM_STRESS_SEED=str(seed), FASTMM_STRESS_SECONDS=str(seconds))
    # numpy's BLAS (the oracle) on one thread: its spinning pool and fastmm's
    # team on the same two cores slow both by 10x at random
    env.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT, os.path.join(ROOT, "tests"), env.get("PYTHONPATH", "")])
    print(f"fastmm stress: seed {seed}, {seconds:g} s")
    code = "import test_stress, sys; sys.exit(test_stress.main())"
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code],
                              env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc = None
        hung = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout
    if proc is None:
        pytest.fail(f"stress run (seed {seed}) still running after {timeout:g} s, "
                    f"in {_last_case(hung, seed)}")
    report = re.sub(r"^case \d+\n", "", proc.stdout, flags=re.M)[-6000:]
    assert proc.returncode == 0, (
        f"stress run (seed {seed}) exited with {proc.returncode} in "
        f"{_last_case(proc.stdout, seed)}\n{report}\n{proc.stderr[-4000:]}")
    summary = SUMMARY.search(proc.stdout)
    assert summary, report
    print(summary.group(0))
    counts = dict(p.split("=") for p in summary.group(2).split())
    assert set(counts) == set(FLOAT_PATHS), summary.group(0)
    if _threads.HAVE_OPENMP:
        assert all(int(n) > 0 for n in counts.values()), summary.group(0)


if __name__ == "__main__":
    os.environ.setdefault("FASTMM_STRESS_SEED", str(secrets.randbits(32)))
    sys.exit(main())
