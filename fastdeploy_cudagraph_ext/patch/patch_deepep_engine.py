"""DeepEPEngine low-latency calls: under capture, require receive hooks and count calls for buffer parity."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch
from ..stream_policy import get_policy

MODULE = "fastdeploy.model_executor.layers.moe.ep"
LOW_LATENCY_METHODS = ("low_latency_dispatch", "low_latency_combine")
TWO_STAGE_METHODS = ("low_latency_dispatch_two_stage", "low_latency_combine_two_stage")  # 2.2.x, 2.5+ only


def _wrap(original: Callable, kind: str) -> Callable:
    @functools.wraps(original)
    def low_latency_call(self: object, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)
        # Eager calls (prefill, empty_input_forward) pay one thread-local read; warmups inside a backend's
        # capture scope are told from the capture itself by the device.
        if not deepep_protocol.audit_active() or not get_policy().device.is_capturing():
            return result
        # FastDeploy returns the receive hook last: (..., hook).
        hook = deepep_protocol.record_low_latency_call(kind, result[-1])
        return (*result[:-1], hook)

    return low_latency_call


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    present = [name for name in (*LOW_LATENCY_METHODS, *TWO_STAGE_METHODS) if hasattr(cls, name)]
    return {name: _wrap(getattr(cls, name), name.replace("low_latency_", "")) for name in present}


PATCH = Patch(
    name="deepep_capture_checks",
    group="deepep_mixed",
    module=MODULE,
    # Pass-through wrappers (quant_group_size, use_ue8m0, ... are FastDeploy's); the hook is read from the result.
    contract=Contract(cls="DeepEPEngine", wraps=LOW_LATENCY_METHODS, wraps_if_present=TWO_STAGE_METHODS,
                      markers={**{f"DeepEPEngine.{m}.returns_hook_last": ("yes",) for m in LOW_LATENCY_METHODS},
                               **{f"DeepEPEngine.{m}.returns_hook_last": ("yes", "") for m in TWO_STAGE_METHODS}}),
    why=(
        "DeepEP flips its low-latency double buffer on the host at every call: a graph with an odd number of calls "
        "replays on the wrong half. Without a receive hook the kernels would not all be on the capture stream."
    ),
    how=(
        "Wraps the engine's low-latency dispatch/combine (and two-stage variants): while a graph is captured, each "
        "call is counted and its receive hook wrapped; the capture backend's audit fails the capture if the count "
        "is odd or a hook was not called in the same forward. Outside capture the calls pass through untouched."
    ),
    related_pr="None upstream: no FastDeploy or DeepEP change checks low-latency call parity under capture.",
    removal_plan="Remove once DeepEP keeps buffer parity per graph itself or FastDeploy checks it at capture.",
    build=build,
)
