"""Implementation shared by the per-era FastDeploy stand-ins (tests/standins/fd-<era>/fastdeploy).

Not a FastDeploy module: the era trees keep every class a patch targets, with that era's real
signatures, in FastDeploy's own module files (so facts read from their source see the real shapes),
and delegate the bodies here. Our own code, written from facts; device work goes through fake_cuda.
"""
import os
import sys

import paddle

import deep_ep_sim
from fake_cuda import FakeGraph, Runtime


class MoEPhase:
    def __init__(self, phase: str = "prefill") -> None:
        self.phase = phase

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        if value not in ("prefill", "decode"):
            raise ValueError(f"moe phase must be prefill or decode, got {value}")
        self._phase = value


class GraphConfigBase:
    """The capture-size fields of GraphOptimizationConfig and its padding map (real_shape_to_captured_size)."""

    def __init__(self, cudagraph_capture_sizes, use_cudagraph=True):
        self.use_cudagraph = use_cudagraph
        self.cudagraph_capture_sizes = list(cudagraph_capture_sizes)
        self.cudagraph_capture_sizes_prefill = [1, 2, 4, 8]
        self.cudagraph_only_prefill = False
        self.cudagraph_num_of_warmups = 2
        self.graph_opt_level = 0
        self.full_cuda_graph = True
        self.draft_model_use_cudagraph = False
        self.real_bsz_to_captured_size = {}
        self.flag_cudagraph_capture_sizes_initlized = False

    def _padding_map(self, max_capture_size):
        sizes = sorted({s for s in self.cudagraph_capture_sizes if s <= max_capture_size}, reverse=True)
        self.cudagraph_capture_sizes = sizes
        self.max_capture_size = sizes[0]
        ascending = sorted(sizes)
        self.real_shape_to_captured_size = {
            n: next(s for s in ascending if s >= n) for n in range(1, self.max_capture_size + 1)
        }


SOT_WARMUP = {"active": False}


def sot_warmup_guard(flag):
    def decorator(fn):
        def wrapper(*args, **kwargs):  # no functools.wraps, like a decorator we cannot inspect
            SOT_WARMUP["active"] = flag
            try:
                return fn(*args, **kwargs)
            finally:
                SOT_WARMUP["active"] = False
        return wrapper
    return decorator


class RunnerCommon:
    """What both real runners set up in __init__, plus a recorder for _dummy_run calls."""

    def _setup(self, fd_config, device: str) -> None:
        self.fd_config = fd_config
        self.graph_opt_config = fd_config.graph_opt_config
        self.scheduler_config = fd_config.scheduler_config
        self.speculative_config = fd_config.speculative_config
        self.device = device
        self.speculative_method = fd_config.speculative_config.method
        self.speculative_decoding = self.speculative_method is not None
        self.use_cudagraph = self.graph_opt_config.use_cudagraph
        self.cudagraph_capture_sizes = list(reversed(self.graph_opt_config.cudagraph_capture_sizes))
        self.dummy_runs = []
        self.only_decode = False  # what the ranks agreed for the next step (tests set it)

    def _record(self, **call):
        self.dummy_runs.append({"accept_all_drafts": False, "expected_decode_len": 1, **call,
                                "sot_warmup": SOT_WARMUP["active"]})

    def _agree_phase(self, moe_phase):
        """Write the phase the ranks agreed to `moe_phase` (the era's runner names where it lives)."""
        config = self.fd_config
        if config.parallel_config.use_ep and config.scheduler_config.splitwise_role == "mixed":
            moe_phase.phase = "decode" if self.only_decode else "prefill"


class BackendCommon:
    """Bodies of the era backends; each era module defines its own ConcreteSizeEntry (2.2.0: one output_buffer)."""

    def _create_entry_dict(self):
        entry_type = vars(sys.modules[type(self).__module__])["ConcreteSizeEntry"]
        self.concrete_size_entries = {}
        for shape in self.cudagraph_capture_sizes:
            self.concrete_size_entries[self._key(shape, False)] = entry_type(real_shape=shape)
        for shape in getattr(self, "cudagraph_capture_sizes_prefill", []):  # develop: static prefill entries
            self.concrete_size_entries[self._key(shape, True)] = entry_type(real_shape=shape)

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
        buffers = []
        for output in outputs:
            buffer = paddle.zeros_like(output)
            output._share_buffer_to(buffer)  # the buffer aliases the graph's static output
            buffers.append(buffer)
        if hasattr(entry, "output_buffers"):
            entry.output_buffers.extend(buffers)
        else:  # 2.2.0: one output, in output_buffer
            entry.output_buffer = buffers[0]
        Runtime.device.synchronize()

    def _replay(self, entry):
        entry.cuda_graph.replay()
        if not hasattr(entry, "output_buffers"):
            return entry.output_buffer
        return entry.output_buffers[0] if len(entry.output_buffers) == 1 else entry.output_buffers

    def _static(self, entry, **kwargs):
        """Paddle's run_program under FastDeploy's Dy2St manager in split mode, as Paddle runs it:
        cuda_graph_extract_pass (paddle/fluid/pir/transforms/cuda_graph_extract_pass.cc at cc9bebb1) cuts the
        program into graph pieces around the ops on FLAGS_cuda_graph_blacklist (FastDeploy's attention,
        append_attn_backend.py at e53f5184); each piece is captured on the current stream, and
        phi CUDAGraph::Replay (paddle/phi/backends/gpu/cuda/cuda_graph.cc at 2c3ba4b2) replays it on that stored
        stream, while the blacklisted op runs on the current stream of each call. Here the model's kernels are the
        first piece, "split_attention" the blacklisted op, "after_attention" the second piece."""
        self.static_calls.append(sorted(kwargs))
        device = Runtime.device
        if not entry.captured:
            self._warmup(entry, **kwargs)
            first, second = FakeGraph(device), FakeGraph(device)
            first.capture_begin()
            entry.static_output = entry.runnable(**kwargs)
            first.capture_end()
            device.launch(device.current_stream(0), lambda: None, "split_attention")
            second.capture_begin()
            device.launch(device.current_stream(0), lambda: None, "after_attention")
            second.capture_end()
            entry.static_pieces = (first, second)
            entry.captured = True
        first, second = entry.static_pieces
        first.replay()
        device.launch(device.current_stream(0), lambda: None, "split_attention")
        second.replay()
        return entry.static_output



class _Envs:
    """FastDeploy's envs.py: flags read lazily from the environment."""

    @property
    def FD_USE_PFCC_DEEP_EP(self) -> bool:  # noqa: N802 - FastDeploy's name
        return bool(int(os.getenv("FD_USE_PFCC_DEEP_EP", "0")))


envs = _Envs()


class ProcessGroup:
    """paddle.distributed.new_group's result, as far as the plugin sees it (it passes it to all_gather_object)."""

    def __init__(self, ranks) -> None:
        self.ranks = list(ranks)


def new_group(ranks) -> ProcessGroup:
    return ProcessGroup(ranks)


def singleton(cls):
    instances = {}

    def get_instance(*args, **kwargs):
        if cls not in instances:
            instances[cls] = cls(*args, **kwargs)
        return instances[cls]

    return get_instance


class EngineCommon:
    def _setup(self, num_max_dispatch_tokens_per_rank, hidden_size, num_experts):
        self.num_max_dispatch_tokens_per_rank = num_max_dispatch_tokens_per_rank
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.buffer = deep_ep_sim.CURRENT["buffer"] or deep_ep_sim.SimBuffer()
        self.return_recv_hook = True  # tests flip this to model a misconfigured build
        self.dropped = None  # the buffer while dropped (clear_deep_ep_buffer), recreated as the same object
        self.creations = 0  # buffers created after __init__

    def _clear_buffer(self):
        self.dropped, self.buffer = self.buffer, None

    def _create_buffer(self):
        """deep_ep.Buffer(...): allocates (NVSHMEM) and synchronizes every rank; a capture cannot hold that."""
        if Runtime.device.is_capturing():
            raise deep_ep_sim.AllocationInCaptureError("DeepEP buffer allocated while a graph is captured "
                                                       "(operation not permitted when stream is capturing)")
        self.creations += 1
        self.buffer, self.dropped = self.dropped or self.buffer, None

    def _lazy_buffer(self):
        """A caller that creates the buffer on first use (SGLang #29942), as after an RL clear_buffer."""
        if self.buffer is None:
            self.create_deep_ep_buffer()
        return self.buffer

    def _dispatch(self, hidden_states, topk_idx, use_fp8):
        x, count, handle, _, hook = self._lazy_buffer().low_latency_dispatch(
            hidden_states, topk_idx, self.num_max_dispatch_tokens_per_rank, self.num_experts, use_fp8=use_fp8,
            async_finish=False, return_recv_hook=self.return_recv_hook)
        return x, count, handle, hook

    def _combine(self, hidden_states, topk_idx, topk_weights, handle):
        out, _, hook = self._lazy_buffer().low_latency_combine(hidden_states, topk_idx, topk_weights, handle,
                                                       async_finish=False, return_recv_hook=self.return_recv_hook)
        return out, hook

    def _clean(self):
        if self.buffer is None:  # as FastDeploy's DeepEPBuffer.clean_low_latency_buffer: no buffer, no clean
            return
        self.buffer.clean_low_latency_buffer(self.num_max_dispatch_tokens_per_rank, self.hidden_size, self.num_experts)


class MoECommon:
    def _setup(self, fd_config, prefill_runner_cls, decoder_runner_cls):
        args = dict(top_k=2, hidden_size=8, num_experts=4, splitwise_role=fd_config.scheduler_config.splitwise_role,
                    moe_phase=None, num_max_dispatch_tokens_per_rank=fd_config.model_config.num_max_dispatch_tokens_per_rank)
        self.ep_prefill_runner = prefill_runner_cls(**args)
        self.ep_decoder_runner = decoder_runner_cls(**args)

    def _apply(self, layer, x, gate):
        """Phase from the model config; mixed mode cleans inline at the first MoE layer (moe_layer_start_index)."""
        config = layer.fd_config
        first_moe_layer = layer.layer_idx == config.model_config.moe_layer_start_index
        mixed = config.scheduler_config.splitwise_role == "mixed"
        if config.model_config.moe_phase.phase == "prefill":
            if mixed and first_moe_layer:
                self.ep_prefill_runner.clean_low_latency_buffer()
            return self.ep_prefill_runner.combine(self.ep_prefill_runner.dispatch(x, None, None), None, None)
        if mixed and first_moe_layer:
            self.ep_decoder_runner.clean_low_latency_buffer()
        recv, _, handle = self.ep_decoder_runner.dispatch(x, None, None)
        return self.ep_decoder_runner.combine(recv, None, None, handle)
