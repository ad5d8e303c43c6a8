"""capture_stream on both FastDeploy eras' CudaGraphPiecewiseBackend (stand-ins, fake CUDA runtime)."""
import importlib
from types import SimpleNamespace

import paddle
import pytest
from fake_cuda import LEGACY_ERROR

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext.deepep_protocol import DeepEPProtocolError, record_low_latency_call

pytestmark = pytest.mark.standin
SIZES = [4, 2, 1]


class ToyModel:
    """A framework kernel on Paddle's stream and a torch-API extension kernel on c10's current stream."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.x = paddle.zeros([4])
        self.out = paddle.zeros([4])
        self.extension_runs = 0
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(sorted(kwargs))
        rt = self.runtime
        rt.device.launch(rt.framework_stream(), lambda: paddle.assign(self.x * 2, output=self.out), "attention")
        rt.device.launch(rt.c10.stream(), self._extension, "extension")
        return self.out

    def _extension(self):
        self.extension_runs += 1


def make_backend(era, model, graph_opt_level=0):
    graph = SimpleNamespace(cudagraph_capture_sizes=SIZES, cudagraph_num_of_warmups=2, graph_opt_level=graph_opt_level,
                            real_shape_to_captured_size={1: 1, 2: 2, 3: 4, 4: 4}, full_cuda_graph=True,
                            cudagraph_capture_sizes_prefill=[1, 2, 4, 8])
    module = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
    config = SimpleNamespace(graph_opt_config=graph)
    if era in ("2.2.0", "2.3"):  # (fd_config, runnable); later lines take a dynamic and a static runnable
        return module.CudaGraphPiecewiseBackend(config, model)
    return module.CudaGraphPiecewiseBackend(config, model, model)


def step(backend, tokens, exist_prefill=False):
    meta = SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=exist_prefill)
    return backend(forward_meta=meta)


def test_without_plugin_the_extension_kernel_breaks_capture(fd_era, runtime):
    backend = make_backend(fd_era, ToyModel(runtime))
    with pytest.raises(RuntimeError, match=LEGACY_ERROR):
        step(backend, 4)


def test_capture_puts_extension_kernels_inside_the_graph(fd_era, runtime):
    ext.activate()
    model = ToyModel(runtime)
    backend = make_backend(fd_era, model)
    step(backend, 4)
    graph = backend.concrete_size_entries[4 if fd_era == "2.3" else (4, False)].cuda_graph
    assert graph.kernel_names() == ["attention", "extension"]
    assert graph.stream.name == "capture" and not graph.stream.blocking
    assert model.extension_runs == 3  # two eager warmups + FastDeploy's replay right after capture
    assert runtime.device.current_stream(0) is runtime.device.compute and runtime.c10.stream().name == "legacy"


def test_replays_are_ordered_by_waits_and_compute_correct_results(fd_era, runtime):
    ext.activate()
    model = ToyModel(runtime)
    backend = make_backend(fd_era, model)
    for size in SIZES:  # capture_model order: largest first
        step(backend, size)
    runtime.device.log.clear()
    runs_before = model.extension_runs
    for value in (1.0, 3.0, 5.0):
        model.x.set_value(paddle.full([4], value))
        out = step(backend, 3)  # padded to the size-4 graph
        assert out.tolist() == [2 * value] * 4
    assert model.extension_runs == runs_before + 3  # each replay ran the extension kernel
    assert runtime.device.log == [("wait", "capture", "compute"), ("replay", "capture"),
                                  ("wait", "compute", "capture")] * 3
    assert len(model.calls) == 3 * len(SIZES)  # replays run no Python model code


def test_clear_graph_recaptures_on_the_capture_stream(fd_era, runtime):
    ext.activate()
    model = ToyModel(runtime)
    backend = make_backend(fd_era, model)
    for size in SIZES:
        step(backend, size)
    backend.clear_graph()
    step(backend, 4)
    assert ("capture_begin", "capture") in runtime.device.log[-6:]


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)  # is_decode exists only in develop
def test_static_decode_path_keeps_is_decode_out_of_the_forward(fd_era, runtime):
    ext.activate()
    model = ToyModel(runtime)
    backend = make_backend(fd_era, model, graph_opt_level=1)
    step(backend, 4)
    assert all("is_decode" not in call for call in model.calls)
    assert backend.static_calls == [["forward_meta"]]
    with pytest.raises(RuntimeError, match="decode capture out of order: got 1, expected 2"):
        step(backend, 1)  # develop's descending-order check still guards static decode captures


# ---- capture vs replay decided per call (issue 11) --------------------------------------------------------


def _stream_switches(runtime):
    return [e for e in runtime.device.log if e[0] == "set_stream"]


def test_a_never_captured_size_does_not_slow_replays_of_captured_sizes(fd_era, runtime):
    ext.activate()
    backend = make_backend(fd_era, ToyModel(runtime))
    step(backend, 4)
    step(backend, 2)  # size 1 is never captured (FastDeploy captures lazily; some sizes never occur)
    runtime.device.log.clear()
    step(backend, 3)  # padded to 4: a replay
    step(backend, 2)
    assert runtime.device.log == [("wait", "capture", "compute"), ("replay", "capture"),
                                  ("wait", "compute", "capture")] * 2
    runtime.device.log.clear()
    step(backend, 1)  # the first call of size 1 captures, on the capture stream, with c10 in step
    assert ("capture_begin", "capture") in runtime.device.log and _stream_switches(runtime)


class FailingModel(ToyModel):
    """Raises on its `fail_on`-th call (2 warmups, then the capture) the first time only."""

    def __init__(self, runtime, fail_on=3, backend=None):
        super().__init__(runtime)
        self.fail_on, self.backend, self.failed = fail_on, backend, False

    def __call__(self, **kwargs):
        out = super().__call__(**kwargs)
        if not self.failed and len(self.calls) == self.fail_on:
            self.failed = True
            manager = getattr(self.backend, "cuda_graph_manager", None)
            if manager is not None:  # Dy2St's run_impl records the size as captured when the capture starts
                manager.captured_batch_size.add(4)
            raise RuntimeError("model failed mid-capture")
        return out


def _discard_dangling_capture(runtime):
    # FastDeploy never ends a capture its model raised in; the policy's capture scope discards it (c10 helper's
    # change). The fake runtime is reset by hand here so this test checks only the entry state.
    runtime.device.capturing = runtime.device.graph = None


def _entry(backend, fd_era, size=4):
    return backend.concrete_size_entries[size if fd_era == "2.3" else (size, False)]


def test_a_capture_that_raises_leaves_its_entry_uncaptured_and_the_next_call_captures(fd_era, runtime):
    ext.activate()
    model = FailingModel(runtime)
    backend = make_backend(fd_era, model)
    with pytest.raises(RuntimeError, match="model failed mid-capture"):
        step(backend, 4)
    _discard_dangling_capture(runtime)
    assert _entry(backend, fd_era).cuda_graph is None
    step(backend, 4)  # develop's capture-order check must not have advanced past 4
    graph = _entry(backend, fd_era).cuda_graph
    assert graph is not None and graph.stream.name == "capture"


def test_a_static_replay_runs_the_programs_own_ops_on_the_stream_its_graph_pieces_replay_on(fd_era, runtime):
    """Paddle replays a static program's graph pieces on the capture stream and runs its blacklisted ops (split
    mode's attention) on the current stream: under the replay scope alone they would race."""
    ext.activate()
    model = ToyModel(runtime)
    backend = make_backend(fd_era, model, graph_opt_level=1)
    step(backend, 4)  # warmups and capture, in the capture scope
    runtime.device.log.clear()
    step(backend, 4)
    log = runtime.device.log
    ran_on = [e[-1] for e in log if e[0] == "replay" or e[:2] == ("eager", "split_attention")]
    assert ran_on == ["capture", "capture", "capture"]  # piece, attention, piece: one stream
    assert log[0] == ("wait", "capture", "compute") and log[-1] == ("wait", "compute", "capture")  # one hop per call
    assert runtime.device.current_stream(0) is runtime.device.compute and runtime.c10.stream().name == "legacy"
    assert len(model.calls) == 3  # two warmups and the capture: replays run no Python model code


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_static_capture_that_raises_is_not_replayed(fd_era, runtime):
    ext.activate()
    model = FailingModel(runtime)
    backend = make_backend(fd_era, model, graph_opt_level=1)
    backend.cuda_graph_manager = SimpleNamespace(captured_batch_size={2})
    model.backend = backend
    with pytest.raises(RuntimeError, match="model failed mid-capture"):
        step(backend, 4)
    entry = _entry(backend, fd_era)
    assert not entry.captured and backend.cuda_graph_manager.captured_batch_size == {2}
    assert backend._decode_capture_index == 0
    runtime.device.log.clear()
    step(backend, 4)  # captures again (inside the capture scope), in order
    assert entry.captured and _stream_switches(runtime)


class OneLowLatencyCallModel(ToyModel):
    """Makes one DeepEP low-latency call (its hook called) in a captured forward: an odd number, which our audit
    fails after FastDeploy stored the graph."""

    def __call__(self, **kwargs):
        if self.runtime.device.is_capturing():
            record_low_latency_call("dispatch", lambda: None)()
        return super().__call__(**kwargs)


def test_a_capture_failing_our_audit_leaves_its_entry_uncaptured(fd_era, runtime):
    ext.activate()
    backend = make_backend(fd_era, OneLowLatencyCallModel(runtime))
    with pytest.raises(DeepEPProtocolError, match="^CudaGraphPiecewiseBackend: the captured forward made 1 DeepEP "
                                                  "low-latency calls, an odd number"):
        step(backend, 4)  # FastDeploy already stored the graph when the audit fails
    assert _entry(backend, fd_era).cuda_graph is None and _entry(backend, fd_era).output_buffers == []
    if fd_era == "develop":
        assert backend._decode_capture_index == 0


@pytest.mark.parametrize("fd_era", ["2.2.0"], indirect=True)
def test_on_2_2_0_a_capture_failing_our_audit_leaves_its_one_output_buffer_unset(fd_era, runtime):
    """2.2.0 keeps one output_buffer per entry (fa236927), not a list: the undo resets it as FastDeploy made it."""
    ext.activate()
    backend = make_backend(fd_era, OneLowLatencyCallModel(runtime))
    with pytest.raises(DeepEPProtocolError, match="an odd number"):
        backend(ids_remove_padding=paddle.zeros([4]))  # 2.2.0 passes the tokens as their own keyword
    entry = backend.concrete_size_entries[4]
    assert entry.cuda_graph is None and entry.output_buffer is None and not hasattr(entry, "output_buffers")


def test_capture_while_serving_is_logged_and_capture_model_is_not(fd_era, runtime, caplog):
    ext.activate()
    backend = make_backend(fd_era, ToyModel(runtime))

    def capture_model():  # the name FastDeploy's runners capture under
        step(backend, 4)

    with caplog.at_level("WARNING", logger="fastdeploy_cudagraph_ext"):
        capture_model()
        assert "while serving" not in caplog.text
        step(backend, 2)
    assert caplog.text.count("CudaGraphPiecewiseBackend captured a CUDA graph for size 2 while serving (outside "
                             "capture_model)") == 1


def test_a_static_capture_while_serving_is_counted_as_a_capture(fd_era, runtime, caplog):
    """A Dy2St entry is captured by `captured` (its cuda_graph stays None): its capture is found all the same."""
    from fastdeploy_cudagraph_ext.metrics import STATS

    ext.activate()
    backend = make_backend(fd_era, ToyModel(runtime), graph_opt_level=1)
    STATS.reset()
    try:
        with caplog.at_level("WARNING", logger="fastdeploy_cudagraph_ext"):
            step(backend, 4)
        assert "CudaGraphPiecewiseBackend captured a CUDA graph for size 4 while serving" in caplog.text
        assert list(STATS.captures) == [4]
    finally:
        STATS.reset()  # the process's counts: other tests start from none


def test_eager_entries_run_without_any_scope(fd_era, runtime):
    ext.activate()
    backend = make_backend(fd_era, ToyModel(runtime))
    for entry in backend.concrete_size_entries.values():
        entry.use_cudagraph = False
    runtime.device.log.clear()
    step(backend, 4)
    assert [e[0] for e in runtime.device.log] == ["eager", "eager"]  # attention + extension, no waits


def test_a_size_without_an_entry_reaches_fastdeploys_own_check(fd_era, runtime):
    """FastDeploy asserts that a padded size has an entry; the plugin neither masks that nor fails first."""
    ext.activate()
    backend = make_backend(fd_era, ToyModel(runtime))
    backend.real_shape_to_captured_size[3] = 8  # a size no entry was made for
    with pytest.raises(AssertionError):
        step(backend, 3)


# ---- develop with speculative decoding: the running-request count may live on the device -------------------


def speculative_backend(runtime, real_bsz_to_captured_size, graph_opt_level=0):
    """The stand-in develop backend with 2.5+'s speculative fields (it keys by tokens, which match here)."""
    backend = make_backend("develop", ToyModel(runtime), graph_opt_level)
    backend.speculative_decoding = True
    backend.real_bsz_to_captured_size = real_bsz_to_captured_size
    backend.real_shape_to_captured_size_prefill = {}
    return backend


def spec_step(backend, tokens, real_bsz):
    # k=1 here: each running request has 2 tokens this step (what FastDeploy counts when real_bsz is 0)
    meta = SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=False, real_bsz=real_bsz,
                           seq_lens_this_time=paddle.full([tokens // 2], 2, dtype="int32"))
    return backend(forward_meta=meta)


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_known_running_requests_pick_the_entry(fd_era, runtime):
    ext.activate()
    backend = speculative_backend(runtime, {1: 2, 2: 4})  # k=1: batch 1 -> 2 tokens, batch 2 -> 4 tokens
    spec_step(backend, 4, real_bsz=2)
    runtime.device.log.clear()
    spec_step(backend, 4, real_bsz=2)  # the entry of 2 requests is captured: a replay, though size 2 is not
    assert not _stream_switches(runtime)


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_unknown_running_requests_replay_once_every_reachable_graph_is_captured(fd_era, runtime, caplog, monkeypatch):
    from fastdeploy_cudagraph_ext.patch import patch_cudagraph_piecewise_backend

    monkeypatch.setattr(patch_cudagraph_piecewise_backend, "_logged", set())  # logged once per process
    ext.activate()
    backend = speculative_backend(runtime, {1: 2, 2: 4})  # size 1 is unreachable: never captured, never waited for
    with caplog.at_level("WARNING", logger="fastdeploy_cudagraph_ext"):
        spec_step(backend, 4, real_bsz=0)
        spec_step(backend, 2, real_bsz=0)
    assert "cannot tell which graph a call uses" in caplog.text
    runtime.device.log.clear()
    spec_step(backend, 4, real_bsz=0)
    assert not _stream_switches(runtime)
    backend.clear_graph()  # RL weight reload: every graph is gone, the next call must capture in the scope
    runtime.device.log.clear()
    spec_step(backend, 4, real_bsz=0)
    assert ("capture_begin", "capture") in runtime.device.log


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_unknown_running_requests_on_the_static_path_replay_in_one_stream(fd_era, runtime):
    ext.activate()
    backend = speculative_backend(runtime, {1: 2, 2: 4}, graph_opt_level=1)
    spec_step(backend, 4, real_bsz=0)
    spec_step(backend, 2, real_bsz=0)  # every reachable graph captured: the next call cannot tell which it uses
    runtime.device.log.clear()
    spec_step(backend, 4, real_bsz=0)
    ran_on = [e[-1] for e in runtime.device.log if e[0] == "replay" or e[:2] == ("eager", "split_attention")]
    assert ran_on == ["capture", "capture", "capture"] and not runtime.device.is_capturing()


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_on_the_static_path_a_graph_captured_earlier_is_not_counted_again(fd_era, runtime, caplog):
    """A call that cannot tell its entry captures among several; one captured before (its `captured` set, no
    cuda_graph) is no capture of this call."""
    ext.activate()
    backend = speculative_backend(runtime, {1: 2, 2: 4}, graph_opt_level=1)
    with caplog.at_level("WARNING", logger="fastdeploy_cudagraph_ext"):
        spec_step(backend, 4, real_bsz=0)  # 2 running requests: size 4
        spec_step(backend, 2, real_bsz=0)  # 1 running request: size 2; size 4 is among its candidates, captured
    assert caplog.text.count("captured a CUDA graph for size 4 while serving") == 1
    assert caplog.text.count("captured a CUDA graph for size 2 while serving") == 1


def test_a_call_whose_entry_cannot_be_computed_runs_in_the_capture_scope_logged_once(fd_era, runtime, caplog,
                                                                                      monkeypatch):
    """A line that moved a name the lookup reads: every call is treated as one that may capture (correct, slower)."""
    from fastdeploy_cudagraph_ext.patch import patch_cudagraph_piecewise_backend as patch

    def moved(backend, kwargs):
        raise AttributeError("real_shape_to_captured_size")

    monkeypatch.setattr(patch, "_logged", set())
    for variant in list(patch.LOOKUPS):
        monkeypatch.setitem(patch.LOOKUPS, variant, moved)
    ext.activate()
    model = ToyModel(runtime)
    backend = make_backend(fd_era, model)
    with caplog.at_level("WARNING", logger="fastdeploy_cudagraph_ext"):
        step(backend, 4)  # warmups and capture
        runtime.device.log.clear()
        step(backend, 4)  # a replay, still in the capture scope
    assert caplog.text.count("fastdeploy-cudagraph-ext: CudaGraphPiecewiseBackend: could not compute the call's graph "
                             "entry (AttributeError('real_shape_to_captured_size')); running it in the capture scope "
                             "(correct, slower)") == 1
    assert ("set_stream", "capture") in runtime.device.log
    assert "extension" in _entry(backend, fd_era).cuda_graph.kernel_names()  # captured with c10 in step
