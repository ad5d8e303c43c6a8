"""Stand-in CudaGraphPiecewiseBackend (2.3 at 0df488c7, develop at e53f5184): warmup, capture on the
framework's current stream, replay. Develop keys MTP graphs by running requests through
graph_opt_config.real_bsz_to_captured_size when speculative decoding is on (and every value is set)."""
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import paddle

from fastdeploy import ERA
from fake_cuda import FakeGraph, Runtime


@dataclass
class ConcreteSizeEntry:
    real_shape: int
    use_cudagraph: bool = True
    captured: bool = False
    runnable: Callable = None
    num_finished_warmup: int = 0
    cuda_graph: Optional[FakeGraph] = None
    output_buffers: List[Optional[paddle.Tensor]] = field(default_factory=list)


class _Common:
    def _create_entry_dict(self):
        self.concrete_size_entries = {}
        for shape in self.cudagraph_capture_sizes:
            self.concrete_size_entries[self._key(shape, False)] = ConcreteSizeEntry(real_shape=shape)
        for shape in getattr(self, "cudagraph_capture_sizes_prefill", []):  # develop: static prefill entries
            self.concrete_size_entries[self._key(shape, True)] = ConcreteSizeEntry(real_shape=shape)

    def _warmup(self, entry, **kwargs):
        for _ in range(entry.num_finished_warmup, self.warm_up_size):
            entry.num_finished_warmup += 1
            entry.runnable(**kwargs)

    def _capture(self, entry, **kwargs):
        self._warmup(entry, **kwargs)
        graph = FakeGraph(Runtime.device)
        Runtime.device.synchronize()
        graph.capture_begin()
        outputs = entry.runnable(**kwargs)
        outputs = [outputs] if isinstance(outputs, paddle.Tensor) else outputs
        graph.capture_end()
        entry.cuda_graph = graph
        for output in outputs:
            buffer = paddle.zeros_like(output)
            output._share_buffer_to(buffer)  # the buffer aliases the graph's static output
            entry.output_buffers.append(buffer)
        Runtime.device.synchronize()

    def _replay(self, entry):
        entry.cuda_graph.replay()
        return entry.output_buffers[0] if len(entry.output_buffers) == 1 else entry.output_buffers

    def _static(self, entry, **kwargs):
        self.static_calls.append(sorted(kwargs))
        if not entry.captured:
            self._warmup(entry, **kwargs)
            entry.captured = True
        return entry.runnable(**kwargs)


if ERA == "2.3":

    class CudaGraphPiecewiseBackend(_Common):
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
            real_shape = kwargs["forward_meta"].ids_remove_padding.shape[0]
            entry = self.concrete_size_entries.get(self.real_shape_to_captured_size[real_shape])
            assert entry is not None
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

else:

    class CudaGraphPiecewiseBackend(_Common):
        def __init__(self, fd_config, dy_runnable: Callable, runnable: Callable):
            self.fd_config = fd_config
            self.dy_runnable = dy_runnable
            self.runnable = runnable
            graph = fd_config.graph_opt_config
            self.cudagraph_capture_sizes = graph.cudagraph_capture_sizes
            self.cudagraph_capture_sizes_prefill = graph.cudagraph_capture_sizes_prefill
            self.warm_up_size = graph.cudagraph_num_of_warmups
            self.real_shape_to_captured_size = graph.real_shape_to_captured_size
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
                real_shape = self.real_bsz_to_captured_size[max(1, forward_meta.real_bsz)]
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
