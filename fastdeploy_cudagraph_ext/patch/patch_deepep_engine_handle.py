"""DeepEPEngine.__init__: remember FastDeploy's engine, so the transition clean can reach it on every line."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch

MODULE = "fastdeploy.model_executor.layers.moe.ep"


def _wrap_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self: object, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        deepep_protocol.remember_engine(self)

    return __init__


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"__init__": _wrap_init(cls.__init__)}


PATCH = Patch(
    name="deepep_engine_handle",
    group="deepep_mixed",
    module=MODULE,
    contract=Contract(cls="DeepEPEngine", wraps=("__init__",)),
    why=(
        "The transition clean must reach FastDeploy's DeepEP engine. 2.2.x and later register it with "
        "DeepEPBufferManager, but 2.2.0 has no buffer manager: there the clean would silently find no engine "
        "while FastDeploy's own in-forward clean is suppressed."
    ),
    how="Wraps DeepEPEngine.__init__ (pass-through) and keeps a reference to the engine FastDeploy built.",
    related_pr="None upstream: FastDeploy exposes its engine only through DeepEPBufferManager (2.2.x and later).",
    removal_plan="Remove with deepep_transition_clean, or once every supported line has DeepEPBufferManager.",
    build=build,
)
