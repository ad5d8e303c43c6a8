"""Turning the plugin on in a FastDeploy process: flags read once, then registry, then patches.

FastDeploy calls `register()` (entry point group `fastdeploy.model_register_plugins`) once per
process when it imports its model zoo; every worker does so before building its model runner, so
the patches are in place before capture_model(). Offline `fastdeploy.LLM` users may call
`activate()` directly. Data flows one way: nothing below calls back into this module.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

from . import deepep_protocol, flags, import_hooks
from .metrics import STATS
from .patch import ALL_PATCHES, NEEDS, RUNNERS
from .registry import PatchReport, Registry

log = logging.getLogger("fastdeploy_cudagraph_ext")
_lock = threading.RLock()
_registry: Registry | None = None


def _ensure_visible_logging() -> None:
    # Workers often leave the root logger at WARNING; the per-patch lines must reach the operator.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def registry() -> Registry | None:
    """This process's registry while the plugin is active (None before activation and after deactivate())."""
    return _registry


def is_active() -> bool:
    return _registry is not None and not _registry.stopped


def activate(settings: flags.Settings | None = None) -> list[PatchReport]:
    """Apply every patch now or when FastDeploy imports its module. Idempotent and thread-safe."""
    global _registry
    with _lock:
        if _registry is not None:
            return [_registry.reports[name] for name in _registry.patches if name in _registry.reports]
        _ensure_visible_logging()
        STATS.start(os.environ)  # metrics on where FastDeploy runs prometheus_client in multiprocess mode
        _registry = Registry(ALL_PATCHES, NEEDS, RUNNERS, settings or flags.read_settings())
        try:
            _registry.watch_runners()  # the safe point first: its gate sits under every runner patch
            for patch in _registry.patches.values():
                _registry.apply_when_imported(patch)
        except BaseException:
            deactivate()
            raise
        return [_registry.reports[name] for name in _registry.patches]


def deactivate() -> None:
    """Revert every applied patch to FastDeploy's exact original objects and forget pending ones."""
    global _registry
    with _lock:
        import_hooks.cancel_all()
        if _registry is not None:
            _registry.revert_all()
        _registry = None
        deepep_protocol.reset_protocol()


def register() -> None:
    """Entry point: FastDeploy calls this in every process; the flags decide (bad values fail startup)."""
    settings = flags.read_settings()
    if settings.enable:
        activate(settings)
