"""GPUModelRunner: validate and install the capture plan before FastDeploy reads the sizes; warm MTP graphs
with batch = size/(k+1) where FastDeploy's own loop halves the size."""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, Collection, Mapping

from ..capture_plan import CapturePlan, PlanError, plan_deployment
from ..fd_config import CONFIG_READS, INSTALL_NAMES, INSTALL_USES, deployment_settings, install_capture_sizes, \
    speculative_tokens
from ..fd_facts import ModuleFacts, k_plus_1_methods
from ..flags import Settings
from ..metrics import reports_capture
from ..registry import ANY_VARIANT, NO_FACTS, Choice, Contract, ContractBroken, Patch, Variant

MODULE = "fastdeploy.worker.gpu_model_runner"
CONFIG_MODULE = "fastdeploy.config"
BASE_MODULE = "fastdeploy.worker.model_runner_base"
PLAN_ATTR = "_fastdeploy_cudagraph_ext_plan"
COUNTED = "k_plus_1_methods"  # Variant.line key: the speculative methods this line counts k+1 tokens per request for
# The names the planned loop passes to _dummy_run (accept_all_drafts only where the line has it).
DUMMY_RUN_NAMES = ("num_tokens", "batch_size", "expected_decode_len", "in_capturing", "accept_all_drafts|")
# What the capture_model wrapper reads on the runner (set by FastDeploy's runner __init__ or ModelRunnerBase's).
RUNNER_READS = ("fd_config", "graph_opt_config", "use_cudagraph", "cudagraph_capture_sizes")
log = logging.getLogger("fastdeploy_cudagraph_ext")


def plan_for_worker(fd_config: object, settings: Settings, variant: Variant) -> CapturePlan | None:
    """The worker's plan, with FastDeploy's sizes replaced by it; None when it captures no decode graph."""
    try:
        plan = plan_deployment(deployment_settings(fd_config, settings, counted(variant)))
    except PlanError as error:
        raise PlanError([f"fastdeploy-cudagraph-ext refuses to start this worker before loading weights: {p}"
                         for p in error.problems]) from None
    if plan is None:
        return None
    if install_capture_sizes(fd_config, plan.sizes, plan.tokens_per_request, variant.line):
        log.info("fastdeploy-cudagraph-ext: decode capture sizes set to %s", sorted(plan.sizes))
    return plan


def prepare_runner(fd_config: object, settings: Settings, variant: Variant) -> dict[str, object]:
    """Called by the registry's runner gate before FastDeploy's __init__ copies the sizes."""
    return {PLAN_ATTR: plan_for_worker(fd_config, settings, variant)}


def counted(variant: Variant) -> frozenset[str]:
    return frozenset(variant.line[COUNTED].split(","))


def counted_methods(facts: Mapping[str, ModuleFacts]) -> str:
    """The speculative methods this line counts k+1 tokens per request for: those FDConfig scales sizes for; on a
    line whose FDConfig tells no method apart (2.2.0), every method SpeculativeConfig accepts."""
    methods = k_plus_1_methods(facts.get(CONFIG_MODULE, NO_FACTS).markers)
    if methods is None:
        raise ContractBroken("cannot tell which speculative methods this FastDeploy counts k+1 tokens per request "
                             "for (markers FDConfig.k_plus_1_methods and SpeculativeConfig.method_list are absent)")
    return methods


def _planned_mtp_capture(runner: object, plan: CapturePlan, accept_all_drafts: str) -> None:
    """Warm up and capture every planned size, largest first, with size/(k+1) requests that reach decode.

    As in FastDeploy develop, one pass per size also captures the draft model (when draft_model_use_cudagraph):
    the dummy run's sampler runs the proposer with the step's graph flag.
    """
    for capture in plan.captures:
        kwargs = {"num_tokens": capture.num_tokens, "batch_size": capture.batch_size, "in_capturing": True,
                  "expected_decode_len": capture.expected_decode_len}
        if accept_all_drafts:
            kwargs[accept_all_drafts] = True  # every draft accepted: the graph sees k+1 tokens per request
        runner._dummy_run(**kwargs)
        log.info("fastdeploy-cudagraph-ext: captured MTP size %d (batch %d, decode length %d)",
                 capture.capture_size, capture.batch_size, capture.expected_decode_len)


def _is_mtp_decode_capture(runner: object, methods: Collection[str]) -> bool:
    # use_cudagraph: a declared runner name; cudagraph_only_prefill: absent on 2.2.0 (no prefill-only capture)
    return (runner.use_cudagraph and speculative_tokens(runner.fd_config, methods) > 0
            and not getattr(runner.graph_opt_config, "cudagraph_only_prefill", False))


def wrap_capture_model(original: Callable, variant: Variant, settings: Settings, guard_module: str | None) -> Callable:
    """'fastdeploy_loop': FastDeploy's loop on the validated sizes; 'planned_loop': ours (under FastDeploy's
    sot_warmup_guard where its capture_model has it)."""
    methods = counted(variant)

    @functools.wraps(original)
    def capture_model(self: object) -> None:
        if not hasattr(self, PLAN_ATTR):  # a runner built before activation: plan now, the check below catches drift
            setattr(self, PLAN_ATTR, plan_for_worker(self.fd_config, settings, variant))
        plan = getattr(self, PLAN_ATTR)
        if plan is None or not _is_mtp_decode_capture(self, methods):
            return original(self)
        unplanned = sorted(set(self.cudagraph_capture_sizes) - set(plan.sizes))
        if unplanned:
            raise PlanError([f"runner capture sizes {unplanned} are not in the plan {plan.sizes}; the FastDeploy "
                             f"config changed after the worker started"])
        if variant == "fastdeploy_loop":
            return original(self)
        guard = getattr(sys.modules.get(guard_module or ""), "sot_warmup_guard", None)
        run = functools.partial(_planned_mtp_capture, self, plan, variant.line["accept_all_drafts"])
        return guard(True)(run)() if guard is not None else run()

    return capture_model


def choose(facts: Mapping[str, ModuleFacts]) -> Choice:
    """Told apart by how FastDeploy's own MTP loop sizes a warmup batch (marker), not by _dummy_run's shape."""
    mtp_batch = facts.get(MODULE, NO_FACTS).markers.get("GPUModelRunner.capture_model.mtp_batch")
    line = {COUNTED: counted_methods(facts)}
    methods = f"k counts for {line[COUNTED]}"
    if mtp_batch == "none":
        return Choice("planned_loop", f"FastDeploy's loop has no MTP branch and warms every size with batch = size "
                                      f"(2.2.0); the plugin's loop uses size/(k+1); {methods}", line)
    if mtp_batch == "size_over_2":
        return Choice("planned_loop", f"FastDeploy warms MTP graphs with size/2 requests (right for k=1 only); the "
                                      f"plugin's loop uses size/(k+1); {methods}", line)
    if mtp_batch == "size_over_k_plus_1":
        scales = facts.get(CONFIG_MODULE, NO_FACTS).markers.get(
            "GraphOptimizationConfig.init_with_cudagrpah_size.scales_by_k_plus_1")
        sizing = ("sizes: not needed (FastDeploy already scales every size by k+1; never scaled again)"
                  if scales == "yes" else "sizes made multiples of k+1 before FastDeploy reads them")
        return Choice("fastdeploy_loop", f"FastDeploy's loop divides by k+1 and runs unchanged; {sizing}; "
                                         f"DeepEP cap and k+1 checks run; {methods}", line)
    raise ContractBroken(f"GPUModelRunner.capture_model's MTP batch sizing is not one the plugin knows "
                         f"(marker mtp_batch={mtp_batch!r})")


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"capture_model": reports_capture(wrap_capture_model(cls.capture_model, variant, settings, MODULE))}


def runner_contract(cls: str) -> Contract:
    """What both capture patches touch: the runner, its _dummy_run, and the sizes they install through FastDeploy."""
    return Contract(cls=cls, wraps=("capture_model",),
                    uses={"__init__": ("fd_config",), "_dummy_run": DUMMY_RUN_NAMES, **INSTALL_USES},
                    names={ANY_VARIANT: (*(f"{cls}.{n}" for n in RUNNER_READS), *INSTALL_NAMES)},
                    # FastDeploy's guard, where the runner module has it (the XPU runner's has none)
                    tolerates=(*CONFIG_READS, "fastdeploy.worker.model_runner_base.sot_warmup_guard"))


PATCH = Patch(
    name="mtp_capture_sizing",
    group="mtp_sizing",
    module=MODULE,
    contract=runner_contract("GPUModelRunner"),
    why=(
        "Capture sizes are token counts and an MTP request decodes k+1 tokens. FastDeploy 2.2/2.3 warm up with "
        "size/2 requests and skip size 1 (right only for k=1); 2.4/2.5 floor size/(k+1) silently on sizes that "
        "are not multiples of k+1. Nothing checks DeepEP's token cap."
    ),
    how=(
        "When the runner is built (registry gate), before FastDeploy copies the sizes: builds the capture plan "
        "(sizes multiples of k+1, within max_num_seqs*(k+1), the DeepEP cap and NVSHMEM_QP_DEPTH), fails fast with "
        "every problem listed, or installs the sizes through FastDeploy's own init_with_cudagrpah_size; sizes "
        "FastDeploy already scaled (2.6/develop) are validated, never scaled again. Wraps capture_model: where "
        "FastDeploy's loop divides by k+1 it runs unchanged; where it halves, the planned loop runs (batch="
        "size/(k+1), decode length (k+1)*2, accept_all_drafts) under FastDeploy's sot_warmup_guard."
    ),
    related_pr="FastDeploy PR #5670 (2.4: size/(k+1) loop), #7215/#7301 (2.6: sizes scaled by k+1); none validates "
    "sizes against k+1 or the DeepEP cap.",
    removal_plan="Remove once FastDeploy validates capture sizes against k+1 and the DeepEP cap at config time.",
    build=build,
    choose=choose,
    facts_from=(CONFIG_MODULE, BASE_MODULE),
    on_runner_init=prepare_runner,
)
