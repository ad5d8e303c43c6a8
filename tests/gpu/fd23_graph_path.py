"""FastDeploy 2.3's decode graph path on a real GPU, reduced to what a decode step touches, for the GPU scripts that
drive the plugin's patches end to end (test_gpu_metrics' worker, benchmarks/serving_replay_overhead.py).

Modelled on FastDeploy 2.3 at 0df488c7 (the release the fd-2.3 stand-in models): GraphOptBackend runs a step eagerly
when graphs are off for it or it has more tokens than the largest captured size, else CudaGraphPiecewiseBackend looks
up the entry of the padded token count, runs it eagerly where the entry does not use graphs, warms up and captures it
on the framework's current stream on first use, and replays it. torch stands in for Paddle (torch_device.py).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import torch
from torch_device import FrameworkGraph, TorchFrameworkDevice

from fastdeploy_cudagraph_ext.flags import Settings
from fastdeploy_cudagraph_ext.patch import patch_cudagraph_piecewise_backend, patch_graph_opt_backend
from fastdeploy_cudagraph_ext.registry import Variant

SIZES = [4, 2, 1]  # captured token counts, largest first (as FastDeploy sorts them)
WARMUPS = 2
DEVICE = TorchFrameworkDevice()
TOKEN_KEYED = Variant("token_keyed", {"output_buffers": "output_buffers"})  # a 2.2.x-2.4 line's spelling


class Entry:
    def __init__(self, size: int) -> None:
        self.real_shape, self.use_cudagraph, self.captured = size, True, False
        self.cuda_graph, self.output_buffers, self.num_finished_warmup = None, [], 0


class PiecewiseBackend:
    """2.3's CudaGraphPiecewiseBackend: entry by padded token count; warmups, capture and replay in the call whose
    entry is uncaptured."""

    def __init__(self, fd_config: object, runnable: Callable) -> None:
        self.fd_config, self.runnable = fd_config, runnable
        self.real_shape_to_captured_size = fd_config.graph_opt_config.real_shape_to_captured_size
        self.concrete_size_entries = {size: Entry(size) for size in SIZES}

    def __call__(self, **kwargs: object) -> object:
        tokens = kwargs["forward_meta"].ids_remove_padding.shape[0]
        entry = self.concrete_size_entries[self.real_shape_to_captured_size[tokens]]
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
    """2.3's GraphOptBackend: graphs off for the step, or more tokens than the largest size -> eager; else the
    piecewise backend (of `piecewise_class`)."""

    piecewise_class: type = PiecewiseBackend

    def __init__(self, runnable: Callable, fd_config: object) -> None:
        self.runnable, self.fd_config = runnable, fd_config
        self.cudagraph_piecewise_backend = self.piecewise_class(fd_config, runnable)

    def __call__(self, **kwargs: object) -> object:
        if not self.fd_config.graph_opt_config.use_cudagraph:
            return self.runnable(**kwargs)
        meta = kwargs["forward_meta"]
        if not meta.step_use_cudagraph or meta.ids_remove_padding.shape[0] > SIZES[0]:
            return self.runnable(**kwargs)
        return self.cudagraph_piecewise_backend(**kwargs)


def patched_classes(settings: Settings = Settings()) -> tuple[type, type]:
    """(piecewise backend, graph-opt backend) with the plugin's patches applied, as subclasses: the graph-opt backend
    builds the patched piecewise backend."""
    piecewise = type("PatchedPiecewiseBackend", (PiecewiseBackend,),
                     patch_cudagraph_piecewise_backend.build(PiecewiseBackend, TOKEN_KEYED, settings))
    graph_opt = type("PatchedGraphOptBackend", (GraphOptBackend,),
                     {**patch_graph_opt_backend.build(GraphOptBackend, "default", settings), "piecewise_class": piecewise})
    return piecewise, graph_opt


def fd_config() -> SimpleNamespace:
    """The FDConfig fields this path reads: graphs on, dynamic graphs, 3 tokens padded to 4."""
    return SimpleNamespace(graph_opt_config=SimpleNamespace(
        graph_opt_level=0, use_cudagraph=True, real_shape_to_captured_size={1: 1, 2: 2, 3: 4, 4: 4}))


def forward_meta(tokens: int, prefill: bool = False) -> SimpleNamespace:
    """A step's ForwardMeta: `tokens` tokens; a step with a prefill in it does not use graphs (as the runner sets)."""
    return SimpleNamespace(ids_remove_padding=torch.empty(tokens, device="cuda"), exist_prefill=prefill,
                           step_use_cudagraph=not prefill)
