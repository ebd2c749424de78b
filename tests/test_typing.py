"""The public API is annotated (hetnet ships ``py.typed``): every public
function, class constructor and public method reachable from the modules a
user imports has an annotation on each parameter and on its return.

A new public function without annotations fails here; the few deliberate
exceptions are listed in ``EXCEPTIONS`` with the reason.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import typing

import pytest

# The modules whose public names a user touches (``hetnet`` itself re-exports
# from most of them).  ``hetnet.devices``' op set (Device and its backends) is
# the kernels' interface, not the user's, and is left out on purpose.
MODULES = ["hetnet", "hetnet.layers", "hetnet.optim", "hetnet.losses", "hetnet.schedules",
           "hetnet.callbacks", "hetnet.metrics", "hetnet.metaheuristics", "hetnet.datasets",
           "hetnet.distributed", "hetnet.models", "hetnet.estimators"]

# qualified name -> why it is not annotated
EXCEPTIONS = {
}


def _public_names(mod):
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, v in vars(mod).items() if not n.startswith("_")
                 and getattr(v, "__module__", None) == mod.__name__]
    return [n for n in names if not n.startswith("_")]


def _callables():
    """(qualified name, function) for every public callable of MODULES."""
    seen, out = set(), []

    def add(qual, fn):
        if id(fn) not in seen and qual not in EXCEPTIONS:
            seen.add(id(fn))
            out.append((qual, fn))

    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in _public_names(mod):
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or not getattr(obj, "__module__", "") \
                    .startswith("hetnet"):
                continue
            if inspect.isclass(obj):
                for klass in obj.__mro__:
                    if not klass.__module__.startswith("hetnet"):
                        continue
                    for attr, member in vars(klass).items():
                        if attr.startswith("_") and attr != "__init__":
                            continue
                        qual = f"{klass.__module__}.{klass.__qualname__}.{attr}"
                        if isinstance(member, property):
                            if member.fget is not None:
                                add(qual, member.fget)
                        elif isinstance(member, (staticmethod, classmethod)):
                            add(qual, member.__func__)
                        elif inspect.isfunction(member):
                            add(qual, member)
            elif inspect.isfunction(obj):
                add(f"{obj.__module__}.{obj.__qualname__}", obj)
    return out


CALLABLES = _callables()


def _missing(fn):
    sig = inspect.signature(fn)
    missing = [p.name for i, p in enumerate(sig.parameters.values())
               if p.annotation is inspect.Parameter.empty
               and not (i == 0 and p.name in ("self", "cls"))]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append("return")
    return missing


def test_the_walk_finds_the_api():
    """The walk reaches what a user calls (a walk that found nothing would
    make the test below pass for nothing)."""
    import hetnet as hn
    import hetnet.callbacks
    import hetnet.distributed
    found = {id(fn) for _, fn in CALLABLES}
    expected = [hn.Sequential.fit, hn.Sequential.predict, hn.Sequential.save,
                hn.Sequential.summary, hn.Sequential.flat_weights,
                hn.HetNetClassifier.__init__, hn.HetNetClassifier.fit,
                hn.HetNetRegressor.predict, hn.SGD.__init__, hn.Adam.__init__,
                hn.SHADE.__init__, hn.SHADEILS.__init__, hn.metaheuristics.minimize,
                hn.metaheuristics.OptimizeResult.__init__, hn.Conv2D.__init__,
                hn.models.lenet5, hn.datasets.load_mnist, hn.distributed.init,
                hn.callbacks.EarlyStopping.__init__, hn.schedules.OneCycle.__init__,
                hn.load, hn.get_device]
    missing = [getattr(fn, "__qualname__", fn) for fn in expected if id(fn) not in found]
    assert not missing, missing
    assert len(CALLABLES) > 200


def test_every_public_callable_is_annotated():
    bad = {q: _missing(fn) for q, fn in CALLABLES if _missing(fn)}
    assert not bad, (f"{len(bad)} public callables lack annotations (parameter names, "
                     "'return'):\n" + "\n".join(f"  {q}: {m}" for q, m in sorted(bad.items())))


def test_exceptions_still_exist():
    """An exception for a name that is gone is stale: remove it."""
    quals = set()
    saved = dict(EXCEPTIONS)
    EXCEPTIONS.clear()
    try:
        quals = {q for q, _ in _callables()}
    finally:
        EXCEPTIONS.update(saved)
    assert set(EXCEPTIONS) <= quals, sorted(set(EXCEPTIONS) - quals)


@pytest.mark.skipif(sys.version_info < (3, 10),
                    reason="PEP 604 unions (X | None) evaluate from Python 3.10")
def test_annotations_resolve():
    """The annotations (strings under ``from __future__ import annotations``)
    name things that exist at run time: typing.get_type_hints evaluates them,
    as Sphinx and runtime checkers do."""
    failed = {}
    for qual, fn in CALLABLES:
        try:
            typing.get_type_hints(fn)
        except Exception as exc:   # noqa: BLE001 - report every one
            failed[qual] = f"{type(exc).__name__}: {exc}"
    assert not failed, "\n".join(f"{q}: {e}" for q, e in sorted(failed.items()))
