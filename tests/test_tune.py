"""`python -m fastmm tune` and the tuning file: a tiny-budget search end to
end, the file read by fresh interpreters, and every reason a file is not
trusted (a RuntimeWarning and the built-in row)."""
import json
import os
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import fastmm
from fastmm.driver import _context, _threads
from fastmm import _linalg
from fastmm.config import (apply, current, registry, select, signature,
                           tuned)
from fastmm.config.tune import block_candidates, crossover

from conftest import assert_close, random, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_with(**changes):
    """This process's environment for a child on this checkout, tuning file
    isolated from the user's (changes: name -> value, None to unset)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(tuned.ENV, None)
    env.pop("FASTMM_KERNEL", None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# what a fresh interpreter has in force, as JSON on stdout
SHOW = ("import json, warnings; warnings.simplefilter('always'); "
        "import fastmm; from fastmm import _linalg; from fastmm.driver import _context, _packed, _threads; "
        "from fastmm.config import current; c = current(); "
        "print(json.dumps({'source': c['source'], 'row': c['row'].name, "
        "'measured': c['row'].measured, 'kernel': _context.kernel_info(), "
        "'routing': _linalg.routing(), "
        "'flops_per_thread': _threads.flops_per_thread(), "
        "'pack_prefetch': _packed.pack_prefetch()}))")


def fresh(**env):
    proc = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT,
                          env=env_with(**env), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """One `python -m fastmm tune --seconds 3 --output FILE` run."""
    folder = tmp_path_factory.mktemp("tune")
    file = folder / "sub" / "tuned.json"      # the folder is created
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fastmm", "tune", "--seconds", "3", "--output",
         str(file)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=env_with(XDG_CACHE_HOME=str(folder / "cache")))
    return proc, file, time.perf_counter() - start


def test_tune_writes_a_valid_file_within_its_budget(tuned_run):
    proc, file, took = tuned_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 3 + 6, f"3 s budget, ran {took:.1f} s"   # + start, import
    for title in ("kernel family", "block sizes, float32",
                  "block sizes, float64", "B-chunk prefetch",
                  "unpacked path vs packed driver", "tuned: kernel"):
        assert title in proc.stdout
    assert "threads" in proc.stdout and "validation" in proc.stdout
    assert f"saved to {file}" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "100/100" in proc.stderr                    # the progress bar ended
    data = json.loads(file.read_text())
    assert data["format"] == tuned.FORMAT
    assert data["fastmm_version"] == fastmm.__version__
    sig = signature()
    assert data["signature"] == tuned.signature_dict(sig)
    builtin, _ = select(sig, _context.available_kernels())
    assert data["base_row"] == builtin.name
    assert set(data["row"]) == set(tuned.FIELDS)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                        data["measured"]["timestamp"])
    assert {"kernel", "blocks", "prefetch", "routing", "threads"} <= set(
        data["measured"]["stages"])
    # what load accepts, nothing left beside it
    assert tuned.load(sig, builtin, str(file)) is not None
    assert os.listdir(file.parent) == ["tuned.json"]


def test_a_fresh_import_uses_the_tuned_file(tuned_run):
    _, file, _ = tuned_run
    data = json.loads(file.read_text())
    got, err = fresh(FASTMM_TUNED=str(file))
    assert "RuntimeWarning" not in err
    day = data["measured"]["timestamp"][:10]
    assert got["source"] == f"tuned file {file} ({day})"
    assert got["measured"].startswith("measured on this machine by "
                                      "`python -m fastmm tune`; validation")
    row = data["row"]
    assert got["kernel"]["name"] == row["isa"]
    for dt in ("float32", "float64"):
        assert got["kernel"][dt]["stream"] == (
            row["stream_prefetch"] and _context.has_stream(row["isa"], dt))
    if row["blocks"] is not None:
        for dt in ("float32", "float64"):
            k = got["kernel"][dt]
            mc, kc, nc = row["blocks"][dt]
            assert (k["MC"], k["KC"], k["NC"]) == (
                mc // k["MR"] * k["MR"], kc, nc // k["NR"] * k["NR"])
    # skinny_kn is not tuned: the base row's
    base = next(r for r, _, _ in registry.ROWS if r.name == data["base_row"])
    assert got["routing"] == {f: row[f] for f in (
        "small_mnk", "skinny_m", "narrow_n", "shallow_k")} | {
        "skinny_kn": base.skinny_kn}
    assert got["flops_per_thread"] == row["flops_per_thread"]
    assert got["pack_prefetch"] == row["pack_prefetch"]


def test_the_default_file_lives_in_xdg_cache_home(tuned_run, tmp_path):
    _, file, _ = tuned_run
    (tmp_path / "fastmm").mkdir()
    (tmp_path / "fastmm" / "tuned.json").write_text(file.read_text())
    got, err = fresh(XDG_CACHE_HOME=str(tmp_path))
    assert got["source"].startswith(
        f"tuned file {tmp_path / 'fastmm' / 'tuned.json'} (")
    # FASTMM_TUNED=off: the same file is not read, silently
    got, err = fresh(XDG_CACHE_HOME=str(tmp_path), FASTMM_TUNED="off")
    assert got["source"] == "built-in"
    assert "RuntimeWarning" not in err


def test_a_corrupt_file_at_import_warns_and_keeps_the_built_in_row(tmp_path):
    file = tmp_path / "tuned.json"
    file.write_text('{"format": 1, "row": ')
    got, err = fresh(FASTMM_TUNED=str(file))
    assert got["source"] == "built-in"
    assert "RuntimeWarning" in err and str(file) in err
    assert "not valid JSON" in err


# ---- load: what is trusted, what is not (in this process) ----

@pytest.fixture
def sig_row():
    sig = signature()
    return sig, select(sig, _context.available_kernels())[0]


def valid_doc(sig, row, **row_changes):
    fields = tuned.row_fields(row)
    fields.update(row_changes)
    doc = tuned.document(sig, row.name, row, {"timestamp": tuned.now()})
    doc["row"] = fields
    return doc


def load_warns(tmp_path, sig, row, doc=None, text=None, match=""):
    file = tmp_path / "tuned.json"
    file.write_text(text if text is not None else json.dumps(doc))
    with pytest.warns(RuntimeWarning, match=match) as record:
        assert tuned.load(sig, row, str(file)) is None
    assert str(file) in str(record[0].message)


def test_load_accepts_its_own_file(tmp_path, sig_row):
    sig, row = sig_row
    blocks = {"float32": (96, 256, 512), "float64": (48, 256, 256)}
    mine = row.with_(blocks=blocks, small_mnk=100 ** 3, narrow_n=24,
                     flops_per_thread=3e6)
    file = tuned.save(sig, mine, {"what": "test"},
                      str(tmp_path / "a" / "b.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, source = tuned.load(sig, row, file)
    assert got.blocks == blocks and got.small_mnk == 100 ** 3
    assert got.narrow_n == 24 and got.flops_per_thread == 3e6
    assert got.name == row.name and got.kc_max == row.kc_max
    assert re.fullmatch(re.escape(f"tuned file {file} (") + r"\d{4}-\d\d-\d\d\)",
                        source)


def test_no_file_or_off_is_silent(tmp_path, sig_row, monkeypatch):
    sig, row = sig_row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuned.load(sig, row, str(tmp_path / "absent.json")) is None
        for off in ("off", "OFF", "0", "none"):
            monkeypatch.setenv(tuned.ENV, off)
            assert tuned.path() is None
            assert tuned.load(sig, row) is None


def test_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(tuned.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tuned.path() == str(tmp_path / "fastmm" / "tuned.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tuned.path() == str(tmp_path / "home" / ".cache" / "fastmm"
                               / "tuned.json")
    assert tuned.display(tuned.path()) == "~/.cache/fastmm/tuned.json"
    monkeypatch.setenv(tuned.ENV, str(tmp_path / "other.json"))
    assert tuned.path() == str(tmp_path / "other.json")


def test_corrupt_and_unreadable_files_are_ignored(tmp_path, sig_row):
    sig, row = sig_row
    load_warns(tmp_path, sig, row, text="{not json", match="not valid JSON")
    load_warns(tmp_path, sig, row, text="", match="not valid JSON")
    load_warns(tmp_path, sig, row, text="[1, 2]", match="not a JSON object")
    (tmp_path / "dir.json").mkdir()
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        assert tuned.load(sig, row, str(tmp_path / "dir.json")) is None


def test_foreign_files_are_ignored(tmp_path, sig_row):
    sig, row = sig_row
    doc = valid_doc(sig, row)
    cases = [
        ("format", tuned.FORMAT + 1, f"format {tuned.FORMAT + 1}"),
        # format 1 had no pack_prefetch, format 2 no stream_prefetch: their
        # rows lack a field
        ("format", 1, "format 1"),
        ("format", 2, "format 2"),
        ("fastmm_version", "0.0.1", "written by fastmm '0.0.1'"),
        ("base_row", "not-" + row.name, "tuned from row"),
        ("signature", dict(doc["signature"], model=doc["signature"]["model"]
                           + 1), "another CPU"),
        ("signature", dict(doc["signature"], flags_sha256="0" * 64),
         "another CPU"),
        ("signature", dict(doc["signature"], vendor="GenuineIntel"
                           if sig.vendor != "GenuineIntel" else "AuthenticAMD"),
         "another CPU"),
        ("signature", "x86", "another CPU"),
        ("measured", {"timestamp": "yesterday"}, "timestamp"),
        ("row", [1, 2], "'row' is not an object"),
    ]
    for key, value, match in cases:
        load_warns(tmp_path, sig, row, dict(doc, **{key: value}), match=match)


OUT_OF_RANGE = [
    {"isa": "sse9"}, {"isa": 3},
    {"blocks": {"float32": [0, 256, 4096], "float64": [96, 256, 4096]}},
    {"blocks": {"float32": [96, -256, 4096], "float64": [96, 256, 4096]}},
    {"blocks": {"float32": [96, 256, 1 << 20], "float64": [96, 256, 4096]}},
    {"blocks": {"float32": [96, 256.0, 4096], "float64": [96, 256, 4096]}},
    {"blocks": {"float32": [96, 256, 4096]}},
    {"blocks": {"float32": [96, 256], "float64": [96, 256, 4096]}},
    {"blocks": {"float32": [4096, 4096, 4096], "float64": [96, 256, 4096]}},
    {"blocks": "big"},
    {"flops_per_thread": 0}, {"flops_per_thread": -1.0},
    {"flops_per_thread": "1e6"}, {"flops_per_thread": True},
    {"flops_per_thread": 1e300},
    {"small_mnk": -1}, {"small_mnk": 1.5}, {"small_mnk": 1 << 40},
    {"skinny_m": -1}, {"narrow_n": 10 ** 6}, {"shallow_k": None},
    {"narrow_n": False},
    {"pack_prefetch": [65, 0]}, {"pack_prefetch": [4, -1]},
    {"pack_prefetch": [4]}, {"pack_prefetch": "on"},
    {"pack_prefetch": [4.0, 16384]},
    {"stream_prefetch": 1}, {"stream_prefetch": "yes"},
    {"stream_prefetch": None},
]


@pytest.mark.parametrize("change", OUT_OF_RANGE,
                         ids=[json.dumps(c)[:40] for c in OUT_OF_RANGE])
def test_out_of_range_values_are_ignored(tmp_path, sig_row, change):
    sig, row = sig_row
    load_warns(tmp_path, sig, row, valid_doc(sig, row, **change))


def test_missing_or_unknown_row_fields_are_ignored(tmp_path, sig_row):
    sig, row = sig_row
    doc = valid_doc(sig, row)
    del doc["row"]["narrow_n"]
    load_warns(tmp_path, sig, row, doc, match="missing")
    doc = valid_doc(sig, row, prefetch=64)
    load_warns(tmp_path, sig, row, doc, match="unknown")


def test_save_is_atomic_and_refuses_what_load_would_refuse(tmp_path, sig_row):
    sig, row = sig_row
    file = tmp_path / "t.json"
    file.write_text("old")
    with pytest.raises(ValueError):
        tuned.save(sig, row.with_(small_mnk=-5), {}, str(file))
    assert file.read_text() == "old"               # untouched
    assert os.listdir(tmp_path) == ["t.json"]      # no temporary left
    tuned.save(sig, row, {}, str(file))
    assert json.loads(file.read_text())["row"] == tuned.row_fields(row)
    assert os.listdir(tmp_path) == ["t.json"]


# ---- a tuned row in force: products stay right ----

SHAPES = [(1, 7, 5), (5, 7, 1), (13, 17, 11), (65, 33, 70), (130, 129, 131),
          (300, 260, 97), (97, 300, 9), (200, 40, 250)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_are_right_under_a_tuned_row(dtype):
    before = current()
    row = before["row"]
    mr = _context.kernel_shapes(row.isa)
    # odd blocks (edge tiles in every loop), routing and threading
    odd = row.with_(blocks={"float32": (3 * mr["float32"][0], 40,
                                        2 * mr["float32"][1]),
                            "float64": (2 * mr["float64"][0], 24,
                                        3 * mr["float64"][1])},
                    small_mnk=50 ** 3, narrow_n=8, flops_per_thread=1e4)
    try:
        apply(odd, "test", "tuned file test")
        assert current()["source"] == "tuned file test"
        assert _linalg.routing()["small_mnk"] == 50 ** 3
        assert _threads.flops_per_thread() == 1e4
        assert _context.kernel_info()["float32"]["KC"] == 40
        for i, (m, k, n) in enumerate(SHAPES):
            a, b = random((m, k), dtype, i), random((k, n), dtype, i + 50)
            with fastmm.threads(2):
                assert_close(fastmm.matmul(a, b), reference(a, b), a, b)
    finally:
        apply(before["row"], before["reason"], before["source"])


# ---- the search's pieces ----

def test_crossover_keeps_the_built_in_unless_clearly_better():
    sizes = [1, 2, 3, 4]
    builtin = lambda s: s >= 3                       # noqa: E731
    same = (2, [False, False, True, True])
    # within the margin everywhere: the built-in's decisions
    assert crossover(sizes, {s: [1.02, 1.02] for s in sizes}, builtin,
                     0.03) == same
    assert crossover(sizes, {s: [0.98] for s in sizes}, builtin, 0.03) == same
    # the high way clearly faster from size 2
    j, d = crossover(sizes, {1: [1.0], 2: [1.2, 1.1], 3: [1.2], 4: [1.2]},
                     builtin, 0.03)
    assert j == 1
    # ... but not when one dtype loses by more than the margin
    j, d = crossover(sizes, {1: [1.0], 2: [1.5, 0.9], 3: [1.2], 4: [1.2]},
                     builtin, 0.03)
    assert j == 2
    # the low way clearly faster at 3 (and nothing measured at 4)
    j, d = crossover(sizes, {1: [0.9], 2: [0.9], 3: [0.9], 4: []}, builtin,
                     0.03)
    assert (j, d) == (3, [False, False, False, True])
    # noise: high, low, high -> low below the last switch
    j, d = crossover(sizes, {1: [1.5], 2: [0.5], 3: [1.5], 4: [1.5]},
                     lambda s: False, 0.03)
    assert j == 2


def test_block_candidates_start_with_the_built_in_and_fit_l2():
    cands = block_candidates((384, 512, 8192), 12, 4, 1 << 20)
    assert cands[0] == (384, 512, 8192)
    assert len(set(cands)) == len(cands)
    for mc, kc, nc in cands[1:]:
        assert mc % 12 == 0 and nc == 8192
        assert 0.2 <= mc * kc * 4 / (1 << 20) <= 0.9


@pytest.mark.parametrize("bad", ["0", "-1", "x", "nan", "1e9"])
def test_bad_seconds_is_an_argparse_error(bad, capsys):
    from fastmm.__main__ import main
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--seconds", bad, "--dry-run"])
    assert exc.value.code == 2
    assert "error: argument --seconds" in capsys.readouterr().err


def test_a_wrong_candidate_is_never_timed_nor_chosen(monkeypatch):
    from fastmm.config.tune import Entry, Search
    right = fastmm.matmul

    def wrong(a, b, out):
        right(a, b, out=out)
        out[1, 2] += 1.0

    s = Search(5.0)
    s.begin("test", 1.0)
    entries = [Entry("g", name, name, lambda f=f: monkeypatch.setattr(
        fastmm, "matmul", f), (40, 30, 20), "float64")
        for name, f in (("right", right), ("wrong", wrong))]
    s.race(entries, rounds=2)
    good, bad = entries
    assert good.gflops and not good.wrong
    assert bad.wrong and bad.gflops is None
    assert s.wrong == ["test: wrong float64 40x30x20"]
    groups = {e.label: [e] for e in entries}
    assert s.pick(groups, "right") == ("right", None)


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="serial build")
def test_threads_are_not_tuned_on_a_busy_machine(monkeypatch, sig_row):
    from fastmm.config import tune
    monkeypatch.setattr(tune, "busy_cpus", lambda: 1.5)
    monkeypatch.setattr(_threads, "cpu_count", lambda: 2)
    s = tune.Search(1.0)
    s.begin("threads", 1.0)
    out = []
    row = sig_row[1]
    got, result = tune.stage_threads(s, row, out)
    assert got == row and "busy" in result["skipped"]
    assert "built-in kept" in out[0]
