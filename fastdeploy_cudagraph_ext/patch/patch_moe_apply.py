"""MoEMethodBase.apply: suppress FastDeploy's in-forward low-latency buffer clean (the protocol owns it) and
remember the layer, so a capture error names it."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch

MODULE = "fastdeploy.model_executor.layers.moe.fused_moe_backend_base"


def _wrap(original: Callable) -> Callable:
    @functools.wraps(original)
    def apply(self: object, layer: object, *args: object, **kwargs: object) -> object:
        with deepep_protocol.moe_forward(layer):
            return original(self, layer, *args, **kwargs)

    return apply


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"apply": _wrap(cls.apply)}


PATCH = Patch(
    name="moe_inline_clean_scope",
    group="deepep_mixed",
    module=MODULE,
    # Pass-through: apply's later parameters (topk_ids_hookfunc 2.4, shared_experts 2.6, ...) never refuse it;
    # `layer` (first on every line) is held for capture errors (its layer_idx names it).
    contract=Contract(cls="MoEMethodBase", wraps=("apply",), uses={"apply": ("layer",)}),
    why=(
        "In mixed mode FastDeploy calls clean_low_latency_buffer() inside the MoE forward (first MoE layer in 2.3+, "
        "every layer in 2.2): two NVSHMEM barriers inside every captured decode graph, every replay."
    ),
    how=("Runs FastDeploy's apply unchanged inside a scope in which the EP runners' clean is skipped and the layer "
         "is remembered (a normal-mode call or buffer creation under capture names it)."),
    related_pr="None upstream; SGLang cleans eagerly on the normal->low-latency switch (PR #11666).",
    removal_plan="Remove with deepep_transition_clean, once FastDeploy moves the clean out of the forward.",
    build=build,
)
