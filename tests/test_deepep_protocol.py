"""Mixed-mode DeepEP protocol: clean once per prefill->decode on every rank, never inside a graph; capture checks."""
import importlib
from types import SimpleNamespace

import paddle
import pytest
from contextlib import contextmanager

from deep_ep_sim import CURRENT, ActiveRankBuffer, Collective, SimBuffer
from fake_cuda import FakeGraph, RecordingC10, RecordingDevice, Runtime
from fd_configs import make_fd_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import deepep_agreement
from fastdeploy_cudagraph_ext.deepep_protocol import (DeepEPProtocolError, LowLatencyBufferProtocol, capture_audit,
                                                      install_protocol)
from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy

pytestmark = pytest.mark.standin


@pytest.fixture(autouse=True)
def one_rank_group(monkeypatch):
    """Paddle's all_gather_object needs a launched distributed job: one rank gathers its own plan here."""
    monkeypatch.setattr(deepep_agreement, "paddle_all_gather", lambda group: lambda plan: [plan])


class MixedEPWorker:
    """One EP rank through the patched FastDeploy stand-ins: runner step decision, MoE forward, graph backend."""

    def __init__(self, fd_era, torch_api=True, layers=2, dispatch_only=False, buffer=None, setup=None):
        self.buffer = CURRENT["buffer"] = buffer or SimBuffer(torch_api=torch_api)
        self.fd_config = make_fd_config(k=0, max_num_seqs=4, sizes=(1, 2, 4), ep=True, cap=128)
        if setup is not None:  # a test's own FastDeploy settings, before anything is built
            setup(self.fd_config)
        moe_base = importlib.import_module("fastdeploy.model_executor.layers.moe.fused_moe_backend_base")
        backend_module = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
        runner_module = importlib.import_module("fastdeploy.worker.gpu_model_runner")
        self.runner = runner_module.GPUModelRunner(self.fd_config, "gpu", 0, 0, 0)  # as FastDeploy: before the model
        self.moe = moe_base.MoEMethodBase(self.fd_config)
        self.layers = [SimpleNamespace(fd_config=self.fd_config, layer_idx=i) for i in range(layers)]
        self.dispatch_only = dispatch_only
        self.out = paddle.zeros([4])
        args = (self.fd_config, self.forward) if fd_era == "2.3" else (self.fd_config, self.forward, self.forward)
        self.backend = backend_module.CudaGraphPiecewiseBackend(*args)

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


def test_transition_clean_reaches_the_engine_without_a_buffer_manager(fd_era, runtime, monkeypatch):
    """2.2.0 has no DeepEPBufferManager (fixture fd-2.2.0): the clean must still find FastDeploy's engine."""
    ep = importlib.import_module("fastdeploy.model_executor.layers.moe.ep")
    monkeypatch.setattr(ep.DeepEPBufferManager, "set_engine", classmethod(lambda cls, engine: None))
    ext.activate()
    worker = MixedEPWorker(fd_era)
    assert ep.DeepEPBufferManager._engine is None
    worker.step(decode=False)
    worker.step(decode=True)
    assert worker.buffer.collective.barriers == [2] and not worker.buffer.dirty
    assert "ll_clean" not in worker.graph().kernel_names()


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
    with pytest.raises(DeepEPProtocolError, match="^DeepEP low-latency dispatch under CUDA graph capture must use "
                                                  "async_finish=False, return_recv_hook=True"):
        worker.step(decode=True)


def test_the_buffer_managers_clean_added_for_pr_7344_callers_cleans_through_fastdeploys_engine(fd_era, runtime):
    """Code written against the closed PR #7344 calls DeepEPBufferManager.clean_low_latency_buffer(): it cleans."""
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.step(decode=False)  # normal kernels dirty the buffer
    ep = importlib.import_module("fastdeploy.model_executor.layers.moe.ep")
    ep.DeepEPBufferManager.clean_low_latency_buffer()
    assert worker.buffer.collective.barriers == [2] and not worker.buffer.dirty


def test_hook_not_called_in_the_same_forward_fails_the_capture():
    with pytest.raises(DeepEPProtocolError, match="toy: DeepEP low-latency dispatch, combine returned a receive hook "
                       "that was not called"):
        with capture_audit("toy"):
            from fastdeploy_cudagraph_ext.deepep_protocol import record_low_latency_call

            record_low_latency_call("dispatch", lambda: None)
            record_low_latency_call("combine", lambda: None)


def test_inline_clean_suppression_nests():
    from fastdeploy_cudagraph_ext.deepep_protocol import inline_cleans_suppressed, suppress_inline_cleans

    with suppress_inline_cleans():
        with suppress_inline_cleans():
            assert inline_cleans_suppressed()
        assert inline_cleans_suppressed()  # the inner exit must not lift the outer suppression
    assert not inline_cleans_suppressed()


# ---- several EP ranks that differ, each through its own patched runner, MoE layers and graph backend ---------


class SimRank:
    """One EP rank (a worker process in FastDeploy): its own device, c10, DeepEP buffer, patched runner, MoE
    layers and graph backend. Ranks share one process here, so `running()` swaps in what is per process in
    FastDeploy: the CUDA runtime, the stream policy, the protocol and the DeepEP engine's buffer."""

    def __init__(self, rank, fd_era, group, collective, layers=2):
        self.rank, self.group = rank, group
        self.device = RecordingDevice()
        self.c10 = RecordingC10(self.device)
        self.policy = CaptureStreamPolicy(self.device, C10Status(False, self.c10), lambda: True)
        self.protocol = None  # built by the patched runner on this rank's first step
        group.buffers.append(SimBuffer(rank, collective))
        with self.running():
            self.worker = MixedEPWorker(fd_era, layers=layers, buffer=group)
        self.cleans_at = []  # steps at which this rank's buffer was cleaned

    @contextmanager
    def running(self):
        Runtime.device, Runtime.c10 = self.device, self.c10
        install_policy(self.policy)
        install_protocol(self.protocol)
        self.group.rank = self.rank
        try:
            yield
        finally:
            self.protocol = install_protocol(None)

    def step(self, number, only_decode, status, tokens):
        """FastDeploy's step on this rank once the ranks agreed `only_decode` (all_gather of their statuses)."""
        barriers = self.group.buffers[self.rank].collective.barriers[self.rank]
        with self.running():
            buffer = self.group.buffers[self.rank]
            kernels_before = len(buffer.low_latency_kernels)
            if status == "idle":  # no requests: the same step decision, then empty_input_forward (no graph)
                self.worker.runner.only_decode = only_decode
                self.worker.runner.initialize_forward_meta()
                self.worker.forward()
            else:
                self.worker.step(decode=only_decode, tokens=tokens)
            used = buffer.low_latency_kernels[kernels_before:]
        if buffer.collective.barriers[self.rank] != barriers:
            self.cleans_at.append(number)
        return used


@pytest.fixture
def rank_group(fd_era, runtime):
    group = CURRENT["buffer"] = ActiveRankBuffer()  # the buffer FastDeploy's process-wide engine will hold
    ext.activate()
    yield group
    install_protocol(None)
    CURRENT["buffer"] = None


STATUS = st.sampled_from(["prefill", "decode", "idle"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.tuples(STATUS, STATUS, STATUS, STATUS), st.tuples(*[st.integers(1, 4)] * 4)),
                      min_size=1, max_size=12))
def test_ranks_that_differ_clean_at_the_same_steps_and_never_in_a_graph(rank_group, fd_era, steps):
    rank_group.buffers.clear()
    collective = Collective(4)
    ranks = [SimRank(r, fd_era, rank_group, collective) for r in range(4)]
    for size in (4, 2, 1):  # capture_model on every rank: a dummy prefill step, then the decode step that captures
        for rank in ranks:
            rank.step(-1, only_decode=False, status="prefill", tokens=size)
        for rank in ranks:
            rank.step(-1, only_decode=True, status="decode", tokens=size)
    for number, (statuses, tokens) in enumerate(steps):
        only_decode = "prefill" not in statuses  # FastDeploy's all_gather: decode only if no rank prefills
        used = [rank.step(number, only_decode, status, n) for rank, status, n in zip(ranks, statuses, tokens)]
        assert len({tuple(u) for u in used}) == 1, f"step {number}: ranks used different low-latency halves: {used}"
    assert len({tuple(rank.cleans_at) for rank in ranks}) == 1, [rank.cleans_at for rank in ranks]
    assert len(set(collective.barriers)) == 1
    for rank in ranks:
        graphs = [e.cuda_graph for e in rank.worker.backend.concrete_size_entries.values() if e.cuda_graph]
        assert len(graphs) == 3  # every decode size captured on every rank
        for graph in graphs:
            assert "ll_clean" not in graph.kernel_names() and graph.stream.name == "capture"


# ---- each safety branch of the protocol and its patches, on its own ----------------------------------------


def test_a_clean_reached_during_capture_is_refused_and_not_run():
    cleans = []
    protocol = LowLatencyBufferProtocol(clean=lambda: cleans.append(1), is_capturing=lambda: True)
    with pytest.raises(DeepEPProtocolError) as error:
        protocol.on_step("decode")
    assert str(error.value) == (
        "DeepEP's low-latency buffer clean was reached while a CUDA graph is being captured; it is a collective "
        "barrier and must run eagerly. This is a bug in the step order: report it.")
    assert cleans == []


def test_the_runners_transition_clean_asks_the_device_whether_a_graph_is_being_captured(fd_era, runtime):
    """The step patch wires the protocol's capture check to the device: a transition reached while the device captures
    is refused before the clean runs (no barrier on any rank)."""
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.step(decode=False)
    FakeGraph(runtime.device).capture_begin()  # a capture left open across the step boundary
    worker.runner.only_decode = True
    with pytest.raises(DeepEPProtocolError, match="reached while a CUDA graph is being captured"):
        worker.runner.initialize_forward_meta()
    assert worker.buffer.collective.barriers == [0]


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


def test_ep_runner_clean_outside_the_moe_forward_is_fastdeploys(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.moe.ep_decoder_runner.clean_low_latency_buffer()  # e.g. FastDeploy's own buffer management
    assert worker.buffer.collective.barriers == [2]


# ---- the error's layer name and the normal-mode allowance (mutation survivors of 2026-12-05) -------------------


class FusedMoE:
    def __init__(self, layer_idx=None):
        if layer_idx is not None:
            self.layer_idx = layer_idx


def test_a_normal_mode_error_names_the_innermost_moe_layer_and_then_the_outer_one_again():
    from fastdeploy_cudagraph_ext import deepep_protocol as protocol

    def error_text():
        with pytest.raises(protocol.DeepEPProtocolError) as caught:
            protocol.check_normal_mode_call("dispatch", 0)
        return str(caught.value)

    assert error_text().startswith("outside any MoE layer:")
    with protocol.moe_forward(FusedMoE(3)):
        with protocol.moe_forward(FusedMoE()):
            assert error_text().startswith("FusedMoE: ")  # no layer_idx: the class alone
        assert error_text().startswith("MoE layer 3 (FusedMoE): ")
    assert error_text().startswith("outside any MoE layer:")


def test_the_allowed_normal_mode_capture_needs_a_worst_case_token_count_and_resets_with_the_protocol():
    from fastdeploy_cudagraph_ext import deepep_protocol as protocol

    protocol.normal_mode_captures.allowed = True
    try:
        protocol.check_normal_mode_call("dispatch", 1)  # the smallest worst-case count is allowed
        with pytest.raises(protocol.DeepEPProtocolError):
            protocol.check_normal_mode_call("dispatch", 0)
    finally:
        protocol.reset_protocol()
    assert protocol.normal_mode_captures.allowed is False
    with pytest.raises(protocol.DeepEPProtocolError):
        protocol.check_normal_mode_call("dispatch", 1)
