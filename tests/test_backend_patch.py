"""capture_stream on both FastDeploy eras' CudaGraphPiecewiseBackend (stand-ins, fake CUDA runtime)."""
import importlib
from types import SimpleNamespace

import paddle
import pytest
from fake_cuda import LEGACY_ERROR

import fastdeploy_cudagraph_ext as ext

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
    if era == "2.3":
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
