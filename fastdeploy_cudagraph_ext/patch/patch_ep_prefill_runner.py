"""EPPrefillRunner.dispatch/combine: DeepEP normal-mode calls inside a CUDA graph capture are refused at once."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch
from ..stream_policy import get_policy

MODULE = "fastdeploy.model_executor.layers.moe.ep"
NORMAL_MODE_METHODS = ("dispatch", "combine")


def _wrap(original: Callable, kind: str) -> Callable:
    @functools.wraps(original)
    def normal_mode_call(self: object, *args: object, **kwargs: object) -> object:
        # Eager prefill steps pay one thread-local read; the device is asked only inside a backend call.
        if deepep_protocol.audit_active() and get_policy().device.is_capturing():
            # num_worst_tokens: FastDeploy 2.6+ (prefill_num_worst_tokens); earlier lines never pass it
            deepep_protocol.check_normal_mode_call(kind, int(getattr(self, "num_worst_tokens", 0) or 0))
        return original(self, *args, **kwargs)

    return normal_mode_call


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {name: _wrap(getattr(cls, name), name) for name in NORMAL_MODE_METHODS}


PATCH = Patch(
    name="deepep_normal_mode_capture_check",
    group="deepep_mixed",
    module=MODULE,
    contract=Contract(cls="EPPrefillRunner", wraps=NORMAL_MODE_METHODS),
    why=(
        "In mixed mode the step's MoE phase picks the kernels; a captured step whose phase is prefill puts DeepEP's "
        "normal-mode dispatch/combine into the graph. They wait on the CPU and cannot be captured (DeepEP #62): the "
        "capture fails late or every rank hangs."
    ),
    how=(
        "Wraps EPPrefillRunner.dispatch/combine (pass-through): while a graph is captured, the call raises before "
        "DeepEP runs, naming the MoE layer and the fix; the capture scope discards the open capture. Allowed only "
        "where the runner gate found the capturable case (intranode, worst-case token count) and the runner "
        "passes DeepEP num_worst_tokens."
    ),
    related_pr="None upstream: FastDeploy captures prefill graphs (cudagraph_only_prefill, static split-graph mode) "
    "without checking the DeepEP mode; rtp-llm #1308 and vLLM refuse this case at start-up.",
    removal_plan="Remove once FastDeploy refuses normal-mode DeepEP in captured graphs itself.",
    build=build,
)
