"""XPUModelRunner: MTP graph warmups with the real k and the planned batch (the XPU capture PRs of 2026)."""
from __future__ import annotations

from ..registry import Patch
from .patch_gpu_model_runner_capture import wrap_capture_model

MODULE = "fastdeploy.worker.xpu_model_runner"


def build(cls: type, shape: str) -> dict[str, object]:
    # The XPU runner has no plan of its own: capture_model plans lazily from its fd_config.
    return {"capture_model": wrap_capture_model(cls.capture_model, "k1_halving", MODULE)}


PATCH = Patch(
    name="xpu_mtp_capture_sizing",
    symbols=(f"{MODULE}:XPUModelRunner.capture_model",),
    why=(
        "The XPU runner's new MTP capture (PR #7761 and follow-ups) sizes warmups with num_speculative_tokens=0 "
        "and int(size/(k+1)), and review found the accept_all_drafts argument dropped."
    ),
    how=(
        "Wraps capture_model: for MTP decode capture it runs the planned loop (real k, batch=size/(k+1), decode "
        "length (k+1)*2, accept_all_drafts where _dummy_run takes it); prefill-only capture and non-MTP runs go to "
        "FastDeploy's own body. Releases whose XPU runner captures no graphs are reported 'not needed'."
    ),
    related_pr="FastDeploy PRs #7604, #7761, #7864, #7941, #8061 (XPU MTP capture).",
    removal_plan="Remove once the XPU runner uses the configured k and validates sizes against k+1.",
    build=build,
)
