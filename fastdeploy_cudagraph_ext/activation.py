"""Turning the plugin on in a FastDeploy process: flag, entry point, idempotent activate/deactivate.

FastDeploy calls `register()` (entry point group `fastdeploy.model_register_plugins`) once per
process when it imports its model zoo; every worker does so before loading a model, so the
patches are in place before capture_model(). Offline `fastdeploy.LLM` users may call
`activate()` directly.
"""
from __future__ import annotations

import logging
import sys
import threading

from . import deepep_protocol, flags, import_hooks
from .patch import ALL_PATCHES
from .registry import PatchRefused, PatchReport, Registry, Verdict

log = logging.getLogger("fastdeploy_cudagraph_ext")
_lock = threading.RLock()
_registry: Registry | None = None
_active = False


def _ensure_visible_logging() -> None:
    # Workers often leave the root logger at WARNING; the per-patch lines must reach the operator.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def registry() -> Registry:
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry(ALL_PATCHES)
        return _registry


def _refuse(report: PatchReport) -> None:
    """One refused patch undoes all: a worker never runs half-patched."""
    deactivate()
    raise PatchRefused(
        f"{report.line()}. fastdeploy-cudagraph-ext reverted every patch and stops this worker; unset "
        f"FD_CUDAGRAPH_EXT to serve without the plugin."
    )


def is_active() -> bool:
    return _active


def activate(force: bool | None = None) -> list[PatchReport]:
    """Apply every patch now or when FastDeploy imports its module. Idempotent and thread-safe."""
    global _active
    with _lock:
        settings = flags.read_all()
        reg = registry()
        if _active:
            return [reg.reports[name] for name in reg.patches if name in reg.reports]
        _ensure_visible_logging()
        reg.arm(force=settings[flags.FORCE] if force is None else force, on_refusal=_refuse)
        _active = True
        try:
            for patch in reg.patches.values():
                report = reg.apply_when_imported(patch)
                if report.verdict is Verdict.WAITING:
                    log.info(report.line())
        except BaseException:
            deactivate()
            raise
        return [reg.reports[name] for name in reg.patches]


def deactivate() -> None:
    """Revert every applied patch to FastDeploy's exact original objects and forget pending ones."""
    global _active
    with _lock:
        import_hooks.cancel_all()
        if _registry is not None:
            _registry.revert_all()
        deepep_protocol.reset_protocol()
        _active = False


def register() -> None:
    """Entry point: FastDeploy calls this in every process; the flag decides (bad values fail startup)."""
    if flags.read_bool(flags.ENABLE):
        activate()
