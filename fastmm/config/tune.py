"""``python -m fastmm tune``: measure this machine, write the tuned row.

Starting from the registry's row for this CPU (the built-in), the search
times fastmm's own products (float32 and float64) in four stages and a
validation, each in a fixed share of the time budget (a stage that ends
early leaves its time to the next ones):

  kernel    15%  the kernel family, among those this CPU runs, with and
                 without its streaming kernels where it has them
                 (768², 1 thread)
  blocks    40%  MC x KC per dtype: KC in 256..512, MC so that the packed A
                 block fills 0.25 / 0.5 / 0.75 / 0.9 of L2; NC the model's
                 (1024², 1 thread)
  routing   15%  small_mnk and narrow_n: the unpacked path against the packed
                 driver on squares and on 512 x 512 @ 512 x n around the thresholds
  threads   15%  flops_per_thread: the smallest float32 square where 2 threads
                 (forced) beat 1 by more than 5% (the threshold counts float32
                 flops; a float64 product counts each flop twice)
  validation 10% the tuned row against the built-in on a few shapes (all
                 threads); if it loses by more than 3%, the built-in row stays

Each candidate configuration first computes one product checked against
numpy (a wrong one is never chosen); then the candidates are timed
round-robin in short blocks, best of the rounds, so that a slow spell of a
shared machine hits them all alike.  A built-in value is replaced only by a
candidate faster by more than 3%.  Problem sizes shrink when the budget
cannot time every candidate at the nominal sizes.
"""
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

BLOCK_S = 0.002          # shortest timed block: enough calls to fill it
MAX_ROUNDS = 20
PRUNE_AFTER, PRUNE_RATIO = 4, 1.25   # rounds; slower than the best by this
CONFIRM_SHARE = 0.2      # of a stage: the winner against the built-in again
MARGIN = 0.03            # a candidate must beat the built-in by this
THREAD_MARGIN = 0.05     # 2 threads must beat 1 by this to take a size
STAGES = (("kernel", 0.15), ("blocks", 0.35), ("prefetch", 0.05),
          ("routing", 0.15), ("threads", 0.15),
          ("validation", 0.10))                     # 5% left for the rest
# pack_prefetch candidates (rows ahead, minimum row stride in bytes), and
# the few-row products with B far wider than a page that decide it
PREFETCH_CANDIDATES = ((0, 1 << 14), (4, 1 << 14), (8, 1 << 14), (4, 1 << 12))
PREFETCH_SHAPES = ((32, 1024, 2048), (64, 512, 4096))
L2_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
KC_CANDIDATES = (256, 320, 384, 448, 512)
DTYPES = ("float32", "float64")


@dataclass(eq=False)
class Entry:
    """One configuration timed on one product."""
    group: object            # entries of one group compete with each other
    label: str
    key: object              # the configuration's identity
    setup: object            # callable: puts the configuration in force
    shape: tuple             # (m, k, n)
    dtype: str
    threads: object = 1      # None: fastmm's default count
    force: bool = False      # every product on all its threads
    keep: bool = False       # never pruned (the built-in)
    guess: float = 0.0       # expected seconds per call before any call
    best: float = math.inf
    reps: int = 0
    wrong: bool = False
    dropped: bool = False

    @property
    def gflops(self):
        m, k, n = self.shape
        return 2e-9 * m * k * n / self.best if self.best < math.inf else None


class Search:
    """The state of one tuning run: its clock, operands, references and
    the configuration in force."""

    def __init__(self, seconds, progress=None):
        self.seconds, self.progress = seconds, progress
        self.t0 = time.perf_counter()
        self.deadline, self.share, self.stage = self.t0, 0.0, ""
        self.operands, self.refs, self.active = {}, {}, None
        self.wrong = []

    def begin(self, name, share):
        self.stage, self.share = name, self.share + share
        self.deadline = self.t0 + self.share * self.seconds
        self.length = share * self.seconds
        self.active = None

    def left(self):
        return self.deadline - time.perf_counter()

    def tick(self, info):
        if self.progress is not None:
            done = (time.perf_counter() - self.t0) / self.seconds
            self.progress.update(min(99, int(100 * done)),
                                 f"{self.stage}: {info}")

    def data(self, shape, dtype):
        """(a, b, c) of ``shape`` (m, k, n), seeded, c NaN-filled."""
        key = (shape, dtype)
        if key not in self.operands:
            m, k, n = shape
            g = np.random.default_rng([m, k, n, int(dtype[-2:])])
            self.operands[key] = (g.uniform(-1, 1, (m, k)).astype(dtype),
                                  g.uniform(-1, 1, (k, n)).astype(dtype),
                                  np.full((m, n), np.nan, dtype))
        return self.operands[key]

    def correct(self, e):
        """One product of ``e`` within k*eps*|A||B| of numpy's float64 one."""
        a, b, c = self.data(e.shape, e.dtype)
        key = (e.shape, e.dtype)
        if key not in self.refs:
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            k = e.shape[1]
            # float64's own reference rounds too: twice the bound
            self.refs[key] = (a64 @ b64, 2 * (k + 2) * np.finfo(e.dtype).eps
                              * (np.abs(a64) @ np.abs(b64)) + 1e-300)
        ref, bound = self.refs[key]
        c.fill(np.nan)
        start = time.perf_counter()
        _call(a, b, c)
        took = time.perf_counter() - start
        ok = bool((np.abs(c - ref) <= bound).all())
        if not ok:
            e.wrong = True
            self.wrong.append(f"{self.stage}: {e.label} {e.dtype} "
                              f"{'x'.join(map(str, e.shape))}")
        return took

    def _threads(self, e):
        from fastmm.driver import _threads
        from fastmm import threads
        stack = contextlib.ExitStack()
        if e.threads is not None:
            stack.enter_context(threads(e.threads))
        if e.force:
            stack.enter_context(_threads.parallel_threshold(0))
        return stack

    def race(self, entries, prune=True, rounds=MAX_ROUNDS, reserve=0.0):
        """Time ``entries`` round-robin in short blocks until the stage's
        deadline (less ``reserve`` seconds) or ``rounds``; sets each one's
        best seconds per call."""
        deadline = self.deadline - reserve
        for rnd in range(rounds):
            ran = False
            for e in entries:
                if e.wrong or e.dropped:
                    continue
                per_call = e.best if e.best < math.inf else e.guess
                cost = per_call * (2 if e.reps == 0 else e.reps)
                if time.perf_counter() + cost > deadline:
                    continue
                if self.active != e.key:
                    e.setup()
                    self.active = e.key
                a, b, c = self.data(e.shape, e.dtype)
                with self._threads(e):
                    if e.reps == 0:
                        took = self.correct(e)
                        if e.wrong:
                            continue
                        e.reps = max(1, math.ceil(BLOCK_S / max(took, 1e-7)))
                    start = time.perf_counter()
                    for _ in range(e.reps):
                        _call(a, b, c)
                    e.best = min(e.best, (time.perf_counter() - start) / e.reps)
                ran = True
                self.tick(e.label)
            if not ran:
                break
            if prune and rnd + 1 >= PRUNE_AFTER:
                _prune(entries)

    def pick(self, candidates, base):
        """The candidate to use instead of ``base`` (or ``base``), and its
        confirmation (GFLOP/s of base, of the rival; None if none ran).

        candidates: {name: [entries, one per dtype, same order]}, scored by
        the geometric mean of their GFLOP/s.  The race's winner must beat
        the built-in by MARGIN, and lose by no more than MARGIN in any
        dtype, twice: in the race, and when the two are timed again alone,
        since the best of many noisy timings flatters the winner."""
        scores = {name: score(group) for name, group in candidates.items()}
        rival = max((n for n in scores if n != base and scores[n]
                     and not _loses(candidates[n], candidates[base])),
                    key=scores.get, default=None)
        if (rival is None or not scores.get(base)
                or scores[rival] <= scores[base] * (1 + MARGIN)):
            return base, None
        again = {name: [replace(e, best=math.inf, guess=e.best, dropped=False)
                        for e in candidates[name]] for name in (base, rival)}
        self.active = None
        self.race(again[base] + again[rival], prune=False, rounds=6)
        b, r = score(again[base]), score(again[rival])
        won = bool(b and r and r > b * (1 + MARGIN)
                   and not _loses(again[rival], again[base]))
        return (rival if won else base), (b, r)

    def probe(self, n, dtype, threads=1):
        """Seconds of one n³ product in the configuration in force."""
        from fastmm import threads as _threads
        a, b, c = self.data((n, n, n), dtype)
        with _threads(threads):
            _call(a, b, c)
            start = time.perf_counter()
            _call(a, b, c)
            return time.perf_counter() - start

    def fit(self, nominal, per_call_at_256, calls, floor=256, step=64):
        """The largest square size <= nominal (a multiple of step, at least
        floor) at which ``calls`` products, one taking per_call_at_256
        seconds at n = 256, fit in 80% of the stage's time left."""
        cost = per_call_at_256 * calls * (nominal / 256) ** 3
        budget = 0.8 * max(self.left(), 0.0)
        if cost <= budget:
            return nominal
        n = int(nominal * (budget / cost) ** (1 / 3)) // step * step
        return max(floor, n)


def _call(a, b, c):
    from fastmm import matmul
    matmul(a, b, out=c)


def _prune(entries):
    best = {}
    for e in entries:
        if e.best < math.inf:
            best[e.group] = min(best.get(e.group, math.inf), e.best)
    for e in entries:
        if not e.keep and e.best > PRUNE_RATIO * best.get(e.group, math.inf):
            e.dropped = True


def _loses(entries, base):
    """Some dtype of ``entries`` slower than ``base``'s by over MARGIN."""
    return any(e.gflops and b.gflops and e.gflops * (1 + MARGIN) < b.gflops
               for e, b in zip(entries, base))


def score(entries):
    """Geometric mean of the entries' GFLOP/s; None unless all measured."""
    rates = [e.gflops for e in entries if not e.wrong]
    if len(rates) < len(entries) or None in rates:
        return None
    return geomean(rates)


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def installer(row):
    """A callable that puts ``row`` in force in the compiled modules, as
    fastmm.config.apply does (without FASTMM_KERNEL and the bookkeeping)."""
    from fastmm.driver import _context, _packed, _threads
    from fastmm import _linalg
    from fastmm.config import set_blocks

    def install():
        set_blocks(row)
        _context.select_kernel(row.isa)
        _linalg.set_routing(row.small_mnk, row.skinny_m, row.narrow_n,
                            row.shallow_k, row.skinny_kn)
        _threads.set_flops_per_thread(row.flops_per_thread)
        _packed.set_pack_prefetch(*row.pack_prefetch)
    return install


def _by(entries, key):
    """{key(e): e} over the entries measured and correct."""
    return {key(e): e for e in entries if e.best < math.inf and not e.wrong}


def _cell(e):
    if e is None or e.best == math.inf:
        return "WRONG" if e is not None and e.wrong else "--"
    return f"{e.gflops:.1f}"


# ---- (a) kernel family ----

def _kernel_text(cand):
    fam, stream = cand
    return fam + ("+stream" if stream else "")


def stage_kernel(s, row, out):
    """The kernel family, and for a family with streaming kernels (which
    prefetch the packed panels in the k loop) whether to use them."""
    from fastmm.driver import _context
    from fastmm.config import set_blocks
    families = _context.available_kernels()
    cands = [(fam, stream) for fam in families for stream in (False, True)
             if not stream or _context.has_stream(fam, "float32")]
    base = (row.isa, bool(row.stream_prefetch))
    installer(row)()
    probe = {dt: s.probe(256, dt) for dt in DTYPES}
    # the other families: assumed 3x slower on average (generic is ~5x)
    n = s.fit(768, sum(probe.values()) * (1 + 3 * (len(cands) - 1)), 4)
    entries = []
    for cand in cands:
        fam, stream = cand

        def setup(fam=fam, stream=stream):
            set_blocks(row.with_(stream_prefetch=stream), fam)
            _context.select_kernel(fam)
        for dt in DTYPES:
            entries.append(Entry(dt, _kernel_text(cand), ("kernel", cand),
                                 setup, (n, n, n), dt, keep=cand == base,
                                 guess=probe[dt] * (n / 256) ** 3
                                 * (1 if fam == row.isa else 3)))
    s.race(entries, reserve=CONFIRM_SHARE * s.length)
    groups = {c: [e for e in entries if e.key == ("kernel", c)]
              for c in cands}
    chosen, again = s.pick(groups, base)
    out.append(f"kernel family ({n}³, 1 thread; GFLOP/s)        float32  "
               f"float64")
    for cand in cands:
        note = " ".join(w for w, on in (
            ("built-in", cand == base), ("chosen", cand == chosen != base),
            ("(dropped)", any(e.dropped for e in groups[cand]))) if on)
        out.append(f"  {_kernel_text(cand):<14} {note:<27} " + "  ".join(
            f"{_cell(e):>7}" for e in groups[cand]))
    out.append(_verdict(chosen, base, again, _kernel_text))
    result = {"shape": [n, n, n], "builtin": _kernel_text(base),
              "chosen": _kernel_text(chosen),
              "gflops": {_kernel_text(c): {e.dtype: e.gflops
                                           and round(e.gflops, 2)
                                           for e in groups[c]}
                         for c in cands},
              "confirmation": again}
    if chosen[0] != row.isa:
        row = row.with_(blocks=None)          # the rule, for this family
    return row.with_(isa=chosen[0], stream_prefetch=chosen[1]), result


def _verdict(chosen, base, again, show=str):
    """The line saying what a stage chose, and its confirmation."""
    line = f"  -> {show(chosen)}"
    if again is None:
        return line + " (built-in kept)"
    b, r = again
    timed = (f"timed again against the built-in: {r:.1f} vs {b:.1f} GFLOP/s"
             if b and r else "not timed again (no time left)")
    if chosen == base:
        return line + f" (built-in kept: the race's winner, {timed})"
    return line + f" ({100 * (r / b - 1):+.1f}%, {timed})"


# ---- (b) block sizes ----

def block_candidates(builtin, mr, itemsize, l2_bytes):
    """(MC, KC, NC) to try: the built-in first, then KC_CANDIDATES x MC so
    that the packed A block fills L2_FRACTIONS of L2, NC the built-in's."""
    out = [tuple(builtin)]
    nc = builtin[2]
    for kc in sorted(set(KC_CANDIDATES) | {builtin[1]}):
        for frac in L2_FRACTIONS:
            mc = max(mr, int(frac * l2_bytes / (kc * itemsize)) // mr * mr)
            if (mc, kc, nc) not in out:
                out.append((mc, kc, nc))
    return out


def stage_blocks(s, row, out):
    from fastmm.driver import _context
    from fastmm._cpu import read_caches
    from fastmm.config import blocks_for, set_blocks
    isa, l2 = row.isa, read_caches()[2].size
    builtin = blocks_for(row)
    shapes = _context.kernel_shapes(isa)
    cands = {dt: block_candidates(builtin[dt], shapes[dt][0], size, l2)
             for dt, size in (("float32", 4), ("float64", 8))}
    installer(row)()
    probe = {dt: s.probe(256, dt) for dt in DTYPES}
    n = s.fit(1024, sum(probe[dt] * len(cands[dt]) for dt in DTYPES), 4)
    entries = []
    for dt in DTYPES:
        for cand in cands[dt]:
            blocks = dict(builtin, **{dt: cand})

            def setup(blocks=blocks):
                set_blocks(row.with_(blocks=blocks))
            entries.append(Entry(dt, "x".join(map(str, cand)),
                                 ("blocks", dt, cand), setup, (n, n, n), dt,
                                 keep=cand == builtin[dt],
                                 guess=probe[dt] * (n / 256) ** 3))
    s.race(entries, reserve=CONFIRM_SHARE * s.length)
    chosen, result = {}, {"shape": [n, n, n]}
    for dt, size in (("float32", 4), ("float64", 8)):
        mine = {cand: [e] for e, cand in zip(
            (e for e in entries if e.dtype == dt), cands[dt])}
        base = cands[dt][0]
        chosen[dt], again = s.pick(mine, base)
        out.append(f"block sizes, {dt} ({isa} {shapes[dt][0]}x{shapes[dt][1]}; "
                   f"{n}³, 1 thread)")
        out.append("      MC    KC    NC  A block/L2  GFLOP/s")
        for cand in sorted(mine, key=lambda c: -(mine[c][0].gflops or 0)):
            e = mine[cand][0]
            note = " ".join(w for w, on in (
                ("built-in", cand == base), ("chosen", cand == chosen[dt] != base),
                ("(dropped)", e.dropped)) if on)
            out.append(f"  {cand[0]:>6}{cand[1]:>6}{cand[2]:>6}"
                       f"  {cand[0] * cand[1] * size / l2:>10.2f}"
                       f"  {_cell(e):>7}  {note}")
        out.append(_verdict(chosen[dt], base, again,
                            lambda c: f"MC, KC, NC = {c}"))
        result[dt] = {"builtin": list(base), "chosen": list(chosen[dt]),
                      "gflops": {"x".join(map(str, c)): mine[c][0].gflops
                                 and round(mine[c][0].gflops, 2)
                                 for c in mine},
                      "confirmation": again}
    if chosen != builtin:
        row = row.with_(blocks=chosen)
    return row, result


# ---- (c) the B-chunk prefetch ----

def stage_prefetch(s, row, out):
    """pack_prefetch: off, or a few rows ahead from a row stride up, on
    products of a few rows by a wide B (the packed driver's B chunks)."""
    from fastmm.driver import _packed
    install = installer(row)
    base = tuple(row.pack_prefetch)
    cands = [base] + [c for c in PREFETCH_CANDIDATES if c != base]
    install()
    probe = {dt: s.probe(256, dt) for dt in DTYPES}
    groups = {}
    for cand in cands:
        def setup(cand=cand):
            install()
            _packed.set_pack_prefetch(*cand)
        groups[cand] = [Entry((shape, dt), _prefetch_text(cand),
                              ("prefetch", cand), setup, shape, dt,
                              keep=cand == base,
                              guess=probe[dt] * math.prod(shape) / 256 ** 3)
                        for shape in PREFETCH_SHAPES for dt in DTYPES]
    s.race([e for g in groups.values() for e in g],
           reserve=CONFIRM_SHARE * s.length)
    chosen, again = s.pick(groups, base)
    out.append(f"{'B-chunk prefetch (1 thread; GFLOP/s)':<43}" + "  ".join(
        f"{'x'.join(map(str, sh)) + ' ' + dt:>17}" for sh in PREFETCH_SHAPES
        for dt in DTYPES))
    for cand, entries in groups.items():
        note = " ".join(w for w, on in (
            ("built-in", cand == base), ("chosen", cand == chosen != base),
            ("(dropped)", any(e.dropped for e in entries))) if on)
        out.append(f"  {_prefetch_text(cand):<24} {note:<17}" + "  ".join(
            f"{_cell(e):>17}" for e in entries))
    out.append(_verdict(chosen, base, again, _prefetch_text))
    result = {"shapes": [list(sh) for sh in PREFETCH_SHAPES],
              "builtin": list(base), "chosen": list(chosen),
              "gflops": {_prefetch_text(c): [e.gflops and round(e.gflops, 2)
                                             for e in g]
                         for c, g in groups.items()},
              "confirmation": again}
    return row.with_(pack_prefetch=tuple(chosen)), result


def _prefetch_text(cand):
    ahead, stride = cand
    return (f"{ahead} rows, >= {stride // 1024} KiB" if ahead else "off")


# ---- (d), (e): thresholds between two ways of running a product ----

def crossover(sizes, ratios, builtin_high, up, down=MARGIN):
    """Where the "high" way (packed driver, 2 threads) takes over from the
    "low" one (unpacked path, 1 thread): (j, decisions), sizes[j:] high.

    ratios[s]: low's time over high's, one per dtype measured.  The
    built-in's way stands at a size unless the other one is faster by more
    than ``up`` (low -> high) or ``down`` (high -> low) in the geometric
    mean over the dtypes, and slower by no more than that in any dtype.
    Noise that makes the decisions non-monotone leaves the low way below
    the last high-low switch."""
    decide = []
    for s in sizes:
        r, b = ratios.get(s), builtin_high(s)
        if not r:
            decide.append(b)
        elif b:
            decide.append(not (geomean(r) < 1 / (1 + down)
                               and max(r) <= 1 + down))
        else:
            decide.append(geomean(r) > 1 + up and min(r) >= 1 / (1 + up))
    j = len(sizes)
    while j > 0 and decide[j - 1]:
        j -= 1
    return j, decide


def _ratios(entries, sizes, low, high):
    """{size: [low's time / high's, per dtype measured]}."""
    got = _by(entries, lambda e: (e.group, e.label, e.dtype))
    return {size: [got[size, low, dt].best / got[size, high, dt].best
                   for dt in DTYPES
                   if (size, low, dt) in got and (size, high, dt) in got]
            for size in sizes}


def _pairs_table(out, title, entries, sizes, names, builtin_high, decide):
    low, high = names
    t = {(e.group, e.label, e.dtype): e for e in entries}
    out.append(title)
    out.append("      n" + "".join(f"{'f' + dt[-2:] + ' ' + name:>14}"
                              for dt in DTYPES for name in names)
               + "   built-in     chosen")
    for size, d in zip(sizes, decide):
        cells = "".join(f"{_cell(t.get((size, name, dt))):>14}"
                        for dt in DTYPES for name in names)
        out.append(f"  {size:>5}{cells}  {high if builtin_high(size) else low:>9}"
                   f"  {high if d else low:>9}")


def _grid(base, lowest, factors, step):
    return sorted({max(lowest, step * round(base * f / step)) for f in factors})


def stage_routing(s, row, out):
    from fastmm import _linalg
    installer(row)()
    big = 1 << 30
    lowest = max(row.skinny_m, row.narrow_n, row.shallow_k) + 1
    squares = _grid(max(round(row.small_mnk ** (1 / 3)), 2 * lowest), lowest,
                    (0.625, 0.75, 0.875, 1, 1.125, 1.25, 1.5, 1.75, 2), 16)
    narrow = _grid(max(row.narrow_n, 8), 2, (0.5, 1, 1.5, 2, 3, 4), 8)
    mk = 512
    r = (row.skinny_m, row.narrow_n, row.shallow_k, row.skinny_kn)
    setups = {  # forced ways: the unpacked path or the packed driver
        ("sq", "unpacked"): lambda: _linalg.set_routing(big, *r),
        ("sq", "packed"): lambda: _linalg.set_routing(0, *r),
        ("nw", "unpacked"): lambda: _linalg.set_routing(
            row.small_mnk, row.skinny_m, big, row.shallow_k, row.skinny_kn),
        ("nw", "packed"): lambda: _linalg.set_routing(
            0, row.skinny_m, 0, row.shallow_k, row.skinny_kn)}
    sq, nw = [], []
    for kind, sizes, dest in (("sq", squares, sq), ("nw", narrow, nw)):
        for size in sizes:
            shape = (size, size, size) if kind == "sq" else (mk, mk, size)
            for way in ("unpacked", "packed"):
                for dt in DTYPES:
                    dest.append(Entry(size, way, (kind, way),
                                      setups[kind, way], shape, dt,
                                      guess=2e-9 * math.prod(shape)))
    s.race(sq + nw, prune=False)
    result = {}
    sq_high = lambda n: n ** 3 > row.small_mnk          # noqa: E731
    j, decide = crossover(squares, _ratios(sq, squares, "unpacked", "packed"),
                          sq_high, MARGIN)
    small_mnk = row.small_mnk
    if decide != [sq_high(n) for n in squares]:
        small_mnk = squares[j - 1] ** 3 if j else squares[0] ** 3 - 1
    _pairs_table(out, "unpacked path vs packed driver, n³ squares "
                 "(1 thread; GFLOP/s)", sq, squares, ("unpacked", "packed"),
                 sq_high, decide)
    out.append(f"  -> small_mnk = {small_mnk} (≈ {small_mnk ** (1 / 3):.0f}³)"
               + (" (built-in kept)" if small_mnk == row.small_mnk else
                  f", built-in {row.small_mnk}"))
    result["small_mnk"] = {"sizes": squares, "builtin": row.small_mnk,
                           "chosen": small_mnk, "gflops": _gflops(sq)}
    nw_high = lambda n: n > row.narrow_n                # noqa: E731
    j, decide = crossover(narrow, _ratios(nw, narrow, "unpacked", "packed"),
                          nw_high, MARGIN)
    narrow_n = row.narrow_n
    if decide != [nw_high(n) for n in narrow]:
        narrow_n = narrow[j - 1] if j else narrow[0] - 1
    _pairs_table(out, f"unpacked path vs packed driver, {mk}x{mk} @ {mk}xn "
                 "(1 thread; GFLOP/s)", nw, narrow, ("unpacked", "packed"),
                 nw_high, decide)
    out.append(f"  -> narrow_n = {narrow_n}"
               + (" (built-in kept)" if narrow_n == row.narrow_n else
                  f", built-in {row.narrow_n}"))
    result["narrow_n"] = {"sizes": narrow, "builtin": row.narrow_n,
                          "chosen": narrow_n, "gflops": _gflops(nw)}
    return row.with_(small_mnk=small_mnk, narrow_n=narrow_n), result


def _gflops(entries):
    return [[e.group, e.label, e.dtype, round(e.gflops, 2)]
            for e in entries if e.gflops and not e.wrong]


def busy_cpus(interval=0.1, stat="/proc/stat"):
    """How many of the CPUs this process may run on other work keeps busy
    while it sleeps ``interval`` seconds (None where /proc/stat is
    unreadable)."""
    try:
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    except (AttributeError, OSError):
        mine = None

    def sample():
        total = idle = 0
        with open(stat) as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or (
                        mine is not None and name not in mine):
                    continue
                fields = [int(x) for x in fields]
                total += sum(fields[:8])              # not guest time again
                idle += fields[3] + fields[4]         # idle + iowait
        return total, idle
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    ncpu = len(mine) if mine else (os.cpu_count() or 1)
    if total1 <= total0:
        return 0.0
    return max(0.0, ncpu * (1 - (idle1 - idle0) / (total1 - total0)))


BUSY_LIMIT = 0.25     # CPUs other work may take while threads are timed


def stage_threads(s, row, out):
    from fastmm.driver import _threads
    if (_threads.cpu_count() < 2 or not _threads.HAVE_OPENMP
            or _threads.in_forked_child()):
        out.append("threads: skipped (one CPU, or no OpenMP)")
        return row, {"skipped": "one CPU or no OpenMP"}
    busy = busy_cpus()
    if busy is not None and busy > BUSY_LIMIT:
        out.append(f"threads: skipped, built-in kept: other processes keep "
                   f"{busy:.1f} CPUs busy, so 2 threads cannot be timed "
                   "(run tune again on an idle machine)")
        return row, {"skipped": f"machine busy ({busy:.1f} CPUs)"}
    install = installer(row)
    install()
    per = row.flops_per_thread
    sizes = _grid(per ** (1 / 3), 32, (0.4, 0.5, 0.6, 0.7, 0.8, 1, 1.2, 1.4,
                                       1.7, 2, 2.4), 16)
    entries = []
    # float32 only: the threshold is in float32 flops, and float64 products
    # reach it at half theirs (_linalg's F64_COST)
    for size in sizes:
        for way, n, force in (("1 thread", 1, False), ("2 threads", 2, True)):
            for dt in ("float32",):
                entries.append(Entry(size, way, "threads", install,
                                     (size,) * 3, dt, threads=n, force=force,
                                     guess=2e-9 * size ** 3))
    s.race(entries, prune=False)
    busy = busy_cpus()
    if busy is not None and busy > BUSY_LIMIT:
        out.append(f"threads: built-in kept: other processes took {busy:.1f} "
                   "CPUs while 2 threads were timed (run tune again on an "
                   "idle machine)")
        return row, {"skipped": f"machine busy ({busy:.1f} CPUs)"}
    # 2 threads at n³ when 2n³ flops >= 2 * flops_per_thread
    high = lambda n: n ** 3 >= per                      # noqa: E731
    j, decide = crossover(sizes, _ratios(entries, sizes, "1 thread",
                                         "2 threads"), high, THREAD_MARGIN)
    chosen, note = per, " (built-in kept)"
    if j == len(sizes) and decide != [high(n) for n in sizes]:
        note = (" (built-in kept: 2 threads never beat 1 by "
                f"{100 * THREAD_MARGIN:.0f}%; was the machine busy?)")
    elif decide != [high(n) for n in sizes]:
        chosen, note = float(sizes[j] ** 3), f", built-in {per:.4g}"
    _pairs_table(out, "1 thread vs 2 threads (forced), n³ squares (GFLOP/s)",
                 entries, sizes, ("1 thread", "2 threads"), high, decide)
    out.append(f"  -> flops_per_thread = {chosen:.4g} (2 threads from "
               f"{chosen ** (1 / 3):.0f}³){note}")
    return row.with_(flops_per_thread=chosen), {
        "sizes": sizes, "builtin": per, "chosen": chosen,
        "gflops": _gflops(entries)}


# ---- validation and the whole run ----

VALIDATION = [(96, 96, 96), (160, 160, 160), (256, 256, 256), (512, 512, 512),
              (512, 512, 16), (512, 512, 32), (1024, 1024, 1024)]


def stage_validation(s, builtin, tuned, out):
    """Geometric-mean speedup of ``tuned`` over ``builtin`` (all threads)."""
    if tuned == builtin:
        out.append("validation: the tuned row is the built-in one")
        return {"geomean_speedup": 1.0, "cases": []}
    entries = []
    for shape in VALIDATION:
        for name, row in (("built-in", builtin), ("tuned", tuned)):
            for dt in DTYPES:
                entries.append(Entry(shape, name, name, installer(row), shape,
                                     dt, threads=None,
                                     guess=2e-9 * math.prod(shape)))
    s.race(entries, prune=False)
    got = _by(entries, lambda e: (e.group, e.label, e.dtype))
    cases = [[list(shape), dt, round(got[shape, "built-in", dt].gflops, 2),
              round(got[shape, "tuned", dt].gflops, 2)]
             for shape in VALIDATION for dt in DTYPES
             if (shape, "built-in", dt) in got and (shape, "tuned", dt) in got]
    speedup = geomean([c[3] / c[2] for c in cases])
    busy = busy_cpus()
    out.append("validation (all threads; GFLOP/s)     built-in    tuned")
    if busy is not None and busy > BUSY_LIMIT:
        out.append(f"  (other processes keep {busy:.1f} CPUs busy: these "
                   "numbers are mostly noise)")
    for shape, dt, old, new in cases:
        out.append(f"  {'x'.join(map(str, shape)):<16} {dt}  {old:>9.1f}"
                   f"  {new:>7.1f}  {100 * (new / old - 1):+6.1f}%")
    return {"geomean_speedup": speedup and round(speedup, 4), "cases": cases}


def cpu_name(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def run(seconds=120.0, output=None, dry_run=False, stream=None,
        progress=True):
    """Tune this machine within ``seconds``: what ``python -m fastmm tune``
    runs.

    Parameters
    ----------
    seconds : float, optional
        The time budget of the whole search.
    output : str, optional
        Where to save the tuned row (default: the tuning file, see
        :func:`fastmm.config.tuned.path`).
    dry_run : bool, optional
        Measure and print, but save nothing.
    stream : file, optional
        Where the tables are printed (default: stdout).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    status : int
        The exit status.
    row : Row or None
        The tuned row, saved (unless ``dry_run``) and put in force.
    measured : dict
        The "measured" record written with it.
    """
    from threadpoolctl import threadpool_limits

    import fastmm
    from fastmm.driver import _context, _threads
    from fastmm.bench._progress import Progress
    from fastmm.config import apply, current, select, signature, tuned
    stream = stream or sys.stdout
    sig = signature()
    builtin, reason = select(sig, _context.available_kernels())
    before = current()
    bar = Progress(100, prefix="tune ") if progress else None
    s = Search(seconds, bar)
    print(f"fastmm {fastmm.__version__} tune: {cpu_name()} ({sig.vendor} "
          f"family {sig.family} model {sig.model}), {_threads.cpu_count()} "
          f"CPUs; built-in row {builtin.name!r}; budget {seconds:g} s",
          file=stream)
    busy = busy_cpus()
    if busy is not None and busy > BUSY_LIMIT:
        print(f"  note: other processes keep {busy:.1f} CPUs busy: timings "
              "will be noisy; tune an idle machine for lasting results",
              file=stream)
    if before.get("source", "built-in") != "built-in":
        print(f"  (in force until now: {before['source']}; the search starts "
              "from the built-in row)", file=stream)
    out, stages, row = [], {}, builtin
    finished = False
    try:
        # numpy's BLAS (the references) on one thread: no spinning pool of
        # its own competes with fastmm's threads
        with threadpool_limits(1, user_api="blas"):
            for (name, share), stage in zip(STAGES[:5], (
                    stage_kernel, stage_blocks, stage_prefetch, stage_routing,
                    stage_threads)):
                s.begin(name, share)
                row, stages[name] = stage(s, row, out)
                out.append("")
            s.begin(*STAGES[5])
            check = stage_validation(s, builtin, row, out)
        finished = True
    finally:
        if not finished:
            apply(before["row"], before["reason"], before["source"])
    took = time.perf_counter() - s.t0
    if bar is not None:
        bar.close(f"done in {took:.1f} s")
    speedup = check["geomean_speedup"]
    change = f"{100 * (speedup - 1):+.1f}%" if speedup else "n/a"
    if speedup and speedup < 1 - MARGIN:
        # the stages' winners together lost: trust none of them
        row = builtin
        change = f"the tuned values lost ({change}): built-in values kept"
    summary = (f"kernel {row.isa}, blocks {_blocks_text(row)}, small_mnk "
               f"{row.small_mnk}, narrow_n {row.narrow_n}, flops_per_thread "
               f"{row.flops_per_thread:.4g}, B-chunk prefetch "
               f"{_prefetch_text(row.pack_prefetch)}; validation geomean {change} "
               "over the built-in row")
    measured = {"timestamp": tuned.now(), "budget_s": seconds,
                "took_s": round(took, 1), "cpu": cpu_name(),
                "threads": _threads.get_num_threads(), "summary": summary,
                "change": change, "stages": stages, "validation": check}
    print("\n".join(out), file=stream)
    print(f"tuned: {summary}", file=stream)
    if s.wrong:
        print("WRONG results (a fastmm bug; nothing saved):\n  "
              + "\n  ".join(s.wrong), file=stream)
        apply(before["row"], before["reason"], before["source"])
        return 1, None, measured
    file = os.path.abspath(output or tuned.path() or tuned.default_path())
    row = row.with_(measured=tuned.measured_text(measured))
    if dry_run:
        apply(row, reason, "tuned in this process (--dry-run, not saved)")
        print(f"--dry-run: not saved (would write {tuned.display(file)})",
              file=stream)
        return 0, row, measured
    tuned.save(sig, row, measured, file)
    apply(row, reason, tuned.source(file, measured["timestamp"]))
    print(f"saved to {tuned.display(file)}", file=stream)
    if output is None and tuned.path() is None:
        print(f"note: {tuned.ENV}=off: imports do not read it", file=stream)
    elif tuned.path() != file:
        print(f"note: imports read {tuned.path() and tuned.display(tuned.path())}"
              f"; set {tuned.ENV}={file} to use this one", file=stream)
    return 0, row, measured


def _blocks_text(row):
    from fastmm.config import blocks_for
    blocks = blocks_for(row)
    return ", ".join(f"{dt} {tuple(blocks[dt])}" for dt in DTYPES) + (
        " (the row's rule)" if row.blocks is None else "")
