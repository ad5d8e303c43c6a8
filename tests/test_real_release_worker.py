"""issue 8, done-when: a worker on each release line starts with FD_CUDAGRAPH_EXT=1, tried as a new user would,
on the REAL module files of that release (tests/real_release.py): every group applies or is not needed."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from real_release import MIRROR, MIRROR_ENV, SKIP_REASON

ROOT = Path(__file__).resolve().parent.parent
# The upstream commit each per-release fixture names (patches/releases/).
LINES = {p.stem.removeprefix("fd-"): json.loads(p.read_text())["source"]["commit"]
         for p in sorted((ROOT / "patches" / "releases").glob("fd-*.json"))}

WORKER = textwrap.dedent('''
    import importlib, sys
    from pathlib import Path
    from types import SimpleNamespace
    import real_release
    from fastdeploy_cudagraph_ext.compat import TARGET_MODULES

    tree = real_release.write_release_tree(sys.argv[1], TARGET_MODULES, Path(sys.argv[2]))
    sys.path.insert(0, str(tree))
    sys.meta_path.append(real_release.StubFinder())
    # A CUDA worker: the fake CUDA runtime's stream policy (this machine's Paddle is the CPU build)
    from fake_cuda import Runtime
    from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy
    install_policy(CaptureStreamPolicy(Runtime.device, C10Status(follows_framework=False, bridge=Runtime.c10),
                                       extensions_may_launch=lambda: True))
    import fastdeploy_cudagraph_ext
    fastdeploy_cudagraph_ext.register()  # what FastDeploy's plugin loader calls, with FD_CUDAGRAPH_EXT=1
    for name in TARGET_MODULES:
        importlib.import_module(name)  # as the worker imports them
    from fastdeploy_cudagraph_ext import activation
    registry = activation.registry()
    fd_config = SimpleNamespace(
        graph_opt_config=SimpleNamespace(use_cudagraph=True, cudagraph_capture_sizes=[2, 4, 8]),
        speculative_config=SimpleNamespace(method="mtp", num_speculative_tokens=1),
        scheduler_config=SimpleNamespace(splitwise_role="mixed", max_num_seqs=4),
        parallel_config=SimpleNamespace(use_ep=True, ep_group=SimpleNamespace(ranks=[0])))  # FastDeploy builds it
    registry.runner_built("GPUModelRunner", fd_config)  # the gate's decision, without FastDeploy's __init__ body
    for name, report in registry.reports.items():
        print(f"{name}: {report.verdict.value}: {report.detail}")
    print("refused groups:", sorted(registry.refused))
''')


@pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
@pytest.mark.parametrize("line", LINES)
def test_a_worker_starts_with_the_plugin_on_the_real_modules(line, tmp_path):
    env = {**os.environ, "FD_CUDAGRAPH_EXT": "1", MIRROR_ENV: str(MIRROR),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "standins")])}
    out = subprocess.run([sys.executable, "-c", WORKER, LINES[line], str(tmp_path / "fd")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused groups: []" in out.stdout, out.stdout
    assert "capture_stream: applied" in out.stdout and "deepep_capture_checks: applied" in out.stdout
    if line in ("2.6", "develop"):
        assert "sizes: not needed (FastDeploy already scales every size by k+1" in out.stdout


# issue 15, item 2 on the REAL module files: the runner gate with a deployment that needs every group, FastDeploy's
# own GraphOptimizationConfig sizing it as that line's FDConfig does, then one capture and one replay through the
# patched REAL CudaGraphPiecewiseBackend. Stubbed for this CPU machine (and said so): Paddle's CUDAGraph (the fake
# CUDA runtime's graph), paddle.device.synchronize, capture_custom_allreduce (no custom all-reduce), and a runnable
# whose kernels are recorded closures (a real CPU tensor op after FastDeploy's output._clear() would crash).
CAPTURE = textwrap.dedent('''
    import contextlib, importlib, inspect, sys
    from pathlib import Path
    from types import SimpleNamespace
    import paddle
    import real_release
    from fake_cuda import FakeGraph, Runtime
    from fastdeploy_cudagraph_ext.capture_plan import default_ladder
    from fastdeploy_cudagraph_ext.compat import TARGET_MODULES
    from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy

    commit, root, method, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tree = real_release.write_release_tree(commit, TARGET_MODULES, Path(root))
    sys.path.insert(0, str(tree))
    sys.meta_path.append(real_release.StubFinder())
    install_policy(CaptureStreamPolicy(Runtime.device, C10Status(follows_framework=False, bridge=Runtime.c10),
                                       extensions_may_launch=lambda: True))
    paddle.device.synchronize = lambda *a, **kw: Runtime.device.synchronize()
    import fastdeploy_cudagraph_ext
    fastdeploy_cudagraph_ext.register()
    for name in TARGET_MODULES:
        importlib.import_module(name)
    backend_module = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
    backend_module.graphs = SimpleNamespace(CUDAGraph=lambda *a, **kw: FakeGraph(Runtime.device))
    backend_module.capture_custom_allreduce = contextlib.nullcontext
    from fastdeploy.config import GraphOptimizationConfig
    from fastdeploy_cudagraph_ext import activation

    seqs = 4
    graph = GraphOptimizationConfig({"use_cudagraph": True, "cudagraph_capture_sizes": default_ladder(seqs * (k + 1))})
    params = inspect.signature(graph.init_with_cudagrpah_size).parameters
    counted = activation.registry().reports["mtp_capture_sizing"].variant.line["k_plus_1_methods"].split(",")
    if "num_speculative_tokens" in params:  # 2.6/develop FDConfig: k passed on for the methods it counts
        graph.init_with_cudagrpah_size(max_capture_size=seqs, num_speculative_tokens=k if method in counted else 0)
    elif "max_num_seqs" in params:  # 2.2.0
        graph.init_with_cudagrpah_size(max_num_seqs=seqs * (k + 1))
    else:
        graph.init_with_cudagrpah_size(max_capture_size=seqs * (k + 1) if method in counted else seqs)
        if "max_capture_shape_prefill" in params and method in counted:  # 2.5's FDConfig: running requests -> graph
            sizes = sorted(graph.cudagraph_capture_sizes)
            graph.real_bsz_to_captured_size = {b: next(s for s in sizes if s >= b * (k + 1))
                                               for b in range(1, sizes[-1] // (k + 1) + 1)}
    phase = SimpleNamespace(phase="prefill")
    fd_config = SimpleNamespace(
        graph_opt_config=graph, speculative_config=SimpleNamespace(method=method, num_speculative_tokens=k),
        scheduler_config=SimpleNamespace(splitwise_role="mixed", max_num_seqs=seqs, max_num_batched_tokens=2048),
        parallel_config=SimpleNamespace(use_ep=True, splitwise_role="mixed", max_num_seqs=seqs, moe_phase=phase,
                                        max_num_batched_tokens=2048, ep_group=SimpleNamespace(ranks=[0])),
        model_config=SimpleNamespace(moe_phase=phase, num_max_dispatch_tokens_per_rank=128, hidden_size=8))
    attributes = activation.registry().runner_built("GPUModelRunner", fd_config)
    registry = activation.registry()
    for name, report in registry.reports.items():
        print(f"{name}: {report.verdict.value}: {report.detail}")
    print("refused groups:", sorted(registry.refused))
    plan = next(iter(attributes.values()))
    print("plan:", plan.tokens_per_request, sorted(plan.sizes))
    print("installed:", sorted(graph.cudagraph_capture_sizes))

    class Model:
        calls = 0
        def __call__(self, **kwargs):
            Model.calls += 1
            out = paddle.zeros([4])
            Runtime.device.launch(Runtime.framework_stream(), lambda: None, "attention")
            Runtime.device.launch(Runtime.c10.stream(), lambda: None, "extension")
            return out

    model = Model()
    backend_cls = backend_module.CudaGraphPiecewiseBackend
    init = inspect.signature(backend_cls.__init__).parameters
    backend = backend_cls(fd_config, model, model) if "dy_runnable" in init else backend_cls(fd_config, model)
    size = max(plan.sizes)
    ids = paddle.zeros([size])
    meta = SimpleNamespace(ids_remove_padding=ids, exist_prefill=False, real_bsz=size // plan.tokens_per_request,
                           seq_lens_this_time=paddle.ones([size // plan.tokens_per_request]))
    backend(forward_meta=meta, ids_remove_padding=ids)
    entry = next(e for e in backend.concrete_size_entries.values() if e.cuda_graph is not None)
    print("captured:", entry.real_shape, entry.cuda_graph.kernel_names(), entry.cuda_graph.stream.name)
    Runtime.device.log.clear()
    calls = Model.calls
    backend(forward_meta=meta, ids_remove_padding=ids)
    print("replay:", Runtime.device.log, "model calls:", Model.calls - calls)
''')
DEPLOYMENTS = [(line, "mtp", k) for line in LINES for k in (1, 3)] + \
    [(line, "suffix", 3) for line in ("2.5", "2.6") if line in LINES] + [("develop", "ngram", 3)]


@pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
@pytest.mark.parametrize("line, method, k", DEPLOYMENTS)
def test_every_group_starts_and_the_real_backend_captures_and_replays(line, method, k, tmp_path):
    env = {**os.environ, "FD_CUDAGRAPH_EXT": "1", MIRROR_ENV: str(MIRROR),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "standins")])}
    out = subprocess.run([sys.executable, "-c", CAPTURE, LINES[line], str(tmp_path / "fd"), method, str(k)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused groups: []" in out.stdout, out.stdout
    for patch in ("capture_stream", "mtp_capture_sizing", "deepep_transition_clean", "deepep_capture_checks"):
        assert f"{patch}: applied" in out.stdout, out.stdout
    assert f"plan: {k + 1} " in out.stdout, out.stdout  # k counts for this method on this line
    plan = out.stdout.split("plan: ", 1)[1].split("\n", 1)[0].split(" ", 1)[1]
    assert f"installed: {plan}" in out.stdout, out.stdout
    if line not in ("2.6", "develop"):  # the plan's sizes went in through the line's own keyword (2.2.0: max_num_seqs=)
        assert "decode capture sizes set to" in out.stderr, out.stderr[-3000:]
    assert "captured: " in out.stdout and "['attention', 'extension'] capture" in out.stdout, out.stdout
    assert ("replay: [('wait', 'capture', 'compute'), ('replay', 'capture'), ('wait', 'compute', 'capture')] "
            "model calls: 0") in out.stdout, out.stdout
