import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdeploy_cudagraph_ext.capture_plan import (NOT_POSITIVE, ROUNDED, CoverageRange, PlanError, coverage, PlanInputs, SizeVerdict, build_plan, default_ladder,
                                                   env_int, judge_sizes, warmup_token_budget)


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 5), seqs=st.integers(1, 256), ep=st.booleans(), cap=st.sampled_from([64, 128, 256, 512]))
def test_default_ladder_plan_invariants(k, seqs, ep, cap):
    inputs = PlanInputs(max_num_seqs=seqs, num_speculative_tokens=k, expert_parallel=ep,
                        max_dispatch_tokens_per_rank=cap)
    try:
        plan = build_plan(inputs)
    except PlanError as error:
        qp_too_shallow = 2 * (cap + 1) > 1024  # DeepEP's default NVSHMEM_QP_DEPTH
        over_cap = seqs * (k + 1) > cap  # a decode batch DeepEP asserts on, graph or not: never dropped
        assert ep and (qp_too_shallow or over_cap)
        assert all("low-latency cap" in p or (qp_too_shallow and "NVSHMEM_QP_DEPTH" in p) for p in error.problems)
        return
    sizes = plan.sizes
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    for capture in plan.captures:
        assert capture.capture_size % (k + 1) == 0
        assert capture.batch_size * (k + 1) == capture.capture_size and capture.batch_size >= 1
        assert capture.capture_size <= seqs * (k + 1)
        assert capture.expected_decode_len == ((k + 1) * 2 if k else 1)
        assert not ep or capture.capture_size <= cap  # a decode graph's tokens all go to one rank's dispatch
    if not ep:
        assert sizes[0] == seqs * (k + 1)  # the largest batch always has a graph


@settings(max_examples=200, deadline=None)
@given(k=st.integers(1, 5), seqs=st.integers(1, 128), sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12))
def test_user_sizes_are_either_exact_or_rejected_with_every_problem(k, seqs, sizes):
    inputs = PlanInputs(max_num_seqs=seqs, num_speculative_tokens=k, capture_sizes=tuple(sizes))
    bad = sorted({s for s in sizes if s % (k + 1) or s > seqs * (k + 1)})
    if bad:
        with pytest.raises(PlanError) as error:
            build_plan(inputs)
        assert len(error.value.problems) == len(bad)
    else:
        assert sorted(build_plan(inputs).sizes) == sorted(set(sizes))


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 5), seqs=st.integers(2, 128), sizes=st.lists(st.integers(1, 200), min_size=1, max_size=8))
def test_opt_in_rounding_yields_multiples_within_bounds(k, seqs, sizes):
    upper = seqs * (k + 1)
    inputs = PlanInputs(max_num_seqs=seqs, num_speculative_tokens=k, capture_sizes=tuple(s for s in sizes if s <= upper)
                        or (k + 1,), round_sizes=True)
    plan = build_plan(inputs)
    assert all(s % (k + 1) == 0 and 0 < s <= upper for s in plan.sizes)


def test_not_a_multiple_lists_nearest_valid_sizes():
    with pytest.raises(PlanError) as error:
        build_plan(PlanInputs(max_num_seqs=64, num_speculative_tokens=3, capture_sizes=(6, 8)))
    assert error.value.problems == [
        "capture size 6 is not a multiple of k+1=4 (each request decodes 4 tokens); nearest valid sizes: 4, 8"
    ]


def test_speculative_tokens_outside_range():
    with pytest.raises(PlanError, match=r"num_speculative_tokens=6 is outside 1\.\.5 \(0 disables MTP\)"):
        build_plan(PlanInputs(max_num_seqs=8, num_speculative_tokens=6))


def test_oversize_for_deepep_cap_names_where_the_cap_lives_and_both_ways_out():
    with pytest.raises(PlanError) as error:
        build_plan(PlanInputs(max_num_seqs=128, num_speculative_tokens=1, expert_parallel=True,
                              max_dispatch_tokens_per_rank=128))
    assert error.value.problems == [
        "a decode step can carry max_num_seqs*(k+1) = 128*2 = 256 tokens per rank, over DeepEP's low-latency cap "
        "num_max_dispatch_tokens_per_rank=128; DeepEP asserts on such a batch with or without a CUDA graph, so "
        "FastDeploy's default ladder (not your sizes) cannot be clamped or dropped to fit. Fix one of: lower "
        "--max-num-seqs to 64 or less; or raise num_max_dispatch_tokens_per_rank to 256 or more in the model's "
        "config.json (FastDeploy reads it from there and uses 128 when it is absent) and set NVSHMEM_QP_DEPTH to at "
        "least 514"
    ]


def test_a_cap_below_one_request_s_tokens_asks_for_a_larger_cap_only():
    with pytest.raises(PlanError) as error:
        build_plan(PlanInputs(max_num_seqs=2, num_speculative_tokens=3, expert_parallel=True,
                              max_dispatch_tokens_per_rank=3))
    assert error.value.problems[-1].endswith(
        "cannot be clamped or dropped to fit. Fix: raise num_max_dispatch_tokens_per_rank to 8 or more in the model's "
        "config.json (FastDeploy reads it from there and uses 128 when it is absent) and set NVSHMEM_QP_DEPTH to at "
        "least 18 (no max_num_seqs fits: one request alone decodes k+1=4 tokens)")


def test_user_sizes_under_the_cap_do_not_hide_larger_eager_batches():
    with pytest.raises(PlanError, match="your cudagraph_capture_sizes cannot be clamped"):
        build_plan(PlanInputs(max_num_seqs=128, num_speculative_tokens=1, capture_sizes=(2, 4, 8), expert_parallel=True,
                              max_dispatch_tokens_per_rank=128))


def test_internode_cap_and_qp_depth():
    with pytest.raises(PlanError) as error:
        build_plan(PlanInputs(max_num_seqs=8, expert_parallel=True, max_dispatch_tokens_per_rank=2048,
                              internode=True, nvshmem_qp_depth=1024))
    assert error.value.problems == [
        "num_max_dispatch_tokens_per_rank=2048 exceeds 1024, the most DeepEP's internode low-latency kernels accept; "
        "lower it to 1024 or less (and max_num_seqs / capture sizes with it)",
        "NVSHMEM_QP_DEPTH=1024 is below 2*(num_max_dispatch_tokens_per_rank+1)=4098; DeepEP low-latency kernels "
        "would hang. Set NVSHMEM_QP_DEPTH=4098 or more in the server environment",
    ]


def test_default_ladder_matches_fastdeploy_steps():
    assert default_ladder(300) == [1, 2, 4, *range(8, 129, 8), *range(144, 257, 16), 288, 300]
    assert default_ladder(16, 4) == [4, 8, 16]


def test_qp_depth_exactly_at_the_boundary_is_accepted_and_one_below_is_refused():
    def problems(depth):
        try:
            build_plan(PlanInputs(max_num_seqs=8, expert_parallel=True, max_dispatch_tokens_per_rank=128,
                                  nvshmem_qp_depth=depth))
        except PlanError as error:
            return error.problems
        return []

    assert problems(2 * (128 + 1)) == []
    assert problems(2 * (128 + 1) - 1) == [
        "NVSHMEM_QP_DEPTH=257 is below 2*(num_max_dispatch_tokens_per_rank+1)=258; DeepEP low-latency kernels "
        "would hang. Set NVSHMEM_QP_DEPTH=258 or more in the server environment"
    ]


# ---- exact values at each boundary (mutation testing found these unasserted) -------------------------------


def test_internode_cap_exactly_at_the_limit_is_accepted():
    plan = build_plan(PlanInputs(max_num_seqs=8, expert_parallel=True, max_dispatch_tokens_per_rank=1024,
                                 internode=True, nvshmem_qp_depth=2050))
    assert plan.sizes


def test_nearest_multiples_include_the_upper_bound_and_never_zero():
    with pytest.raises(PlanError) as error:
        build_plan(PlanInputs(max_num_seqs=2, num_speculative_tokens=1, capture_sizes=(1, 3)))
    assert error.value.problems == [
        "capture size 1 is not a multiple of k+1=2 (each request decodes 2 tokens); nearest valid sizes: 2",
        "capture size 3 is not a multiple of k+1=2 (each request decodes 2 tokens); nearest valid sizes: 2, 4",
    ]


def test_plan_error_lists_each_problem_on_its_own_line():
    assert str(PlanError(["a", "b"])) == "invalid CUDA graph capture plan:\n  - a\n  - b"


def test_batch_sizes_are_whole_requests():
    plan = build_plan(PlanInputs(max_num_seqs=4, num_speculative_tokens=3))
    assert [(c.capture_size, c.batch_size) for c in plan.captures] == [(16, 4), (8, 2), (4, 1)]
    assert all(type(c.batch_size) is int for c in plan.captures)


def test_default_ladder_stops_at_1024_before_the_maximum():
    assert default_ladder(1100)[-3:] == [992, 1024, 1100]


def test_verdicts_keep_the_requested_size():
    verdicts, _ = judge_sizes(PlanInputs(max_num_seqs=8, num_speculative_tokens=1, capture_sizes=(0, 3),
                                         round_sizes=True))
    assert verdicts == [SizeVerdict(0, None, "capture size 0 must be a positive token count", status=NOT_POSITIVE,
                                    fixes=({"capture_sizes": (3,)},)),
                        SizeVerdict(3, 4, note="capture size 3 rounded to 4, a multiple of k+1=2", status=ROUNDED)]


def test_warmup_token_budget_of_a_decode_instance():
    assert warmup_token_budget("decode", 8, 3, 2048) == 32
    assert warmup_token_budget("mixed", 8, 3, 2048) == 2048


@pytest.mark.parametrize("raw, value", [(None, None), ("", None), ("  ", None), ("300", 300)])
def test_env_int(monkeypatch, raw, value):
    if raw is None:
        monkeypatch.delenv("NVSHMEM_QP_DEPTH", raising=False)
    else:
        monkeypatch.setenv("NVSHMEM_QP_DEPTH", raw)
    assert env_int("NVSHMEM_QP_DEPTH") == value


def test_env_int_names_the_bad_value(monkeypatch):
    monkeypatch.setenv("NVSHMEM_QP_DEPTH", "deep")
    with pytest.raises(PlanError) as error:
        env_int("NVSHMEM_QP_DEPTH")
    assert error.value.problems == ["NVSHMEM_QP_DEPTH='deep' is not an integer"]


def test_internode_cap_fix_never_proposes_a_cap_over_deepeps_internode_maximum():
    with pytest.raises(PlanError) as error:
        build_plan(PlanInputs(max_num_seqs=100_000, num_speculative_tokens=3, expert_parallel=True,
                              max_dispatch_tokens_per_rank=256, internode=True))
    (problem,), (fixes,) = error.value.problems, error.value.fixes
    assert problem.endswith("Fix: lower --max-num-seqs to 64 or less (internode, the cap cannot exceed 1024, below "
                            "the 400000 tokens this max_num_seqs needs)")
    assert fixes == [{"max_num_seqs": 64}]


def test_every_plan_problem_carries_fixes_that_remove_it():
    inputs = PlanInputs(max_num_seqs=8, num_speculative_tokens=3, capture_sizes=(6, 8, 64), expert_parallel=True,
                        max_dispatch_tokens_per_rank=16, nvshmem_qp_depth=8)
    with pytest.raises(PlanError) as error:
        build_plan(inputs)
    fields = {"max_dispatch_tokens_per_rank", "nvshmem_qp_depth", "max_num_seqs", "capture_sizes"}
    for problem, fixes in zip(error.value.problems, error.value.fixes):
        assert fixes, problem
        for fix in fixes:
            assert set(fix) <= fields
            try:
                build_plan(dataclasses.replace(inputs, **fix))
            except PlanError as after:
                assert problem not in after.problems, (problem, fix)


# ---- coverage: which graph serves each decode batch (issue 19 item 3) -----------------------------------------


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 5), seqs=st.integers(1, 300), graphs=st.lists(st.integers(1, 120), max_size=10))
def test_coverage_matches_padding_each_batch_up_to_the_next_graph(k, seqs, graphs):
    step = k + 1
    sizes = sorted({g * step for g in graphs})
    cover = coverage(sizes, seqs, k)
    served, paddings = 0, []
    for batch in range(1, seqs + 1):  # FastDeploy's padding map, one batch at a time
        graph = next((s for s in sizes if s >= batch * step), None)
        owner = next(r for r in cover.ranges if r.first <= batch <= r.last)
        assert owner.graph == graph
        if graph is not None:
            served += 1
            paddings.append((graph - batch * step) / graph)
    assert [r.first for r in cover.ranges] == sorted(r.first for r in cover.ranges)
    assert cover.ranges[0].first == 1 and cover.ranges[-1].last == seqs
    assert all(a.last + 1 == b.first for a, b in zip(cover.ranges, cover.ranges[1:]))
    assert (cover.batches, cover.served) == (seqs, served)
    assert cover.mean_padding == pytest.approx(sum(paddings) / served if served else 0.0)


def test_coverage_names_the_eager_batches_above_the_largest_graph():
    cover = coverage([4, 8, 16], 8, 3)
    assert cover.ranges == (CoverageRange(1, 1, 4), CoverageRange(2, 2, 8), CoverageRange(3, 4, 16, 0.0, 0.25, 0.125),
                            CoverageRange(5, 8, None))
    assert (cover.served, cover.served_share, cover.mean_padding) == (4, 0.5, 0.0625)
    assert cover.to_dict()["served_share"] == 0.5
