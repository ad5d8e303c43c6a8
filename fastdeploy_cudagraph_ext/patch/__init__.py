"""Every change this plugin makes to FastDeploy, in one place (vllm-ascend style).

All patches run in the worker processes (where capture_model() runs), applied when FastDeploy
imports the target module. Each one wraps FastDeploy's own method around a context instead of
re-implementing it, is checked against the shapes in `patches/*.json`, and is fully revertible.

** 1. capture_stream **
   Symbols: cudagraph_piecewise_backend.CudaGraphPiecewiseBackend.__call__, .clear_graph
   Why:     capture on Paddle's compute stream leaves torch-API DeepEP (c10 current stream) outside
            the graph, or fails with the legacy-stream error.
   How:     warmup/capture inside the capture scope (dedicated non-blocking stream, c10 in step);
            replays ordered by stream waits, no device synchronize.
   PR:      FastDeploy #7344 (closed).  Removal: when FastDeploy captures on its own stream with c10 in step.
** 2. mtp_capture_sizing **
   Symbols: gpu_model_runner.GPUModelRunner.__init__, .capture_model
   Why:     MTP warmups use size/2 (2.2-2.4) or a silent floor of size/(k+1) (develop); no DeepEP cap check.
   How:     plan validated before weights load; planned loop batch=size/(k+1) where FastDeploy is wrong.
   PR:      FastDeploy #7215.  Removal: when FastDeploy validates sizes against k+1 and the cap.
** 3. xpu_mtp_capture_sizing **
   Symbols: xpu_model_runner.XPUModelRunner.capture_model
   Why:     the XPU MTP capture PRs hard-code k=0 and drop accept_all_drafts.
   How:     the same planned loop with the real k; "not needed" where XPU captures no graphs.
   PR:      FastDeploy #7761, #8061.  Removal: when the XPU runner uses the configured k.
** 4. deepep_transition_clean **
   Symbols: gpu_model_runner.GPUModelRunner.initialize_forward_meta
   Why:     the collective low-latency buffer clean belongs at the agreed prefill->decode step, eagerly.
   How:     after FastDeploy agrees the phase, clean once on every EP rank (or every decode step on request).
   PR:      none.  Removal: when FastDeploy cleans at the transition.
** 5. moe_inline_clean_scope ** and ** 6. ep_runner_inline_clean **
   Symbols: fused_moe_backend_base.MoEMethodBase.apply; ep.EPRunner.clean_low_latency_buffer
   Why:     FastDeploy's in-forward clean puts two NVSHMEM barriers into every decode graph.
   How:     apply runs in a scope in which the runners' clean is skipped.
   PR:      none (SGLang #11666 for the pattern).  Removal: with patch 4.
** 7. deepep_capture_checks **
   Symbols: ep.DeepEPEngine.low_latency_dispatch/_combine (+ _two_stage)
   Why:     odd low-latency call counts replay on the wrong buffer half; hooks must run in the graph.
   How:     counted and hook-checked under capture only; errors at capture time.
   PR:      none.  Removal: when DeepEP/FastDeploy check parity themselves.
** 8. deepep_buffer_manager_clean **
   Symbols: ep.DeepEPBufferManager.clean_low_latency_buffer (added)
   Why:     PR #7344 called it; no FastDeploy release defines it.
   How:     cleans through the engine the manager holds.
   PR:      FastDeploy #7344.  Removal: if FastDeploy adds it.
"""
from __future__ import annotations

from ..registry import Patch
from . import (
    patch_cudagraph_piecewise_backend,
    patch_deepep_buffer_manager,
    patch_deepep_engine,
    patch_ep_runner_clean,
    patch_gpu_model_runner_capture,
    patch_gpu_model_runner_step,
    patch_moe_apply,
    patch_xpu_model_runner_capture,
)

ALL_PATCHES: list[Patch] = [
    patch_cudagraph_piecewise_backend.PATCH,
    patch_gpu_model_runner_capture.PATCH,
    patch_xpu_model_runner_capture.PATCH,
    patch_gpu_model_runner_step.PATCH,
    patch_moe_apply.PATCH,
    patch_ep_runner_clean.PATCH,
    patch_deepep_engine.PATCH,
    patch_deepep_buffer_manager.PATCH,
]
