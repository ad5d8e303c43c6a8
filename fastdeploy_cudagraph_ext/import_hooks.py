"""Run a callback right after a module finishes importing (or now, if it already has).

Patches must never import FastDeploy modules themselves: FastDeploy calls our plugin
from inside its own import of the model zoo, and some targets (the XPU runner) cannot
even be imported on a GPU build. So each patch waits for FastDeploy to import its target.
Callbacks must not raise (the registry records refusals instead): they run inside other
modules' imports. The finder leaves sys.meta_path as soon as nothing is pending.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Callable

ModuleCallback = Callable[[ModuleType], None]

_lock = threading.RLock()
_pending: dict[str, list[ModuleCallback]] = {}


def _is_initialized(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)


class _LoaderWithCallbacks(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self._inner = inner
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _fire(self._name, module)

    def __getattr__(self, item: str) -> object:  # get_source, get_filename, ... for tracebacks
        return getattr(self._inner, item)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    _resolving = threading.local()

    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        # Any later import is a moment at which a target that was mid-import has finished.
        fire_if_ready()
        if fullname not in _pending or getattr(self._resolving, "name", None) == fullname:
            return None
        self._resolving.name = fullname
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._resolving.name = None
        if spec is None or spec.loader is None:
            return None
        spec.loader = _LoaderWithCallbacks(spec.loader, fullname)
        return spec


_finder = _PostImportFinder()


def _fire(name: str, module: ModuleType) -> None:
    with _lock:
        callbacks = _pending.pop(name, [])
        if not _pending and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)  # every target seen: no more work on unrelated imports
    for callback in callbacks:
        callback(module)


def when_imported(name: str, callback: ModuleCallback) -> bool:
    """Call `callback(module)` once `name` is imported. Returns True if it ran now."""
    with _lock:
        module = sys.modules.get(name)
        if module is None or not _is_initialized(module):
            _pending.setdefault(name, []).append(callback)
            if _finder not in sys.meta_path:
                sys.meta_path.insert(0, _finder)
            if module is None:
                return False
    if module is not None and not _is_initialized(module):
        # Mid-import higher up the stack (FastDeploy imports its model zoo, and so us, while
        # importing the runner): the callback runs at the next import after it completes.
        return False
    callback(module)
    return True


def fire_if_ready() -> None:
    """Run callbacks whose modules finished importing since they were registered."""
    with _lock:
        ready = [n for n in _pending if n in sys.modules and _is_initialized(sys.modules[n])]
    for name in ready:
        _fire(name, sys.modules[name])


def loaded_modules() -> dict[str, ModuleType]:
    """Modules whose import has finished (a module still executing its body is not loaded yet)."""
    return {name: module for name, module in list(sys.modules.items())
            if module is not None and _is_initialized(module)}


def cancel_all() -> None:
    with _lock:
        _pending.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
