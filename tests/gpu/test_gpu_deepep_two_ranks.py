"""Real DeepEP (V1, torch API) on two GPUs through the plugin's patched path: low-latency dispatch/combine captured
on the capture stream (c10 in step) and replayed with the eager result; a normal-mode dispatch under capture is
refused before DeepEP runs. Skipped, with its reason, where deep_ep or a second GPU is missing.

The engine and runner below have FastDeploy's shapes (names and return order of ep.py: DeepEPEngine's low-latency
calls return the receive hook last; EPPrefillRunner.dispatch(x, topk_idx, topk_weights)); the plugin's own patch
builders wrap them, as the registry does with FastDeploy's classes.
"""
from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")
deep_ep = pytest.importorskip("deep_ep", reason="needs DeepEP (deep_ep) built with NVSHMEM on this machine")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs two CUDA GPUs (DeepEP's low-latency kernels are collective)")]

TOKENS, HIDDEN, EXPERTS, TOP_K = 128, 7168, 32, 8  # the design measurement's shape (cuda-facts.md E4/E5)


class Engine:
    """FastDeploy's DeepEPEngine shape over a real deep_ep.Buffer (hook mode, as FastDeploy always calls it)."""

    def __init__(self, buffer):
        self.buffer = buffer

    def low_latency_dispatch(self, hidden_states, topk_idx, expertwise_scale, use_fp8=False):
        recv, count, handle, _, hook = self.buffer.low_latency_dispatch(
            hidden_states, topk_idx, TOKENS, EXPERTS, use_fp8=use_fp8, async_finish=False, return_recv_hook=True)
        return recv, count, handle, hook

    def low_latency_combine(self, hidden_states, topk_idx, topk_weights, handle):
        out, _, hook = self.buffer.low_latency_combine(hidden_states, topk_idx, topk_weights, handle,
                                                       async_finish=False, return_recv_hook=True)
        return out, hook


class PrefillRunner:
    """FastDeploy's EPPrefillRunner shape: normal-mode dispatch (never reached under capture)."""

    num_worst_tokens = 0

    def __init__(self, buffer):
        self.buffer = buffer

    def dispatch(self, x, topk_idx, topk_weights, *args, **kwargs):
        layout = self.buffer.get_dispatch_layout(topk_idx, EXPERTS)
        return self.buffer.dispatch(x, topk_idx=topk_idx, topk_weights=topk_weights, num_tokens_per_rank=layout[0],
                                    num_tokens_per_rdma_rank=layout[1], is_token_in_rank=layout[3],
                                    num_tokens_per_expert=layout[2])

    def combine(self, tmp_ffn_out, handle, recv_topk_weights):
        return self.buffer.combine(tmp_ffn_out, handle, topk_weights=recv_topk_weights)


def _rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist
    from torch_device import FrameworkGraph, TorchFrameworkDevice, libc10_cuda_path

    from fastdeploy_cudagraph_ext import deepep_protocol
    from fastdeploy_cudagraph_ext.c10_bridge import c10_status
    from fastdeploy_cudagraph_ext.flags import Settings
    from fastdeploy_cudagraph_ext.patch import patch_deepep_engine, patch_ep_prefill_runner
    from fastdeploy_cudagraph_ext.stream_policy import CaptureStreamPolicy, install_policy

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    group = dist.new_group([0, 1])
    rdma = deep_ep.Buffer.get_low_latency_rdma_size_hint(TOKENS, HIDDEN, 2, EXPERTS)
    buffer = deep_ep.Buffer(group, 0, rdma, low_latency_mode=True, num_qps_per_rank=EXPERTS // 2)
    for cls, patch in ((Engine, patch_deepep_engine), (PrefillRunner, patch_ep_prefill_runner)):
        for name, wrapper in patch.build(cls, "default", Settings()).items():
            setattr(cls, name, wrapper)
    fw = TorchFrameworkDevice()
    policy = CaptureStreamPolicy(fw, c10_status(libc10_cuda_path(), "torch"), extensions_may_launch=lambda: True)
    install_policy(policy)
    engine, runner = Engine(buffer), PrefillRunner(buffer)
    torch.manual_seed(rank)
    x = torch.randn(TOKENS, HIDDEN, dtype=torch.bfloat16, device="cuda")
    topk_idx = torch.stack([torch.randperm(EXPERTS, device="cuda")[:TOP_K] for _ in range(TOKENS)]).long()
    topk_weights = torch.rand(TOKENS, TOP_K, device="cuda")
    torch.cuda.synchronize()  # inputs written on c10's stream; the forward runs on the framework's

    def moe_forward():
        recv, _, handle, hook = engine.low_latency_dispatch(x, topk_idx, None)
        hook()
        out, hook = engine.low_latency_combine(recv, topk_idx, topk_weights, handle)
        hook()
        return out

    with fw.framework_ops():
        eager = moe_forward().clone()
    dev = torch.cuda.current_device()
    graph = FrameworkGraph(fw, dev)
    with policy.capture_scope(dev), deepep_protocol.capture_audit("deepep"), graph.capture():
        captured = moe_forward()
    captured.zero_()
    torch.cuda.synchronize()
    for _ in range(3):
        with policy.replay_scope(dev):
            graph.replay()
    torch.cuda.synchronize()
    replayed = torch.allclose(captured.float(), eager.float(), atol=1e-2, rtol=1e-2)

    refusal = ""
    try:
        with policy.capture_scope(dev), deepep_protocol.capture_audit("deepep"), FrameworkGraph(fw, dev).capture():
            runner.dispatch(x, topk_idx, topk_weights)
    except deepep_protocol.DeepEPProtocolError as error:
        refusal = str(error)
    torch.cuda.synchronize()
    results.put((rank, replayed, refusal))
    dist.barrier(group)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_low_latency_calls_replay_and_normal_mode_is_refused_under_capture() -> None:
    import torch.multiprocessing as mp

    os.environ.setdefault("NVSHMEM_QP_DEPTH", str(2 * (TOKENS + 1)))  # >= 2*(cap+1), as the plugin requires
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_rank, args=(_free_port(), results), nprocs=2, start_method="spawn", join=True)
    outcomes = sorted(results.get(timeout=60) for _ in range(2))
    for rank, replayed, refusal in outcomes:
        assert replayed, f"rank {rank}: the replayed low-latency dispatch/combine differs from the eager one"
        assert "DeepEP normal-mode dispatch was reached while a CUDA graph is being captured" in refusal, (rank, refusal)
