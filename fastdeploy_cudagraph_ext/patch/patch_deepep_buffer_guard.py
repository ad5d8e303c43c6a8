"""DeepEPEngine buffer (re)creation: refused while a CUDA graph is being captured."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch
from ..stream_policy import get_policy

MODULE = "fastdeploy.model_executor.layers.moe.ep"
# create_deep_ep_buffer: 2.2.x+ (DeepEPBufferManager.recreate_buffer calls it); get_low_latency_buffer: 2.2.0
CREATION_METHODS = ("create_deep_ep_buffer", "get_low_latency_buffer")


def _wrap(original: Callable, name: str) -> Callable:
    @functools.wraps(original)
    def create(self: object, *args: object, **kwargs: object) -> object:
        capturing = deepep_protocol.audit_active() and get_policy().device.is_capturing()
        deepep_protocol.check_buffer_creation(f"buffer creation (DeepEPEngine.{name})", capturing)
        return original(self, *args, **kwargs)

    return create


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {name: _wrap(getattr(cls, name), name) for name in CREATION_METHODS if hasattr(cls, name)}


PATCH = Patch(
    name="deepep_buffer_capture_guard",
    group="deepep_mixed",
    module=MODULE,
    contract=Contract(cls="DeepEPEngine", wraps_if_present=CREATION_METHODS),
    why=(
        "A DeepEP buffer (or its low-latency RDMA area) created on first use inside a captured forward allocates "
        "and synchronizes every rank inside the capture (SGLang #29942)."
    ),
    how=(
        "The transition clean creates a missing buffer eagerly before the first capture; these wrappers refuse a "
        "creation reached while a graph is captured, before anything is allocated, naming the fix."
    ),
    related_pr="None upstream: FastDeploy creates the buffer in DeepEPEngine.__init__ and recreates it only through "
    "DeepEPBufferManager.recreate_buffer (RL weight reload), with no capture check.",
    removal_plan="Remove once FastDeploy or DeepEP refuse buffer allocation during capture.",
    build=build,
)
