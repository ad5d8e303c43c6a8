"""The runner step patch (patch_gpu_model_runner_step): its chooser on each line's real facts (patches/releases/,
each naming its source commit), the eager buffer creation before a clean, and the runner gate's plan for the
cross-rank agreement (k as the line counts it)."""
import dataclasses
import logging

import pytest
from fd_configs import make_fd_config
from fd_release_facts import line_facts

from fastdeploy_cudagraph_ext import deepep_agreement
from fastdeploy_cudagraph_ext.capture_plan import PlanError
from fastdeploy_cudagraph_ext.flags import Settings
from fastdeploy_cudagraph_ext.fd_facts import ModuleFacts
from fastdeploy_cudagraph_ext.patch import patch_gpu_model_runner_step as step_patch
from fastdeploy_cudagraph_ext.registry import ContractBroken, Variant

DRAFT_MARKER = "GPUModelRunner.initialize_forward_meta.proposer_moe_phase_on"


def without_marker(facts: dict[str, ModuleFacts], module: str, marker: str) -> dict[str, ModuleFacts]:
    markers = {k: v for k, v in facts[module].markers.items() if k != marker}
    return {**facts, module: dataclasses.replace(facts[module], markers=markers)}


@pytest.mark.parametrize("line, variant, reason", [
    ("2.2.0", "force_draft_phase_on_parallel_config", "FastDeploy never writes the draft model's phase while MoE "
     "layers read parallel_config: the plugin writes the agreed phase there"),
    ("2.3", "force_draft_phase_on_model_config", "FastDeploy writes the draft model's phase to its parallel_config "
     "while MoE layers read model_config: the plugin writes the agreed phase there"),
    ("2.4", "draft_phase_follows", "FastDeploy writes the agreed phase to the draft model's model_config"),
])
def test_the_chooser_says_where_each_line_writes_the_draft_model_s_phase(line, variant, reason):
    choice = step_patch.choose(line_facts(line))
    assert (choice.variant, choice.reason) == (variant, reason)


def test_the_chooser_refuses_a_line_whose_draft_phase_write_is_unknown():
    facts = without_marker(line_facts("2.4"), step_patch.MODULE, DRAFT_MARKER)
    with pytest.raises(ContractBroken) as error:
        step_patch.choose(facts)
    assert str(error.value) == ("where initialize_forward_meta writes the MoE phase is not known (markers "
                                "moe_phase_on='model_config', proposer_moe_phase_on=None)")
    no_runner = {m: f for m, f in line_facts("2.4").items() if m != step_patch.MODULE}
    with pytest.raises(ContractBroken, match="moe_phase_on=None, proposer_moe_phase_on=None"):
        step_patch.choose(no_runner)  # the runner module unreadable: refused, not an AttributeError


def test_the_chooser_reads_the_gate_markers_of_the_modules_it_has():
    without_ep = {m: f for m, f in line_facts("2.6").items() if m != step_patch.EP_MODULE}
    line = step_patch.choose(without_ep).line
    assert "EPPrefillRunner.dispatch.num_worst_tokens" not in line
    assert line["GPUModelRunner.capture_model.prefill_only_branch"] == "yes"


def test_the_buffer_is_created_eagerly_before_a_clean_and_says_so(caplog):
    created = []

    class Engine:
        deepep_engine = None

        def create_deep_ep_buffer(self):
            created.append(True)

    with caplog.at_level(logging.INFO, "fastdeploy_cudagraph_ext"):
        step_patch.ensure_buffer(Engine())
    assert created == [True]
    assert [r.getMessage() for r in caplog.records] == [
        "fastdeploy-cudagraph-ext: DeepEP buffer created eagerly before the low-latency clean"]


@pytest.mark.standin
def test_the_gate_s_rank_plan_counts_k_only_for_methods_the_line_counts(fd_era, runtime, monkeypatch):
    """develop counts ngram's k+1 tokens, 2.4 does not (its k_plus_1_methods is mtp): the plan the ranks agree on
    carries k as the line counts it."""
    if fd_era != "develop":
        pytest.skip("one era's stand-in builds the config; the line's counting comes from the variant")
    monkeypatch.setattr(deepep_agreement, "exchange", deepep_agreement._Exchange())
    fd_config = make_fd_config(k=3, max_num_seqs=4, sizes=(4, 8, 16), ep=True, method="ngram")
    for line, k in (("develop", 3), ("2.4", 0)):
        choice = step_patch.choose(line_facts(line))
        step_patch.gate_runner(fd_config, Settings(), Variant(choice.variant, choice.line))
        assert deepep_agreement.exchange.deployment()["num_speculative_tokens"] == k, line


@pytest.mark.standin
@pytest.mark.parametrize("line_facts_of_group", [{}, {"ParallelConfig.expert_parallel_group.attribute": "none"}])
def test_the_gate_refuses_a_line_that_names_no_ep_group(fd_era, runtime, line_facts_of_group):
    if fd_era != "develop":
        pytest.skip("one era's stand-in builds the config; the marker comes from the variant")
    choice = step_patch.choose(line_facts("develop"))
    line = {k: v for k, v in choice.line.items() if k != "ParallelConfig.expert_parallel_group.attribute"}
    fd_config = make_fd_config(k=0, max_num_seqs=4, sizes=(1, 2, 4), ep=True)
    with pytest.raises(PlanError) as error:
        step_patch.gate_runner(fd_config, Settings(), Variant(choice.variant, {**line, **line_facts_of_group}))
    assert "FastDeploy's EP process group was not found (this line's ParallelConfig has no EP group attribute)" \
        in error.value.problems[0]
