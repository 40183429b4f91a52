"""The build and run-time configuration fastmm reports (show_config, info)."""
import platform

from fastmm.driver import _context, _packed, _unpacked, _threads
from fastmm import _lowp
from fastmm._cpu import read_caches


def cpu_features():
    """The SIMD features relevant to fastmm that /proc/cpuinfo lists."""
    wanted = ("sse2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw",
              "avx512vl", "avx512_vnni", "avx512_bf16")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def config():
    """Everything show_config prints, as a dict."""
    from fastmm import __version__
    caches = read_caches()
    return {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "openmp": _threads.HAVE_OPENMP,
        "num_threads": _threads.get_num_threads(),
        "cpu_count": _threads.cpu_count(),
        "forked_child_single_thread": _threads.in_forked_child(),
        "kept_buffer_bytes": _packed.kept_buffer_bytes(),
        "cpu_features": cpu_features(),
        "caches": {f"L{lvl}": f"{c.size // 1024} KiB, {c.ways}-way"
                   for lvl, c in sorted(caches.items())},
        "kernels_compiled": _context.compiled_kernels(),
        "kernels_supported": _context.available_kernels(),
        "kernel": _context.kernel_info(),
        "config": _row_info(),
        "small_kernel": _unpacked.small_kernel(),
        "lowp_kernels": _lowp.lowp_kernels(),
    }


def _row_info():
    from fastmm import _linalg, config
    from fastmm.driver import _threads
    cur = config.current()
    row = cur.get("row")
    return {
        "row": row.name if row else None,
        "summary": row.summary if row else "",
        "reason": cur.get("reason"),
        "source": cur.get("source"),
        "measured": row.measured if row else "",
        "forced_kernel": cur.get("forced_isa"),
        "routing": _linalg.routing(),
        "flops_per_thread": _threads.flops_per_thread(),
        "short_n": _packed.short_n(),
        "pack_prefetch": _packed.pack_prefetch(),
        "l1_geometry": _unpacked.l1_geometry(),
        "stack_ahead": _packed.stack_ahead(),
    }


def show_config():
    """Print fastmm's version, threading, CPU features and kernel choice."""
    cfg = config()
    kern = cfg["kernel"]
    print(f"fastmm {cfg['version']} (Python {cfg['python']}, {cfg['machine']})")
    print(f"  OpenMP:      {'yes' if cfg['openmp'] else 'no (serial build)'}")
    print(f"  threads:     {cfg['num_threads']} (CPUs available: {cfg['cpu_count']})"
          + (" [forked child: 1]" if cfg["forked_child_single_thread"] else ""))
    print(f"  buffers:     {cfg['kept_buffer_bytes'] / 2**20:.1f} MiB of packing "
          f"buffers kept between calls (fastmm.release_buffers() frees them)")
    print(f"  CPU:         {' '.join(cfg['cpu_features']) or 'unknown'}")
    print("  caches:      " + "; ".join(f"{k} {v}" for k, v in cfg["caches"].items()))
    print(f"  kernels:     compiled {cfg['kernels_compiled']}, "
          f"runnable {cfg['kernels_supported']}")
    print(f"  kernel:      {kern['name']} (packed path); "
          f"{cfg['small_kernel']} (unpacked small/skinny path)")
    for dt in ("float32", "float64"):
        b = kern[dt]
        print(f"    {dt}: MR x NR = {b['MR']} x {b['NR']}, "
              f"MC = {b['MC']}, KC = {b['KC']}, NC = {b['NC']}"
              + ("; streaming kernel (panels prefetched in the k loop)"
                 if b["stream"] else ""))
    lp = cfg["lowp_kernels"]
    print(f"  low precision: int8 -> int32 {lp['int8']}, bfloat16 -> float32 "
          f"{lp['bfloat16']}")
    row = cfg["config"]
    print(f"  config row:  {row['row']} ({row['summary']})")
    print(f"    chosen:    {row['reason']}")
    print(f"    numbers:   {row['source']}; {row['measured']}")
    if row["forced_kernel"]:
        print(f"    kernel:    FASTMM_KERNEL={row['forced_kernel']} overrides "
              f"the row's kernel family")
    r = row["routing"]
    print(f"    unpacked path: m*n*k <= {r['small_mnk']}, m <= {r['skinny_m']} "
          f"(with k <= 256 or k*n <= {r['skinny_kn']}), n <= {r['narrow_n']}, "
          f"k <= {r['shallow_k']}, or a vector")
    sets, ways, line = row["l1_geometry"]
    if ways:
        print(f"      B copied in panels, not read in place, when its rows "
              f"fall on too few of L1's {sets} sets ({ways}-way, {line}-byte "
              f"lines) for 96+ rows of A")
    ahead, stride = row["pack_prefetch"]
    chunk = {dt: kern[dt]["chunk"] for dt in ("float32", "float64")}
    wide = {dt: kern[dt]["one_block_m"] for dt in ("float32", "float64")}
    print(f"    packed path: per-thread B chunks ({chunk['float32']} / "
          f"{chunk['float64']} micro-panels, float32 / float64) when "
          f"m <= 2 MC and n >= {row['short_n']} or threads > 1"
          + (f", or m <= {wide['float32']} / {wide['float64']} and "
             f"n >= {row['short_n']}"
             if any(wide[dt] > 2 * kern[dt]["MC"] for dt in wide) else "")
          + (f"; packed with a prefetch {ahead} rows ahead where B's rows "
             f"are >= {stride // 1024} KiB apart" if ahead else ""))
    if row["stack_ahead"]:
        print(f"      stacks: the next product's A and B fetched into L2 while "
              f"one runs on one thread, when they take <= "
              f"{row['stack_ahead'] // 1024} KiB (half of L2)")
    print(f"    threads:   one per {row['flops_per_thread'] / 1e6:.1f} MFLOP "
          f"of a product (float32; a float64 flop counts twice)")
