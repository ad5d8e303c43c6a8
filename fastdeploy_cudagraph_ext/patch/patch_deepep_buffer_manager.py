"""DeepEPBufferManager.clean_low_latency_buffer: the classmethod the closed PR #7344 called but no release defines."""
from __future__ import annotations

from ..registry import Patch
from .patch_gpu_model_runner_step import clean_through_fastdeploy

MODULE = "fastdeploy.model_executor.layers.moe.ep"


def build(cls: type, shape: str) -> dict[str, object]:
    return {"clean_low_latency_buffer": classmethod(lambda manager: clean_through_fastdeploy())}


PATCH = Patch(
    name="deepep_buffer_manager_clean",
    symbols=(f"{MODULE}:DeepEPBufferManager.clean_low_latency_buffer",),
    why=(
        "Code written against PR #7344 calls DeepEPBufferManager.clean_low_latency_buffer(); FastDeploy defines only "
        "set_engine, clear_buffer and recreate_buffer, so the call raised and (swallowed) never cleaned."
    ),
    how="Adds the classmethod; it cleans through the engine the manager already holds (a no-op before one exists).",
    related_pr="FastDeploy PR #7344 (closed).",
    removal_plan="Remove if FastDeploy adds the method itself (the registry then refuses: the attribute exists).",
    build=build,
)
