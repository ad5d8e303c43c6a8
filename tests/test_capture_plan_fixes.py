"""capture_plan.judge_sizes at the plan level: each problem's fixes are the nearest values that pass the same
judge, each applied removes the problem; the DeepEP cap's boundary; the line's own ladder; coverage's closed form."""
from __future__ import annotations

import dataclasses

import pytest

from fastdeploy_cudagraph_ext.capture_plan import (
    INTERNODE_LOW_LATENCY_CAP, NOT_MULTIPLE, OVER_CAP, OVER_MAX, DeploymentSettings, PlanInputs, coverage,
    judge_sizes, plan_inputs)

FIELDS = {f.name for f in dataclasses.fields(PlanInputs)}


def applied(inputs: PlanInputs, fix: dict) -> PlanInputs | None:
    """The inputs with a fix applied; None where the fix turns graphs off (nothing left to judge)."""
    if fix.get("use_cudagraph") is False:
        return None
    assert set(fix) <= FIELDS, fix
    return dataclasses.replace(inputs, **fix)


def problems_of(inputs: PlanInputs) -> list[str]:
    verdicts, general = judge_sizes(inputs)
    return [p.text for p in general] + [v.problem or v.status for v in verdicts if v.size is None]


CASES = {
    "k below 0": (PlanInputs(max_num_seqs=8, num_speculative_tokens=-1), [{"num_speculative_tokens": 0}]),
    "k above 5": (PlanInputs(max_num_seqs=8, num_speculative_tokens=7), [{"num_speculative_tokens": 5}]),
    "no sequences": (PlanInputs(max_num_seqs=0), [{"max_num_seqs": 1}]),
    "empty sizes": (PlanInputs(max_num_seqs=8, capture_sizes=()), [{"capture_sizes": None}, {"use_cudagraph": False}]),
    "internode cap over 1024": (
        PlanInputs(max_num_seqs=8, expert_parallel=True, internode=True, max_dispatch_tokens_per_rank=2048,
                   nvshmem_qp_depth=8192),
        [{"max_dispatch_tokens_per_rank": INTERNODE_LOW_LATENCY_CAP}]),
    "shallow QP depth": (PlanInputs(max_num_seqs=8, expert_parallel=True, nvshmem_qp_depth=100),
                         [{"nvshmem_qp_depth": 258}]),
}


@pytest.mark.parametrize("name", CASES)
def test_a_deployment_wide_problem_offers_the_nearest_fixes_and_each_removes_it(name):
    inputs, expected = CASES[name]
    verdicts, general = judge_sizes(inputs)
    assert len(general) == 1 and general[0].text
    assert list(general[0].fixes) == expected
    for fix in general[0].fixes:
        fixed = applied(inputs, fix)
        assert fixed is None or general[0].text not in problems_of(fixed)


def test_the_messages_name_the_value_they_refuse():
    assert judge_sizes(PlanInputs(max_num_seqs=0))[1][0].text == "max_num_seqs=0 must be at least 1"


@pytest.mark.parametrize(("sizes", "status", "fixes"), [
    ((2, 4, 40), OVER_MAX, [{"capture_sizes": (2, 4)}]),  # k=1, max_num_seqs=8: at most 16 tokens
    ((2, 5, 8), NOT_MULTIPLE, [{"capture_sizes": (2, 4, 8)}, {"capture_sizes": (2, 6, 8)}]),
    ((5,), NOT_MULTIPLE, [{"capture_sizes": (4,)}, {"capture_sizes": (6,)}]),
    ((40,), OVER_MAX, [{"use_cudagraph": False}]),  # removing the only size: no list is left
])
def test_a_size_problem_is_fixed_by_replacing_or_removing_that_size_alone(sizes, status, fixes):
    inputs = PlanInputs(max_num_seqs=8, num_speculative_tokens=1, capture_sizes=sizes)
    verdicts, general = judge_sizes(inputs)
    bad = [v for v in verdicts if v.size is None]
    assert general == [] and len(bad) == 1 and bad[0].status == status and bad[0].problem
    assert bad[0].requested in sizes
    assert list(bad[0].fixes) == fixes
    for fix in fixes:
        fixed = applied(inputs, fix)
        assert fixed is None or problems_of(fixed) == []


@pytest.mark.parametrize(("seqs", "cap", "over"), [(64, 128, False), (64, 127, True)])  # k=1: 128 decode tokens
def test_the_deepep_cap_is_inclusive(seqs, cap, over):
    inputs = PlanInputs(max_num_seqs=seqs, num_speculative_tokens=1, expert_parallel=True,
                        max_dispatch_tokens_per_rank=cap, capture_sizes=(cap - cap % 2,))
    verdicts, general = judge_sizes(inputs)
    assert bool(general) is over  # 128 decode tokens: within a cap of 128, over one of 127
    assert [v.status for v in verdicts] == ["captured"]  # the size itself is under either cap


def test_a_size_equal_to_the_cap_is_captured_while_a_larger_one_is_over_it():
    inputs = PlanInputs(max_num_seqs=100, expert_parallel=True, max_dispatch_tokens_per_rank=64,
                        capture_sizes=(64, 65))
    verdicts, _ = judge_sizes(inputs)
    assert [(v.requested, v.size, v.status) for v in verdicts] == [(64, 64, "captured"), (65, None, OVER_CAP)]


def test_internode_below_1024_tokens_may_still_raise_the_cap():
    inputs = PlanInputs(max_num_seqs=200, expert_parallel=True, internode=True, max_dispatch_tokens_per_rank=128)
    fixes = judge_sizes(inputs)[1][0].fixes
    assert fixes == ({"max_num_seqs": 128}, {"max_dispatch_tokens_per_rank": 200, "nvshmem_qp_depth": 402})


def test_internode_at_exactly_1024_tokens_may_still_raise_the_cap():
    inputs = PlanInputs(max_num_seqs=1024, expert_parallel=True, internode=True, max_dispatch_tokens_per_rank=128)
    assert {"max_dispatch_tokens_per_rank": 1024, "nvshmem_qp_depth": 2050} in judge_sizes(inputs)[1][0].fixes


def test_a_cap_no_setting_can_satisfy_says_so():
    inputs = PlanInputs(max_num_seqs=200, num_speculative_tokens=5, expert_parallel=True, internode=True,
                        max_dispatch_tokens_per_rank=5, nvshmem_qp_depth=1 << 20)
    (problem,) = judge_sizes(inputs)[1]
    assert problem.fixes == () and "Fix: no setting fits" in problem.text


def test_the_lines_own_ladder_reaches_the_plan():
    settings = DeploymentSettings(max_num_seqs=16, ladder_base=(1, 3, 16))
    inputs = plan_inputs(settings)
    assert inputs.ladder_base == (1, 3, 16)
    assert [v.requested for v in judge_sizes(inputs)[0]] == [1, 3, 16]


def test_coverage_skips_a_graph_too_small_for_one_request_and_reports_exact_padding():
    cov = coverage([1, 4, 8], max_num_seqs=4, num_speculative_tokens=1)  # size 1 holds no 2-token request
    assert cov.served == 4
    assert cov.ranges[0] == dataclasses.replace(cov.ranges[0], first=1, last=2, graph=4, padding_min=0.0,
                                                padding_max=0.5)
    assert (cov.ranges[1].first, cov.ranges[1].last, cov.ranges[1].graph) == (3, 4, 8)
    assert (cov.ranges[1].padding_min, cov.ranges[1].padding_max) == (0.0, 0.25)
    capped = coverage([6], max_num_seqs=2, num_speculative_tokens=1).ranges[0]  # 2 requests fill 4 of 6 tokens
    assert (capped.padding_min, capped.padding_max) == (2 / 6, 4 / 6)
