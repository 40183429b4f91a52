"""The bench's peers (fastmm/bench/_peers.py, ``python -m fastmm bench --peers``).

Without MKL: the loader says None and the bench prints one line and goes on;
a peer's wrong result is reported, not timed (a stand-in peer, so CI checks
this too).  Where the ``mkl`` wheel is installed (CI does not install it):
MKL's products match numpy's for both dtypes and operand orders, and the
bench prints MKL's columns.
"""
import contextlib
import json
import os

import numpy as np
import pytest

import fastmm
from fastmm.bench import _harness, _peers
from fastmm.__main__ import main
from conftest import assert_close, random, reference
from test_cli import TINY, run_cli


# ---------------------------------------------------------------- without MKL

def test_load_mkl_finds_nothing_where_there_is_nothing(tmp_path):
    assert _peers.load_mkl([str(tmp_path / "libmkl_rt.so.3")]) is None
    assert _peers.load_mkl([]) is None


def test_bench_without_mkl_says_so_once_and_goes_on(monkeypatch, capsys):
    monkeypatch.setattr(_peers, "mkl_candidates", lambda: [])
    assert main(TINY + ["--peers", "mkl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines.count(_peers.MKL_NOT_FOUND) == 1
    assert not any("mkl" in line for line in lines if line != _peers.MKL_NOT_FOUND)
    assert any(line.startswith("all ") for line in lines)


class FakePeer:
    """A peer whose product is ``wrong`` by the given amount (0: right), or
    that cannot do any case (``refuse``); it records its calls."""
    name = label = "fake"

    def __init__(self, wrong=0.0, refuse=False):
        self.wrong, self.refuse, self.calls = wrong, refuse, 0

    def threads(self, n):
        return contextlib.nullcontext()

    def prepare(self, a, b, out):
        if self.refuse:
            raise NotImplementedError("fake: no such product")

        def call():
            self.calls += 1
            np.matmul(a, b, out=out)
            out.flat[0] += self.wrong
        return call


def run_case(peer):
    """Check, then time one case with a peer that lives in this process:
    the timing of each library, in process here, is what its own timing
    process runs (time_library)."""
    case = _harness.make_case("square", "8", (8, 8), (8, 8), 8, "float64", 1,
                              seed=0)
    res = _harness.check_case(fastmm, case, [peer])

    def timer(library, batch, samples):
        return _harness.time_library(fastmm, library, batch, samples,
                                     [peer] if library == peer.name else [])
    _harness.time_cases([case], [res], 2, [peer], timer=timer)
    return res


def test_wrong_peer_result_is_reported_not_timed():
    peer = FakePeer(wrong=1.0)
    res = run_case(peer)
    assert peer.calls == 1                   # the check, no timing
    assert ("fake", "fake") not in res["timed"]
    assert res["fake"] is None and "fake_s" not in res
    assert "k*eps bound" in res["fake_error"]
    assert res["error"] is None and res["fastmm"] and res["numpy"]


def test_right_peer_is_timed_with_the_others():
    peer = FakePeer()
    res = run_case(peer)
    assert peer.calls > 2
    assert res["fake_error"] is None and res["fake"] > 0
    assert res["fake_s"] == pytest.approx(res["flops"] / res["fake"] / 1e9)


def test_peer_columns_in_table_and_summary(capsys):
    rows = [run_case(FakePeer(wrong=1.0)), run_case(FakePeer()),
            run_case(FakePeer(refuse=True))]
    for r in rows:
        r.update(family="square", label="8", size=8, dtype="float64",
                 threads=1, peak=None, stable=True)
    _harness.print_table(rows, ["fake"])
    _harness.print_summary(rows, ["square"], ["float64"], [1], ["fake"])
    out = capsys.readouterr().out
    assert "fake GF/s" in out and "vs fake" in out
    assert "fake WRONG RESULT" in out and "fake: no such product" in out
    assert "speedup of fastmm over fake" in out
    over_fake = out.split("over fake")[1]
    want = rows[1]["fastmm"] / rows[1]["fake"]
    assert f"{want:.2f}x" in over_fake.splitlines()[-1]


# ---------------------------------------------------------------- with MKL

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order_a", "CF")
@pytest.mark.parametrize("order_b", "CF")
def test_mkl_matches_numpy(mkl, dtype, order_a, order_b):
    a = np.asarray(random((37, 53), dtype, seed=1), order=order_a)
    b = np.asarray(random((53, 29), dtype, seed=2), order=order_b)
    for threads in (1, 2):
        with mkl.threads(threads):
            assert mkl.get_num_threads() == threads
            out = np.full((37, 29), np.nan, dtype)
            assert mkl.matmul(a, b, out=out) is out
            assert_close(out, reference(a, b), a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_vectors_stacks_and_strided_views(mkl, dtype):
    a = random((4, 12, 9), dtype, seed=3)
    b = random((4, 9, 7), dtype, seed=4)
    v = random((9,), dtype, seed=5)
    big = random((30, 40), dtype, seed=6)
    cases = [(a, b), (a.swapaxes(1, 2).copy().swapaxes(1, 2), b),
             (a[0], v), (v, b[0]), (v, v),
             (big[::2, ::3], big[1::2, ::3][:14, :10]),   # copied: no unit stride
             (big[:9, :12].T, big[:9, 1:8])]             # transposed view, ld 40
    for x, y in cases:
        got = mkl.matmul(x, y)
        assert got.shape == np.matmul(x, y).shape
        assert_close(got, reference(x, y), x, y)


def test_mkl_shares_fastmms_openmp_runtime(mkl):
    # the GNU layer: MKL's threads come from libgomp, like fastmm's (see
    # fastmm/bench/_peers.py); the environment may ask for another layer
    if not os.environ.get("MKL_THREADING_LAYER"):
        assert mkl.threading_layer == "gnu"


def test_mkl_refuses_what_it_cannot_do(mkl):
    a = np.ones((3, 4))
    with pytest.raises(TypeError):
        mkl.matmul(a.astype(np.float32), a.T)
    with pytest.raises(TypeError):
        mkl.matmul(a.astype(int), a.T.astype(int))
    with pytest.raises(ValueError):
        mkl.matmul(a, a)
    with pytest.raises(ValueError):
        mkl.matmul(np.ones((2, 3, 4)), np.ones((3, 4, 2)))   # broadcasting
    with pytest.raises(ValueError):
        mkl.matmul(a, a.T, out=np.empty((3, 3), order="F"))
    square = np.ones((4, 4))
    with pytest.raises(ValueError):
        mkl.matmul(square, square, out=square)


def test_bench_prints_mkl_columns(mkl, tmp_path):
    path = tmp_path / "r.json"
    proc = run_cli("bench", "--peers", "mkl", "--quick", "--families", "square",
                   "--dtypes", "float32", "--threads", "1", "--repeats", "1",
                   "--peak", "100", "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"peer MKL: {mkl.describe()}" in proc.stdout
    assert "mkl GF/s" in proc.stdout and "vs mkl" in proc.stdout
    assert "speedup of fastmm over mkl" in proc.stdout
    rows = json.loads(path.read_text())
    assert len(rows) == len(_harness.family_cases("square", quick=True))
    for r in rows:
        assert r["mkl_error"] is None and r["mkl"] > 0 and r["mkl_s"] > 0


_ONE_THREAD_BF16 = """
import time, numpy as np
from fastmm.bench import _peers
mkl = _peers.load_mkl()
a = np.full((512, 512), 0x3f80, np.uint16)       # bfloat16 ones, as bits
out = np.zeros((512, 512), np.float32)
call = mkl.prepare_lowp(a, a, out)
with mkl.threads(1):
    call()
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < 0.3:
        call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
assert np.all(out == 512)
print(cpu / wall)
"""


def test_mkl_peer_bf16_on_one_thread_uses_one(mkl):
    # cblas_gemm_bf16bf16f32 ignored MKL's thread counts and ran on OpenMP's
    # default (every core), so the bench's "MKL, 1 thread" bfloat16 column
    # timed two.  CPU time over wall time: ~2 on two idle cores before, <= 1
    # now.  In a process of its own: no other pool's idle spinning is counted.
    import subprocess
    import sys
    from fastmm.driver import _threads
    if _threads.cpu_count() < 2:
        pytest.skip("one CPU: one thread is all MKL could use")
    done = subprocess.run([sys.executable, "-c", _ONE_THREAD_BF16],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1.4
