"""issue 15, item 2: on every release line, a deployment that needs every group (graphs on, EP in mixed mode, MTP k=1
and k=3) builds its runner through the gate, captures its planned sizes, and captures and replays once through the
patched backend, on that line's era stand-in (tests/standins/fd-<era>, each naming the commit it models)."""
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import paddle
import pytest

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import activation
from fastdeploy_cudagraph_ext.capture_plan import default_ladder
from fastdeploy_cudagraph_ext.patch.patch_gpu_model_runner_capture import PLAN_ATTR
from fastdeploy_cudagraph_ext.registry import Verdict

pytestmark = pytest.mark.standin
# The era stand-in of each line: 2.2.x shares 2.3's shapes (size/2 loop, token-keyed backend, forward_meta);
# 2.5, 2.6 and develop share the (shape, static prefill)-keyed backend of develop.
LINE_ERAS = {"2.2.0": "2.2.0", "2.2.x": "2.3", "2.3": "2.3", "2.4": "2.4", "2.5": "develop", "2.6": "develop",
             "develop": "develop"}
MAX_NUM_SEQS = 4
BACKEND = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"
STANDINS = Path(__file__).parent / "standins"


def _purge_fastdeploy():
    for name in [n for n in sys.modules if n == "fastdeploy" or n.startswith("fastdeploy.")]:
        del sys.modules[name]


@pytest.fixture
def era(request, monkeypatch):
    monkeypatch.syspath_prepend(str(STANDINS / f"fd-{request.param}"))
    _purge_fastdeploy()
    yield request.param
    ext.deactivate()
    _purge_fastdeploy()


def deployment(era, k, method="mtp"):
    """Graphs on, EP mixed, speculative decoding; FastDeploy's own ladder (so the plan's sizes are installed)."""
    from fastdeploy.config import GraphOptimizationConfig, MoEPhase, init_like_fdconfig

    graph = GraphOptimizationConfig(default_ladder(MAX_NUM_SEQS * (k + 1)))
    init_like_fdconfig(graph, MAX_NUM_SEQS, k, method)
    phase = MoEPhase("prefill")
    parallel = SimpleNamespace(use_ep=True, expert_parallel_size=8, ep_group=SimpleNamespace(ranks=list(range(8))))
    scheduler = SimpleNamespace(max_num_seqs=MAX_NUM_SEQS, max_num_batched_tokens=2048, splitwise_role="mixed")
    model = SimpleNamespace(num_max_dispatch_tokens_per_rank=128, moe_layer_start_index=0, moe_phase=phase,
                            hidden_size=8)
    if era == "2.2.0":  # no SchedulerConfig; the phase and role live on parallel_config
        parallel = SimpleNamespace(**vars(parallel), **vars(scheduler), moe_phase=phase)
        scheduler = None
        del model.moe_phase
    config = SimpleNamespace(graph_opt_config=graph, scheduler_config=scheduler, parallel_config=parallel,
                             model_config=model,
                             speculative_config=SimpleNamespace(method=method, num_speculative_tokens=k))
    if era != "2.2.0":
        config.get_max_chunk_tokens = lambda: 2048
    return config


class ToyModel:
    """A framework kernel on Paddle's stream and a torch-API extension kernel on c10's current stream."""

    def __init__(self, runtime):
        self.runtime, self.out = runtime, paddle.zeros([4])

    def __call__(self, **kwargs):
        rt = self.runtime
        rt.device.launch(rt.framework_stream(), lambda: paddle.assign(paddle.ones([4]), output=self.out), "attention")
        rt.device.launch(rt.c10.stream(), lambda: None, "extension")
        return self.out


def one_step(backend, tokens, requests):
    meta = SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=False, real_bsz=requests)
    return backend(forward_meta=meta, ids_remove_padding=meta.ids_remove_padding)  # 2.2.0 reads the keyword


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("line, era", LINE_ERAS.items(), indirect=["era"])
def test_a_deployment_needing_every_group_starts_captures_and_replays(line, era, k, runtime, monkeypatch):
    from fastdeploy.config import GraphOptimizationConfig

    rebuilds = []
    original = GraphOptimizationConfig.init_with_cudagrpah_size
    monkeypatch.setattr(GraphOptimizationConfig, "init_with_cudagrpah_size",
                        lambda graph, **kwargs: rebuilds.append(kwargs) or original(graph, **kwargs))
    ext.activate()
    fd_config = deployment(era, k)
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner").GPUModelRunner(fd_config, "gpu", 0, 0, 0)
    registry = activation.registry()
    assert registry.refused == {}
    assert all(registry.reports[p].verdict is Verdict.APPLIED for p in
               ("capture_stream", "mtp_capture_sizing", "deepep_transition_clean", "deepep_capture_checks"))
    plan = getattr(runner, PLAN_ATTR)
    assert plan.tokens_per_request == k + 1 and all(size % (k + 1) == 0 for size in plan.sizes)
    assert sorted(fd_config.graph_opt_config.cudagraph_capture_sizes) == sorted(plan.sizes)
    if era == "2.2.0":  # the plan's sizes went in through 2.2.0's own keyword (the TypeError of issue 15)
        assert rebuilds[-1] == {"max_num_seqs": max(plan.sizes)}

    runner.capture_model()
    assert [r["batch_size"] for r in runner.dummy_runs] == [s // (k + 1) for s in sorted(plan.sizes, reverse=True)]

    module = importlib.import_module(BACKEND)
    model = ToyModel(runtime)
    backend = (module.CudaGraphPiecewiseBackend(fd_config, model, model) if era == "develop"
               else module.CudaGraphPiecewiseBackend(fd_config, model))
    largest = max(plan.sizes)
    one_step(backend, largest, largest // (k + 1))  # warmups + capture on the capture stream
    key = (largest, False) if era == "develop" else largest
    assert backend.concrete_size_entries[key].cuda_graph.kernel_names() == ["attention", "extension"]
    runtime.device.log.clear()
    out = one_step(backend, largest, largest // (k + 1))
    assert runtime.device.log == [("wait", "capture", "compute"), ("replay", "capture"), ("wait", "compute", "capture")]
    assert out.tolist() == [1.0] * 4


@pytest.mark.parametrize("era", ["develop"], indirect=True)  # develop at e53f5184 scales sizes for MTP and suffix
def test_a_suffix_deployment_counts_k_where_the_line_scales_for_it(era, runtime):
    ext.activate()
    fd_config = deployment(era, 3, method="suffix")
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner").GPUModelRunner(fd_config, "gpu", 0, 0, 0)
    assert activation.registry().refused == {}
    plan = getattr(runner, PLAN_ATTR)
    assert plan.tokens_per_request == 4 and max(plan.sizes) == MAX_NUM_SEQS * 4  # not "exceeds max_num_seqs*(k+1)"


@pytest.mark.parametrize("era", ["develop"], indirect=True)
def test_a_method_the_line_does_not_scale_for_is_planned_without_k(era, runtime):
    ext.activate()
    fd_config = deployment(era, 3, method="ngram")  # e53f5184's FDConfig passes k on for MTP and suffix only
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner").GPUModelRunner(fd_config, "gpu", 0, 0, 0)
    assert getattr(runner, PLAN_ATTR).tokens_per_request == 1
    runner.capture_model()  # FastDeploy's own loop: batch = size
    assert [r["batch_size"] for r in runner.dummy_runs] == sorted(fd_config.graph_opt_config.cudagraph_capture_sizes,
                                                                 reverse=True)


class XPUModel:
    def __init__(self, runtime):
        self.runtime, self.out = runtime, paddle.zeros([4])

    def __call__(self, **kwargs):
        self.runtime.device.launch(self.runtime.framework_stream(),
                                   lambda: paddle.assign(paddle.ones([4]), output=self.out), "attention")
        return self.out


@pytest.mark.parametrize("era", ["develop"], indirect=True)  # XPU captures graphs through the backend since #6152
def test_xpu_without_cuda_sizes_mtp_and_leaves_the_backend_to_fastdeploy(era, no_cuda):
    from fake_cuda import Runtime

    Runtime.reset()
    backend_module = importlib.import_module(BACKEND)
    original_call = backend_module.CudaGraphPiecewiseBackend.__dict__["__call__"]
    ext.activate()
    fd_config = deployment(era, 2)
    xpu = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    runner = xpu.XPUModelRunner(fd_config, "xpu", 0, 0, 0)
    reports = activation.registry().reports
    assert reports["capture_stream"].verdict is Verdict.NOT_NEEDED
    assert reports["capture_stream"].detail.startswith("Paddle is not compiled with CUDA")
    assert reports["xpu_mtp_capture_sizing"].verdict is Verdict.APPLIED
    runner.capture_model()  # the planned loop: size/(k+1) requests, not FastDeploy's batch = size
    plan = getattr(runner, PLAN_ATTR)
    assert [r["batch_size"] for r in runner.dummy_runs] == [s // 3 for s in sorted(plan.sizes, reverse=True)]
    assert backend_module.CudaGraphPiecewiseBackend.__dict__["__call__"] is original_call  # FastDeploy's own
    model = XPUModel(Runtime)
    backend = backend_module.CudaGraphPiecewiseBackend(fd_config, model, model)
    largest = max(plan.sizes)
    one_step(backend, largest, largest // 3)
    assert one_step(backend, largest, largest // 3).tolist() == [1.0] * 4
    assert ("replay", "compute") in Runtime.device.log  # FastDeploy's graph on its own stream, nothing of ours
