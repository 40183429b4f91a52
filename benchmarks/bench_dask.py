"""fastmm.dask on a local cluster: fastmm blocks against numpy blocks.

asv suite (``asv run -b DaskMatmul``), or standalone:

    python benchmarks/bench_dask.py [n] [chunk]

Both run fastmm.dask.benchmark: a float32 n x n product on a LocalCluster
of 2 worker processes x 1 thread whose workers already hold the inputs
(made there and persisted, untimed), fastmm.dask.matmul against Dask's own
``a @ b`` (numpy blocks) on the same cluster and inputs, and against one
in-process fastmm.matmul on the same data at the same total thread count.
Cluster times end when the result's blocks are in the workers' memory
(left distributed); the benchmark also reports the time to gather the
result into the calling process.  The variants alternate in rounds, best
time each.  It checks every result before timing.
The comparison is measured in one call, so asv's cache holds the whole run
(setup_cache) and each benchmark here reports one of its figures.  Listed
only with FASTMM_ASV_FULL=1 (see common.py): a cluster run is slow;
skipped (NotImplementedError) where fastmm.dask or distributed is missing.
"""
import sys

try:
    from .common import FULL, rounded
except ImportError:          # run as a script: python benchmarks/bench_dask.py
    from common import FULL, rounded

SIZES = [4096]
# 1024: 16 output blocks, where Dask's own matmul (partial products, then
# sums) costs numpy blocks most; 2048: 4 larger blocks, where the cluster's
# transfers and bookkeeping cost least against one in-process product
CHUNKS = [1024, 2048]


def _fastmm_dask():
    """fastmm.dask, or None at commits without it or without Dask."""
    try:
        import distributed  # noqa: F401  (benchmark's cluster needs it)
        import fastmm.dask
    except ImportError:
        return None
    return fastmm.dask


class DaskMatmul:
    """float32 n x n @ n x n on 2 Dask workers x 1 thread."""
    params = [SIZES, CHUNKS]
    param_names = ["n", "chunk"]
    timeout = 600

    def setup_cache(self):
        """The results of each case, or why there are none (a str)."""
        fdask = _fastmm_dask()
        if fdask is None:
            return "fastmm.dask or distributed missing"
        return {(n, chunk): fdask.benchmark(n, chunk)
                for n in SIZES for chunk in CHUNKS}

    def setup(self, results, n, chunk):
        if isinstance(results, str):
            raise NotImplementedError(results)

    def track_gflops(self, results, n, chunk):
        return rounded(results[n, chunk]["fastmm_gflops"])
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, results, n, chunk):
        return rounded(results[n, chunk]["speedup"])
    track_speedup.unit = "x numpy blocks"

    def track_vs_single(self, results, n, chunk):
        return rounded(results[n, chunk]["vs_single"])
    track_vs_single.unit = "x in-process fastmm.matmul speed"


if not FULL:     # a cluster run is slow: listed only with the full grids
    del DaskMatmul


def main(argv):
    fdask = _fastmm_dask()
    if fdask is None:
        sys.exit("needs fastmm.dask and distributed: "
                 "pip install 'fastmm[dask]'")
    n = int(argv[0]) if argv else SIZES[0]
    chunk = int(argv[1]) if len(argv) > 1 else None
    fdask.benchmark(n, chunk, verbose=True)


if __name__ == "__main__":
    main(sys.argv[1:])
