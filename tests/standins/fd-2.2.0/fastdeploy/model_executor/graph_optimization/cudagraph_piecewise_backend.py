"""Stand-in CudaGraphPiecewiseBackend of 2.2.0 at fa236927 (2025-09-08): (fd_config, runnable), entries keyed by
token count read from the ids_remove_padding keyword, one output_buffer per entry, run_static_model(entry, **kwargs)."""
from dataclasses import dataclass
from typing import Callable, Optional

import paddle
from fake_cuda import FakeGraph
from standin_common import BackendCommon


@dataclass
class ConcreteSizeEntry:
    real_shape: int
    use_cudagraph: bool = True
    captured: bool = False
    runnable: Callable = None
    num_finished_warmup: int = 0
    cuda_graph: Optional[FakeGraph] = None
    output_buffer: Optional[paddle.Tensor] = None


class CudaGraphPiecewiseBackend(BackendCommon):
    concrete_size_entries: dict  # built by _create_entry_dict, as FastDeploy's

    def __init__(self, fd_config, runnable: Callable):
        self.fd_config = fd_config
        self.runnable = runnable
        graph = fd_config.graph_opt_config
        self.cudagraph_capture_sizes = graph.cudagraph_capture_sizes
        self.warm_up_size = graph.cudagraph_num_of_warmups
        self.real_shape_to_captured_size = graph.real_shape_to_captured_size
        self.static_calls = []
        self._create_entry_dict()

    def _key(self, shape, static_prefill):
        return shape

    def run_static_model(self, entry: ConcreteSizeEntry, **kwargs):
        return self._static(entry, **kwargs)

    def __call__(self, **kwargs):
        real_shape = kwargs["ids_remove_padding"].shape[0]
        entry = self.concrete_size_entries.get(self.real_shape_to_captured_size[real_shape])
        if entry.runnable is None:
            entry.runnable = self.runnable
        if not entry.use_cudagraph:
            return entry.runnable(**kwargs)
        if self.fd_config.graph_opt_config.graph_opt_level > 0:
            return self.run_static_model(entry, **kwargs)
        if entry.cuda_graph is None:
            self._capture(entry, **kwargs)
        return self._replay(entry)

    def clear_graph(self):
        self._create_entry_dict()
