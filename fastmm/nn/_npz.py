"""Reading the .npz files fastmm.nn's models save (Sequential.save,
QuantizedSequential.save): one way to open them, and whatever a damaged or
foreign file makes numpy's zip reader or the JSON decoder raise turned into
ValueError naming the file; nothing in such a file is trusted before it is
checked, so a file cannot make a model allocate more than its own arrays."""
import json
import zipfile
import zlib

import numpy as np

# what a damaged archive or config raises on the way (zipfile: an unknown
# compression method or "version needed" NotImplementedError, an encrypted
# entry RuntimeError; JSON nested past Python's recursion limit:
# RecursionError, a RuntimeError too; a config of the wrong shape: KeyError,
# TypeError ...)
_DAMAGE = (KeyError, IndexError, TypeError, AttributeError, OSError,
           EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError,
           UnicodeDecodeError, RuntimeError)


def load(path, what, build):
    """``build(f, bad)`` on the archive at ``path`` (a path or a file
    object), where ``bad(why)`` makes the ValueError for a file that is not
    a valid ``what`` file.  A missing or unreadable path raises as open()
    does; anything else wrong with the file, ValueError."""
    def bad(why):
        return ValueError(f"{path}: not a valid {what} file: {why}")

    try:
        f = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError,) + _DAMAGE as e:
        raise ValueError(f"{path}: not a {what} file ({e})") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a {what} file (a single .npy array, "
                         f"not an .npz archive)")
    with f:
        try:
            return build(f, bad)
        except _DAMAGE as e:
            raise bad(f"{type(e).__name__}: {e}") from e


def config(f, path, what, version, bad, other):
    """The archive's JSON 'config' entry, a dict of format ``what`` and
    ``version``; ``other``: (format, advice) of the sibling model type,
    whose file earns advice rather than a plain refusal."""
    if "config" not in f.files:
        raise bad("no 'config' entry")
    config = json.loads(str(f["config"]))
    if not isinstance(config, dict):
        raise bad("'config' is not a JSON object")
    if config.get("format") == other[0]:
        raise ValueError(f"{path}: {other[1]}")
    if config.get("format") != what:
        raise bad(f"format {config.get('format')!r}")
    if config.get("version") != version:
        raise ValueError(f"{path}: {what} format version "
                         f"{config.get('version')!r}; this fastmm reads "
                         f"version {version}")
    return config


def layers(config, bad):
    """(index, layer config, in, out) for each layer the config lists: a
    non-empty list of objects whose sizes are positive ints."""
    specs = config.get("layers")
    if not isinstance(specs, list) or not specs:
        raise bad("no layers")
    for i, c in enumerate(specs):
        if not isinstance(c, dict):
            raise bad(f"layer {i} is not a JSON object")
        n_in, n_out = c["in"], c["out"]
        if not (type(n_in) is int and type(n_out) is int
                and n_in > 0 and n_out > 0):
            raise bad(f"layer {i} has sizes ({n_in!r}, {n_out!r})")
        yield i, c, n_in, n_out


def array(f, key, dtype, shape, bad):
    """Entry ``key``, which must be of exactly ``dtype`` and ``shape`` (not
    one that would broadcast to it), C-contiguous and aligned."""
    if key not in f.files:
        raise bad(f"no {key!r} array")
    a = f[key]
    if a.dtype != dtype or a.shape != shape:
        raise bad(f"{key} is {a.dtype} {a.shape}, expected {dtype} {shape}")
    return np.require(a, dtype, ["C", "A"])
