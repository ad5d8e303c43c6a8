"""The one plan builder shared by `plan` and the worker: DeploymentSettings -> plan_deployment."""
import pytest

from fastdeploy_cudagraph_ext.capture_plan import (EMPTY_SIZES_PROBLEM, DeploymentSettings, PlanError,
                                                   no_decode_graphs_reason, plan_deployment)


def test_empty_sizes_are_an_error_as_in_fastdeploy():
    # FastDeploy's GraphOptimizationConfig asserts a given list is non-empty (2.3 e53396f, 2.6 41677b9).
    with pytest.raises(PlanError) as error:
        plan_deployment(DeploymentSettings(max_num_seqs=8, capture_sizes=()))
    assert error.value.problems == [EMPTY_SIZES_PROBLEM]


def test_no_sizes_means_fastdeploys_ladder():
    plan = plan_deployment(DeploymentSettings(max_num_seqs=16, num_speculative_tokens=1))
    assert plan.sizes == [32, 16, 8, 4, 2]


def test_fastdeploys_ladder_cap_applies_to_its_ladder_only():
    assert max(plan_deployment(DeploymentSettings(max_num_seqs=512, ladder_cap=512)).sizes) == 512
    user = plan_deployment(DeploymentSettings(max_num_seqs=1024, capture_sizes=(1000,), ladder_cap=512))
    assert user.sizes == [1000]


@pytest.mark.parametrize("settings, reason", [
    (DeploymentSettings(max_num_seqs=8, use_cudagraph=False), "CUDA graphs are off (use_cudagraph: false)"),
    (DeploymentSettings(max_num_seqs=8, cudagraph_only_prefill=True), "cudagraph_only_prefill is on"),
    (DeploymentSettings(max_num_seqs=8, splitwise_role="prefill"), "splitwise role prefill"),
])
def test_deployments_without_decode_graphs_plan_nothing_and_say_why(settings, reason):
    assert plan_deployment(settings) is None
    assert no_decode_graphs_reason(settings).startswith(reason)


def test_ten_thousand_sizes_plan_with_a_warning():
    plan = plan_deployment(DeploymentSettings(max_num_seqs=10_000, capture_sizes=tuple(range(1, 10_001))))
    assert len(plan.captures) == 10_000
    assert plan.warnings == ["10000 decode graphs: each holds its own memory and warmup time; FastDeploy's default "
                             "ladder has at most 51. Check cudagraph_capture_sizes"]
