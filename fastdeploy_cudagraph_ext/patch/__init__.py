"""Every change this plugin makes to FastDeploy, in one place (vllm-ascend style), by feature group.

All patches run in the worker processes (where capture_model() runs), applied when FastDeploy imports
the target module. Each wraps FastDeploy's own method around a context instead of re-implementing it,
declares a contract (every FastDeploy name it touches: what it wraps, adds, passes by name, reads or writes,
with each line's spelling; see registry.py; tests/test_declared_names.py holds the code to it) and is fully
revertible.
A group applies all-or-nothing and is reverted alone; a refused group stops a worker only when its
deployment needs the group (decided when the model runner is built). Removing a patch: delete its file
and its entry in ALL_PATCHES (and its block below).

== group capture_stream == needed when CUDA graphs are on
** capture_stream **
   Symbol:  cudagraph_piecewise_backend.CudaGraphPiecewiseBackend.__call__, .clear_graph
   Why:     capture on Paddle's compute stream leaves torch-API DeepEP (c10 current stream) outside the
            graph, or fails with the legacy-stream error.
   How:     warmup/capture inside the capture scope (dedicated non-blocking stream, c10 in step); replays
            ordered by stream waits, no device synchronize. Entries found as the line keys them (2.2.0: the
            ids_remove_padding keyword, one output_buffer). Refused where the backend already has its own
            capture stream or synchronizes after replay (#7344's shape, markers own_capture_stream,
            synchronizes_after_replay); "not needed" on a non-CUDA Paddle (XPU), decided at the runner gate.
   PR:      FastDeploy #7344 (closed).
   Removal: when FastDeploy captures on its own stream with c10 in step.
** decode_step_metrics **
   Symbol:  graph_optimization_backend.GraphOptBackend.__call__
   Why:     FastDeploy runs decode steps eagerly, silently (graphs off for the step, prefill in the batch, over
            the largest size); operators cannot see how many nor why.
   How:     pass-through wrapper: notes the forward's tokens; when the forward returns, counts the replay the
            graph backend's wrapper noted, or an eager step with its reason when the forward did not reach the
            graph backend (metrics.py).
   PR:      none.
   Removal: when FastDeploy exports CUDA graph coverage metrics.

== group mtp_sizing == needed when CUDA graphs and MTP are on
** mtp_capture_sizing **
   Symbol:  gpu_model_runner.GPUModelRunner.capture_model (+ the plan at the runner gate)
   Why:     2.2/2.3 warm MTP graphs with size/2 requests (k=1 only); 2.4/2.5 floor size/(k+1) silently;
            nothing checks DeepEP's token cap.
   How:     plan validated and installed before FastDeploy copies the sizes (never re-scaling what 2.6/develop
            scaled), through init_with_cudagrpah_size with the line's keyword (2.2.0: max_num_seqs=); planned
            loop where FastDeploy halves (marker mtp_batch), FastDeploy's loop elsewhere. k counts for the
            speculative methods the line's FDConfig scales by k+1 (marker FDConfig.k_plus_1_methods: suffix
            on 2.5/2.6, ngram and suffix on develop; every accepted method on 2.2.0).
   PR:      FastDeploy #5670, #7215, #7301.
   Removal: when FastDeploy validates sizes against k+1 and the DeepEP cap.
** xpu_mtp_capture_sizing **
   Symbol:  xpu_model_runner.XPUModelRunner.capture_model (+ the plan at the runner gate)
   Why:     since #6152 the XPU loop captures with batch = size and no MTP branch.
   How:     the same plan; MTP decode capture runs the planned loop; "not needed" where XPU captures no graphs.
   PR:      FastDeploy #6152, #7761, #8061.
   Removal: when the XPU runner sizes MTP warmups with the configured k.

== group deepep_mixed == needed when CUDA graphs are on and EP runs in mixed mode
** deepep_transition_clean **
   Symbol:  gpu_model_runner.GPUModelRunner.initialize_forward_meta (+ the DeepEP runner gate)
   Why:     the collective low-latency buffer clean belongs at the agreed prefill->decode step, eagerly; graphs
            that would hold DeepEP normal-mode kernels die late or hang; 2.2/2.3 let the MTP draft's phase drift.
   How:     runner gate refuses normal-mode kernels in graphs unless capturable (deepep_graphs.py, as plan and
            doctor) and records the rank's plan for the agreement; after FastDeploy agrees the phase, the draft
            gets it where the line lets it drift (marker proposer_moe_phase_on), a dropped buffer is created,
            and the clean runs once on every EP rank (or every decode step on request).
   PR:      none.
   Removal: when FastDeploy cleans at the transition and refuses normal-mode DeepEP in graphs.
** deepep_engine_handle **
   Symbol:  ep.DeepEPEngine.__init__
   Why:     the transition clean must reach FastDeploy's engine (2.2.0 has no DeepEPBufferManager); ranks that
            plan different DeepEP work hang in the buffer's creation (DeepEP #208).
   How:     before FastDeploy's __init__: refused under capture; the ranks exchange their plan over
            ParallelConfig.ep_group (marker) once and all stop on a difference; then keeps the engine.
   PR:      none.
   Removal: with deepep_transition_clean; the exchange once FastDeploy checks the ranks agree.
** moe_inline_clean_scope **
   Symbol:  fused_moe_backend_base.MoEMethodBase.apply
   Why:     FastDeploy's in-forward clean puts two NVSHMEM barriers into every decode graph.
   How:     apply runs in a scope in which the runners' clean is skipped and the layer is remembered.
   PR:      none (SGLang #11666 for the pattern).
   Removal: with deepep_transition_clean.
** deepep_normal_mode_capture_check **
   Symbol:  ep.EPPrefillRunner.dispatch, .combine
   Why:     normal-mode kernels wait on the CPU and cannot be captured (DeepEP #62).
   How:     under capture they raise before DeepEP runs (layer and fix named; the capture is discarded), unless
            the gate allowed the capturable case and the runner passes num_worst_tokens.
   PR:      none (rtp-llm #1308, vLLM and TRT-LLM refuse the mode with graphs).
   Removal: when FastDeploy refuses normal-mode DeepEP in captured graphs.
** deepep_buffer_capture_guard **
   Symbol:  ep.DeepEPEngine.create_deep_ep_buffer (2.2.x+), .get_low_latency_buffer (2.2.0)
   Why:     a buffer created inside a captured forward allocates and synchronizes in the graph (SGLang #29942).
   How:     refused under capture before anything is allocated; the transition clean creates it eagerly.
   PR:      none.
   Removal: when FastDeploy or DeepEP refuse allocation during capture.
** ep_runner_inline_clean **
   Symbol:  ep.EPRunner.clean_low_latency_buffer
   Why:     the in-forward clean is reached through the EP runners.
   How:     returns without cleaning inside moe_inline_clean_scope's scope.
   PR:      none.
   Removal: with deepep_transition_clean.
** deepep_capture_checks **
   Symbol:  ep.DeepEPEngine.low_latency_dispatch/_combine (+ _two_stage where the line has them)
   Why:     odd low-latency call counts replay on the wrong buffer half; hooks must run in the graph.
   How:     counted and hook-checked under capture only; errors at capture time.
   PR:      none.
   Removal: when DeepEP/FastDeploy check parity themselves.
** deepep_buffer_manager_clean **
   Symbol:  ep.DeepEPBufferManager.clean_low_latency_buffer (added)
   Why:     PR #7344 called it; no FastDeploy release defines it.
   How:     cleans through FastDeploy's engine ("not needed" where there is no manager).
   PR:      FastDeploy #7344.
   Removal: if FastDeploy adds it.
"""
from __future__ import annotations

from ..fd_config import is_mixed_expert_parallel, speculative_method, speculative_tokens, uses_cudagraph
from ..registry import Need, Patch
from . import (
    patch_cudagraph_piecewise_backend,
    patch_deepep_buffer_guard,
    patch_deepep_buffer_manager,
    patch_deepep_engine,
    patch_deepep_engine_handle,
    patch_ep_prefill_runner,
    patch_ep_runner_clean,
    patch_gpu_model_runner_capture,
    patch_gpu_model_runner_step,
    patch_graph_opt_backend,
    patch_moe_apply,
    patch_xpu_model_runner_capture,
)

ALL_PATCHES: list[Patch] = [
    patch_cudagraph_piecewise_backend.PATCH,
    patch_graph_opt_backend.PATCH,
    patch_gpu_model_runner_capture.PATCH,
    patch_xpu_model_runner_capture.PATCH,
    patch_gpu_model_runner_step.PATCH,
    patch_deepep_engine_handle.PATCH,
    patch_moe_apply.PATCH,
    patch_ep_runner_clean.PATCH,
    patch_deepep_engine.PATCH,
    patch_deepep_buffer_manager.PATCH,
    patch_ep_prefill_runner.PATCH,
    patch_deepep_buffer_guard.PATCH,
]


def _graphs(fd_config: object) -> tuple[bool, str]:
    return (True, "CUDA graphs are on") if uses_cudagraph(fd_config) else (False, "CUDA graphs are off")


def _mtp(fd_config: object) -> tuple[bool, str]:
    graphs, why = _graphs(fd_config)
    if not graphs:
        return False, why
    # Asked only of a refused group, whose facts the registry cannot trust: any method counts, so a refused
    # sizing group never lets a speculative deployment start unchecked.
    k = speculative_tokens(fd_config, None)
    method = speculative_method(fd_config)
    return (True, f"CUDA graphs and speculative decoding ({method}, k={k}) are on") if k \
        else (False, "speculative decoding is off")


def _deepep_mixed(fd_config: object) -> tuple[bool, str]:
    graphs, why = _graphs(fd_config)
    if not graphs:
        return False, why
    if is_mixed_expert_parallel(fd_config):
        return True, "CUDA graphs are on and expert parallelism runs in mixed mode"
    return False, "expert parallelism is off or not in mixed mode"


NEEDS: list[Need] = [Need("capture_stream", _graphs), Need("mtp_sizing", _mtp), Need("deepep_mixed", _deepep_mixed)]

# Where the safe point is: the runner classes whose __init__ receives the real FDConfig.
RUNNERS: dict[str, str] = {
    "fastdeploy.worker.gpu_model_runner": "GPUModelRunner",
    "fastdeploy.worker.xpu_model_runner": "XPUModelRunner",
}
