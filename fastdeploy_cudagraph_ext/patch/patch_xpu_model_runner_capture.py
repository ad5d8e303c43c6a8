"""XPUModelRunner: MTP graph warmups with batch = size/(k+1) (FastDeploy's XPU loop uses batch = size)."""
from __future__ import annotations

from typing import Mapping

from ..fd_facts import ModuleFacts
from ..flags import Settings
from ..metrics import reports_capture
from ..registry import NO_FACTS, Choice, ContractBroken, Patch
from .patch_gpu_model_runner_capture import BASE_MODULE, CONFIG_MODULE, COUNTED, counted_methods, prepare_runner, \
    runner_contract, wrap_capture_model

MODULE = "fastdeploy.worker.xpu_model_runner"


def choose(facts: Mapping[str, ModuleFacts]) -> Choice:
    captures = facts.get(MODULE, NO_FACTS).markers.get("XPUModelRunner.capture_model.captures_graphs")
    if captures == "no":
        return Choice(None, "XPU captures no graphs on this line")
    if captures != "yes":
        raise ContractBroken(f"cannot tell whether XPUModelRunner.capture_model captures graphs (marker {captures!r})")
    mtp_batch = facts.get(MODULE, NO_FACTS).markers.get("XPUModelRunner.capture_model.mtp_batch")
    line = {COUNTED: counted_methods(facts)}
    return Choice("planned_loop", f"the XPU loop's batch is {mtp_batch!r}, not size/(k+1) with the configured k: "
                                  f"MTP decode capture runs the planned loop; k counts for {line[COUNTED]}", line)


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    # FastDeploy's XPU capture_model has no sot_warmup_guard: neither has ours.
    return {"capture_model": reports_capture(wrap_capture_model(cls.capture_model, variant, settings, None))}


PATCH = Patch(
    name="xpu_mtp_capture_sizing",
    group="mtp_sizing",
    module=MODULE,
    contract=runner_contract("XPUModelRunner"),
    why=(
        "Since #6152 (2.5) the XPU runner (a ModelRunnerBase, not a GPUModelRunner) captures graphs with batch = "
        "capture size and no MTP branch: under MTP each request decodes k+1 tokens, so every graph is warmed with "
        "k+1 times too many requests. The 2026 XPU MTP PRs hard-code k=0."
    ),
    how=(
        "The same plan as on GPU, installed when the runner is built; wraps capture_model: MTP decode capture runs "
        "the planned loop (batch=size/(k+1), decode length (k+1)*2, accept_all_drafts only where _dummy_run takes "
        "it); prefill-only capture and non-MTP runs go to FastDeploy's own body. Lines whose XPU runner captures "
        "no graphs are 'not needed'."
    ),
    related_pr="FastDeploy PR #6152 (XPU graphs), #7604, #7761, #7864, #7941, #8061 (XPU MTP capture).",
    removal_plan="Remove once the XPU runner sizes MTP warmups with the configured k and validates sizes.",
    build=build,
    choose=choose,
    facts_from=(CONFIG_MODULE, BASE_MODULE),
    on_runner_init=prepare_runner,
)
