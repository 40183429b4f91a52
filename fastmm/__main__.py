"""Command line: ``python -m fastmm info``, ``python -m fastmm bench``,
``python -m fastmm tune`` and ``python -m fastmm --version``."""
import argparse
import sys


def info(args):
    import numpy as np

    import fastmm
    from fastmm.bench._harness import numpy_blas
    fastmm.show_config()
    print(f"numpy {np.__version__}, BLAS: {numpy_blas()}")
    return 0


def bench(args):
    from fastmm.bench._harness import run
    from fastmm.bench._worker import WorkerError
    try:
        return run(args)
    except WorkerError as e:
        print(f"python -m fastmm bench: error: {e}", file=sys.stderr)
        return 1


def tune(args):
    from fastmm.config.tune import run
    try:
        status, _, _ = run(args.seconds, args.output, args.dry_run)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing saved", file=sys.stderr)
        return 130
    return status


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds in (0, 3600]")
    return value


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
    p = sub.add_parser("bench", help="time fastmm against numpy (and MKL "
                       "with --peers mkl) side by side",
                       description="Time fastmm.matmul against numpy, and "
                       "against MKL with --peers mkl, at equal thread counts "
                       "(numpy's BLAS pinned with threadpoolctl), each library "
                       "in processes of its own, best of repeats, after "
                       "checking each result against numpy's.")
    from fastmm.bench._harness import add_arguments
    add_arguments(p)
    p.set_defaults(func=bench)
    p = sub.add_parser("tune", help="measure kernels, block sizes and "
                       "thresholds on this machine and save them for later "
                       "imports",
                       description="Measure the kernel family, cache block "
                       "sizes, B-chunk prefetch, unpacked-path and threading "
                       "thresholds on this "
                       "machine (each candidate checked against numpy), then "
                       "write the winners to the tuning file "
                       "($XDG_CACHE_HOME/fastmm/tuned.json, or FASTMM_TUNED), "
                       "which later imports use on this CPU and fastmm "
                       "version.")
    p.add_argument("--seconds", type=_seconds, default=120.0,
                   help="time budget of the whole search (default 120)")
    p.add_argument("--output", metavar="PATH",
                   help="file to write (default: the tuning file)")
    p.add_argument("--dry-run", action="store_true",
                   help="measure and print, but save nothing")
    p.set_defaults(func=tune)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
