"""GPUModelRunner: the DeepEP runner gate (before weights load), and initialize_forward_meta: clean DeepEP's
low-latency buffer once, eagerly, at prefill->decode, the buffer created first; the MTP draft model's phase kept
equal to the agreed one where FastDeploy lets it drift."""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Mapping

from .. import deepep_agreement, deepep_protocol
from ..capture_plan import PlanError
from ..deepep_graphs import graph_settings_of_fd_config, judge_normal_mode_graphs, line_graphs_of
from ..fd_config import CONFIG_READS, deployment_settings, is_mixed_expert_parallel, moe_phase, uses_expert_parallel
from ..fd_facts import ModuleFacts
from ..flags import Settings
from ..metrics import STATS
from ..registry import ANY_VARIANT, NO_FACTS, Choice, Contract, ContractBroken, Patch, Variant
from .patch_gpu_model_runner_capture import COUNTED, counted, counted_methods
from ..stream_policy import get_policy

MODULE = "fastdeploy.worker.gpu_model_runner"
EP_MODULE = "fastdeploy.model_executor.layers.moe.ep"
CONFIG_MODULE = "fastdeploy.config"
# The markers the runner gate reads (the DeepEP graph rule, the EP group's attribute): chosen with the variant
# from the facts the registry judged the patch on, so the gate reads no source again.
GATE_MARKERS = ("GPUModelRunner.capture_model.captures_graphs", "GPUModelRunner.capture_model.prefill_only_branch",
                "GPUModelRunner.capture_model_prefill_and_mixed.captures_graphs",
                "EPPrefillRunner.dispatch.num_worst_tokens", "ParallelConfig.expert_parallel_group.attribute")
DRAFT_CONFIG_ATTRIBUTES = ("fd_config", "cfg")  # MTPProposer's config copy: cfg on 2.2.0, fd_config later
log = logging.getLogger("fastdeploy_cudagraph_ext")


def ensure_buffer(engine: object) -> None:
    """Create FastDeploy's DeepEP buffer (low-latency mode in mixed EP) now, eagerly, if it was dropped. Only
    2.2.x+ can drop it (clear_deep_ep_buffer), and they rebuild it with create_deep_ep_buffer."""
    if getattr(engine, "deepep_engine", None) is None and hasattr(engine, "create_deep_ep_buffer"):
        log.info("fastdeploy-cudagraph-ext: DeepEP buffer created eagerly before the low-latency clean")
        engine.create_deep_ep_buffer()


def clean_through_fastdeploy() -> None:
    """Clean through FastDeploy's engine (its buffer created first); no engine yet means nothing ran on the buffer."""
    engine = deepep_protocol.current_engine()
    if engine is not None:
        with get_policy().eager_extension_scope():
            ensure_buffer(engine)
            engine.clean_low_latency_buffer()
        STATS.deepep_cleaned()


def _new_protocol(settings: Settings) -> deepep_protocol.LowLatencyBufferProtocol:
    return deepep_protocol.LowLatencyBufferProtocol(
        clean=clean_through_fastdeploy,
        is_capturing=lambda: get_policy().device.is_capturing(),
        clean_every_decode=settings.clean_every_decode,
    )


def _force_draft_phase(runner: object, holder: str, phase: str | None) -> None:
    """The draft model's config copy gets the agreed phase where its MoE reads it (model_config/parallel_config)."""
    proposer = getattr(runner, "proposer", None)
    draft = next((getattr(proposer, a) for a in DRAFT_CONFIG_ATTRIBUTES if getattr(proposer, a, None) is not None),
                 None)
    if draft is not None and phase is not None:
        getattr(draft, holder).moe_phase.phase = phase


def _wrap(original: Callable, variant: str, settings: Settings) -> Callable:
    new_protocol = functools.partial(_new_protocol, settings)
    draft_holder = variant.removeprefix("force_draft_phase_on_") if variant.startswith("force_draft_phase") else None

    @functools.wraps(original)
    def initialize_forward_meta(self: object, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)  # agrees the phase across EP ranks and sets moe_phase
        if is_mixed_expert_parallel(self.fd_config):
            phase = moe_phase(self.fd_config)
            if draft_holder is not None:
                _force_draft_phase(self, draft_holder, phase)
            deepep_protocol.get_protocol(new_protocol).on_step(phase)
        return result

    return initialize_forward_meta


def _rank_plan_of(fd_config: object, k: int, qp_depth: int | None) -> Callable[[], dict]:
    """The deployment's part of this rank's plan, read when the exchange runs (after the plan installed sizes)."""
    from .. import __version__
    from ..doctor import fastdeploy_version

    def plan() -> dict:
        graph = fd_config.graph_opt_config
        sizes = graph.cudagraph_capture_sizes if graph.use_cudagraph else []
        return {"capture_sizes": tuple(sorted(sizes or [], reverse=True)),
                "num_speculative_tokens": k,
                "hidden_size": int(fd_config.model_config.hidden_size),
                "nvshmem_qp_depth": "unset" if qp_depth is None else str(qp_depth),
                "plugin_version": __version__, "fastdeploy_version": fastdeploy_version() or "unknown"}

    return plan


def gate_runner(fd_config: object, settings: Settings, variant: Variant) -> dict[str, object]:
    """The runner gate, before FastDeploy builds the model: refuse normal-mode DeepEP kernels in graphs; record
    this rank's plan for the cross-rank agreement."""
    markers = variant.line
    deployment = deployment_settings(fd_config, settings, counted(variant))
    deployment = dataclasses.replace(deployment, deepep=graph_settings_of_fd_config(fd_config, line_graphs_of(markers)))
    verdict = judge_normal_mode_graphs(deployment)
    if verdict.problems:
        raise PlanError([f"fastdeploy-cudagraph-ext refuses to start this worker before loading weights: {p}"
                         for p in verdict.problems])
    deepep_protocol.normal_mode_captures.allowed = bool(verdict.allowed)
    for allowed in verdict.allowed:
        log.info("fastdeploy-cudagraph-ext: %s", allowed)
    if uses_expert_parallel(fd_config):
        group_attribute = markers.get("ParallelConfig.expert_parallel_group.attribute", "none")
        group = getattr(fd_config.parallel_config, group_attribute, None)  # "none": no ParallelConfig has it
        if group is None:
            where = "this line's ParallelConfig has no EP group attribute" if group_attribute == "none" else \
                f"ParallelConfig.{group_attribute}"
            raise PlanError([f"fastdeploy-cudagraph-ext refuses to start this worker: expert parallelism is on but "
                             f"FastDeploy's EP process group was not found ({where}); the "
                             f"ranks could not agree on their DeepEP plan. Use a FastDeploy release listed in "
                             f"README's compatibility table"])
        exchange = deepep_agreement.exchange
        exchange.deployment = _rank_plan_of(fd_config, deployment.num_speculative_tokens, deployment.nvshmem_qp_depth)
        exchange.all_gather = deepep_agreement.paddle_all_gather(group)
        exchange.ready()  # runs now only if FastDeploy built its DeepEP engine before this runner
    return {}


def choose(facts: Mapping[str, ModuleFacts]) -> Choice:
    """Does FastDeploy write the agreed phase to the draft model's config where it writes the target's (which is
    where the MoE reads it), or must the plugin? Both markers of initialize_forward_meta."""
    markers = facts.get(MODULE, NO_FACTS).markers
    line = {COUNTED: counted_methods(facts),  # k as the line counts it, for the cross-rank plan
            **{k: v for m in (MODULE, EP_MODULE, CONFIG_MODULE) for k, v in facts.get(m, NO_FACTS).markers.items()
               if k in GATE_MARKERS}}
    draft = markers.get("GPUModelRunner.initialize_forward_meta.proposer_moe_phase_on")
    target = markers.get("GPUModelRunner.initialize_forward_meta.moe_phase_on")
    if draft is None or target not in ("model_config", "parallel_config"):
        raise ContractBroken(f"where initialize_forward_meta writes the MoE phase is not known (markers "
                             f"moe_phase_on={target!r}, proposer_moe_phase_on={draft!r})")
    if draft == target:
        return Choice("draft_phase_follows", f"FastDeploy writes the agreed phase to the draft model's {target}", line)
    written = "FastDeploy never writes the draft model's phase" if draft == "none" else \
        f"FastDeploy writes the draft model's phase to its {draft}"
    return Choice(f"force_draft_phase_on_{target}", f"{written} while MoE layers read {target}: the plugin writes "
                                                    f"the agreed phase there", line)


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"initialize_forward_meta": _wrap(cls.initialize_forward_meta, variant, settings)}


PATCH = Patch(
    name="deepep_transition_clean",
    group="deepep_mixed",
    module=MODULE,
    # Pass-through: 2.4 added is_dummy_or_profile_run; the wrapper reads only the agreed phase afterwards.
    contract=Contract(cls="GPUModelRunner", wraps=("initialize_forward_meta",),
                      names={ANY_VARIANT: ("GPUModelRunner.fd_config", "DeepEPEngine.clean_low_latency_buffer")},
                      # read with a fallback: the draft model's config copy (2.2.0 cfg, later fd_config), the
                      # buffer FastDeploy can drop and rebuild (2.2.x+), the hidden size from config.json
                      tolerates=(*CONFIG_READS, "GPUModelRunner.proposer", "MTPProposer.fd_config", "MTPProposer.cfg",
                                 "DeepEPEngine.deepep_engine", "DeepEPEngine.create_deep_ep_buffer",
                                 "ModelConfig.hidden_size", "ParallelConfig.ep_group"),
                      # where FastDeploy writes the agreed phase: fd_config.moe_phase reads it back from there
                      markers={"GPUModelRunner.initialize_forward_meta.moe_phase_on": ("model_config", "parallel_config")}),
    why=(
        "In mixed mode one DeepEP buffer serves normal (prefill) and low-latency (decode) kernels; it must be "
        "cleaned after normal kernels and before the next low-latency kernel, and the clean is a collective "
        "barrier. FastDeploy cleans inside every forward, so the barrier is recorded into every decode graph. "
        "2.2/2.3 never give the MTP draft model the agreed phase, so its MoE runs normal kernels in decode steps "
        "(and in their graphs). Deployments whose graphs hold normal-mode kernels die late or hang."
    ),
    how=(
        "Runner gate (before FastDeploy builds the model): refuses graphs that would hold DeepEP normal-mode "
        "kernels unless capturable (deepep_graphs.py, the rule plan and doctor apply) and records this rank's plan "
        "for the cross-rank agreement. Wraps initialize_forward_meta: after FastDeploy agreed the step's MoE phase "
        "across EP ranks, the draft model gets the same phase where the line lets it drift; the clean runs once, "
        "eagerly, on every rank, when the phase turns prefill->decode (or before every decode step with "
        "FD_CUDAGRAPH_EXT_CLEAN_EVERY_DECODE=1), after creating a dropped buffer. Idle ranks take the same step "
        "decision, so they clean too."
    ),
    related_pr="FastDeploy PR #7344 (closed) called DeepEPBufferManager.clean_low_latency_buffer, which no release "
    "defines; FastDeploy 2.4 writes the draft model's phase where its MoE reads it (no plugin write needed there).",
    removal_plan="Remove once FastDeploy cleans at the phase transition instead of inside the MoE forward, and "
    "refuses normal-mode DeepEP in graphs.",
    build=build,
    choose=choose,
    facts_from=(EP_MODULE, "fastdeploy.worker.model_runner_base", CONFIG_MODULE),
    on_runner_init=gate_runner,
)
