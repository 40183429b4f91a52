"""`python -m fastmm`: option checking, --version, and the bench's handling
of timings disturbed by other work (tested on made-up timings, not clocks)."""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastmm
from fastmm.bench import _harness
from fastmm.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A bench that takes well under a second, for the runs that must not get far
# (an option accepted by mistake then costs no more than this).
TINY = ["bench", "--quick", "--families", "small", "--dtypes", "float32",
        "--threads", "1", "--repeats", "1", "--peak", "100"]


def run_cli(*args):
    """``python -m fastmm *args`` on this checkout; the finished process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "fastmm", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


BAD_OPTIONS = [("--threads", "0"), ("--threads", "-1"), ("--threads", "abc"),
               ("--threads", "1,,2"), ("--threads", ""), ("--threads", "1.5"),
               ("--repeats", "0"), ("--repeats", "-3"), ("--repeats", "x"),
               ("--peak", "0"), ("--peak", "-5"), ("--peak", "nan"),
               ("--peak", "inf"), ("--families", "small,"),
               ("--dtypes", "float16"), ("--peers", "openblas")]


@pytest.mark.parametrize("option,value", BAD_OPTIONS,
                         ids=[f"{o}={v}" for o, v in BAD_OPTIONS])
def test_bad_bench_option_is_an_argparse_error(option, value, capsys):
    # the bad value comes last, so it overrides TINY's good one
    with pytest.raises(SystemExit) as exc:
        main(TINY + [option, value])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"python -m fastmm bench: error: argument {option}: ")
    assert "Traceback" not in err


def test_threads_zero_from_the_shell_exits_2_without_traceback():
    # the case reported: a traceback from deep in fastmm.threads
    proc = run_cli("bench", "--threads", "0")
    assert proc.returncode == 2
    assert "error: argument --threads: '0'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_good_options_are_parsed():
    parser = argparse.ArgumentParser()
    _harness.add_arguments(parser)
    args = parser.parse_args(["--threads", "1, 2", "--repeats", "3",
                              "--peak", "12.5", "--families", "small,nn"])
    assert args.threads == [1, 2]
    assert args.repeats == 3
    assert args.peak == 12.5
    assert args.families == ["small", "nn"]


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"fastmm {fastmm.__version__}\n"


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"fastmm {fastmm.__version__}\n"


# ---------------------------------------------------------------- stability

def test_round_spread():
    assert _harness.round_spread([1.0, 1.5]) == pytest.approx(0.5)
    assert _harness.round_spread([1.5, 1.0]) == pytest.approx(0.5)
    assert _harness.round_spread([2.0, 2.0]) == 0.0
    assert _harness.round_spread([3.0]) == 0.0


def test_is_stable_flags_a_spread_above_the_threshold_only():
    limit = _harness.UNSTABLE_SPREAD
    calm = [2e-3, 2e-3 * 1.01]
    below = [1e-3, 1e-3 * (1 + 0.8 * limit)]
    above = [1e-3, 1e-3 * (1 + 1.2 * limit)]
    assert _harness.is_stable([below, calm])
    assert _harness.is_stable([calm, below])
    assert not _harness.is_stable([above, calm])
    assert not _harness.is_stable([calm, above])
    # the reported 0.02x: one round of a 2-thread block 50x slower
    assert not _harness.is_stable([[0.1e-3, 5e-3], calm])
    # one round (--repeats 1) has nothing to disagree with
    assert _harness.is_stable([[1e-3], [5e-3]])
    assert not _harness.is_stable([below, calm], threshold=0.5 * limit)


def small_case(threads=1):
    return _harness.make_case("small", "4", (4, 4), (4, 4), 4, "float64",
                              threads, seed=0)


def fake_timer(attempts):
    """A timer (see time_cases) that answers each library's round with the
    given per-attempt rounds, in order: attempts[i][library] is a list of
    best seconds, one per round."""
    it = iter(attempts)
    calls = []
    state = {}

    def timer(library, batch, samples):
        calls.append((library, [c["index"] for c in batch], samples))
        if library == "fastmm" and len(calls) % 4 == 1:
            state["attempt"] = next(it)
        turn = 0 if len(calls) % 4 in (1, 2) else 1
        for case in batch:
            yield {"index": case["index"],
                   "times": {name: state["attempt"][name][turn]
                             for name in case["names"]}}
    return timer, calls


def time_small_case(attempts):
    case = small_case()
    res = _harness.check_case(fastmm, case)
    timer, calls = fake_timer(attempts)
    _harness.time_cases([case], [res], 4, timer=timer)
    return res, calls


def test_time_cases_times_again_until_stable():
    unstable = {"fastmm": [1e-6, 3e-6], "numpy": [2e-6, 2e-6]}
    stable = {"fastmm": [1.1e-6, 1.0e-6], "numpy": [2e-6, 2.1e-6]}
    res, calls = time_small_case([unstable, stable])
    # two rounds a try, libraries taking turns, two samples a round
    assert calls == [("fastmm", [0], 2), ("numpy", [0], 2),
                     ("numpy", [0], 2), ("fastmm", [0], 2)] * 2
    assert res["stable"] is True
    assert res["attempts"] == 2
    assert res["fastmm_s"] == 1.0e-6 and res["numpy_s"] == 2e-6
    assert res["fastmm_spread"] == pytest.approx(0.1)


def test_time_cases_gives_up_after_retries():
    unstable = {"fastmm": [1e-6, 1e-6], "numpy": [2e-6, 9e-6]}
    res, calls = time_small_case([unstable] * (1 + _harness.RETRIES + 1))
    assert len(calls) == 4 * (1 + _harness.RETRIES)
    assert res["stable"] is False
    assert res["attempts"] == 1 + _harness.RETRIES
    assert res["numpy_spread"] == pytest.approx(3.5)


def test_each_library_is_timed_in_a_process_of_its_own():
    # the regression: timed in one process, the idle pool of one library
    # spun on the core the other's second thread needed
    from fastmm.bench._worker import run_worker
    case = dict(small_case(threads=2), index=7)
    pids = {}
    for library in ("fastmm", "numpy"):
        got = list(run_worker(library, [dict(case, names=[library])], 1))
        assert [g["index"] for g in got] == [7]
        assert list(got[0]["times"]) == [library]
        assert 0 < got[0]["times"][library] < 0.01
        pids[library] = got[0]["pid"]
    assert len({pids["fastmm"], pids["numpy"], os.getpid()}) == 3


def test_a_failing_timing_process_is_an_error_not_a_hang():
    from fastmm.bench._worker import run_worker
    bad = _harness.make_case("small", "bad", (4, 5), (4, 4), 4, "float64", 1,
                             seed=0)
    from fastmm.bench._worker import WorkerError
    with pytest.raises(WorkerError, match="(?s)fastmm timing process ended "
                       "with status 1 after 0 of 1 cases.*ValueError"):
        list(run_worker("fastmm", [dict(bad, index=0, names=["fastmm"])], 1))


def test_bench_reports_a_failed_timing_process_and_exits_1(monkeypatch,
                                                           capsys):
    from fastmm.bench import _worker

    def broken(library, cases, samples, peer_names=()):
        raise _worker.WorkerError(f"the bench's {library} timing process "
                                  "ended with status -11 after 0 of 1 cases")
        yield
    monkeypatch.setattr(_worker, "run_worker", broken)
    assert main(TINY) == 1
    err = capsys.readouterr().err
    assert "python -m fastmm bench: error: the bench's fastmm timing " \
        "process ended with status -11" in err
    assert "Traceback" not in err


def test_wrong_result_is_not_timed(monkeypatch):
    case = small_case()
    real = fastmm.matmul

    def wrong(a, b, out=None):
        real(a, b, out=out)
        out[0, 0] += 1.0
        return out
    monkeypatch.setattr(fastmm, "matmul", wrong)
    res = _harness.check_case(fastmm, case)
    assert "k*eps bound" in res["error"] and res["timed"] == []
    timer, calls = fake_timer([])
    _harness.time_cases([case], [res], 4, timer=timer)
    assert calls == [] and res["fastmm"] is None and res["stable"] is None


def row(ratio, stable=True, error=None, threads=2):
    return {"family": "square", "label": "256", "dtype": "float32",
            "threads": threads, "peak": None, "error": error, "stable": stable,
            "fastmm": 10.0 * ratio, "numpy": 10.0, "attempts": 3,
            "fastmm_spread": 0.0 if stable else 9.0, "numpy_spread": 0.0,
            "flops": 2e9, "bytes": 1e9, "bandwidth": None}


def test_table_reports_bytes_per_second_against_the_bandwidth(capsys):
    # 10 GFLOP/s on 2 flops per byte moved: 5 GB/s, half of 10 GB/s
    _harness.print_table([dict(row(1.0), bandwidth=10.0), row(1.0)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-2:] == ["GB/s", "%bw"]
    assert lines[-2].split()[-2:] == ["5.00", "50%"]
    assert lines[-1].split()[-2:] == ["5.00", "n/a"]


def test_traffic_and_bandwidth_are_measured():
    # A and B read once, C written once; broadcast stacks count C per product
    assert _harness.traffic_bytes((32, 4096), (4096, 4096), "float32") == 4 * (
        32 * 4096 + 4096 * 4096 + 32 * 4096)
    assert _harness.traffic_bytes((10, 4, 4), (4, 4), "float64") == 8 * (
        160 + 16 + 160)
    assert _harness.traffic_bytes((5,), (5, 3), "float32") == 4 * (5 + 15 + 3)
    gbs, how = _harness.measure_bandwidth(1, rounds=1)
    assert 0.1 < gbs < 10000 and "MiB" in how


def test_unstable_case_is_left_out_of_the_summary(capsys):
    rows = [row(2.0), row(8.0), row(0.02, stable=False)]
    assert _harness.speedups(rows) == [2.0, 8.0]
    _harness.print_summary(rows, ["square"], ["float32"], [2])
    out = capsys.readouterr().out
    all_line = [line for line in out.splitlines() if line.startswith("all ")]
    assert all_line and all_line[0].split()[1:] == ["4.00x", "4.00x"]
    with_it = _harness.geomean([2.0, 8.0, 0.02])
    assert "0.02" not in out and f"{with_it:.2f}x" not in out
    assert "1 case(s) left out as unstable" in out


def test_summary_says_nothing_when_all_stable(capsys):
    _harness.print_summary([row(2.0), row(8.0)], ["square"], ["float32"], [2])
    out = capsys.readouterr().out
    assert "unstable" not in out


def test_unstable_row_prints_no_ratio(capsys):
    _harness.print_table([row(0.02, stable=False), row(1.5)])
    lines = capsys.readouterr().out.splitlines()
    assert "unstable" in lines[-2] and "x " not in lines[-2]
    assert "0.02" not in lines[-2]
    assert "1.50x" in lines[-1] and "unstable" not in lines[-1]


def test_tiny_bench_writes_stable_to_json(tmp_path):
    path = tmp_path / "r.json"
    proc = run_cli("bench", "--quick", "--families", "small", "--dtypes",
                   "float32", "--threads", "1", "--repeats", "2", "--peak",
                   "100", "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(path.read_text())
    assert len(rows) == len(_harness.family_cases("small", quick=True))
    for r in rows:
        assert r["error"] is None
        assert isinstance(r["stable"], bool)
        assert 1 <= r["attempts"] <= 1 + _harness.RETRIES
        assert r["stable"] == (max(r["fastmm_spread"], r["numpy_spread"])
                               <= _harness.UNSTABLE_SPREAD)
        assert math.isfinite(r["fastmm"]) and math.isfinite(r["numpy"])
        assert r["bytes"] == _harness.traffic_bytes((r["size"],) * 2,
                                                    (r["size"],) * 2,
                                                    "float32")
        assert r["bandwidth"] > 0
