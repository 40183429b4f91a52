"""The configuration registry: which row a CPU gets, and that every row this
machine can run gives correct results on every path."""
import numpy as np
import pytest

import fastmm
from fastmm.driver import _context, _packed, _unpacked, _threads
from fastmm import _linalg, config
from fastmm._cpu import Cache, block_sizes, l2_budget, read_caches
from fastmm.config.registry import ROWS, Signature, parse_signature, select
from conftest import assert_close, random, reference

AVX512 = "avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512cd"

# Recorded signatures (vendor, family, model, flags) of CPUs fastmm ran on or
# is meant for; the model numbers of the VMs are what their hypervisors said.
RECORDED = {
    # Intel Xeon with AMX, KVM guest seen on 2026-12-02 (shared/cpus)
    "intel-xeon-amx": ("GenuineIntel", 6, 167,
                       AVX512 + " avx512ifma avx_vnni avx512_bf16 avx512vbmi"
                       " avx512_vbmi2 avx512_vnni avx512_fp16 amx_bf16"
                       " amx_tile amx_int8", "sapphirerapids"),
    # AMD EPYC, Zen 4 (Genoa), KVM guest: this project's Zen 4 machine
    "amd-zen4": ("AuthenticAMD", 25, 17,
                 AVX512 + " avx512ifma avx512_bf16 avx512vbmi avx512_vbmi2"
                 " avx512_vnni", "zen4"),
    # AMD Zen 5 (family 0x1A)
    "amd-zen5": ("AuthenticAMD", 26, 2,
                 AVX512 + " avx512_bf16 avx512_vnni avx512_vbmi2 avx_vnni",
                 "zen5"),
    # AMD EPYC, Zen 3 (Milan), KVM guest seen on 2026-12-03 (shared/cpus)
    "amd-zen3": ("AuthenticAMD", 25, 1, "avx avx2 fma f16c bmi2 vaes"
                 " vpclmulqdq sha_ni", "zen-avx2"),
    "intel-icelake": ("GenuineIntel", 6, 106,
                      AVX512 + " avx512ifma avx512vbmi avx512_vbmi2"
                      " avx512_vnni", "icelake"),
    "intel-cascadelake": ("GenuineIntel", 6, 85, AVX512 + " avx512_vnni",
                          "skylake-x"),
    "intel-skylake-x": ("GenuineIntel", 6, 85, AVX512, "skylake-x"),
    "intel-haswell": ("GenuineIntel", 6, 63, "avx avx2 fma", "avx2"),
    "unknown-avx512": ("SomeVendor", 1, 1, AVX512, "avx512"),
    "no-simd": ("unknown", 0, 0, "", "generic"),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_registry_picks_the_row_for_recorded_cpus(name):
    vendor, family, model, flags, want = RECORDED[name]
    row, reason = select(Signature(vendor, family, model, frozenset(flags.split())))
    assert row.name == want, reason
    assert vendor in reason and str(family) in reason


def test_rows_whose_kernels_cannot_run_are_skipped():
    # an AVX-512 CPU whose OS does not save the ZMM state runs AVX2 kernels
    vendor, family, model, flags, _ = RECORDED["amd-zen4"]
    sig = Signature(vendor, family, model, frozenset(flags.split()))
    row, _ = select(sig, runnable=["avx2", "generic"])
    assert row.isa == "avx2"
    row, _ = select(sig, runnable=["generic"])
    assert row.name == "generic"


def test_signature_parsed_from_cpuinfo(tmp_path):
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
            "model\t\t: 17\nflags\t\t: fpu " + AVX512 + "\n\nprocessor\t: 1\n"
            "vendor_id\t: Other\n")
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    sig = config.signature(str(path))
    assert (sig.vendor, sig.family, sig.model) == ("AuthenticAMD", 25, 17)
    assert sig.has("avx512f", "fpu")
    assert config.signature(str(tmp_path / "missing")).vendor == "unknown"
    assert parse_signature({"cpu family": "x"}).family == 0


def test_every_row_names_a_compiled_kernel_family():
    names = [row.name for row, _, _ in ROWS]
    assert len(names) == len(set(names))
    for row, _, _ in ROWS:
        assert row.isa in _context.compiled_kernels()
        assert row.flops_per_thread > 0 and row.small_mnk >= 0


def test_the_row_in_force_drives_every_path():
    cur = config.current()
    row = cur["row"]
    assert cur["isa"] == _context.kernel_info()["name"] == _unpacked.small_kernel()
    assert _linalg.routing() == {"small_mnk": row.small_mnk,
                                 "skinny_m": row.skinny_m,
                                 "narrow_n": row.narrow_n,
                                 "shallow_k": row.shallow_k,
                                 "skinny_kn": row.skinny_kn}
    assert _threads.flops_per_thread() == row.flops_per_thread
    assert _packed.pack_prefetch() == tuple(row.pack_prefetch)
    assert _packed.stack_ahead() == read_caches()[2].size // 2
    blocks = config.blocks_for(row, cur["isa"])
    info = _context.kernel_info()
    for dt in ("float32", "float64"):
        mc, kc, nc = blocks[dt]
        assert (info[dt]["KC"], info[dt]["NC"] >= 1) == (kc, True)
        assert info[dt]["stream"] == (row.stream_prefetch and
                                      _context.has_stream(cur["isa"], dt))


def test_float64_kc_cap_of_the_zen_avx2_row():
    # Zen 3's caches (L1d 32 KiB, L2 512 KiB 8-way, L3 32 MiB): the 6 x 8
    # float64 B micro-panel stays at 16 KiB (KC 256), half of L1, while
    # float32 and the rows without the cap keep KC 512
    from fastmm._cpu import Cache, block_sizes
    caches = {1: Cache(32 << 10, 8, 64), 2: Cache(512 << 10, 8, 64),
              3: Cache(32 << 20, 16, 64)}
    row = next(r for r, _, _ in ROWS if r.name == "zen-avx2")
    assert row.kc_max_float64 == 256
    got = {}
    for r in (row, row.with_(kc_max_float64=None)):
        got[r.kc_max_float64] = [
            block_sizes(6, nr, size, caches, kc_max=kc,
                        b_panel_l2_fraction=r.b_panel_l2_fraction)[1]
            for nr, size, kc in ((16, 4, r.kc_max),
                                 (8, 8, r.kc_max_float64 or r.kc_max))]
    assert got == {256: [512, 256], None: [512, 512]}
    if config.current()["row"].name == "zen-avx2":
        assert _context.kernel_info()["float64"]["KC"] <= 256


def _products_are_right():
    from fastmm import nn
    cases = [((200, 150), (150, 170)),      # packed
             ((512, 300), (300, 10)),       # narrow: a classifier head
             ((30, 20), (20, 25)),          # small
             ((5, 150, 140), (140, 130)),   # stack
             ((1, 300), (300, 200))]        # vector-matrix
    for dtype in (np.float32, np.float64):
        for i, (sa, sb) in enumerate(cases):
            a = random(sa, dtype, i)
            b = random(sb, dtype, i + 10)
            for nt in (1, 2):
                with fastmm.threads(nt):
                    assert_close(fastmm.matmul(a, b), reference(a, b), a, b)
        x = random((130, 200), dtype, 1)
        w = random((200, 150), dtype, 2)
        bias = random(150, dtype, 3)
        y = nn.linear(x, w, bias, "relu")
        ref = np.maximum(reference(x, w) + bias, 0)
        assert np.allclose(y, ref, rtol=200 * np.finfo(dtype).eps,
                           atol=200 * np.finfo(dtype).eps * np.abs(ref).max())


@pytest.mark.parametrize("row", [r for r, _, _ in ROWS], ids=lambda r: r.name)
def test_every_runnable_row_gives_correct_results(row):
    if row.isa not in _context.available_kernels():
        pytest.skip(f"this CPU cannot run {row.isa}")
    saved = config.current()
    try:
        config.apply(row, "test", "test")
        info = _context.kernel_info()
        assert info["name"] == row.isa == _unpacked.small_kernel()
        for dt in ("float32", "float64"):
            assert info[dt]["stream"] == (row.stream_prefetch and
                                          _context.has_stream(row.isa, dt))
        _products_are_right()
    finally:
        config.apply(saved["row"], saved["reason"], saved["source"])


INTEL_AMX_CACHES = {1: Cache(48 << 10, 12, 64), 2: Cache(2 << 20, 16, 64),
                    3: Cache(480 << 20, 16, 64)}


def test_the_sapphirerapids_row_keeps_its_a_block_to_a_quarter_of_l2():
    # measured: an A block filling L2 (MC 888 / 444) ran 5-15% behind; the
    # float32 B micro-panel streams from L2 at KC 1024
    row = next(r for r, _, _ in ROWS if r.name == "sapphirerapids")
    assert row.a_block_l2_fraction == 1 / 4 and row.stream_prefetch
    got = [block_sizes(12, nr, size, INTEL_AMX_CACHES, kc_max=kc_max,
                       b_panel_l2_fraction=row.b_panel_l2_fraction,
                       a_block_l2_fraction=row.a_block_l2_fraction)
           for nr, size, kc_max in ((32, 4, row.kc_max),
                                    (16, 8, row.kc_max_float64))]
    assert got == [(120, 1024, 8192), (120, 512, 8192)]
    # without the share: all of L2 but two ways, as on the other rows
    assert block_sizes(12, 32, 4, INTEL_AMX_CACHES)[0] == 888
    assert l2_budget(INTEL_AMX_CACHES) == 14 << 17


@pytest.mark.parametrize("fraction", [None, 1 / 4])
def test_the_one_a_block_path_keeps_its_b_chunks(fraction):
    # products of few rows run in one A block with B chunks sized from the
    # cache model's L2 budget, not from a smaller MC: chunks from MC = 120
    # (float64) ran 20-30% behind at m = 32
    isa = config.current()["isa"]
    row = config.current()["row"].with_(isa=isa, blocks=None,
                                        a_block_l2_fraction=fraction)
    saved = config.current()
    try:
        config.apply(row, "test", "test")
        info = _context.kernel_info()
        for dt, size in (("float32", 4), ("float64", 8)):
            b = info[dt]
            budget = (b["MC"] * b["KC"] * size if fraction is None
                      else l2_budget())
            assert b["chunk"] == max(1, budget // (2 * b["NR"] * b["KC"]
                                                   * size))
            assert b["one_block_m"] == max(
                2 * b["MC"], 2 * budget // (b["KC"] * size) // b["MR"]
                * b["MR"])
            if fraction is None:      # as before rows had an A block share
                assert b["chunk"] == max(1, b["MC"] // (2 * b["NR"]))
                assert b["one_block_m"] == 2 * b["MC"]
        # which products take the path: up to 2 MC rows on 2 threads
        # whatever n (and on 1 thread with wide B); past 2 MC, up to
        # one_block_m rows only with wide B: on 2 threads 512^3 float64 ran
        # 10% behind the shared B panel that way (Intel Xeon with AMX)
        wide = _packed.short_n()
        for dt in ("float32", "float64"):
            mc2, lim = 2 * info[dt]["MC"], info[dt]["one_block_m"]
            takes = lambda m, n, nt: _packed.takes_one_a_block(m, n, nt, dt)
            assert takes(mc2, 64, 2) and not takes(mc2, 64, 1)
            assert takes(mc2, wide, 1)
            assert takes(lim, wide, 1) and takes(lim, wide, 2)
            assert not takes(lim + 1, wide, 2)
            if lim > mc2:
                assert not takes(mc2 + 1, wide - 1, 2)
                assert not takes(lim, 512, 2)
        # the products on the few-rows path, both sides of its limits (B
        # wide enough for the second: n >= short_n)
        for dtype, dt in ((np.float32, "float32"), (np.float64, "float64")):
            lims = {2 * info[dt]["MC"], info[dt]["one_block_m"]}
            for m in sorted({32} | lims | {x + 1 for x in lims}):
                a = random((m, 70), dtype, m)
                b = random((70, _packed.short_n() + 5), dtype, 1)
                for nt in (1, 2):
                    c = np.full((m, b.shape[1]), np.nan, dtype)
                    with fastmm.threads(nt):
                        _packed.run_packed(1.0, a, b, 0.0, c, nthreads=nt)
                    assert_close(c, reference(a, b), a, b)
    finally:
        config.apply(saved["row"], saved["reason"], saved["source"])
