"""EPRunner.clean_low_latency_buffer: skip when called from inside the MoE forward."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch

MODULE = "fastdeploy.model_executor.layers.moe.ep"


def _wrap(original: Callable) -> Callable:
    @functools.wraps(original)
    def clean_low_latency_buffer(self: object, *args: object, **kwargs: object) -> object:
        if deepep_protocol.inline_cleans_suppressed():
            return None  # the transition clean already ran eagerly on every rank
        return original(self, *args, **kwargs)

    return clean_low_latency_buffer


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"clean_low_latency_buffer": _wrap(cls.clean_low_latency_buffer)}


PATCH = Patch(
    name="ep_runner_inline_clean",
    group="deepep_mixed",
    module=MODULE,
    # the runners' clean is the engine's, which the transition clean calls instead
    contract=Contract(cls="EPRunner", wraps=("clean_low_latency_buffer",),
                      markers={"EPRunner.clean_low_latency_buffer.calls": ("ep_engine.clean_low_latency_buffer",)}),
    why="The in-forward clean is a collective barrier recorded into every decode graph (see deepep_transition_clean).",
    how="Returns without cleaning inside MoEMethodBase.apply's scope; every other caller gets FastDeploy's clean.",
    related_pr="None upstream: FastDeploy has no way to skip the inline clean; SGLang PR #11666 shows the pattern.",
    removal_plan="Remove together with moe_inline_clean_scope once FastDeploy cleans outside the forward.",
    build=build,
)
