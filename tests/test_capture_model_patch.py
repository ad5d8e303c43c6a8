"""mtp_capture_sizing on both eras' GPUModelRunner (stand-ins)."""
import importlib

import pytest
from fd_configs import make_fd_config

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext.capture_plan import PlanError

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
    runner = runner_for(make_fd_config(k=k, max_num_seqs=8, sizes=tuple(step * b for b in (1, 2, 4, 8))))
    runner.capture_model()
    assert captured(runner) == [(b, step * 2, True) for b in (8, 4, 2, 1)]
    assert all(r["in_capturing"] and r["sot_warmup"] and r["num_tokens"] == 2048 for r in runner.dummy_runs)


def test_fastdeploy_generated_sizes_are_replaced_by_the_scaled_ladder(fd_era):
    ext.activate()
    fd_config = make_fd_config(k=3, max_num_seqs=4, sizes=(1, 2, 4, 8, 16))  # FastDeploy's unscaled ladder
    runner = runner_for(fd_config)
    assert fd_config.graph_opt_config.cudagraph_capture_sizes == [16, 8, 4]
    assert fd_config.graph_opt_config.real_shape_to_captured_size[5] == 8
    runner.capture_model()
    assert [b for b, _, _ in captured(runner)] == [4, 2, 1]


def test_fastdeploys_cap_on_its_own_ladder_is_kept(fd_era):
    ext.activate()
    ladder_to_512 = (1, 2, 4, *range(8, 129, 8), *range(144, 257, 16), *range(288, 513, 32))
    fd_config = make_fd_config(k=2, max_num_seqs=256, sizes=ladder_to_512)  # 2.3 capped its ladder at 512
    runner_for(fd_config)
    sizes = fd_config.graph_opt_config.cudagraph_capture_sizes
    assert max(sizes) == 510 and all(s % 3 == 0 for s in sizes)


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
    assert [b for b, _, _ in captured(runner)] == [16, 8, 4, 2, 1]


def xpu_runner_for(fd_config):
    module = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    return module.XPUModelRunner(fd_config, "xpu", 0, 0, 0)


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)  # XPU captures graphs only in the 2026 code
def test_xpu_mtp_capture_uses_the_real_k(fd_era):
    ext.activate()
    runner = xpu_runner_for(make_fd_config(k=2, max_num_seqs=4, sizes=(3, 6, 12)))
    runner.capture_model()
    assert captured(runner) == [(4, 6, True), (2, 6, True), (1, 6, True)]


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_xpu_prefill_only_capture_stays_fastdeploys(fd_era):
    ext.activate()
    fd_config = make_fd_config(k=2, max_num_seqs=4, sizes=(3, 6, 12))
    fd_config.graph_opt_config.cudagraph_only_prefill = True
    runner = xpu_runner_for(fd_config)
    runner.capture_model()
    assert [(r["num_tokens"], r["batch_size"]) for r in runner.dummy_runs] == [(12, 4), (6, 4), (3, 4)]
