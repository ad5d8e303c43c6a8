"""Reading FastDeploy's FDConfig across releases (fields moved between sub-configs over time).

Every FastDeploy name read here is declared in CONFIG_READS. Each is read with a fallback (a default, or its
other home on older lines), so the registry tolerates its absence; FastDeploy fills many of these fields from
its args dicts (setattr), where no source fact can see them. The names this module writes or passes
(install_capture_sizes) are declared by the patches that call it, and checked on the line.
"""
from __future__ import annotations

from typing import Collection, Mapping

from .capture_plan import DeploymentSettings, default_ladder, env_int, warmup_token_budget
from .fd_lines import live_ladder_base
from .flags import Settings

CONFIG_READS: tuple[str, ...] = (
    "FDConfig.speculative_config", "FDConfig.scheduler_config", "FDConfig.parallel_config", "FDConfig.model_config",
    "FDConfig.graph_opt_config", "FDConfig.get_max_chunk_tokens", "FDConfig.nnode",
    "SpeculativeConfig.method", "SpeculativeConfig.num_speculative_tokens", "SpecMethod.value",
    "SchedulerConfig.splitwise_role", "SchedulerConfig.max_num_seqs", "SchedulerConfig.max_num_batched_tokens",
    "ParallelConfig.splitwise_role", "ParallelConfig.max_num_seqs", "ParallelConfig.max_num_batched_tokens",
    "ParallelConfig.use_ep", "ParallelConfig.expert_parallel_size", "ParallelConfig.moe_phase", "ParallelConfig.nnode",
    "ParallelConfig.use_internode_ll_two_stage",
    "ModelConfig.moe_phase", "ModelConfig.num_max_dispatch_tokens_per_rank", "MoEPhase.phase",
    "GraphOptimizationConfig.use_cudagraph", "GraphOptimizationConfig.cudagraph_capture_sizes",
    "GraphOptimizationConfig.cudagraph_only_prefill", "GraphOptimizationConfig.max_capture_shape_prefill",
    "GraphOptimizationConfig.real_bsz_to_captured_size",
)
# What install_capture_sizes touches; the calling patch declares these (GraphOptimizationConfig is in fastdeploy.config).
INSTALL_NAMES: tuple[str, ...] = ("GraphOptimizationConfig.cudagraph_capture_sizes",)
INSTALL_USES: dict[str, tuple[str, ...]] = {
    # 2.2.0 names the cap max_num_seqs; 2.5+ take the prefill cap too
    "GraphOptimizationConfig.init_with_cudagrpah_size": ("max_capture_size|max_num_seqs", "max_capture_shape_prefill|"),
}


def _first(obj_paths: list[tuple[object, str]], default: object = None) -> object:
    for obj, name in obj_paths:
        if obj is not None and getattr(obj, name, None) is not None:
            return getattr(obj, name)
    return default


def speculative_method(fd_config: object) -> str | None:
    """The speculative method's name, lower case (a str in config, an enum in newer runners); None when off."""
    method = getattr(getattr(fd_config, "speculative_config", None), "method", None)
    method = getattr(method, "value", method)
    return None if method is None else str(method).lower()


def speculative_tokens(fd_config: object, counted: Collection[str] | None) -> int:
    """k when the method is one this FastDeploy line counts k+1 tokens per request for (`counted`, from the
    line's facts; None: any method), else 0."""
    method = speculative_method(fd_config)
    if method is None or (counted is not None and method not in counted):
        return 0
    return int(getattr(fd_config.speculative_config, "num_speculative_tokens", 1))


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


def max_chunk_tokens(fd_config: object, k: int) -> int:
    getter = getattr(fd_config, "get_max_chunk_tokens", None)
    if callable(getter):
        return int(getter())
    scheduler = getattr(fd_config, "scheduler_config", None) or getattr(fd_config, "parallel_config", None)
    return warmup_token_budget(splitwise_role(fd_config), max_num_seqs(fd_config), k,
                               int(getattr(scheduler, "max_num_batched_tokens", 8192)))


def _generated_by_fastdeploy(sizes: list[int], tokens_per_request: int, base: tuple[int, ...] | None) -> bool:
    """FastDeploy fills cudagraph_capture_sizes with its ladder when the user gave none (unscaled before PR #7215)."""
    top = max(sizes)
    return any(sorted(sizes) == default_ladder(top, scale, base) for scale in {1, tokens_per_request})


def deployment_settings(fd_config: object, settings: Settings, counted: Collection[str] | None) -> DeploymentSettings:
    """The worker's side of the one plan builder (`capture_plan.plan_deployment`); the CLI fills the same value
    from a deployment config. `counted`: the speculative methods this line counts k+1 tokens per request for."""
    k = speculative_tokens(fd_config, counted)
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
        max_chunk_tokens=max_chunk_tokens(fd_config, k),
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


def install_capture_sizes(fd_config: object, sizes: list[int], tokens_per_request: int,
                          line: Mapping[str, str]) -> bool:
    """Make FastDeploy capture exactly `sizes`, through its own padding-map builder. False if nothing changed.
    `line`: this line's spelling of INSTALL_USES' parameters (the registry's Variant.line)."""
    graph = fd_config.graph_opt_config
    if sorted(graph.cudagraph_capture_sizes or []) == sorted(sizes):
        return False
    graph.cudagraph_capture_sizes = sorted(sizes)
    kwargs = {line["max_capture_size"]: max(sizes)}  # 2.2.0's max_num_seqs= caps sizes the same way
    if line["max_capture_shape_prefill"]:  # 2.5+: keep FastDeploy's own prefill cap
        kwargs[line["max_capture_shape_prefill"]] = int(getattr(graph, "max_capture_shape_prefill", 0) or 0)
    graph.init_with_cudagrpah_size(**kwargs)  # (sic) FastDeploy's spelling
    bsz_map = getattr(graph, "real_bsz_to_captured_size", None)
    if bsz_map:  # develop keys MTP graphs by running requests: map each batch to the smallest graph that holds it
        ascending = sorted(sizes)
        graph.real_bsz_to_captured_size = {
            bsz: next(s for s in ascending if s >= bsz * tokens_per_request)
            for bsz in range(1, max(ascending) // tokens_per_request + 1)
        }
    return True
