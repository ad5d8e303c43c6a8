"""Stand-in GraphOptBackend of develop at e53f5184 (2026-04-15): __init__(runnable, fd_config), __call__(**kwargs);
graphs off for the step, a prefill in the batch (unless static split graphs serve it up to the largest prefill
size) or more tokens than the largest captured size run eagerly (dy_runnable), else CudaGraphPiecewiseBackend."""
from typing import Callable

from .cudagraph_piecewise_backend import CudaGraphPiecewiseBackend


class GraphOptBackend:
    cudagraph_piecewise_backend = None

    def __init__(self, runnable: Callable, fd_config):
        self.runnable = runnable
        self.dy_runnable = runnable
        self.fd_config = fd_config
        self.max_captre_size = fd_config.graph_opt_config.cudagraph_capture_sizes[0]
        self.max_captre_size_prefill = fd_config.graph_opt_config.max_capture_shape_prefill

    def __call__(self, **kwargs):
        graph = self.fd_config.graph_opt_config
        if not graph.use_cudagraph:
            return self.runnable(**kwargs)
        if self.cudagraph_piecewise_backend is None:
            self.cudagraph_piecewise_backend = CudaGraphPiecewiseBackend(
                fd_config=self.fd_config, dy_runnable=self.dy_runnable, runnable=self.runnable)
        meta = kwargs["forward_meta"]
        real_shape = meta.ids_remove_padding.shape[0]
        skip = not meta.step_use_cudagraph
        if not skip:
            if meta.exist_prefill:
                split = graph.graph_opt_level > 0 and not graph.full_cuda_graph
                skip = real_shape > self.max_captre_size_prefill if split else True
            else:
                skip = real_shape > self.max_captre_size
        if skip:
            return self.dy_runnable(**kwargs)
        return self.cudagraph_piecewise_backend.__call__(**kwargs)

    def clear_cudagraph_piecewise_backend(self):
        self.cudagraph_piecewise_backend.clear_graph()
