"""The unpacked path (fastmm/kernels/small.h): small and skinny products,
matrix-vector products and stacks of small matrices, for every instruction
set this CPU runs, against a float64 reference with k*eps bounds."""
import itertools

import numpy as np
import pytest

import fastmm
from fastmm import _linalg
from fastmm.driver import _threads
from fastmm.driver._unpacked import (b_copies, l1_geometry, row_runs,
                                     select_small_kernel, set_l1_geometry,
                                     stack_limits, vm_row_splits)
from conftest import assert_ran, forced_threads

ISAS = ["avx512", "avx2", "generic"]
DTYPES = [np.float32, np.float64]
SIZES = [0, 1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 64, 97]


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per instruction set the CPU supports."""
    got = select_small_kernel(request.param)
    try:
        if got != request.param:
            pytest.skip(f"this CPU cannot run {request.param}")
        yield got
    finally:
        select_small_kernel(None)


def _layout(x, how):
    """x's values in the memory layout `how` (the values do not change)."""
    if how == "C":
        return np.ascontiguousarray(x)
    if how == "F":
        return np.asfortranarray(x)
    if how == "T":        # a transposed view of a C-contiguous array
        return np.ascontiguousarray(x.T).T
    if how == "neg":      # negative strides on both axes
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]
    if how == "step":     # neither axis contiguous
        big = np.zeros((2 * x.shape[0], 3 * x.shape[1]), x.dtype)
        big[::2, ::3] = x
        return big[::2, ::3]
    raise ValueError(how)


LAYOUTS = ["C", "F", "T", "neg", "step"]


def _check(got, a, b, dtype, alpha=1.0, beta=0.0, c=None):
    """got == alpha * a @ b + beta * c within a k*eps bound per element."""
    a64 = np.asarray(a, np.float64)
    b64 = np.asarray(b, np.float64)
    k = a64.shape[-1]
    ref = alpha * np.matmul(a64, b64)
    mag = abs(alpha) * np.matmul(np.abs(a64), np.abs(b64))
    if c is not None and beta != 0:
        ref = ref + beta * np.asarray(c, np.float64)
        mag = mag + abs(beta) * np.abs(np.asarray(c, np.float64))
    eps = np.finfo(dtype).eps
    assert got.dtype == dtype
    assert got.shape == ref.shape
    err = np.abs(got.astype(np.float64) - ref)
    bound = 2 * (k + 2) * eps * mag + np.finfo(dtype).tiny
    assert np.all(err <= bound), f"max error {err.max()} > bound"


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_squares_and_skinny(isa, dtype):
    rng = np.random.default_rng(1)
    for m, n, k in itertools.product([1, 2, 7, 8, 9, 17, 33],
                                     [1, 2, 8, 9, 16, 17, 33, 70],
                                     [0, 1, 3, 16, 37]):
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        _check(fastmm.matmul(a, b), a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("la,lb", list(itertools.product(LAYOUTS, LAYOUTS)))
def test_layouts(isa, dtype, la, lb):
    rng = np.random.default_rng(2)
    for m, n, k in [(5, 7, 3), (13, 17, 31), (33, 9, 16), (8, 64, 97),
                    (97, 5, 13), (1, 33, 17), (31, 1, 64), (16, 16, 16)]:
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        got = fastmm.matmul(_layout(a, la), _layout(b, lb))
        _check(got, a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_small_sizes(isa, dtype):
    # every size 0..~100 appears in some dimension, primes included
    rng = np.random.default_rng(3)
    for s in SIZES:
        for m, n, k in [(s, s, s), (s, 11, 7), (6, s, 19), (23, 4, s)]:
            a = _rand(rng, (m, k), dtype)
            b = _rand(rng, (k, n), dtype)
            _check(fastmm.matmul(a, b), a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skinny_with_copied_panels(isa, dtype):
    # m <= 64 with a B too large to read in place (or strided): B goes through
    # KC x 128-byte stack panels, several k blocks accumulate into C
    rng = np.random.default_rng(9)
    for m, n, k in [(20, 130, 300), (9, 70, 520), (64, 129, 257),
                    (33, 200, 600), (2, 40, 700)]:
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        for la, lb in [("C", "C"), ("C", "F"), ("C", "step"), ("neg", "neg")]:
            _check(fastmm.matmul(_layout(a, la), _layout(b, lb)), a, b, dtype)
        c = _rand(rng, (m, n), dtype)
        got = fastmm.gemm(1.5, _layout(a, "step"), b, -1.0, c)
        _check(got, a, b, dtype, 1.5, -1.0, c)
        out = np.full((m, n), np.nan, dtype)
        fastmm.matmul(a, _layout(b, "T"), out=out)
        _check(out, a, b, dtype)



@pytest.mark.parametrize("dtype", DTYPES)
def test_b_rows_colliding_in_l1_sets_are_copied(isa, dtype):
    # A B small enough to read in place whose rows are a power-of-two number
    # of bytes apart lands on a few of L1's sets (4 of 64 at 1 KiB on a
    # 32 KiB 8-way L1): with 96 and more rows of A it is copied in panels,
    # as a large B is; with fewer rows, or rows that spread over the sets,
    # it is read in place.  Copied or not, C is exact and nothing else is
    # written.
    rng = np.random.default_rng(12)
    item = np.dtype(dtype).itemsize
    saved, routes = l1_geometry(), _linalg.routing()
    set_l1_geometry(64, 8, 64)
    _linalg.set_routing(**dict(routes, small_mnk=1 << 40))  # all unpacked
    try:
        for m, k, n, copied in [
                (128, 64, 1024 // item, True),      # 1 KiB rows: 4 sets
                (96, 128, 512 // item, True),       # 512 B rows: 8 sets
                (130, 40, 2048 // item, True),      # 2 KiB rows: 2 sets
                (64, 64, 1024 // item, False),      # too few rows of A
                (128, 16, 1024 // item, False),     # 16 rows fit 4 sets
                (128, 64, 1024 // item + 3, False)]:  # rows spread out
            a = _rand(rng, (m, k), dtype)
            b = _rand(rng, (k, n), dtype)
            big = np.full((m + 2, n + 2), np.nan, dtype)
            out = big[1:-1, 1:-1]
            before = b_copies()
            with forced_threads(1) as seen:
                fastmm.matmul(a, b, out=out)
            assert_ran(seen, "small", 1)
            assert b_copies() - before == copied, (m, k, n)
            _check(out, a, b, dtype)
            assert np.isnan(big[[0, -1]]).all()
            assert np.isnan(big[:, [0, -1]]).all()
            # a view with colliding rows of the same stride, and beta
            wide = _rand(rng, (k, 2 * n), dtype)[:, 3:3 + n]
            c = _rand(rng, (m, n), dtype)
            got = fastmm.gemm(0.5, a, wide, -2.0, c)
            _check(got, a, wide, dtype, 0.5, -2.0, c)
        set_l1_geometry(64, 0, 64)             # ways 0: never for collisions
        before = b_copies()
        fastmm.matmul(_rand(rng, (128, 64), dtype),
                      _rand(rng, (64, 1024 // item), dtype))
        assert b_copies() == before
    finally:
        set_l1_geometry(*saved)
        _linalg.set_routing(**routes)
    with pytest.raises(ValueError, match="L1 geometry"):
        set_l1_geometry(0, 8, 64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_in_either_order_write_c_exactly(isa, dtype):
    # The register blocks are walked a row block at a time when B is a few
    # KiB (kernels/small.h, FMM_SMALL_ROWS_FIRST_BYTES: 16 KiB), a column
    # slice at a time when it is larger; both must reach every block of C,
    # row and column tails included, once, and nothing beside C.
    rng = np.random.default_rng(11)
    item = np.dtype(dtype).itemsize
    for m, k in [(7, 5), (9, 16), (23, 37), (33, 40)]:
        for b_bytes in (2048, 8192, 15 * 1024, 40 * 1024, 100 * 1024):
            n = max(1, b_bytes // (item * k))
            for n in (n, n + 3):
                a = _rand(rng, (m, k), dtype)
                b = _rand(rng, (k, n), dtype)
                big = np.full((m + 2, n + 5), np.nan, dtype)
                out = big[1:-1, 2:-3]
                fastmm.matmul(a, b, out=out)
                _check(out, a, b, dtype)
                assert np.isnan(big[[0, -1]]).all()
                assert np.isnan(big[:, [0, 1, -3, -2, -1]]).all()
                c = _rand(rng, (m, n), dtype)
                _check(fastmm.gemm(2.0, a, b, 0.5, c), a, b, dtype, 2.0, 0.5,
                       c)

@pytest.mark.parametrize("dtype", DTYPES)
def test_out_with_nan_is_not_read(isa, dtype):
    rng = np.random.default_rng(4)
    for m, n, k in [(3, 5, 7), (16, 16, 16), (1, 40, 9), (40, 1, 9)]:
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        out = np.full((m, n), np.nan, dtype)
        assert fastmm.matmul(a, b, out=out) is out
        _check(out, a, b, dtype)
        c = np.full((m, n), np.nan, dtype)
        _check(fastmm.gemm(1.0, a, b, 0.0, c), a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_alpha_beta(isa, dtype):
    rng = np.random.default_rng(5)
    for m, n, k in [(4, 6, 5), (17, 9, 33), (1, 20, 8), (20, 1, 8)]:
        a = _rand(rng, (k, m), dtype)        # used transposed
        b = _rand(rng, (k, n), dtype)
        c = _rand(rng, (m, n), dtype)
        got = fastmm.gemm(-0.5, a, b, 2.0, c, trans_a=True)
        _check(got, a.T, b, dtype, -0.5, 2.0, c)
        # alpha == 0 reads neither A nor B: their NaN does not leak
        nan_a = np.full((m, k), np.nan, dtype)
        got = fastmm.gemm(0.0, nan_a, b, 3.0, c)
        want = (3.0 * c.astype(np.float64)).astype(dtype)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_tails_with_beta_write_only_their_columns(isa, dtype):
    """C's last vector of a row, 1 .. lanes - 1 columns wide, is read and
    stored piece by piece (AVX2: 16-, 8- and 4-byte stores): every width up
    to two 512-bit vectors, with beta != 0, into a view whose neighbouring
    elements must stay untouched."""
    rng = np.random.default_rng(14)
    for n in range(1, 2 * 64 // np.dtype(dtype).itemsize + 2):
        m, k = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        c0 = _rand(rng, (m, n), dtype)
        big = np.full((m + 2, n + 2), -7.0, dtype)
        c = big[1:-1, 1:-1]
        c[...] = c0
        got = fastmm.gemm(0.5, a, b, -2.0, c, overwrite_c=True)
        assert got is c
        _check(c, a, b, dtype, 0.5, -2.0, c0)
        big[1:-1, 1:-1] = -7.0
        assert (big == -7.0).all(), (m, n, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(isa, dtype):
    # no zero-skipping: 0 * NaN and 0 * Inf are NaN, as in numpy
    for m, n, k in [(4, 4, 4), (9, 17, 5), (1, 12, 7), (12, 1, 7)]:
        a = np.zeros((m, k), dtype)
        b = np.zeros((k, n), dtype)
        a[m - 1, k - 1] = np.nan
        b[0, n - 1] = np.inf
        got = fastmm.matmul(a, b)
        with np.errstate(invalid="ignore"):
            want = np.matmul(a.astype(np.float64), b.astype(np.float64))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got[m - 1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_matrix_vector(isa, dtype):
    rng = np.random.default_rng(6)
    # (13, 4133): y @ a crosses the vector @ matrix loop's 4096-column chunk
    # (6, 29): k leaves one single-register step of the dot-product loop
    # after its double steps on every ISA's register width
    for m, k in [(1, 1), (3, 2), (17, 33), (64, 1), (1, 100), (300, 257),
                 (13, 4133), (6, 29)]:
        a = _rand(rng, (m, k), dtype)
        x = _rand(rng, k, dtype)
        y = _rand(rng, m, dtype)
        for la in LAYOUTS:
            al = _layout(a, la)
            _check(fastmm.matmul(al, x), a, x, dtype)           # (m,k) @ (k,)
            _check(fastmm.matmul(y, al), y, a, dtype)           # (m,) @ (m,k)
            _check(fastmm.matmul(al, x[:, None]), a, x[:, None], dtype)
            _check(fastmm.matmul(y[None, :], al), y[None, :], a, dtype)
        # strided vectors
        xs = np.repeat(x, 3)[::3]
        _check(fastmm.matmul(_layout(a, "F"), xs), a, x, dtype)
        _check(fastmm.matmul(xs[::-1], _layout(a, "C").T[::-1]),
               x[::-1], a.T[::-1], dtype)
    # a dot product (both 1-D) stays numpy's scalar result
    v = _rand(rng, 50, dtype)
    got = fastmm.matmul(v, v)
    assert np.ndim(got) == 0
    _check(np.asarray(got), v, v, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_skinny_and_gemv(isa, dtype):
    # skinny and matrix-vector forms split over two threads
    rng = np.random.default_rng(7)
    for m, n, k in [(1, 3000, 700), (1, 9000, 21), (2000, 1, 900),
                    (5, 2000, 400), (600, 9, 700), (3, 4096, 300), (2, 37, 5),
                    (41, 3, 2)]:
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        for la, lb in [("C", "C"), ("F", "F"), ("C", "F")]:
            with forced_threads(2) as seen:
                c = fastmm.matmul(_layout(a, la), _layout(b, lb))
            # (600, 9, 700) has too many rows for the unpacked path
            assert_ran(seen, ("small", "packed"), 2)
            _check(c, a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_vector_matrix_over_row_blocks(isa, dtype):
    # x^T B with B's rows under 16 KiB and at least 64 rows a thread is
    # shared by blocks of B's rows, each thread's sum added afterwards
    # (driver/_unpacked.h, FMM_VM_SPLIT_*); A x with A's columns contiguous
    # is the same product transposed.  Shapes on both sides of the rule.
    rng = np.random.default_rng(12)
    item = np.dtype(dtype).itemsize
    for n, k, rows in [(3, 128, True), (50, 129, True),
                       (16384 // item - 1, 300, True),
                       (16384 // item, 300, False), (700, 127, False),
                       (9, 1000, True)]:
        before = vm_row_splits()
        x = _rand(rng, (1, k), dtype)
        b = _rand(rng, (k, n), dtype)
        c = _rand(rng, (1, n), dtype)
        with forced_threads(2) as seen:
            got = fastmm.matmul(x, b)
            big = np.full((3, 2 * n + 1), np.nan, dtype)
            out = big[1:2, 1::2]                    # strided, NaN: not read
            fastmm.matmul(x, b, out=out)
            g = fastmm.gemm(-0.5, x, b, 2.0, c)
            col = fastmm.matmul(np.asfortranarray(b.T), x[0])
            colc = fastmm.gemm(1.5, np.asfortranarray(b.T), x.T, -1.0,
                               np.ascontiguousarray(c.T))
        assert_ran(seen, "small", 2)
        # the five products above: each by row blocks, or none of them
        assert vm_row_splits() - before == (5 if rows else 0), (n, k)
        _check(got, x, b, dtype)
        _check(out, x, b, dtype)
        assert np.isnan(big[[0, 2]]).all() and np.isnan(big[1, ::2]).all()
        _check(g, x, b, dtype, -0.5, 2.0, c)
        _check(col, b.T, x[0], dtype)
        _check(colc, b.T, x.T, dtype, 1.5, -1.0, c.T)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stacks(isa, dtype):
    rng = np.random.default_rng(8)
    for nthreads in (1, 2):
        with fastmm.threads(nthreads):
            for sa, sb in [((1000, 8, 8), (1000, 8, 8)),
                           ((7, 3, 5), (7, 5, 2)),
                           ((400, 4, 4), (4, 4)),          # broadcast b
                           ((4, 4), (400, 4, 6)),          # broadcast a
                           ((3, 1, 6, 5), (4, 5, 7)),      # two batch dims
                           ((2, 3, 4, 1, 5), (3, 1, 5, 2)),
                           ((0, 3, 3), (0, 3, 3)),
                           ((300, 1, 9), (300, 9, 1)),
                           ((50, 9), (9,)),                # 2-D @ 1-D
                           ((9,), (60, 9, 4))]:
                a = _rand(rng, sa, dtype)
                b = _rand(rng, sb, dtype)
                _check(fastmm.matmul(a, b), a, b, dtype)
            # non-contiguous stacks: strided batch, transposed matrices
            a = _rand(rng, (600, 6, 6), dtype)[::2].transpose(0, 2, 1)
            b = _rand(rng, (300, 6, 5), dtype)[:, :, ::-1]
            out = np.full((300, 6, 5), np.nan, dtype)
            fastmm.matmul(a, b, out=out)
            _check(out, a, b, dtype)
            f = np.asfortranarray(_rand(rng, (200, 7, 7), dtype))
            _check(fastmm.matmul(f, f), f, f, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stacks_of_one_block_products(isa, dtype):
    """Every product shape the stack kernels take whole, and one past each
    edge, in both forms (B's rows contiguous, or A's columns: C^T = B^T A^T),
    over a broadcast two-dimensional batch split between two threads; written
    into a view whose neighbouring elements must stay untouched."""
    rows, cols = stack_limits()
    cols = cols[np.dtype(dtype).name]
    if isa == "generic":
        assert (rows, cols) == (0, 0)
        rows, cols = 3, 4
    rng = np.random.default_rng(11)
    # (one row or column is a matrix-vector product: not a stack kernel's)
    ns = sorted({2, 3, cols // 4, cols // 4 + 1, cols // 2, cols // 2 + 1,
                 cols - 1, cols, cols + 1} - {0, 1})
    for m, n in itertools.product(range(2, rows + 2), ns):
        k = int(rng.integers(1, 12))
        a = _rand(rng, (5, 1, m, k), dtype)
        b = _rand(rng, (7, n, k), dtype)
        for bt in (b.transpose(0, 2, 1),                 # rows of B strided
                   np.ascontiguousarray(b.transpose(0, 2, 1))):
            big = np.full((5, 7, m + 2, n + 2), -7.0, dtype)
            out = big[:, :, 1:-1, 1:-1]
            out[...] = np.nan
            # one product under a thread's share, the stack over two
            with fastmm.threads(2), _threads.record() as seen, \
                    _threads.parallel_threshold(3.0 * m * n * k):
                fastmm.matmul(a, bt, out=out)
            assert_ran(seen, "small_batch", 2)
            _check(out, a, bt, dtype)
            rim = big.copy()
            rim[:, :, 1:-1, 1:-1] = -7.0
            assert (rim == -7.0).all(), (m, n, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_tall_products_run_as_row_runs(isa, dtype):
    """A product whose C is one vector wide, with B read in place, runs its
    rows as a stack on the stack kernels (AVX2): every width up to two
    vectors (the second not taking this path), row counts on and off
    multiples of the run,
    any strides of A and C, beta != 0; the neighbours of a C view stay
    untouched."""
    rows, cols = stack_limits()
    cols = cols[np.dtype(dtype).name]
    rng = np.random.default_rng(15)
    runs = cases = 0
    for n in range(2, max(cols, 4) + 1):        # (n = 1: matrix @ vector)
        for m in (16, 23, 40, 67):
            k = int(rng.integers(1, 40))
            a = _rand(rng, (m, k), dtype)
            if n % 3 == 1:
                a = _layout(a, "F")
            elif n % 3 == 2:
                a = _layout(a, "step")
            b = _rand(rng, (k, n), dtype)
            c0 = _rand(rng, (m, n), dtype)
            big = np.full((m + 2, 2 * n + 2), -7.0, dtype)
            c = big[1:-1, 1:-1:2]
            c[...] = c0
            before = row_runs()
            with fastmm.threads(1):
                got = fastmm.gemm(1.5, a, b, -0.5, c, overwrite_c=True)
            runs += row_runs() - before
            cases += n <= cols // 2
            assert got is c
            _check(c, a, b, dtype, 1.5, -0.5, c0)
            big[1:-1, 1:-1:2] = -7.0
            assert (big == -7.0).all(), (m, n, k)
    assert runs == (cases if isa == "avx2" else 0), (isa, runs, cases)
    # a stack of such products: a run of rows each, in the form that reads
    # B's rows (B C-ordered) and in its transpose (C^T = B^T A^T: A's
    # columns contiguous, B's not)
    def colmajor(x):
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, -1, -2)), -1, -2)
    ncol = max(cols // 2, 4) - 1
    pairs = [(_rand(rng, (5, 1, 40, 7), dtype), _rand(rng, (3, 7, ncol), dtype)),
             (colmajor(_rand(rng, (5, 1, ncol, 7), dtype)),
              colmajor(_rand(rng, (3, 7, 40), dtype)))]
    for x, y in pairs:
        before = row_runs()
        with fastmm.threads(1):
            got = fastmm.matmul(x, y)
        assert row_runs() - before == (15 if isa == "avx2" else 0), isa
        _check(got, x, y, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_shares_out_evenly_before_threading_each_product(dtype):
    """A stack whose count shares out evenly runs one product per thread,
    even where each product alone would take both threads (it used to run
    100 products one after another, two threads and a barrier each); an
    uneven stack of such products still threads each one."""
    rng = np.random.default_rng(12)
    for count, path in [(100, "small_batch"), (4, "small_batch"),
                        (3, "small")]:
        a = _rand(rng, (count, 48, 40), dtype)
        b = _rand(rng, (count, 40, 56), dtype)
        with fastmm.threads(2), _threads.record() as seen, \
                _threads.parallel_threshold(0):
            got = fastmm.matmul(a, b)
        assert_ran(seen, path, 2)
        assert set(seen) == {path}, (count, seen)
        _check(got, a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_packs_a_cold_b_the_single_product_reads_in_place(dtype):
    """In a stack each product's B arrives from memory: past a few L1-sized
    panels it is packed (the packed driver, one product per thread), while
    the same product alone, its B warm, stays on the unpacked path; a stack
    with small B matrices stays on the stack kernels."""
    rng = np.random.default_rng(13)
    a = _rand(rng, (4, 32, 256), dtype)
    b = _rand(rng, (4, 256, 256), dtype)
    with fastmm.threads(1), _threads.record() as seen:
        one = fastmm.matmul(a[0], b[0])
    assert set(seen) == {"small"}, seen
    _check(one, a[0], b[0], dtype)
    for nt in (1, 2):
        with fastmm.threads(nt), _threads.record() as seen, \
                _threads.parallel_threshold(0):
            got = fastmm.matmul(a, b)
        assert "small" not in seen and "small_batch" not in seen, seen
        assert_ran(seen, "stack" if nt == 2 else "packed", nt)
        _check(got, a, b, dtype)
    a = _rand(rng, (8, 32, 64), dtype)
    b = _rand(rng, (8, 64, 64), dtype)
    with fastmm.threads(2), _threads.record() as seen, \
            _threads.parallel_threshold(0):
        got = fastmm.matmul(a, b)
    assert_ran(seen, "small_batch", 2)
    _check(got, a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_ahead_fetches_the_next_product_of_a_packed_stack(dtype):
    """A one-thread packed product of a stack asks for the next product's
    operands while it runs (recorded as stack_ahead) when they fit the
    limit, and not for a single product, past the limit or with the limit
    0; results are right in every case, including a broadcast B, a
    column-major out (the driver swaps the operands) and a split stack."""
    from fastmm.driver import _packed
    rng = np.random.default_rng(17)
    a = _rand(rng, (4, 64, 128), dtype)
    b = _rand(rng, (4, 128, 128), dtype)
    item = np.dtype(dtype).itemsize
    need = (64 * 128 + 128 * 128) * item
    saved = _packed.stack_ahead()
    try:
        _packed.set_stack_ahead(need)
        for bb in (b, b[0]):
            with fastmm.threads(1), _threads.record() as seen:
                got = fastmm.matmul(a, bb)
            assert seen.get("packed") == 1 and seen.get("stack_ahead") == 1, seen
            _check(got, a, bb, dtype)
        out = np.empty((4, 128, 64), dtype).transpose(0, 2, 1)
        with fastmm.threads(1), _threads.record() as seen:
            fastmm.matmul(a, b, out=out)
        assert seen.get("stack_ahead") == 1, seen
        _check(out, a, b, dtype)
        with fastmm.threads(2), _threads.parallel_threshold(0):
            _check(fastmm.matmul(a, b), a, b, dtype)
        with fastmm.threads(1), _threads.record() as seen:
            _check(fastmm.matmul(a[0], b[0]), a[0], b[0], dtype)
        assert "stack_ahead" not in seen, seen
        for limit in (need - 1, 0):
            _packed.set_stack_ahead(limit)
            with fastmm.threads(1), _threads.record() as seen:
                got = fastmm.matmul(a, b)
            assert seen.get("packed") == 1 and "stack_ahead" not in seen, seen
            _check(got, a, b, dtype)
        with pytest.raises(ValueError, match="stack_ahead"):
            _packed.set_stack_ahead(-1)
    finally:
        _packed.set_stack_ahead(saved)


def test_select_small_kernel_falls_back():
    best = select_small_kernel(None)
    try:
        assert best in ISAS
        assert select_small_kernel("no-such-isa") == best
        assert select_small_kernel("generic") == "generic"
    finally:
        select_small_kernel(None)
