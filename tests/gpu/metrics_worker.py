"""One worker for test_gpu_metrics.py: FastDeploy 2.3's graph path (GraphOptBackend -> CudaGraphPiecewiseBackend,
modelled from the real sources, entries keyed by padded token count) on a real GPU, both wrapped by the plugin's
patches, captured through capture_model, then serving the token counts given in argv. Prints its counts as JSON."""
from __future__ import annotations

import json
import logging
import os
import sys
from types import SimpleNamespace

import torch
from torch_device import FrameworkGraph, TorchFrameworkDevice

from fastdeploy_cudagraph_ext import metrics
from fastdeploy_cudagraph_ext.flags import Settings
from fastdeploy_cudagraph_ext.metrics import STATS
from fastdeploy_cudagraph_ext.patch import patch_cudagraph_piecewise_backend, patch_graph_opt_backend
from fastdeploy_cudagraph_ext.registry import Variant
from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy

SIZES = [4, 2, 1]
WARMUPS = 2


class Entry:
    def __init__(self, size: int) -> None:
        self.real_shape, self.use_cudagraph, self.captured = size, True, False
        self.cuda_graph, self.output_buffers, self.num_finished_warmup = None, [], 0


class PiecewiseBackend:
    """2.3: warmups, capture on the framework's current stream and replay in the call whose entry is uncaptured."""

    def __init__(self, fd_config: object, runnable) -> None:
        self.fd_config, self.runnable = fd_config, runnable
        self.real_shape_to_captured_size = fd_config.graph_opt_config.real_shape_to_captured_size
        self.concrete_size_entries = {size: Entry(size) for size in SIZES}

    def __call__(self, **kwargs):
        entry = self.concrete_size_entries[self.real_shape_to_captured_size[kwargs["forward_meta"].tokens]]
        if not entry.use_cudagraph:
            return self.runnable(**kwargs)
        if entry.cuda_graph is None:
            for _ in range(WARMUPS):
                self.runnable(**kwargs)
            graph = FrameworkGraph(DEVICE)
            with graph.capture():
                out = self.runnable(**kwargs)
            entry.cuda_graph, entry.output_buffers = graph, [out]
        entry.cuda_graph.replay()
        return entry.output_buffers[0]

    def clear_graph(self) -> None:
        self.concrete_size_entries = {size: Entry(size) for size in SIZES}


class GraphOptBackend:
    """2.3: graphs off for the step, or more tokens than the largest size -> eager; else the piecewise backend."""

    def __init__(self, runnable, fd_config: object) -> None:
        self.runnable, self.fd_config = runnable, fd_config
        self.cudagraph_piecewise_backend = Piecewise(fd_config, runnable)

    def __call__(self, **kwargs):
        if not self.fd_config.graph_opt_config.use_cudagraph:
            return self.runnable(**kwargs)
        meta = kwargs["forward_meta"]
        if not meta.step_use_cudagraph or meta.ids_remove_padding.shape[0] > SIZES[0]:
            return self.runnable(**kwargs)
        return self.cudagraph_piecewise_backend(**kwargs)


DEVICE = TorchFrameworkDevice()
TOKEN_KEYED = Variant("token_keyed", {"output_buffers": "output_buffers"})  # a 2.2.x-2.4 line's spelling
Piecewise = type("Piecewise", (PiecewiseBackend,),
                 patch_cudagraph_piecewise_backend.build(PiecewiseBackend, TOKEN_KEYED, Settings()))
GraphOpt = type("GraphOpt", (GraphOptBackend,), patch_graph_opt_backend.build(GraphOptBackend, "default", Settings()))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    STATS.start(os.environ)
    install_policy(CaptureStreamPolicy(DEVICE, C10Status(follows_framework=True)))
    dev = torch.cuda.current_device()
    x = torch.arange(8, dtype=torch.float32, device="cuda")
    out = torch.zeros(8, device="cuda")

    def runnable(**kwargs):
        with DEVICE.framework_ops(dev):
            torch.mul(x, 2.0, out=out)
            return out

    config = SimpleNamespace(graph_opt_config=SimpleNamespace(
        graph_opt_level=0, use_cudagraph=True, real_shape_to_captured_size={1: 1, 2: 2, 3: 4, 4: 4}))
    model = GraphOpt(runnable, config)

    def forward(tokens: int, prefill: bool = False):
        meta = SimpleNamespace(ids_remove_padding=torch.empty(tokens, device="cuda"), tokens=tokens,
                               exist_prefill=prefill, step_use_cudagraph=not prefill)
        return model(forward_meta=meta)

    def capture_model(runner: object) -> None:
        for size in SIZES:
            forward(size)

    metrics.reports_capture(capture_model)(model)
    model.cudagraph_piecewise_backend.concrete_size_entries[1].use_cudagraph = False  # FastDeploy runs 1 eagerly
    for tokens in json.loads(sys.argv[1]):
        result = forward(abs(tokens), prefill=tokens < 0)  # a negative count: a step with a prefill in it
        with DEVICE.framework_ops(dev):
            assert torch.equal(result, x * 2.0), tokens
    torch.cuda.synchronize()
    logging.getLogger("fastdeploy_cudagraph_ext").info(STATS.coverage_line())
    print(json.dumps({"pid": os.getpid(), "replays": STATS.replays, "padded": STATS.padded,
                      "eager": STATS.eager_steps, "captures": sorted(STATS.captures)}))


if __name__ == "__main__":
    main()
