"""Draw the Performance page's plots from committed bench results.

    python docs/plot_figures.py [FIGURES_DIR [OUTPUT_DIR]]

Each ``docs/figures/<name>.json`` is the file ``python -m fastmm bench
--json <name>.json`` wrote on one machine; it becomes ``<name>.png`` (in
``docs/_generated/`` by default), drawn by the function behind
``python -m fastmm bench --plot``, so the docs show what that command would
have shown on that machine.  Nothing is timed here: the docs build stays
fast and its figures do not depend on the machine that builds them.
"""
import glob
import json
import os
import sys


def draw(json_path, png_path):
    """One bench result file to one PNG; the dtypes, thread counts and peers
    plotted are those the file holds."""
    from fastmm.bench._harness import plot
    with open(json_path) as f:
        rows = json.load(f)
    if not rows:
        raise ValueError(f"{json_path}: no bench results")
    dtypes = [dt for dt in ("float32", "float64")
              if any(r["dtype"] == dt for r in rows)]
    thread_counts = sorted({r["threads"] for r in rows})
    # a peer (MKL) shows up in bench's rows as a key holding its GFLOP/s
    peers = [name for name in ("mkl",) if any(r.get(name) for r in rows)]
    plot(rows, png_path, dtypes, thread_counts, peers)


def main(figures_dir, output_dir):
    """Every figures_dir/*.json to output_dir/*.png; returns the PNG paths."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for json_path in sorted(glob.glob(os.path.join(figures_dir, "*.json"))):
        stem = os.path.splitext(os.path.basename(json_path))[0]
        png_path = os.path.join(output_dir, stem + ".png")
        draw(json_path, png_path)
        written.append(png_path)
    return written


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    figures = args[0] if args else os.path.join(here, "figures")
    output = args[1] if len(args) > 1 else os.path.join(here, "_generated")
    for path in main(figures, output):
        print(path)
