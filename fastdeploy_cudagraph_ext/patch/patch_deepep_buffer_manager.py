"""DeepEPBufferManager.clean_low_latency_buffer: the classmethod the closed PR #7344 called but no release defines."""
from __future__ import annotations

from ..flags import Settings
from ..registry import Contract, Patch
from .patch_gpu_model_runner_step import clean_through_fastdeploy

MODULE = "fastdeploy.model_executor.layers.moe.ep"


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"clean_low_latency_buffer": classmethod(lambda manager: clean_through_fastdeploy())}


PATCH = Patch(
    name="deepep_buffer_manager_clean",
    group="deepep_mixed",
    module=MODULE,
    contract=Contract(cls="DeepEPBufferManager", adds=("clean_low_latency_buffer",),
                      optional_class="2.2.0 has no buffer manager, so nothing calls its clean"),
    why=(
        "Code written against PR #7344 calls DeepEPBufferManager.clean_low_latency_buffer(); FastDeploy defines only "
        "set_engine, clear_buffer and recreate_buffer, so the call raised and (swallowed) never cleaned."
    ),
    how="Adds the classmethod; it cleans through FastDeploy's engine (a no-op before one exists).",
    related_pr="FastDeploy PR #7344 (closed).",
    removal_plan="Remove if FastDeploy adds the method itself (the registry then reports it not needed).",
    build=build,
)
