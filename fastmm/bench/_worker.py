"""One library's timings for ``python -m fastmm bench``, in a process of its
own (see fastmm.bench._harness.time_cases for why).

The bench starts ``python -m fastmm.bench._worker`` and writes a JSON job to
its standard input: ``library`` (fastmm, numpy or a peer's name),
``samples`` and ``cases`` (from ``_harness.make_case``, with the ``index``
to answer with and the ``names`` of the products to time).  The worker
answers one line per case on standard output, ``RESULT`` and a JSON object
(``_harness.time_library``); anything else it prints is ignored.
"""
import json
import os
import subprocess
import sys
import tempfile

PREFIX = "RESULT "


class WorkerError(RuntimeError):
    """A timing process failed; the message has its last words."""


def run_worker(library, cases, samples, peer_names=()):
    """Time ``library``'s products of ``cases`` in a new Python process;
    yields its per-case results as they come.  The process imports the
    fastmm this one runs (PYTHONPATH points at it) and loads only the peer
    it times, if any.  WorkerError, with the worker's last words, if it
    fails."""
    if not cases:
        return
    import fastmm
    job = {"library": library, "samples": samples, "cases": cases,
           "peers": [library] if library in peer_names else []}
    env = dict(os.environ)
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastmm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [home] + [p for p in [env.get("PYTHONPATH")] if p])
    # stderr to a file: read after the end, it cannot fill a pipe and stall
    # the worker while this process waits on its stdout
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastmm.bench._worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            text=True, env=env)
        try:
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            answered = 0
            for line in proc.stdout:
                if line.startswith(PREFIX):
                    answered += 1
                    yield json.loads(line[len(PREFIX):])
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if code != 0 or answered != len(cases):
            err.seek(0)
            last = err.read()[-2000:].strip()
            raise WorkerError(
                f"the bench's {library} timing process ended with status "
                f"{code} after {answered} of {len(cases)} cases"
                + (f":\n{last}" if last else ""))


def main():
    import fastmm
    from fastmm.bench import _harness
    job = json.load(sys.stdin)
    peers = _harness.load_peers(job["peers"])
    for result in _harness.time_library(fastmm, job["library"], job["cases"],
                                        job["samples"], peers):
        result["pid"] = os.getpid()          # the tests check who timed it
        sys.stdout.write(PREFIX + json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
