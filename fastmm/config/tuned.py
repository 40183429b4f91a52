"""The per-user tuning file: a registry row measured by ``python -m fastmm tune``.

Where it lives: ``$XDG_CACHE_HOME/fastmm/tuned.json`` (``~/.cache/fastmm/
tuned.json`` by default).  ``FASTMM_TUNED=<path>`` reads (and ``tune``
writes) another file; ``FASTMM_TUNED=off`` (or ``0``, ``none``, ``false``)
turns tuning results off.

The file holds one row's tunable fields in the registry's shape, and what
they were measured on::

    {"format": 1, "fastmm_version": "0.1.0",
     "signature": {"vendor": "AuthenticAMD", "family": 25, "model": 17,
                   "flags_sha256": "<sha256 of the sorted cpuinfo flags>"},
     "base_row": "zen4",
     "row": {"isa": "avx512", "blocks": {"float32": [MC, KC, NC],
             "float64": [MC, KC, NC]} or null, "flops_per_thread": 4096000.0,
             "small_mnk": 2097152, "skinny_m": 64, "narrow_n": 16,
             "shallow_k": 16},
     "measured": {"timestamp": "2026-12-02T10:00:00Z", ...}}

A file is used only when every part of it matches this machine and this
build, and every value has the right type and a sane range; anything else
(unreadable, corrupt, another format, fastmm version, CPU or base row, a
value out of range) is ignored with a RuntimeWarning naming the file and the
reason.  A tuned row is never trusted on a machine it was not measured on.
"""
import datetime
import hashlib
import json
import math
import os
import tempfile
import warnings

FORMAT = 3
ENV = "FASTMM_TUNED"
OFF = ("off", "0", "none", "false", "no")

# The row fields the tuner measures; the others (name, summary, the block
# rule's kc_max, kc_max_float64 and L2 shares) stay the base row's.
FIELDS = ("isa", "stream_prefetch", "blocks", "flops_per_thread",
          "small_mnk", "skinny_m", "narrow_n", "shallow_k", "pack_prefetch")

# Sane bounds: the driver accepts block sizes up to 2**20, but no cache
# hierarchy makes such blocks useful: the packed A block (MC x KC) is sized
# for L2 and the packed B panel (KC x NC) for L3.
MC_MAX, KC_MAX, NC_MAX = 1 << 13, 1 << 12, 1 << 16
A_BLOCK_BYTES_MAX, B_PANEL_BYTES_MAX = 32 << 20, 256 << 20
FLOPS_PER_THREAD_RANGE = (1e3, 1e13)
SMALL_MNK_MAX = 1 << 33           # 2048**3
DIM_THRESHOLD_MAX = 1 << 12       # skinny_m, narrow_n, shallow_k
PREFETCH_AHEAD_MAX, PREFETCH_STRIDE_MAX = 64, 1 << 24
ITEMSIZE = {"float32": 4, "float64": 8}


class Invalid(ValueError):
    """Why a tuning file cannot be used (the message says why)."""


def path():
    """The tuning file to read and write, or None when FASTMM_TUNED turns
    tuning results off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return os.path.abspath(os.path.expanduser(value))
    return default_path()


def default_path():
    """$XDG_CACHE_HOME/fastmm/tuned.json (~/.cache/fastmm/tuned.json)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fastmm", "tuned.json")


def display(file):
    """``file`` with the home directory written as ``~``."""
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and file.startswith(home + os.sep):
        return "~" + file[len(home):]
    return file


def source(file, timestamp):
    """current()["source"] for a row read from (or written to) ``file``."""
    return f"tuned file {display(file)} ({timestamp[:10]})"


def flags_hash(flags):
    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()


def signature_dict(sig):
    return {"vendor": sig.vendor, "family": sig.family, "model": sig.model,
            "flags_sha256": flags_hash(sig.flags)}


def _describe_sig(d):
    return (f"{d.get('vendor')} family {d.get('family')} model "
            f"{d.get('model')}, flags {str(d.get('flags_sha256'))[:12]}")


# ---- validation: every value's type and range ----

def _int(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise Invalid(f"{name} = {value} is outside [{lo}, {hi}]")
    return value


def _blocks(value, runnable_shapes):
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(ITEMSIZE):
        raise Invalid(f"blocks must map float32 and float64 to [MC, KC, NC], "
                      f"got {value!r}")
    out = {}
    for dt, size in ITEMSIZE.items():
        b = value[dt]
        if not isinstance(b, list) or len(b) != 3:
            raise Invalid(f"blocks[{dt}] must be [MC, KC, NC], got {b!r}")
        mc = _int(b[0], f"blocks[{dt}] MC", 1, MC_MAX)
        kc = _int(b[1], f"blocks[{dt}] KC", 1, KC_MAX)
        nc = _int(b[2], f"blocks[{dt}] NC", 1, NC_MAX)
        mr, nr = runnable_shapes[dt]
        if mc < mr or nc < nr:
            raise Invalid(f"blocks[{dt}] = {b} smaller than the kernel's "
                          f"MR x NR = {mr} x {nr}")
        if (mc * kc * size > A_BLOCK_BYTES_MAX
                or kc * nc * size > B_PANEL_BYTES_MAX):
            raise Invalid(f"blocks[{dt}] = {b}: packed blocks over "
                          f"{A_BLOCK_BYTES_MAX >> 20} MiB (A) or "
                          f"{B_PANEL_BYTES_MAX >> 20} MiB (B)")
        out[dt] = (mc, kc, nc)
    return out


def validate_row(fields, runnable):
    """The row fields of a tuning file, checked: {field: value} ready for
    Row.with_; raises Invalid.  ``runnable``: {isa: kernel_shapes(isa)} of
    the kernel families this machine runs."""
    if not isinstance(fields, dict):
        raise Invalid("'row' is not an object")
    if set(fields) != set(FIELDS):
        missing = sorted(set(FIELDS) - set(fields))
        extra = sorted(set(fields) - set(FIELDS))
        raise Invalid(f"'row' fields differ from {list(FIELDS)}"
                      + (f"; missing {missing}" if missing else "")
                      + (f"; unknown {extra}" if extra else ""))
    isa = fields["isa"]
    if isa not in runnable:
        raise Invalid(f"kernel family {isa!r} is not among those this "
                      f"machine runs {sorted(runnable)}")
    fpt = fields["flops_per_thread"]
    lo, hi = FLOPS_PER_THREAD_RANGE
    if (isinstance(fpt, bool) or not isinstance(fpt, (int, float))
            or not math.isfinite(fpt) or not lo <= fpt <= hi):
        raise Invalid(f"flops_per_thread = {fpt!r} is not a number in "
                      f"[{lo:g}, {hi:g}]")
    stream = fields["stream_prefetch"]
    if not isinstance(stream, bool):
        raise Invalid(f"stream_prefetch must be true or false, got {stream!r}")
    return {
        "isa": isa,
        "stream_prefetch": stream,
        "blocks": _blocks(fields["blocks"], runnable[isa]),
        "flops_per_thread": float(fpt),
        "small_mnk": _int(fields["small_mnk"], "small_mnk", 0, SMALL_MNK_MAX),
        "skinny_m": _int(fields["skinny_m"], "skinny_m", 0, DIM_THRESHOLD_MAX),
        "narrow_n": _int(fields["narrow_n"], "narrow_n", 0, DIM_THRESHOLD_MAX),
        "shallow_k": _int(fields["shallow_k"], "shallow_k", 0,
                          DIM_THRESHOLD_MAX),
        "pack_prefetch": _prefetch(fields["pack_prefetch"]),
    }


def _prefetch(value):
    """[rows ahead, minimum row stride in bytes], as set_pack_prefetch
    takes them."""
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"pack_prefetch = {value!r} is not [rows ahead, "
                      f"minimum row stride]")
    return (_int(value[0], "pack_prefetch rows ahead", 0, PREFETCH_AHEAD_MAX),
            _int(value[1], "pack_prefetch stride", 0, PREFETCH_STRIDE_MAX))


def _timestamp(measured):
    if not isinstance(measured, dict):
        raise Invalid("'measured' is not an object")
    stamp = measured.get("timestamp")
    try:
        datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        raise Invalid(f"measured.timestamp {stamp!r} is not "
                      "YYYY-MM-DDTHH:MM:SSZ") from None
    return stamp


def parse(data, sig, row, version, runnable):
    """(tuned row, timestamp) from a tuning file's decoded JSON ``data``, if
    it was measured on signature ``sig`` over base row ``row`` with fastmm
    ``version``; raises Invalid saying why not."""
    if not isinstance(data, dict):
        raise Invalid("not a JSON object")
    if data.get("format") != FORMAT:
        raise Invalid(f"format {data.get('format')!r}, expected {FORMAT}")
    if data.get("fastmm_version") != version:
        raise Invalid(f"written by fastmm {data.get('fastmm_version')!r}, "
                      f"this is fastmm {version}")
    here = signature_dict(sig)
    theirs = data.get("signature")
    if theirs != here:
        shown = _describe_sig(theirs) if isinstance(theirs, dict) else theirs
        raise Invalid(f"measured on another CPU ({shown}) than this one "
                      f"({_describe_sig(here)})")
    if data.get("base_row") != row.name:
        raise Invalid(f"tuned from row {data.get('base_row')!r}, but this "
                      f"machine's row is {row.name!r}")
    fields = validate_row(data.get("row"), runnable)
    stamp = _timestamp(data.get("measured"))
    return row.with_(measured=measured_text(data["measured"]), **fields), stamp


def measured_text(measured):
    """Row.measured of a tuned row: where its numbers come from."""
    change = measured.get("change")
    return ("measured on this machine by `python -m fastmm tune`"
            + (f"; validation geomean {change} over the built-in row"
               if isinstance(change, str) else ""))


def _runnable():
    from fastmm.driver import _context
    return {isa: _context.kernel_shapes(isa)
            for isa in _context.available_kernels()}


def load(sig, row, file=None):
    """(tuned row, source description) from the tuning file, or None: no
    file (silently), tuning off, or a file that is not for this machine,
    this build and ``row`` (with a RuntimeWarning saying why)."""
    file = file or path()
    if file is None:
        return None
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        return _ignore(file, f"cannot be read ({e})")
    from fastmm import __version__
    try:
        data = json.loads(text)
        tuned, stamp = parse(data, sig, row, __version__, _runnable())
    except json.JSONDecodeError as e:
        return _ignore(file, f"is not valid JSON ({e})")
    except Invalid as e:
        return _ignore(file, str(e))
    return tuned, source(file, stamp)


def _ignore(file, why):
    warnings.warn(f"fastmm: ignoring tuning file {file}: {why}; using the "
                  f"built-in configuration (run `python -m fastmm tune` to "
                  f"measure this machine again, or set {ENV}=off)",
                  RuntimeWarning, stacklevel=3)
    return None


def row_fields(row):
    """The tunable fields of ``row`` as the file stores them."""
    blocks = row.blocks
    if blocks is not None:
        blocks = {dt: [int(x) for x in blocks[dt]] for dt in ITEMSIZE}
    return {"isa": row.isa, "stream_prefetch": bool(row.stream_prefetch),
            "blocks": blocks,
            "flops_per_thread": float(row.flops_per_thread),
            "small_mnk": int(row.small_mnk), "skinny_m": int(row.skinny_m),
            "narrow_n": int(row.narrow_n), "shallow_k": int(row.shallow_k),
            "pack_prefetch": [int(x) for x in row.pack_prefetch]}


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def document(sig, base_name, row, measured):
    """The JSON object ``save`` writes (``measured`` must hold a timestamp)."""
    from fastmm import __version__
    return {"format": FORMAT, "fastmm_version": __version__,
            "signature": signature_dict(sig), "base_row": base_name,
            "row": row_fields(row), "measured": measured}


def save(sig, row, measured, file=None):
    """Write ``row`` (tuned from the registry row of the same name, on
    signature ``sig``; ``measured``: what was measured) to the tuning file
    (default: path()), atomically: readers see the old file or the new one,
    never a part.  Returns the path."""
    file = file or path()
    if file is None:
        raise ValueError(f"{ENV}=off: pass the file to write")
    measured = dict(measured)
    measured.setdefault("timestamp", now())
    doc = document(sig, row.name, row, measured)
    # refuse to write what load would refuse to read
    parse(json.loads(json.dumps(doc)), sig, row, doc["fastmm_version"],
          _runnable())
    folder = os.path.dirname(os.path.abspath(file))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tuned-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return file

