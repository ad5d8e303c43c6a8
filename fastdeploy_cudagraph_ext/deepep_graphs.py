"""Would a deployment's CUDA graphs hold DeepEP normal-mode (high-throughput) kernels? One pure rule for the
runner gate, `plan` and `doctor`.

DeepEP's normal dispatch/combine wait on the CPU for the received token count, so they cannot be captured
("capturing stream has unjoined work", DeepEP #62), except intranode with a fixed worst-case token count
(`num_worst_tokens`, DeepEP #203). FastDeploy picks the kernels from the step's MoE phase: prefill -> normal,
decode -> low-latency. So a graph of a prefill or mixed step holds normal kernels. FastDeploy captures such
graphs with `cudagraph_only_prefill` (GPUModelRunner.capture_model's capture_prefill branch, 2.3+) and in its
static split-graph mode (graph_opt_level >= 1, full_cuda_graph false: capture_model_prefill_and_mixed, 2.5+).
It passes `num_worst_tokens` to DeepEP only where EPPrefillRunner.dispatch does (2.6+: with
--ep-prefill-use-worst-num-tokens, and only under FD_USE_PFCC_DEEP_EP=1, the torch-API DeepEP).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # capture_plan imports this module; the settings type is only annotated here
    from .capture_plan import DeploymentSettings

WORST_TOKENS_FLAG = "ep-prefill-use-worst-num-tokens"  # FastDeploy's server flag (2.6+)
TORCH_API_DEEPEP = "FD_USE_PFCC_DEEP_EP"  # FastDeploy's env flag: PFCCLab/PaddleFleet DeepEP (torch API)


@dataclass(frozen=True)
class LineGraphs:
    """What a FastDeploy line does (markers of its sources); None = not known (plan without FastDeploy): the
    rule then assumes the line does what the deployment asks, as the newest lines do."""

    captures_prefill_only: bool | None = None  # capture_model's capture_prefill branch (cudagraph_only_prefill)
    captures_split_prefill: bool | None = None  # capture_model_prefill_and_mixed captures graphs
    worst_tokens_guard: str | None = None  # when EPPrefillRunner.dispatch passes num_worst_tokens: "none",
    # "always", or the env flag(s) it requires (e.g. "FD_USE_PFCC_DEEP_EP")


@dataclass(frozen=True)
class DeepEPGraphSettings:
    """The deployment values, beyond DeploymentSettings, that decide which kernels end up in a graph."""

    graph_opt_level: int = 0
    full_cuda_graph: bool = True
    worst_num_tokens: bool = False  # --ep-prefill-use-worst-num-tokens (ParallelConfig.ep_prefill_use_worst_num_tokens)
    torch_api_deepep: bool = False  # FD_USE_PFCC_DEEP_EP=1
    nnodes: int = 1
    line: LineGraphs = LineGraphs()


@dataclass(frozen=True)
class NormalModeVerdict:
    problems: list[str]  # refusals: the deployment stops before weights load
    allowed: list[str]  # normal-mode captures the plugin lets through, and why


def _prefill_graphs(settings: DeploymentSettings, deepep: DeepEPGraphSettings) -> list[str]:
    """The prefill/mixed captures this deployment makes on its line (each named with the setting behind it)."""
    if not settings.use_cudagraph:
        return []
    line, out = deepep.line, []
    if settings.cudagraph_only_prefill and line.captures_prefill_only is not False:
        out.append("prefill graphs (graph-optimization-config cudagraph_only_prefill: true)")
    split = deepep.graph_opt_level >= 1 and not deepep.full_cuda_graph
    if split and settings.splitwise_role != "prefill" and line.captures_split_prefill is not False:
        out.append(f"prefill/mixed graphs of the static split-graph mode (graph_opt_level: {deepep.graph_opt_level} "
                   f"with full_cuda_graph: false)")
    return out


def _worst_tokens_missing(deepep: DeepEPGraphSettings) -> list[str]:
    """What keeps DeepEP's normal dispatch from a fixed worst-case token count (empty: it is capturable)."""
    guard = deepep.line.worst_tokens_guard
    missing = []
    if guard == "none":
        missing.append("this FastDeploy line never passes num_worst_tokens to DeepEP (FastDeploy 2.6 and later do)")
    if not deepep.worst_num_tokens:
        missing.append(f"--{WORST_TOKENS_FLAG} is off")
    if guard not in ("none", "always") and not deepep.torch_api_deepep:
        missing.append(f"{TORCH_API_DEEPEP} is not 1 (FastDeploy passes num_worst_tokens only to the torch-API DeepEP)")
    if deepep.nnodes > 1:
        missing.append(f"the EP group spans {deepep.nnodes} nodes (DeepEP's worst-case token count is intranode only)")
    return missing


def judge_normal_mode_graphs(settings: DeploymentSettings) -> NormalModeVerdict:
    """Refusals and allowances for DeepEP normal-mode kernels in this deployment's graphs."""
    deepep = getattr(settings, "deepep", None)
    if deepep is None or not settings.expert_parallel or settings.splitwise_role == "decode":
        return NormalModeVerdict([], [])  # a decode instance runs low-latency kernels only
    graphs = _prefill_graphs(settings, deepep)
    if not graphs:
        return NormalModeVerdict([], [])
    missing = _worst_tokens_missing(deepep)
    what = " and ".join(graphs)
    if not missing:
        return NormalModeVerdict([], [
            f"{what} hold DeepEP normal-mode dispatch/combine; allowed: intranode with a fixed worst-case token count "
            f"(--{WORST_TOKENS_FLAG}, {TORCH_API_DEEPEP}=1), the one case DeepEP can capture"])
    fix_capture = (f"or, to capture them, run on one node with --{WORST_TOKENS_FLAG} and {TORCH_API_DEEPEP}=1 on "
                   f"FastDeploy 2.6 or later")
    fixes = []
    if settings.cudagraph_only_prefill:
        fixes.append("set cudagraph_only_prefill: false (decode graphs use the capturable low-latency kernels)")
    if deepep.graph_opt_level >= 1 and not deepep.full_cuda_graph:
        fixes.append("set full_cuda_graph: true (or graph_opt_level: 0) in --graph-optimization-config")
    return NormalModeVerdict([
        f"with expert parallelism this deployment captures {what}; in them DeepEP's normal-mode dispatch/combine "
        f"wait on the CPU and cannot be captured (DeepEP #62: capture fails or every rank hangs), because "
        f"{'; '.join(missing)}. Fix: {'; '.join(fixes)}; {fix_capture}"], [])


def normal_mode_graph_problems(settings: DeploymentSettings) -> list[str]:
    """The refusals alone (what capture_plan collects)."""
    return judge_normal_mode_graphs(settings).problems


def _env_flag(value: str) -> bool:
    """As FastDeploy's envs.py reads its flags: bool(int(value)) (a value it cannot parse fails FastDeploy itself)."""
    return value.strip().isdigit() and int(value) != 0


def graph_settings_of_config(launch_extra: Mapping[str, object], graph_extra: Mapping[str, object],
                             graph_opt_level: int, environment: Mapping[str, str], nnodes: int,
                             line: LineGraphs = LineGraphs()) -> DeepEPGraphSettings:
    """From a deployment config (plan, doctor): pass-through flags and keys, the server environment, and what the
    FastDeploy line planned for does (`line_graphs_of` its facts)."""
    return DeepEPGraphSettings(
        graph_opt_level=graph_opt_level,
        full_cuda_graph=bool(graph_extra.get("full_cuda_graph", True)),
        worst_num_tokens=bool(launch_extra.get(WORST_TOKENS_FLAG, False)),
        torch_api_deepep=_env_flag(str(environment.get(TORCH_API_DEEPEP, "0"))),
        nnodes=nnodes,
        line=line,
    )


def line_graphs_of(markers: Mapping[str, str]) -> LineGraphs:
    """A line's behaviour from its facts' markers (runner, ep.py); a marker not read stays unknown."""
    def yes(key: str) -> bool | None:
        value = markers.get(key)
        return None if value is None else value == "yes"

    split = markers.get("GPUModelRunner.capture_model_prefill_and_mixed.captures_graphs")
    return LineGraphs(
        captures_prefill_only=yes("GPUModelRunner.capture_model.prefill_only_branch"),
        # a runner facts were read from, without the method, never captures split prefill graphs
        captures_split_prefill=(split == "yes") if split is not None else
        (False if "GPUModelRunner.capture_model.captures_graphs" in markers else None),
        worst_tokens_guard=markers.get("EPPrefillRunner.dispatch.num_worst_tokens"),
    )


def graph_settings_of_fd_config(fd_config: object, line: LineGraphs) -> DeepEPGraphSettings:
    """From FastDeploy's FDConfig in a worker, at start-up (FD_USE_PFCC_DEEP_EP read as FastDeploy's envs.py does)."""
    graph = getattr(fd_config, "graph_opt_config", None)
    parallel = getattr(fd_config, "parallel_config", None)
    return DeepEPGraphSettings(
        graph_opt_level=int(getattr(graph, "graph_opt_level", 0) or 0),
        full_cuda_graph=bool(getattr(graph, "full_cuda_graph", True)),
        worst_num_tokens=bool(getattr(parallel, "ep_prefill_use_worst_num_tokens", False)),
        torch_api_deepep=_env_flag(os.environ.get(TORCH_API_DEEPEP, "0")),
        nnodes=int(getattr(fd_config, "nnode", None) or getattr(parallel, "nnode", None) or 1),
        line=line,
    )
