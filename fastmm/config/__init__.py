"""The one decision about the CPU: which row of the registry is in force.

:mod:`fastmm.config.registry` holds the rows (one per micro-architecture
family) and picks one from the CPU's signature; :func:`apply` pushes that
row into the compiled modules (kernel family for the packed, unpacked and
activation code alike, block sizes, path and threading thresholds).
"""
import os

from fastmm.config.registry import ROWS, Row, Signature, select, signature

__all__ = ["ROWS", "Row", "Signature", "select", "signature", "apply",
           "current", "blocks_for", "set_blocks"]

_in_force = {}


def blocks_for(row, isa=None):
    """{"float32": (MC, KC, NC), "float64": ...} for ``row`` on kernel
    family ``isa`` (default: the row's): its explicit blocks, else its rule
    over this machine's caches."""
    from fastmm.driver import _context
    from fastmm._cpu import block_sizes
    isa = isa or row.isa
    if row.blocks and isa == row.isa:
        return {dt: tuple(row.blocks[dt]) for dt in ("float32", "float64")}
    shapes = _context.kernel_shapes(isa)
    kc64 = row.kc_max_float64 or row.kc_max
    return {dt: block_sizes(mr, nr, size, kc_max=kc_max,
                            b_panel_l2_fraction=row.b_panel_l2_fraction,
                            a_block_l2_fraction=row.a_block_l2_fraction)
            for dt, (mr, nr), size, kc_max in (
                ("float32", shapes["float32"], 4, row.kc_max),
                ("float64", shapes["float64"], 8, kc64))}


def set_blocks(row, isa=None):
    """Put ``row``'s block sizes and kernel variant for kernel family
    ``isa`` (default: the row's) in force in the packed driver."""
    from fastmm.driver import _context
    from fastmm._cpu import l2_budget
    isa = isa or row.isa
    blocks = blocks_for(row, isa)
    # a row whose A block takes a share of L2 keeps the one-A-block path's
    # B chunks at the cache model's budget (see _packed._one_a_block)
    budget = None if row.a_block_l2_fraction is None else l2_budget()
    _context.set_blocking(isa, blocks["float32"], blocks["float64"],
                          row.stream_prefetch, budget)


def apply(row=None, reason=None, source="built-in"):
    """Put ``row`` (default: the registry's choice for this CPU, or the
    tuned file's, see fastmm.config.tuned) in force in every compiled
    module: kernel family, block sizes, routing and threading thresholds."""
    from fastmm.driver import _context, _packed, _threads, _unpacked
    from fastmm import _linalg
    from fastmm._cpu import read_caches
    if row is None:
        sig = signature()
        row, reason = select(sig, _context.available_kernels())
        from fastmm.config import tuned
        found = tuned.load(sig, row)
        if found is not None:
            row, source = found
    forced = os.environ.get("FASTMM_KERNEL") or None
    isa = _context.select_kernel(forced or row.isa)
    set_blocks(row, isa)
    _packed.set_short_n(row.short_n)
    _packed.set_pack_prefetch(*row.pack_prefetch)
    _linalg.set_routing(row.small_mnk, row.skinny_m, row.narrow_n,
                        row.shallow_k, row.skinny_kn)
    _threads.set_flops_per_thread(row.flops_per_thread)
    caches = read_caches()
    l1 = caches[1]
    _unpacked.set_l1_geometry(l1.sets, l1.ways, l1.line)
    _packed.set_stack_ahead(caches[2].size // 2)
    _in_force.clear()
    _in_force.update(row=row, reason=reason, source=source, isa=isa,
                     forced_isa=forced)
    return row


def current():
    """The row in force, why it was chosen, and where its numbers come from.

    Returns
    -------
    dict
        ``{"row", "reason", "source", "isa", "forced_isa"}``; ``source`` is
        ``"built-in"`` or names the tuning file (``python -m fastmm info``
        prints it).
    """
    return dict(_in_force)
