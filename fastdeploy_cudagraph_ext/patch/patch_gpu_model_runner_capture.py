"""GPUModelRunner: validate and apply the capture plan before weights load; warm MTP graphs with batch = size/(k+1)."""
from __future__ import annotations

import functools
import inspect
import logging
import sys
from typing import Callable

from .. import flags
from ..capture_plan import CapturePlan, PlanError, build_plan
from ..fd_config import install_capture_sizes, plan_inputs, speculative_tokens
from ..registry import Patch

MODULE = "fastdeploy.worker.gpu_model_runner"
PLAN_ATTR = "_fastdeploy_cudagraph_ext_plan"
log = logging.getLogger("fastdeploy_cudagraph_ext")


def plan_for_worker(fd_config: object) -> CapturePlan | None:
    """The worker's plan, with FastDeploy's sizes replaced by it; None when graphs are off."""
    graph = getattr(fd_config, "graph_opt_config", None)
    if not getattr(graph, "use_cudagraph", False) or getattr(graph, "cudagraph_only_prefill", False):
        return None
    try:
        plan = build_plan(plan_inputs(fd_config, round_sizes=flags.read_bool(flags.ROUND_SIZES),
                                      drop_oversize=flags.read_bool(flags.DROP_OVERSIZE)))
    except PlanError as error:
        raise PlanError([f"fastdeploy-cudagraph-ext refuses to start this worker before loading weights: {p}"
                         for p in error.problems]) from None
    if install_capture_sizes(fd_config, plan.sizes, plan.tokens_per_request):
        log.info("fastdeploy-cudagraph-ext: decode capture sizes set to %s", sorted(plan.sizes))
    return plan


def _wrap_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self: object, fd_config: object, *args: object, **kwargs: object) -> None:
        plan = plan_for_worker(fd_config)  # before FastDeploy's __init__ reads the sizes
        original(self, fd_config, *args, **kwargs)
        setattr(self, PLAN_ATTR, plan)

    return __init__


def _planned_mtp_capture(runner: object, plan: CapturePlan, dummy_run_params: set[str]) -> None:
    """Warm up and capture every planned size, largest first, with size/(k+1) requests that reach decode.

    As in FastDeploy develop, one pass per size also captures the draft model (when draft_model_use_cudagraph):
    the dummy run's sampler runs the proposer with the step's graph flag.
    """
    for capture in plan.captures:
        kwargs = {"num_tokens": capture.num_tokens, "batch_size": capture.batch_size, "in_capturing": True,
                  "expected_decode_len": capture.expected_decode_len}
        if "accept_all_drafts" in dummy_run_params:
            kwargs["accept_all_drafts"] = True  # every draft accepted: the graph sees k+1 tokens per request
        runner._dummy_run(**kwargs)
        log.info("fastdeploy-cudagraph-ext: captured MTP size %d (batch %d, decode length %d)",
                 capture.capture_size, capture.batch_size, capture.expected_decode_len)


def _is_mtp_decode_capture(runner: object) -> bool:
    return (getattr(runner, "use_cudagraph", False) and speculative_tokens(runner.fd_config) > 0
            and not getattr(runner.graph_opt_config, "cudagraph_only_prefill", False))


def wrap_capture_model(original: Callable, shape: str, module_name: str) -> Callable:
    """'floor_division' eras are right once sizes are multiples of k+1; 'k1_halving' eras get the planned loop."""

    @functools.wraps(original)
    def capture_model(self: object) -> None:
        if not hasattr(self, PLAN_ATTR):  # runners whose __init__ is not wrapped (XPU) plan here
            setattr(self, PLAN_ATTR, plan_for_worker(self.fd_config))
        plan = getattr(self, PLAN_ATTR)
        if plan is None or not _is_mtp_decode_capture(self):
            return original(self)
        unplanned = sorted(set(self.cudagraph_capture_sizes) - set(plan.sizes))
        if unplanned:
            raise PlanError([f"runner capture sizes {unplanned} are not in the plan {plan.sizes}; the FastDeploy "
                             f"config changed after the worker started"])
        if shape == "floor_division":
            return original(self)
        params = set(inspect.signature(type(self)._dummy_run).parameters)
        guard = getattr(sys.modules.get(module_name), "sot_warmup_guard", None)
        run = functools.partial(_planned_mtp_capture, self, plan, params)
        return guard(True)(run)() if guard is not None else run()

    return capture_model


def build(cls: type, shape: str) -> dict[str, object]:
    return {"__init__": _wrap_init(cls.__init__), "capture_model": wrap_capture_model(cls.capture_model, shape, MODULE)}


PATCH = Patch(
    name="mtp_capture_sizing",
    symbols=(f"{MODULE}:GPUModelRunner.__init__", f"{MODULE}:GPUModelRunner.capture_model"),
    why=(
        "Capture sizes are token counts and an MTP request decodes k+1 tokens. FastDeploy 2.2/2.3 warm up with "
        "size/2 requests and skip size 1 (right only for k=1); develop floors size/(k+1) silently, so a size that "
        "is not a multiple of k+1 captures a graph for the wrong batch. Nothing checks DeepEP's token cap."
    ),
    how=(
        "Wraps __init__: before FastDeploy reads the config, builds the capture plan (sizes multiples of k+1, within "
        "max_num_seqs*(k+1) and the DeepEP cap, NVSHMEM_QP_DEPTH) and fails fast with every problem listed, or "
        "installs the planned sizes through FastDeploy's own init_with_cudagrpah_size. Wraps capture_model: develop "
        "runs unchanged on the validated sizes; 2.2-2.4 run the planned loop (batch=size/(k+1), decode length "
        "(k+1)*2) under FastDeploy's sot_warmup_guard. Non-MTP and prefill-only capture are untouched."
    ),
    related_pr="FastDeploy PR #7215 (scales default sizes by k+1 but keeps the silent floor); none validates sizes.",
    removal_plan="Remove once FastDeploy validates capture sizes against k+1 and the DeepEP cap at config time.",
    build=build,
)
