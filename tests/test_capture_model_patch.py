"""mtp_sizing on both eras' GPU and XPU runners (stand-ins). Sizes are given as the user (or FastDeploy's
ladder) gives them; develop's FDConfig has already scaled them by k+1 (tests/fd_configs.py)."""
import importlib
from types import SimpleNamespace

import pytest
from fd_configs import make_fd_config

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext.capture_plan import PlanError
from fastdeploy_cudagraph_ext.fd_facts import ModuleFacts
from fastdeploy_cudagraph_ext.patch import patch_gpu_model_runner_capture as gpu
from fastdeploy_cudagraph_ext.patch import patch_xpu_model_runner_capture as xpu
from fastdeploy_cudagraph_ext.registry import ContractBroken

pytestmark = pytest.mark.standin


def runner_for(fd_config):
    module = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    return module.GPUModelRunner(fd_config, "gpu", 0, 0, 0)


def captured(runner):
    return [(r["batch_size"], r["expected_decode_len"], r["accept_all_drafts"]) for r in runner.dummy_runs]


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # the size/2 bug is 2.2-2.4's
def test_upstream_2_3_warms_k3_with_half_the_size(fd_era):
    runner = runner_for(make_fd_config(k=3, sizes=(4, 8, 16)))
    runner.capture_model()
    assert [b for b, _, _ in captured(runner)] == [8, 4, 2]  # k=3 needs 4, 2, 1


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_patched_runner_warms_size_over_k_plus_1_largest_first(fd_era, k):
    ext.activate()
    step = k + 1
    given = (1, 2, 4, 8) if fd_era == "develop" else tuple(step * b for b in (1, 2, 4, 8))  # develop scales itself
    runner = runner_for(make_fd_config(k=k, max_num_seqs=8, sizes=given))
    runner.capture_model()
    assert captured(runner) == [(b, step * 2, True) for b in (8, 4, 2, 1)]
    assert all(r["in_capturing"] and r["sot_warmup"] and r["num_tokens"] == 2048 for r in runner.dummy_runs)
    assert getattr(runner, "fastdeploy_loop_ran", True)  # develop: FastDeploy's own loop ran, not the plugin's


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_develop_sizes_scaled_by_fastdeploy_are_never_scaled_again(fd_era):
    ext.activate()
    fd_config = make_fd_config(k=2, max_num_seqs=4, sizes=(1, 2, 4))  # FDConfig made them 3, 6, 12
    runner = runner_for(fd_config)
    assert sorted(fd_config.graph_opt_config.cudagraph_capture_sizes) == [3, 6, 12]
    runner.capture_model()
    assert [b for b, _, _ in captured(runner)] == [4, 2, 1]


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_develop_rebuilds_the_running_request_map_after_changing_sizes(fd_era, monkeypatch):
    """develop keys MTP graphs by running requests: after sizes change (1 rounded up to 2), no batch may map to a size that is gone."""
    import paddle

    from fake_cuda import Runtime

    from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy

    monkeypatch.setenv("FD_CUDAGRAPH_EXT_ROUND_SIZES", "1")
    ext.activate()
    fd_config = make_fd_config(k=1, max_num_seqs=4, sizes=(1, 2, 4, 8), ep=True)  # 1 rounds up to 2
    runner_for(fd_config)
    graph = fd_config.graph_opt_config
    assert sorted(graph.cudagraph_capture_sizes) == [2, 4, 8]
    assert graph.real_bsz_to_captured_size == {1: 2, 2: 4, 3: 8, 4: 8}
    Runtime.reset()
    install_policy(CaptureStreamPolicy(Runtime.device, C10Status(follows_framework=False, bridge=Runtime.c10),
                                       extensions_may_launch=lambda: True))
    backend_module = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
    backend = backend_module.CudaGraphPiecewiseBackend(fd_config, lambda **kw: paddle.zeros([1]),
                                                       lambda **kw: paddle.zeros([1]))
    for bsz in (4, 3, 2, 1):  # descending, as FastDeploy captures
        meta = SimpleNamespace(real_bsz=bsz, ids_remove_padding=paddle.zeros([2 * bsz]), exist_prefill=False)
        backend(forward_meta=meta)
    assert {key[0] for key, entry in backend.concrete_size_entries.items() if entry.cuda_graph is not None} == {2, 4, 8}


def test_fastdeploy_generated_sizes_are_replaced_by_the_scaled_ladder(fd_era):
    ext.activate()
    fd_config = make_fd_config(k=3, max_num_seqs=4, sizes=(1, 2, 4, 8, 16))  # FastDeploy's ladder
    runner = runner_for(fd_config)
    assert fd_config.graph_opt_config.cudagraph_capture_sizes == [16, 8, 4]
    assert fd_config.graph_opt_config.real_shape_to_captured_size[5] == 8
    runner.capture_model()
    assert [b for b, _, _ in captured(runner)] == [4, 2, 1]


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # 2.3 capped its (unscaled) ladder at 512
def test_fastdeploys_cap_on_its_own_ladder_is_kept(fd_era):
    ext.activate()
    ladder_to_512 = (1, 2, 4, *range(8, 129, 8), *range(144, 257, 16), *range(288, 513, 32))
    fd_config = make_fd_config(k=2, max_num_seqs=256, sizes=ladder_to_512)
    runner_for(fd_config)
    sizes = fd_config.graph_opt_config.cudagraph_capture_sizes
    assert max(sizes) == 510 and all(s % 3 == 0 for s in sizes)


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # develop scales user sizes, so they are multiples
def test_invalid_user_sizes_stop_the_worker_before_weights_load(fd_era):
    ext.activate()
    with pytest.raises(PlanError) as error:
        runner_for(make_fd_config(k=2, max_num_seqs=8, sizes=(3, 5, 24)))
    assert error.value.problems == [
        "fastdeploy-cudagraph-ext refuses to start this worker before loading weights: capture size 5 is not a "
        "multiple of k+1=3 (each request decodes 3 tokens); nearest valid sizes: 3, 6"
    ]


def test_deepep_cap_is_checked_at_startup(fd_era):
    ext.activate()
    with pytest.raises(PlanError, match=r"32 tokens per rank, over DeepEP.s low-latency cap"):
        runner_for(make_fd_config(k=1, max_num_seqs=16, sizes=(2, 4, 8, 16, 32), ep=True, cap=16))


def test_non_mtp_capture_is_fastdeploys_own(fd_era):
    ext.activate()
    runner = runner_for(make_fd_config(k=0, max_num_seqs=16, sizes=(1, 2, 4, 8, 16)))
    runner.capture_model()
    # FastDeploy's loop: decode length 1, no accept_all_drafts (the planned loop would pass (k+1)*2 and True)
    assert captured(runner) == [(b, 1, False) for b in (16, 8, 4, 2, 1)]


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # a planned-loop line: the check decides whose loop runs
@pytest.mark.parametrize("turned_off", ["use_cudagraph", "cudagraph_only_prefill"])
def test_decode_graphs_turned_off_after_the_gate_never_run_the_planned_loop(fd_era, turned_off):
    """The plan was made with decode graphs on; a runner whose graphs are off by capture time (the config changed
    after the worker started) must not warm and capture decode graphs through the plugin's loop."""
    ext.activate()
    fd_config = make_fd_config(k=1, max_num_seqs=4, sizes=(2, 4, 8))
    runner = runner_for(fd_config)
    if turned_off == "use_cudagraph":
        runner.use_cudagraph = False
    else:
        fd_config.graph_opt_config.cudagraph_only_prefill = True
    runner.capture_model()
    assert not any(accept for _, _, accept in captured(runner))


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)
def test_each_planned_capture_is_logged_with_its_size_batch_and_decode_length(fd_era, caplog):
    ext.activate()
    runner = runner_for(make_fd_config(k=1, max_num_seqs=2, sizes=(2, 4)))
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        runner.capture_model()
    assert [m for m in caplog.messages if "captured MTP size" in m] == [
        "fastdeploy-cudagraph-ext: captured MTP size 4 (batch 2, decode length 4)",
        "fastdeploy-cudagraph-ext: captured MTP size 2 (batch 1, decode length 4)"]


def xpu_runner_for(fd_config):
    module = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    return module.XPUModelRunner(fd_config, "xpu", 0, 0, 0)


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)  # XPU captures graphs from #6152 (2.5) on
def test_xpu_mtp_capture_plans_fastdeploys_default_sizes_with_k2(fd_era):
    """The old plugin raised 'runner capture sizes [1, 2, 4, 8] are not in the plan [6, 3]' here."""
    ext.activate()
    runner = xpu_runner_for(make_fd_config(k=2, max_num_seqs=2, sizes=(1, 2)))  # FastDeploy's ladder for 2 seqs
    assert sorted(runner.cudagraph_capture_sizes) == [3, 6]
    runner.capture_model()
    assert [(r["batch_size"], r["expected_decode_len"]) for r in runner.dummy_runs] == [(2, 6), (1, 6)]
    assert "accept_all_drafts" not in {k for r in runner.dummy_runs for k, v in r.items() if v is True}


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_xpu_runner_gets_the_plan_before_it_copies_the_sizes(fd_era):
    """FastDeploy's unscaled default ladder (as 2.4's config leaves it) with k=2: the runner must copy the plan
    [6, 3], not [8, 4, 2, 1] (the old plugin planned at capture time and raised 'not in the plan [6, 3]')."""
    from fastdeploy.config import GraphOptimizationConfig

    ext.activate()
    fd_config = make_fd_config(k=2, max_num_seqs=2)
    fd_config.graph_opt_config = GraphOptimizationConfig([1, 2, 4, 8])
    fd_config.graph_opt_config.init_with_cudagrpah_size(max_capture_size=8)  # not scaled
    runner = xpu_runner_for(fd_config)
    assert runner.cudagraph_capture_sizes == [3, 6]
    runner.capture_model()
    assert [(r["batch_size"], r["expected_decode_len"]) for r in runner.dummy_runs] == [(2, 6), (1, 6)]


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_xpu_non_mtp_capture_stays_fastdeploys(fd_era):
    ext.activate()
    runner = xpu_runner_for(make_fd_config(k=0, max_num_seqs=4, sizes=(1, 2, 4)))
    runner.capture_model()
    assert [(r["batch_size"], r["num_tokens"]) for r in runner.dummy_runs] == [(4, 2048), (2, 2048), (1, 2048)]


@pytest.mark.parametrize("fd_era", ["2.4"], indirect=True)  # #5670: size/(k+1) loop, sizes not scaled upstream
def test_2_4_runs_fastdeploys_own_loop_on_sizes_made_multiples_of_k_plus_1(fd_era):
    ext.activate()
    runner = runner_for(make_fd_config(k=2, max_num_seqs=16, sizes=(1, 2, 4, 8, 16)))  # FastDeploy's ladder
    sizes = sorted(runner.cudagraph_capture_sizes, reverse=True)
    assert sizes and all(s % 3 == 0 for s in sizes)
    runner.capture_model()
    assert runner.fastdeploy_loop_ran  # not replaced: FastDeploy keeps its OOM / error-700 hints
    assert captured(runner) == [(s // 3, 5, True) for s in sizes]  # FastDeploy's own decode length 2k+1


def test_sizes_changed_after_the_runner_was_built_stop_the_capture(fd_era):
    ext.activate()
    runner = runner_for(make_fd_config(k=1, max_num_seqs=8, sizes=(2, 4, 8, 16) if fd_era == "2.3" else (1, 2, 4, 8)))
    runner.cudagraph_capture_sizes = [*runner.cudagraph_capture_sizes, 10]
    with pytest.raises(PlanError, match=r"runner capture sizes \[10\] are not in the plan"):
        runner.capture_model()


def runner_facts(patch, cls, markers, config=None):
    """The facts a capture patch chooses from: its runner's capture_model markers, a config counting k+1 for MTP."""
    return {patch.MODULE: ModuleFacts(markers={f"{cls}.capture_model.{k}": v for k, v in markers.items()}),
            patch.CONFIG_MODULE: ModuleFacts(markers={"FDConfig.k_plus_1_methods": "mtp", **(config or {})})}


def test_the_xpu_choice_names_the_lines_warmup_batch():
    choice = xpu.choose(runner_facts(xpu, "XPUModelRunner", {"captures_graphs": "yes", "mtp_batch": "size"}))
    assert (choice.variant, choice.reason) == ("planned_loop", "the XPU loop's batch is 'size', not size/(k+1) with "
                                               "the configured k: MTP decode capture runs the planned loop; k counts "
                                               "for mtp")
    assert xpu.choose(runner_facts(xpu, "XPUModelRunner", {"captures_graphs": "no"})).variant is None


@pytest.mark.parametrize("facts", [{}, runner_facts(xpu, "XPUModelRunner", {})], ids=["no-runner-module", "no-marker"])
def test_an_xpu_runner_the_plugin_cannot_read_is_refused_not_crashed(facts):
    with pytest.raises(ContractBroken) as refused:
        xpu.choose(facts)
    assert str(refused.value) == "cannot tell whether XPUModelRunner.capture_model captures graphs (marker None)"


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)  # the XPU runner captures graphs from 2.5 on
@pytest.mark.parametrize("make_runner", [runner_for, xpu_runner_for], ids=["gpu", "xpu"])
def test_a_runner_without_a_plan_plans_at_capture_with_the_workers_settings(fd_era, make_runner):
    """A runner the gate did not see (built before activation) is planned when it captures, with the same settings."""
    ext.activate()
    runner = make_runner(make_fd_config(k=2, max_num_seqs=2, sizes=(1, 2)))
    delattr(runner, gpu.PLAN_ATTR)
    runner.capture_model()
    assert getattr(runner, gpu.PLAN_ATTR).sizes == [6, 3]
    assert [(r["batch_size"], r["expected_decode_len"]) for r in runner.dummy_runs] == [(2, 6), (1, 6)]


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # a line whose FDConfig does not scale sizes, as 2.5's
def test_installed_sizes_rebuild_the_running_request_map_with_k_plus_1_tokens_per_request(fd_era):
    """2.5 keys MTP graphs by running requests: FDConfig maps each batch to the graph of its size/(k+1) requests
    (real_bsz_to_captured_size, fastdeploy/config.py at f3fb7e03) over sizes it does not scale. Once the plan changes
    the sizes, each batch maps to the smallest graph holding its k+1 tokens per request; no batch maps to a size
    that is gone."""
    ext.activate()
    fd_config = make_fd_config(k=2, max_num_seqs=4, sizes=(1, 2, 4, 8, 16))
    fd_config.graph_opt_config.real_bsz_to_captured_size = {1: 2, 2: 4, 3: 8, 4: 8}  # as 2.5's FDConfig built it
    runner_for(fd_config)
    graph = fd_config.graph_opt_config
    assert sorted(graph.cudagraph_capture_sizes) == [3, 6]  # this line's cap, multiples of k+1
    assert graph.real_bsz_to_captured_size == {1: 3, 2: 6}


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)
def test_the_installed_sizes_are_logged(fd_era, caplog):
    ext.activate()
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        runner_for(make_fd_config(k=3, max_num_seqs=4, sizes=(1, 2, 4, 8, 16)))
    assert "fastdeploy-cudagraph-ext: decode capture sizes set to [4, 8, 16]" in caplog.messages


@pytest.mark.parametrize("mtp_batch, scales, variant, reason", [
    ("none", None, "planned_loop", "FastDeploy's loop has no MTP branch and warms every size with batch = size (2.2.0); "
                                   "the plugin's loop uses size/(k+1); k counts for mtp"),
    ("size_over_2", None, "planned_loop", "FastDeploy warms MTP graphs with size/2 requests (right for k=1 only); the "
                                          "plugin's loop uses size/(k+1); k counts for mtp"),
    ("size_over_k_plus_1", "no", "fastdeploy_loop", "FastDeploy's loop divides by k+1 and runs unchanged; sizes made "
                                                    "multiples of k+1 before FastDeploy reads them; DeepEP cap and k+1 "
                                                    "checks run; k counts for mtp"),
    ("size_over_k_plus_1", "yes", "fastdeploy_loop", "FastDeploy's loop divides by k+1 and runs unchanged; sizes: not "
                                                     "needed (FastDeploy already scales every size by k+1; never scaled "
                                                     "again); DeepEP cap and k+1 checks run; k counts for mtp"),
])
def test_the_gpu_loop_choice_follows_fastdeploys_own_batch_and_says_why(mtp_batch, scales, variant, reason):
    config = {} if scales is None else {"GraphOptimizationConfig.init_with_cudagrpah_size.scales_by_k_plus_1": scales}
    choice = gpu.choose(runner_facts(gpu, "GPUModelRunner", {"mtp_batch": mtp_batch}, config))
    assert (choice.variant, choice.reason, dict(choice.line)) == (variant, reason, {"k_plus_1_methods": "mtp"})


@pytest.mark.parametrize("facts", [{gpu.CONFIG_MODULE: ModuleFacts(markers={"FDConfig.k_plus_1_methods": "mtp"})},
                                   runner_facts(gpu, "GPUModelRunner", {})], ids=["no-runner-module", "no-marker"])
def test_a_gpu_runner_the_plugin_cannot_read_is_refused_not_crashed(facts):
    with pytest.raises(ContractBroken, match=r"MTP batch sizing is not one the plugin knows \(marker mtp_batch=None\)"):
        gpu.choose(facts)


@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # 2.3's FDConfig counts k+1 tokens for MTP only
def test_a_speculative_method_the_line_does_not_count_k_plus_1_for_keeps_fastdeploys_loop(fd_era):
    ext.activate()
    runner = runner_for(make_fd_config(k=2, max_num_seqs=4, sizes=(1, 2, 4), method="ngram"))
    runner.capture_model()
    assert captured(runner) == [(b, 1, False) for b in (4, 2, 1)]


def test_a_line_without_cudagraph_only_prefill_captures_mtp_decode_graphs():
    """2.2.0's GraphOptimizationConfig has no cudagraph_only_prefill (fa236927): no prefill-only capture to defer to."""
    runner = SimpleNamespace(use_cudagraph=True, graph_opt_config=SimpleNamespace(),
                             fd_config=SimpleNamespace(speculative_config=SimpleNamespace(method="mtp",
                                                                                          num_speculative_tokens=1)))
    assert gpu._is_mtp_decode_capture(runner, {"mtp"})
    assert not gpu._is_mtp_decode_capture(runner, {"suffix"})  # a method this line does not count k+1 for


def test_a_line_whose_counted_methods_cannot_be_read_is_refused_with_the_markers_named():
    with pytest.raises(ContractBroken) as refused:
        gpu.counted_methods({})
    assert str(refused.value) == (
        "cannot tell which speculative methods this FastDeploy counts k+1 tokens per request for (markers "
        "FDConfig.k_plus_1_methods and SpeculativeConfig.method_list are absent)")
