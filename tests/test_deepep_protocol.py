"""Mixed-mode DeepEP protocol: clean once per prefill->decode on every rank, never inside a graph; capture checks."""
import importlib
from types import SimpleNamespace

import paddle
import pytest
from deep_ep_sim import CURRENT, Collective, SimBuffer
from fake_cuda import FakeGraph, RecordingC10, RecordingDevice, Runtime
from fd_configs import make_fd_config
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext.deepep_protocol import DeepEPProtocolError, LowLatencyBufferProtocol, capture_audit
from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy

pytestmark = pytest.mark.standin


class MixedEPWorker:
    """One EP rank through the patched FastDeploy stand-ins: runner step decision, MoE forward, graph backend."""

    def __init__(self, fd_era, torch_api=True, layers=2, dispatch_only=False):
        self.buffer = CURRENT["buffer"] = SimBuffer(torch_api=torch_api)
        self.fd_config = make_fd_config(k=0, max_num_seqs=4, sizes=(1, 2, 4), ep=True, cap=128)
        moe_base = importlib.import_module("fastdeploy.model_executor.layers.moe.fused_moe_backend_base")
        backend_module = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
        runner_module = importlib.import_module("fastdeploy.worker.gpu_model_runner")
        self.moe = moe_base.MoEMethodBase(self.fd_config)
        self.layers = [SimpleNamespace(fd_config=self.fd_config, layer_idx=i) for i in range(layers)]
        self.dispatch_only = dispatch_only
        self.out = paddle.zeros([4])
        args = (self.fd_config, self.forward) if fd_era == "2.3" else (self.fd_config, self.forward, self.forward)
        self.backend = backend_module.CudaGraphPiecewiseBackend(*args)
        self.runner = runner_module.GPUModelRunner(self.fd_config, "gpu", 0, 0, 0)

    def forward(self, **kwargs):
        x = paddle.zeros([4])
        for layer in self.layers:
            if self.dispatch_only and self.fd_config.model_config.moe_phase.phase == "decode":
                self.moe.ep_decoder_runner.dispatch(x, None, None)
            else:
                self.moe.apply(layer, x, None)
        return self.out

    def step(self, decode, tokens=4):
        self.runner.only_decode = decode
        self.runner.initialize_forward_meta()
        meta = SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=not decode)
        return self.backend(forward_meta=meta) if decode else self.forward(forward_meta=meta)

    def graph(self, size=4):
        entries = self.backend.concrete_size_entries
        return (entries.get(size) or entries.get((size, False))).cuda_graph


def test_without_plugin_fastdeploy_records_the_clean_into_the_decode_graph(fd_era, runtime):
    worker = MixedEPWorker(fd_era, torch_api=False)  # Paddle's in-tree port: capture itself works upstream
    worker.step(decode=False)
    worker.step(decode=True)
    assert "ll_clean" in worker.graph().kernel_names()


def test_clean_runs_once_eagerly_at_the_transition_and_never_in_a_graph(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.step(decode=False)  # normal kernels dirty the buffer; FastDeploy's inline prefill clean is skipped
    assert worker.buffer.dirty and worker.buffer.collective.barriers == [0]
    worker.step(decode=True)  # transition: one eager clean (2 barriers), then warmup + capture + replay
    assert worker.buffer.collective.barriers == [2]
    assert ("eager", "ll_clean", "compute") in runtime.device.log  # on Paddle's stream, not c10's legacy one
    graph = worker.graph()
    assert graph.kernel_names() == ["ll_dispatch_send", "ll_dispatch_recv", "ll_combine_send", "ll_combine_recv"] * 2
    for _ in range(3):
        worker.step(decode=True)  # replays: no clean, no barrier
    assert worker.buffer.collective.barriers == [2] and graph.replays == 4
    worker.step(decode=False)
    worker.step(decode=True)  # the next transition cleans again, before the replay uses the buffer
    assert worker.buffer.collective.barriers == [4] and not worker.buffer.dirty


def test_operator_switch_cleans_before_every_decode_step(fd_era, runtime, monkeypatch):
    monkeypatch.setenv("FD_CUDAGRAPH_EXT_CLEAN_EVERY_DECODE", "1")
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.step(decode=False)
    for _ in range(3):
        worker.step(decode=True)
    assert worker.buffer.collective.barriers == [6]
    assert "ll_clean" not in worker.graph().kernel_names()


def test_odd_low_latency_calls_in_a_graph_fail_at_capture(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era, layers=1, dispatch_only=True)
    worker.step(decode=False)
    with pytest.raises(DeepEPProtocolError) as error:
        worker.step(decode=True)
    assert "made 1 DeepEP low-latency calls, an odd number" in str(error.value)
    assert "replays of this graph would use the wrong half" in str(error.value)


def test_low_latency_call_without_receive_hook_fails_under_capture(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.moe.ep_decoder_runner.ep_engine.return_recv_hook = False
    worker.step(decode=False)
    with pytest.raises(DeepEPProtocolError, match="must use async_finish=False, return_recv_hook=True"):
        worker.step(decode=True)


def test_hook_not_called_in_the_same_forward_fails_the_capture():
    with pytest.raises(DeepEPProtocolError, match="returned a receive hook that was not called"):
        with capture_audit("toy"):
            from fastdeploy_cudagraph_ext.deepep_protocol import record_low_latency_call

            record_low_latency_call("dispatch", lambda: None)
            record_low_latency_call("combine", lambda: None)


# ---- a multi-rank simulation of the protocol itself -------------------------------------------------------


class SimRank:
    """One EP rank: its own device, c10, DeepEP buffer (shared barriers), protocol and graphs."""

    def __init__(self, rank, collective, layers):
        self.device = RecordingDevice()
        self.c10 = RecordingC10(self.device)
        self.policy = CaptureStreamPolicy(self.device, C10Status(False, self.c10), lambda: True)
        self.buffer = SimBuffer(rank, collective)
        self.layers = layers
        self.protocol = LowLatencyBufferProtocol(
            clean=lambda: self.buffer.clean_low_latency_buffer(128, 8, 4), is_capturing=self.device.is_capturing)
        self.graphs = {}

    def activate(self):
        Runtime.device, Runtime.c10 = self.device, self.c10

    def prefill(self):
        for _ in range(self.layers):
            self.buffer.combine(self.buffer.dispatch(None))

    def decode_forward(self):
        for _ in range(self.layers):
            _, _, _, _, hook = self.buffer.low_latency_dispatch(None, None, 128, 4, async_finish=False,
                                                                 return_recv_hook=True)
            hook()
            _, _, hook = self.buffer.low_latency_combine(None, None, None, None, async_finish=False,
                                                         return_recv_hook=True)
            hook()

    def decode(self, graph_key):
        graph = self.graphs.get(graph_key)
        if graph is None:
            with self.policy.capture_scope():
                self.decode_forward()  # warmup
                graph = FakeGraph(self.device)
                graph.capture_begin()
                self.decode_forward()
                graph.capture_end()
            self.graphs[graph_key] = graph
        with self.policy.replay_scope():
            graph.replay()


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["prefill", "decode"]), st.sampled_from([1, 2, 4]), st.booleans()),
                      min_size=1, max_size=14))
def test_every_rank_hits_the_same_barriers_and_no_kernel_sees_a_dirty_buffer(steps):
    collective = Collective(4)
    ranks = [SimRank(r, collective, layers=2) for r in range(4)]
    try:
        for phase, size, mtp in steps:  # the phase is agreed across ranks (all_gather in FastDeploy)
            for rank in ranks:
                rank.activate()
                rank.protocol.on_step(phase)
                # a rank without requests runs empty_input_forward: the same collectives with no tokens
                if phase == "prefill":
                    rank.prefill()
                else:
                    rank.decode(("main", size))
                    if mtp:
                        rank.decode(("draft", size))  # the MTP draft model's graph in the same step
            assert len(set(collective.barriers)) == 1, f"ranks diverged: {collective.barriers}"
        for rank in ranks:
            for graph in rank.graphs.values():
                assert "ll_clean" not in graph.kernel_names()
                assert len([k for k in graph.kernel_names() if k.endswith("_send")]) % 2 == 0
    finally:
        Runtime.reset()


# ---- each safety branch of the protocol and its patches, on its own ----------------------------------------


def test_a_clean_reached_during_capture_is_refused_and_not_run():
    cleans = []
    protocol = LowLatencyBufferProtocol(clean=lambda: cleans.append(1), is_capturing=lambda: True)
    with pytest.raises(DeepEPProtocolError, match="reached while a CUDA graph is being captured"):
        protocol.on_step("decode")
    assert cleans == []


def test_no_transition_clean_outside_mixed_mode(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.fd_config.scheduler_config.splitwise_role = "decode"  # a disaggregated decode node: its own buffer
    worker.fd_config.model_config.moe_phase.phase = "prefill"
    worker.runner.initialize_forward_meta()
    worker.fd_config.model_config.moe_phase.phase = "decode"
    worker.runner.initialize_forward_meta()
    assert worker.buffer.collective.barriers == [0]


def test_clean_every_decode_is_off_by_default_and_each_transition_cleans_once():
    cleans = []
    protocol = LowLatencyBufferProtocol(clean=lambda: cleans.append(1), is_capturing=lambda: False)
    for phase in ("prefill", "decode", "decode", "prefill", "prefill", "decode", "decode"):
        protocol.on_step(phase)
    assert len(cleans) == 2
    first = LowLatencyBufferProtocol(clean=lambda: cleans.append(1), is_capturing=lambda: False)
    first.on_step("decode")  # a worker's first step: the profile run may have left normal-kernel data behind
    assert len(cleans) == 3


def test_eager_low_latency_calls_do_not_query_the_device(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    queries = []
    real = runtime.device.is_capturing
    runtime.device.is_capturing = lambda: queries.append(1) or real()
    worker.fd_config.model_config.moe_phase.phase = "decode"
    worker.forward()  # eager decode forward (as on an idle rank's empty_input_forward)
    assert queries == []
    assert len(worker.buffer.low_latency_kernels) == 4
