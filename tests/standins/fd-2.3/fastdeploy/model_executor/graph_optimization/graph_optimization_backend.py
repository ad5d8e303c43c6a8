"""Stand-in GraphOptBackend of 2.3 at 0df488c7 (2025-11-06): __init__(runnable, fd_config), __call__(**kwargs);
a forward runs eagerly (dy_runnable) when graphs are off for the step or it has more tokens than
cudagraph_switch_threshold (the largest captured size with graph_opt_level 0), else through
CudaGraphPiecewiseBackend."""
from typing import Callable

from .cudagraph_piecewise_backend import CudaGraphPiecewiseBackend


class GraphOptBackend:
    cudagraph_piecewise_backend = None

    def __init__(self, runnable: Callable, fd_config):
        self.runnable = runnable
        self.dy_runnable = runnable
        self.fd_config = fd_config
        self.max_captre_size = fd_config.graph_opt_config.cudagraph_capture_sizes[0]
        dy2st = fd_config.graph_opt_config.graph_opt_level > 0
        self.cudagraph_switch_threshold = 1024 if dy2st else self.max_captre_size

    def __call__(self, **kwargs):
        if not self.fd_config.graph_opt_config.use_cudagraph:
            return self.runnable(**kwargs)
        if self.cudagraph_piecewise_backend is None:
            self.cudagraph_piecewise_backend = CudaGraphPiecewiseBackend(
                fd_config=self.fd_config, runnable=self.runnable)
        real_shape = kwargs["forward_meta"].ids_remove_padding.shape[0]
        if (not kwargs["forward_meta"].step_use_cudagraph) or (real_shape > self.cudagraph_switch_threshold):
            return self.dy_runnable(**kwargs)
        return self.cudagraph_piecewise_backend.__call__(**kwargs)

    def clear_cudagraph_piecewise_backend(self):
        self.cudagraph_piecewise_backend.clear_graph()
