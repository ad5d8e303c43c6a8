"""Reading FastDeploy's FDConfig across releases (fields moved between sub-configs over time)."""
from __future__ import annotations

import inspect

from .capture_plan import DeploymentSettings, default_ladder, env_int, warmup_token_budget
from .fd_lines import live_ladder_base
from .flags import Settings


def _first(obj_paths: list[tuple[object, str]], default: object = None) -> object:
    for obj, name in obj_paths:
        if obj is not None and getattr(obj, name, None) is not None:
            return getattr(obj, name)
    return default


def speculative_tokens(fd_config: object) -> int:
    """k for MTP, 0 when MTP is off (method is a str in config, an enum in newer runners)."""
    spec = getattr(fd_config, "speculative_config", None)
    method = getattr(spec, "method", None)
    method = getattr(method, "value", method)
    if method is None or str(method).lower() != "mtp":
        return 0
    return int(getattr(spec, "num_speculative_tokens", 1))


def splitwise_role(fd_config: object) -> str:
    return str(_first([(getattr(fd_config, "scheduler_config", None), "splitwise_role"),
                       (getattr(fd_config, "parallel_config", None), "splitwise_role")], "mixed"))


def max_num_seqs(fd_config: object) -> int:
    return int(_first([(getattr(fd_config, "scheduler_config", None), "max_num_seqs"),
                       (getattr(fd_config, "parallel_config", None), "max_num_seqs")], 1))


def uses_expert_parallel(fd_config: object) -> bool:
    parallel = getattr(fd_config, "parallel_config", None)
    if getattr(parallel, "use_ep", None) is not None:
        return bool(parallel.use_ep)
    return int(getattr(parallel, "expert_parallel_size", 1) or 1) > 1


def uses_cudagraph(fd_config: object) -> bool:
    return bool(getattr(getattr(fd_config, "graph_opt_config", None), "use_cudagraph", False))


def is_mixed_expert_parallel(fd_config: object) -> bool:
    return uses_expert_parallel(fd_config) and splitwise_role(fd_config) == "mixed"


def moe_phase(fd_config: object) -> str | None:
    """The agreed MoE phase ("prefill"/"decode"): model_config in newer FastDeploy, parallel_config in 2.0-2.2."""
    holder = _first([(getattr(fd_config, "model_config", None), "moe_phase"),
                     (getattr(fd_config, "parallel_config", None), "moe_phase")])
    phase = getattr(holder, "phase", holder)
    return None if phase is None else str(phase)


def max_chunk_tokens(fd_config: object) -> int:
    getter = getattr(fd_config, "get_max_chunk_tokens", None)
    if callable(getter):
        return int(getter())
    scheduler = getattr(fd_config, "scheduler_config", None) or getattr(fd_config, "parallel_config", None)
    return warmup_token_budget(splitwise_role(fd_config), max_num_seqs(fd_config), speculative_tokens(fd_config),
                               int(getattr(scheduler, "max_num_batched_tokens", 8192)))


def _generated_by_fastdeploy(sizes: list[int], tokens_per_request: int, base: tuple[int, ...] | None) -> bool:
    """FastDeploy fills cudagraph_capture_sizes with its ladder when the user gave none (unscaled before PR #7215)."""
    top = max(sizes)
    return any(sorted(sizes) == default_ladder(top, scale, base) for scale in {1, tokens_per_request})


def deployment_settings(fd_config: object, settings: Settings) -> DeploymentSettings:
    """The worker's side of the one plan builder (`capture_plan.plan_deployment`); the CLI fills the same value
    from a deployment config."""
    k = speculative_tokens(fd_config)
    graph = getattr(fd_config, "graph_opt_config", None)
    raw = getattr(graph, "cudagraph_capture_sizes", None)
    sizes = list(raw or [])
    # Never scaled again: sizes FastDeploy already scaled (2.5's ladder, 2.6/develop's every size) are either its
    # ladder at scale k+1 (rebuilt identically) or user sizes, which the plan validates as they are.
    base = live_ladder_base()  # this FastDeploy's own ladder (2.2's has no 288..512), as `plan --fd-line` uses
    generated = raw is None or (bool(sizes) and _generated_by_fastdeploy(sizes, k + 1, base))
    parallel = getattr(fd_config, "parallel_config", None)
    model = getattr(fd_config, "model_config", None)
    nnodes = int(_first([(fd_config, "nnode"), (parallel, "nnode")], 1))
    return DeploymentSettings(
        max_num_seqs=max_num_seqs(fd_config),
        num_speculative_tokens=k,
        capture_sizes=None if generated else tuple(sizes),  # [] stays [], an error as in FastDeploy itself
        ladder_cap=max(sizes) if sizes and generated else None,  # keep FastDeploy's own cap on its ladder
        max_chunk_tokens=max_chunk_tokens(fd_config),
        use_cudagraph=bool(getattr(graph, "use_cudagraph", False)),
        cudagraph_only_prefill=bool(getattr(graph, "cudagraph_only_prefill", False)),
        expert_parallel=uses_expert_parallel(fd_config),
        splitwise_role=splitwise_role(fd_config),
        max_dispatch_tokens_per_rank=int(getattr(model, "num_max_dispatch_tokens_per_rank", 128) or 128),
        internode=nnodes > 1 or bool(getattr(parallel, "use_internode_ll_two_stage", False)),
        nvshmem_qp_depth=env_int("NVSHMEM_QP_DEPTH"),
        round_sizes=settings.round_sizes,
        ladder_base=base,
    )


def install_capture_sizes(fd_config: object, sizes: list[int], tokens_per_request: int) -> bool:
    """Make FastDeploy capture exactly `sizes`, through its own padding-map builder. False if nothing changed."""
    graph = fd_config.graph_opt_config
    if sorted(graph.cudagraph_capture_sizes or []) == sorted(sizes):
        return False
    graph.cudagraph_capture_sizes = sorted(sizes)
    rebuild = graph.init_with_cudagrpah_size  # (sic) FastDeploy's spelling
    kwargs = {"max_capture_size": max(sizes)}
    if "max_capture_shape_prefill" in inspect.signature(rebuild).parameters:
        kwargs["max_capture_shape_prefill"] = int(getattr(graph, "max_capture_size_prefill", 0) or 0)
    rebuild(**kwargs)
    bsz_map = getattr(graph, "real_bsz_to_captured_size", None)
    if bsz_map:  # develop keys MTP graphs by running requests: map each batch to the smallest graph that holds it
        ascending = sorted(sizes)
        graph.real_bsz_to_captured_size = {
            bsz: next(s for s in ascending if s >= bsz * tokens_per_request)
            for bsz in range(1, max(ascending) // tokens_per_request + 1)
        }
    return True
