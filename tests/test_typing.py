"""fastmm's type information: the .pyi stubs against the code, and mypy on
the examples and on a typed usage file (tests/typing/usage.py).

The stubs are found by walking the installed package, so a stub added or
moved with its module is checked without a change here.
"""
import ast
import importlib
import importlib.util
import inspect
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import fastmm

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(fastmm.__file__).resolve().parent
P = inspect.Parameter


def _stub_modules():
    """(module name, stub path) for every .pyi file of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.pyi")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


STUBS = _stub_modules()


def test_stubs_and_marker_are_there():
    # the stubs replace the modules for type checkers; py.typed says to use them
    assert (PACKAGE / "py.typed").is_file()
    assert {name for name, _ in STUBS} >= {"fastmm", "fastmm.nn"}


# ---- the stubs' signatures against inspect.signature of the code

def _literal(node):
    """A stub default: its value, or Ellipsis for ``...`` (not written)."""
    return ast.literal_eval(node)


def _stub_params(fn):
    """[(name, kind, default or P.empty)] of a stub def, in order."""
    a = fn.args
    params = []
    positional = a.posonlyargs + a.args
    defaults = [P.empty] * (len(positional) - len(a.defaults)) + [
        _literal(d) for d in a.defaults]
    for i, arg in enumerate(positional):
        kind = P.POSITIONAL_ONLY if i < len(a.posonlyargs) \
            else P.POSITIONAL_OR_KEYWORD
        params.append((arg.arg, kind, defaults[i]))
    if a.vararg:
        params.append((a.vararg.arg, P.VAR_POSITIONAL, P.empty))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        params.append((arg.arg, P.KEYWORD_ONLY,
                       P.empty if d is None else _literal(d)))
    if a.kwarg:
        params.append((a.kwarg.arg, P.VAR_KEYWORD, P.empty))
    return params


def _same_default(stub, runtime):
    if stub is Ellipsis:                  # stub leaves the value unwritten
        return runtime is not P.empty
    return type(stub) is type(runtime) and stub == runtime


def _compare(where, defs, runtime_sig, errors):
    """One def must match the runtime parameters exactly; each of several
    overloads must be a narrowing of them (a parameter left out, made
    keyword-only or required), and together they must name every one."""
    runtime = [(p.name, p.kind, p.default)
               for p in runtime_sig.parameters.values()]
    by_name = {name: (i, kind, default)
               for i, (name, kind, default) in enumerate(runtime)}
    overloaded = len(defs) > 1
    named = set()
    for fn in defs:
        stub = _stub_params(fn)
        label = f"{where}{' (overload)' if overloaded else ''}"
        if not overloaded and [(n, k) for n, k, _ in stub] != [
                (n, k) for n, k, _ in runtime]:
            errors.append(f"{label}: stub parameters "
                          f"{[(n, k.description) for n, k, _ in stub]} != "
                          f"runtime {runtime_sig}")
            return
        last = -1
        for name, kind, default in stub:
            named.add(name)
            if name not in by_name:
                errors.append(f"{label}: {name!r} is not a parameter of "
                              f"the code {runtime_sig}")
                continue
            i, rkind, rdefault = by_name[name]
            narrowed = (rkind == P.POSITIONAL_OR_KEYWORD
                        and kind == P.KEYWORD_ONLY and overloaded)
            if kind != rkind and not narrowed:
                errors.append(f"{label}: {name!r} is {kind.description} in "
                              f"the stub, {rkind.description} in the code")
            if i < last and kind not in (P.KEYWORD_ONLY, P.VAR_KEYWORD):
                errors.append(f"{label}: {name!r} is out of order")
            last = max(last, i)
            if default is P.empty:
                if rdefault is not P.empty and not overloaded:
                    errors.append(f"{label}: {name!r} has a default "
                                  f"({rdefault!r}) in the code only")
            elif not _same_default(default, rdefault):
                errors.append(f"{label}: {name!r} defaults to {default!r} in "
                              f"the stub, {rdefault!r} in the code")
    missing = [name for name, _, _ in runtime if name not in named]
    if missing:
        errors.append(f"{where}: the stub does not have the code's "
                      f"parameters {missing}")


def _decorators(fn):
    return {d.id if isinstance(d, ast.Name) else getattr(d, "attr", None)
            for d in fn.decorator_list}


def _defs(body):
    """{name: [FunctionDef, ...]} in the order written (overloads grouped)."""
    defs = {}
    for node in body:
        if isinstance(node, ast.FunctionDef):
            defs.setdefault(node.name, []).append(node)
    return defs


def _public(name):
    return not name.startswith("_") or name in ("__init__", "__call__")


def _check_class(where, node, cls, errors):
    if not inspect.isclass(cls):
        errors.append(f"{where}: a class in the stub, {type(cls)} in the code")
        return
    stub_defs = _defs(node.body)
    for name, defs in stub_defs.items():
        if not _public(name):
            continue
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            errors.append(f"{where}.{name}: in the stub, not in the code")
            continue
        if "property" in _decorators(defs[0]):
            if not isinstance(raw, property):
                errors.append(f"{where}.{name}: a property in the stub only")
            continue
        if isinstance(raw, property):
            errors.append(f"{where}.{name}: a property in the code only")
            continue
        static = "staticmethod" in _decorators(defs[0])
        if static != isinstance(raw, staticmethod) or (
                "classmethod" in _decorators(defs[0])) != isinstance(
                    raw, classmethod):
            errors.append(f"{where}.{name}: not the same kind of method")
            continue
        func = getattr(raw, "__func__", raw)
        _compare(f"{where}.{name}", defs, inspect.signature(func), errors)
    for name, value in vars(cls).items():
        if (_public(name) and name not in stub_defs
                and (inspect.isfunction(value) or isinstance(
                    value, (property, classmethod, staticmethod)))):
            errors.append(f"{where}.{name}: in the code, not in the stub")


def _stub_all(tree):
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "__all__"):
            return ast.literal_eval(node.value)
    return None


def _stub_names(tree):
    """Every public name the stub declares."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            # ``from m import x as x`` re-exports x; other imports are private
            names.update(a.asname for a in node.names if a.asname == a.name)
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def _has(module, name):
    """Whether module has name; a lazily loaded submodule whose optional
    extra is missing (fastmm.dask without Dask) raises ImportError: it
    exists."""
    try:
        getattr(module, name)
    except AttributeError:
        return False
    except ImportError:
        return True
    return True


@pytest.mark.parametrize("module, stub", STUBS, ids=[m for m, _ in STUBS])
def test_stub_matches_runtime(module, stub):
    try:
        runtime = importlib.import_module(module)
    except ImportError as e:      # an optional extra's module (fastmm.dask)
        pytest.skip(f"{module} cannot be imported here ({e}): its stub is "
                    f"checked where it can")
    tree = ast.parse(stub.read_text(), str(stub))
    errors = []
    declared = _stub_names(tree)
    runtime_all = getattr(runtime, "__all__", None)
    if _stub_all(tree) != runtime_all:
        errors.append(f"__all__: stub {_stub_all(tree)} != code {runtime_all}")
    for name in runtime_all or ():
        if name not in declared:
            errors.append(f"{name}: in the code's __all__, not in the stub")
    for name in sorted(declared):
        if not _has(runtime, name):
            errors.append(f"{name}: in the stub, not in the code")
    for name, defs in _defs(tree.body).items():
        if _public(name) and _has(runtime, name):
            obj = getattr(runtime, name)
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError) as e:
                errors.append(f"{name}: the code exposes no signature ({e})")
                continue
            _compare(name, defs, sig, errors)
    for node in tree.body:
        if (isinstance(node, ast.ClassDef) and _public(node.name)
                and hasattr(runtime, node.name)):
            _check_class(node.name, node, getattr(runtime, node.name), errors)
    assert not errors, f"{stub} differs from {module}:\n" + "\n".join(errors)


def test_compare_finds_a_drifted_signature():
    # the comparison itself: a renamed parameter, a changed default, a
    # keyword-only marker and a missing parameter are each reported
    def code(x1, x2, out=None, *, device=None):
        pass
    sig = inspect.signature(code)
    for text in ["def f(x1, x2, output=None, *, device=None): ...",
                 "def f(x1, x2, out=0, *, device=None): ...",
                 "def f(x1, x2, *, out=None, device=None): ...",
                 "def f(x1, x2, out=None): ..."]:
        errors = []
        _compare("f", [ast.parse(text).body[0]], sig, errors)
        assert errors, text
    errors = []
    _compare("f", [ast.parse("def f(x1, x2, out=None, *, device=None): ...")
                   .body[0]], sig, errors)
    assert errors == []


# ---- mypy on the examples and on the typed usage file

def test_usage_runs():
    # the typed usage file's expectations hold at run time too
    runpy.run_path(str(ROOT / "tests" / "typing" / "usage.py"),
                   run_name="__main__")


def test_mypy_passes():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra: "
                    "pip install -e '.[test]')")
    # from the clone's root, so that mypy reads pyproject.toml's [tool.mypy]
    # and this fastmm's stubs; no cache, so an earlier run cannot hide errors
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental",
         "--cache-dir", os.devnull, "examples", "tests/typing"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"mypy failed:\n{r.stdout}{r.stderr}"
