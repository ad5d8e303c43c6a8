"""The one plan builder shared by `plan` and the worker: DeploymentSettings -> plan_deployment."""
import dataclasses

import pytest

from fastdeploy_cudagraph_ext.capture_plan import (EMPTY_SIZES_PROBLEM, MANY_GRAPHS, DeploymentSettings, PlanError,
                                                   PlanInputs, no_decode_graphs_reason, plan_deployment, plan_inputs)


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
    (DeploymentSettings(max_num_seqs=8, use_cudagraph=False),
     "CUDA graphs are off (use_cudagraph: false): FastDeploy runs every step eagerly and the plugin captures nothing; "
     "its patches stay installed but idle"),
    (DeploymentSettings(max_num_seqs=8, cudagraph_only_prefill=True),
     "cudagraph_only_prefill is on: FastDeploy captures prefill graphs only (on the plugin's capture stream) and runs "
     "decode eagerly, so there are no decode sizes to plan"),
    (DeploymentSettings(max_num_seqs=8, splitwise_role="prefill"),
     "splitwise role prefill: this instance never decodes, so there are no decode sizes to plan"),
])
def test_deployments_without_decode_graphs_plan_nothing_and_say_why(settings, reason):
    assert plan_deployment(settings) is None
    assert no_decode_graphs_reason(settings) == reason


def test_every_deployment_fact_reaches_the_plan_s_inputs():
    settings = DeploymentSettings(max_num_seqs=4, num_speculative_tokens=1, capture_sizes=(2, 4), max_chunk_tokens=512,
                                  expert_parallel=True, max_dispatch_tokens_per_rank=64, internode=True,
                                  nvshmem_qp_depth=4096, round_sizes=True)
    assert plan_inputs(settings) == PlanInputs(max_num_seqs=4, num_speculative_tokens=1, capture_sizes=(2, 4),
                                               capture_limit=None, max_chunk_tokens=512, expert_parallel=True,
                                               max_dispatch_tokens_per_rank=64, internode=True, nvshmem_qp_depth=4096,
                                               round_sizes=True)
    assert plan_inputs(DeploymentSettings(max_num_seqs=4, ladder_cap=512)).capture_limit == 512


def test_a_plan_as_json_names_its_inputs_captures_and_warnings():
    plan = plan_deployment(DeploymentSettings(max_num_seqs=2, num_speculative_tokens=1, capture_sizes=(2, 3),
                                              round_sizes=True))
    assert plan.to_dict() == {
        "inputs": dataclasses.asdict(plan.inputs),
        "captures": [{"capture_size": 4, "batch_size": 2, "expected_decode_len": 4, "num_tokens": 8192},
                     {"capture_size": 2, "batch_size": 1, "expected_decode_len": 4, "num_tokens": 8192}],
        "warnings": ["capture size 3 rounded to 4, a multiple of k+1=2"],
    }


def test_many_graphs_warn_above_the_threshold_only_and_log_the_warning(caplog):
    at = plan_deployment(DeploymentSettings(max_num_seqs=MANY_GRAPHS, capture_sizes=tuple(range(1, MANY_GRAPHS + 1))))
    assert at.warnings == [] and caplog.records == []
    over = plan_deployment(DeploymentSettings(max_num_seqs=MANY_GRAPHS + 1,
                                              capture_sizes=tuple(range(1, MANY_GRAPHS + 2))))
    assert [r.getMessage() for r in caplog.records] == [f"fastdeploy-cudagraph-ext: {w}" for w in over.warnings]
    assert len(over.warnings) == 1


def test_ten_thousand_sizes_plan_with_a_warning():
    plan = plan_deployment(DeploymentSettings(max_num_seqs=10_000, capture_sizes=tuple(range(1, 10_001))))
    assert len(plan.captures) == 10_000
    assert plan.warnings == ["10000 decode graphs: each holds its own memory and warmup time; FastDeploy's default "
                             "ladder has at most 51. Check cudagraph_capture_sizes"]
