"""Stand-in CudaGraphPiecewiseBackend of develop at e53f5184 (2026-04-15): (fd_config, dy_runnable, runnable),
entries keyed by (shape, is_static_prefill), run_static_model(entry, is_decode=False, **kwargs) with the strictly
descending decode capture order check; with speculative decoding (and every value of
graph_opt_config.real_bsz_to_captured_size set) MTP graphs are keyed by running requests."""
from dataclasses import dataclass, field
from typing import Callable, List, Optional

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
    output_buffers: List[Optional[paddle.Tensor]] = field(default_factory=list)


class CudaGraphPiecewiseBackend(BackendCommon):
    concrete_size_entries: dict  # built by _create_entry_dict, as FastDeploy's

    def __init__(self, fd_config, dy_runnable: Callable, runnable: Callable):
        self.fd_config = fd_config
        self.dy_runnable = dy_runnable
        self.runnable = runnable
        graph = fd_config.graph_opt_config
        self.cudagraph_capture_sizes = graph.cudagraph_capture_sizes
        self.cudagraph_capture_sizes_prefill = graph.cudagraph_capture_sizes_prefill
        self.warm_up_size = graph.cudagraph_num_of_warmups
        self.real_shape_to_captured_size = graph.real_shape_to_captured_size
        self.real_shape_to_captured_size_prefill = {}  # static prefill padding (cudagraph_only_prefill)
        self.dy2st = graph.graph_opt_level > 0
        self.speculative_decoding = getattr(getattr(fd_config, "speculative_config", None), "method", None) is not None
        self.real_bsz_to_captured_size = getattr(graph, "real_bsz_to_captured_size", {})
        self.full_cuda_graph = graph.full_cuda_graph
        self.static_calls = []
        self._decode_expected_sequence = sorted(self.cudagraph_capture_sizes, reverse=True)
        self._decode_capture_index = 0
        self._create_entry_dict()

    def _key(self, shape, static_prefill):
        return (shape, static_prefill)

    def _validate_decode_capture_order(self, shape: int) -> None:
        if self._decode_capture_index >= len(self._decode_expected_sequence):
            raise RuntimeError("all decode sizes are captured already")
        if shape != self._decode_expected_sequence[self._decode_capture_index]:
            raise RuntimeError(f"decode capture out of order: got {shape}, expected "
                               f"{self._decode_expected_sequence[self._decode_capture_index]}")
        self._decode_capture_index += 1

    def run_static_model(self, entry: ConcreteSizeEntry, is_decode: bool = False, **kwargs):
        if not entry.captured and is_decode:
            self._validate_decode_capture_order(entry.real_shape)
        return self._static(entry, **kwargs)

    def __call__(self, **kwargs):
        forward_meta = kwargs["forward_meta"]
        if self.speculative_decoding and all(self.real_bsz_to_captured_size.values()):
            running = forward_meta.real_bsz  # set on the host by the runner; else counted on the device
            if running <= 0:
                running = int((forward_meta.seq_lens_this_time > 0).astype("int32").sum())
            real_shape = self.real_bsz_to_captured_size[max(1, running)]
        else:
            real_shape = forward_meta.ids_remove_padding.shape[0]
        static_decode = not forward_meta.exist_prefill and self.full_cuda_graph and self.dy2st
        padded = self.real_shape_to_captured_size[real_shape]
        entry = self.concrete_size_entries.get((padded, False))
        assert entry is not None
        if entry.runnable is None:
            entry.runnable = self.dy_runnable
        if not entry.use_cudagraph:
            return entry.runnable(**kwargs)
        if static_decode:
            return self.run_static_model(entry, is_decode=static_decode, **kwargs)
        if entry.cuda_graph is None:
            assert real_shape == padded, "capture only with unpadded inputs"
            self._validate_decode_capture_order(padded)
            self._capture(entry, **kwargs)
        return self._replay(entry)

    def clear_graph(self):
        self._decode_capture_index = 0
        self._create_entry_dict()
