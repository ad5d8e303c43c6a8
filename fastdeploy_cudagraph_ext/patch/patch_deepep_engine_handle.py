"""DeepEPEngine.__init__: the ranks agree before FastDeploy builds DeepEP's buffer (its first collective); the
engine is remembered so the transition clean reaches it on every line; a construction under capture is refused."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from .. import deepep_agreement, deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch
from ..stream_policy import get_policy

MODULE = "fastdeploy.model_executor.layers.moe.ep"
ENGINE_NAMES = ("num_max_dispatch_tokens_per_rank", "num_experts")  # read by name for the rank agreement


def _wrap_init(original: Callable) -> Callable:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: object, *args: object, **kwargs: object) -> None:
        capturing = deepep_protocol.audit_active() and get_policy().device.is_capturing()
        deepep_protocol.check_buffer_creation("engine construction (DeepEPEngine.__init__)", capturing)
        bound = signature.bind(self, *args, **kwargs).arguments
        deepep_agreement.exchange.engine = {name: int(bound[name]) for name in ENGINE_NAMES}
        deepep_agreement.exchange.ready()  # before FastDeploy's __init__ builds the buffer (a collective)
        original(self, *args, **kwargs)
        deepep_protocol.remember_engine(self)

    return __init__


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"__init__": _wrap_init(cls.__init__)}


PATCH = Patch(
    name="deepep_engine_handle",
    group="deepep_mixed",
    module=MODULE,
    contract=Contract(cls="DeepEPEngine", wraps=("__init__",), uses={"__init__": ENGINE_NAMES}),
    why=(
        "The transition clean must reach FastDeploy's DeepEP engine (2.2.0 has no DeepEPBufferManager holding it). "
        "EP ranks that plan different DeepEP work hang in its first collective, the buffer's creation (DeepEP "
        "#208); an engine built lazily inside a captured forward would allocate inside the graph."
    ),
    how=(
        "Wraps DeepEPEngine.__init__ (pass-through): refuses it under capture; exchanges the rank's plan (capture "
        "sizes, k, cap, hidden size, experts, NVSHMEM_QP_DEPTH, versions) over FastDeploy's EP group once, before "
        "FastDeploy's __init__ runs, and stops every rank on a difference; keeps a reference to the engine."
    ),
    related_pr="None upstream: FastDeploy exposes its engine only through DeepEPBufferManager (2.2.x and later) "
    "and checks no cross-rank agreement.",
    removal_plan="Remove with deepep_transition_clean (the reference), once FastDeploy checks the ranks agree "
    "(the exchange), and once FastDeploy refuses buffer creation under capture (the guard).",
    build=build,
)
