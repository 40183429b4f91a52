"""The progress bar of `python -m fastmm bench` and `Sequential.fit`."""
import sys
import time


class Progress:
    """A one-line progress bar on stderr.

    On a terminal it is redrawn in place at most 10 times a second; elsewhere
    (a log) it writes a plain line per ~10 % of the work, or with
    ``log_steps=False`` nothing until ``close``, which always writes the
    finished line.
    """

    def __init__(self, total, prefix="", stream=None, width=30, log_steps=True):
        self.total, self.prefix, self.width = total, prefix, width
        self.log_steps = log_steps
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = self.last = time.perf_counter()
        self.logged = -1
        self.done = 0

    def _line(self, done, info):
        filled = self.width * done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        took = f"{elapsed:.2f} s" if elapsed >= 1 else f"{elapsed * 1e3:.1f} ms"
        return f"{self.prefix}[{bar}] {done}/{self.total} {took} {info}".rstrip()

    def step(self, info=""):
        """One more step finished (``total`` may grow as work is found)."""
        self.done += 1
        self.update(self.done, info)

    def update(self, done, info=""):
        """``done`` of ``total`` steps finished; ``info`` says what runs now."""
        self.done = done
        now = time.perf_counter()
        if self.tty:
            if now - self.last >= 0.1:
                self.last = now
                self.stream.write("\r\x1b[K" + self._line(done, info))
                self.stream.flush()
        elif self.log_steps and self.total >= 10 and 10 * done // self.total > self.logged:
            self.logged = 10 * done // self.total
            self.stream.write(self._line(done, info) + "\n")
            self.stream.flush()

    def close(self, info=""):
        self.stream.write(("\r\x1b[K" if self.tty else "")
                          + self._line(self.total, info) + "\n")
        self.stream.flush()
