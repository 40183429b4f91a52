"""Command line: ``python -m fastmm info``, ``python -m fastmm bench`` and
``python -m fastmm --version``."""
import argparse
import sys


def info(args):
    import numpy as np

    import fastmm
    from fastmm._bench import numpy_blas
    fastmm.show_config()
    print(f"numpy {np.__version__}, BLAS: {numpy_blas()}")
    return 0


def bench(args):
    from fastmm._bench import run
    return run(args)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastmm",
        description="fastmm: fast matrix multiplication on the CPU.")
    import fastmm
    parser.add_argument("--version", action="version",
                        version=f"fastmm {fastmm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print version, threads, CPU features and "
                   "kernel choice (fastmm.show_config())").set_defaults(func=info)
    p = sub.add_parser("bench", help="time fastmm against numpy side by side",
                       description="Time fastmm.matmul against numpy in this "
                       "process at equal thread counts (numpy's BLAS pinned "
                       "with threadpoolctl), best of repeats, after checking "
                       "each result against numpy's.")
    from fastmm._bench import add_arguments
    add_arguments(p)
    p.set_defaults(func=bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
