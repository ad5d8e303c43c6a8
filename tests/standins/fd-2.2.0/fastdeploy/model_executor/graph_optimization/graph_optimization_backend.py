"""Stand-in GraphOptBackend of 2.2.0 at fa236927 (2025-09-08): __init__(runnable, fd_config), __call__(**kwargs);
a forward runs eagerly when graphs are off for the step or it has more tokens than max_captre_batch (the largest
captured size), else through CudaGraphPiecewiseBackend."""
from typing import Callable

from .cudagraph_piecewise_backend import CudaGraphPiecewiseBackend


class GraphOptBackend:
    cudagraph_piecewise_backend = None

    def __init__(self, runnable: Callable, fd_config):
        self.runnable = runnable
        self.fd_config = fd_config
        self.max_captre_batch = fd_config.graph_opt_config.cudagraph_capture_sizes[0]

    def __call__(self, **kwargs):
        if not self.fd_config.graph_opt_config.use_cudagraph:
            return self.runnable(**kwargs)
        if self.cudagraph_piecewise_backend is None:
            self.cudagraph_piecewise_backend = CudaGraphPiecewiseBackend(fd_config=self.fd_config,
                                                                         runnable=self.runnable)
        batch_size = kwargs["forward_meta"].ids_remove_padding.shape[0]
        if (not kwargs["forward_meta"].step_use_cudagraph) or (batch_size > self.max_captre_batch):
            return self.runnable(**kwargs)
        return self.cudagraph_piecewise_backend.__call__(**kwargs)

    def clear_cudagraph_piecewise_backend(self):
        self.cudagraph_piecewise_backend.clear_graph()
