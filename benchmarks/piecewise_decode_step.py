"""Piecewise decode step (cuda-facts.md E2): what ordering graph replays against the compute stream costs.

A step is L pieces; each piece = 2 eager kernels on the compute stream (an attention stand-in) and one
graph replay of K kernels, captured through the policy's capture_scope on its capture stream. Modes:
  eager         everything eager on the compute stream
  replay_sync   replay on the capture stream, then a device-wide synchronize (the closed FastDeploy PR #7344)
  policy        replay inside policy.replay_scope(): two stream waits, no synchronize
  limit         replay straight on the compute stream (no ordering needed: the lower bound)
Streams are modelled as in tests/gpu (framework stream apart from c10, c10 moved by the ctypes bridge).

Usage: PYTHONPATH=. python benchmarks/piecewise_decode_step.py [L K]   (default 40 30; also 54 60, 8 200)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "gpu")]  # the package and the torch model of Paddle's streams

from fastdeploy_cudagraph_ext.c10_bridge import c10_status  # noqa: E402
from fastdeploy_cudagraph_ext.stream_policy import CaptureStreamPolicy  # noqa: E402
from torch_device import FrameworkGraph, TorchFrameworkDevice, libc10_cuda_path  # noqa: E402

STEPS = 50
WARMUP = 5
REPEATS = 3
WIDTH = 4096


def piece(x: torch.Tensor, kernels: int) -> torch.Tensor:
    y = x
    for _ in range(kernels):
        y = y * 1.0001 + 0.0001  # E2's piece body, unchanged, so the numbers compare with cuda-facts.md
    return y


def build(pieces: int, kernels: int) -> tuple[TorchFrameworkDevice, CaptureStreamPolicy, list[torch.Tensor], list[FrameworkGraph]]:
    dev = torch.cuda.current_device()
    fw = TorchFrameworkDevice()
    status = c10_status(libc10_cuda_path(), framework="torch")
    if status.bridge is None:
        raise SystemExit(f"c10 bridge unavailable: {status.problem}")
    policy = CaptureStreamPolicy(fw, status, extensions_may_launch=lambda: True)
    xs = [torch.randn(WIDTH, device="cuda") for _ in range(pieces)]
    graphs = []
    for x in xs:
        with policy.capture_scope(dev):
            with fw.framework_ops(dev):
                piece(x, kernels)  # warmup
        graph = FrameworkGraph(fw, dev)
        with policy.capture_scope(dev):
            with graph.capture(), fw.framework_ops(dev):
                piece(x, kernels)
        graphs.append(graph)
    torch.cuda.synchronize()
    return fw, policy, xs, graphs


def bench(step: Callable[[], None]) -> float:
    """Best of REPEATS, ms per step."""
    best = float("inf")
    for _ in range(REPEATS):
        for _ in range(WARMUP):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / STEPS * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pieces", nargs="?", type=int, default=40, help="L: pieces per step")
    parser.add_argument("kernels", nargs="?", type=int, default=30, help="K: kernels captured per piece")
    args = parser.parse_args()
    L, K = args.pieces, args.kernels
    dev = torch.cuda.current_device()
    fw, policy, xs, graphs = build(L, K)

    def attention(i: int) -> None:
        (xs[i] * 0.5).add_(1.0)  # two eager kernels

    def eager() -> None:
        for i in range(L):
            attention(i)
            piece(xs[i], K)

    def replay_sync() -> None:
        for i in range(L):
            attention(i)
            graphs[i].replay()
            torch.cuda.synchronize()

    def policy_scope() -> None:
        for i in range(L):
            attention(i)
            with policy.replay_scope(dev):
                graphs[i].replay()

    def limit() -> None:
        for i in range(L):
            attention(i)
            graphs[i].graph.replay()  # on c10's current stream = the compute stream

    ms = {}
    with fw.framework_ops(dev):  # eager kernels of every mode run on the framework's compute stream
        for name, step in (("eager", eager), ("replay_sync", replay_sync), ("policy", policy_scope), ("limit", limit)):
            ms[name] = round(bench(step), 3)
    ratios = {
        "policy_over_limit": round(ms["policy"] / ms["limit"], 3),
        "sync_over_policy": round(ms["replay_sync"] / ms["policy"], 3),
        "eager_over_policy": round(ms["eager"] / ms["policy"], 3),
    }
    card = torch.cuda.get_device_name(dev)
    print(json.dumps({"card": card, "L": L, "K": K, "ms_per_step": ms, "ratios": ratios}))
    print(
        f"{card}  L={L} K={K}  eager {ms['eager']:.3f} ms | replay+sync {ms['replay_sync']:.3f} | "
        f"policy {ms['policy']:.3f} | limit {ms['limit']:.3f}  ->  policy/limit {ratios['policy_over_limit']:.3f}, "
        f"sync/policy {ratios['sync_over_policy']:.2f}, eager/policy {ratios['eager_over_policy']:.2f}"
    )


if __name__ == "__main__":
    main()
