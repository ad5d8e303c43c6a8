"""DeepEP normal-mode kernels in CUDA graphs: one rule (deepep_graphs.py) refuses them at the runner gate (before
weights load), in `plan` and in `doctor`, per FastDeploy line; the capturable case is allowed and says so."""
import dataclasses
import importlib
import json
import logging
from pathlib import Path

import pytest
from fd_configs import make_fd_config
from fd_release_facts import line_facts
from test_doctor import doctor_json, finding, machine  # noqa: F401 - the doctor's machine fixture

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import cli, deepep_agreement, deepep_protocol
from fastdeploy_cudagraph_ext.capture_plan import DeploymentSettings, PlanError, plan_deployment
from fastdeploy_cudagraph_ext.deepep_graphs import DeepEPGraphSettings, LineGraphs, judge_normal_mode_graphs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALLOWED = "the one case DeepEP can capture"


def settings(role="mixed", only_prefill=False, ep=True, **deepep):
    return DeploymentSettings(max_num_seqs=8, expert_parallel=ep, splitwise_role=role,
                              cudagraph_only_prefill=only_prefill, deepep=DeepEPGraphSettings(**deepep))


def test_prefill_only_graphs_with_expert_parallelism_are_refused_with_a_fix_that_passes():
    refused = judge_normal_mode_graphs(settings(only_prefill=True))
    assert refused.problems == [
        "with expert parallelism this deployment captures prefill graphs (graph-optimization-config "
        "cudagraph_only_prefill: true); in them DeepEP's normal-mode dispatch/combine wait on the CPU and cannot be "
        "captured (DeepEP #62: capture fails or every rank hangs), because --ep-prefill-use-worst-num-tokens is off; "
        "FD_USE_PFCC_DEEP_EP is not 1 (FastDeploy passes num_worst_tokens only to the torch-API DeepEP). Fix: set "
        "cudagraph_only_prefill: false (decode graphs use the capturable low-latency kernels); or, to capture them, "
        "run on one node with --ep-prefill-use-worst-num-tokens and FD_USE_PFCC_DEEP_EP=1 on FastDeploy 2.6 or later"]
    assert judge_normal_mode_graphs(settings(only_prefill=False)).problems == []  # the fix passes the same rule


def test_static_split_graphs_are_refused_and_full_graphs_pass():
    split = judge_normal_mode_graphs(settings(graph_opt_level=1, full_cuda_graph=False))
    assert "prefill/mixed graphs of the static split-graph mode (graph_opt_level: 1 with full_cuda_graph: false)" \
        in split.problems[0]
    assert "set full_cuda_graph: true (or graph_opt_level: 0)" in split.problems[0]
    assert judge_normal_mode_graphs(settings(graph_opt_level=1, full_cuda_graph=True)).problems == []
    assert judge_normal_mode_graphs(settings(graph_opt_level=0, full_cuda_graph=False)).problems == []


def test_the_capturable_case_is_allowed_and_says_so():
    verdict = judge_normal_mode_graphs(settings(graph_opt_level=1, full_cuda_graph=False, worst_num_tokens=True,
                                                torch_api_deepep=True))
    assert verdict.problems == [] and ALLOWED in verdict.allowed[0]


@pytest.mark.parametrize("change, reason", [
    ({"nnodes": 2}, "the EP group spans 2 nodes (DeepEP's worst-case token count is intranode only)"),
    ({"torch_api_deepep": False}, "FD_USE_PFCC_DEEP_EP is not 1"),
    ({"worst_num_tokens": False}, "--ep-prefill-use-worst-num-tokens is off"),
    ({"line": LineGraphs(worst_tokens_guard="none")}, "this FastDeploy line never passes num_worst_tokens"),
])
def test_each_missing_condition_of_the_capturable_case_refuses(change, reason):
    capturable = dict(graph_opt_level=1, full_cuda_graph=False, worst_num_tokens=True, torch_api_deepep=True)
    verdict = judge_normal_mode_graphs(settings(**{**capturable, **change}))
    assert reason in verdict.problems[0] and verdict.allowed == []


@pytest.mark.parametrize("case", [
    settings(role="decode", only_prefill=True),  # a decode instance runs low-latency kernels only
    settings(ep=False, only_prefill=True),  # no DeepEP
    settings(only_prefill=True, line=LineGraphs(captures_prefill_only=False)),  # 2.2: no prefill-only capture
    settings(graph_opt_level=1, full_cuda_graph=False, line=LineGraphs(captures_split_prefill=False)),  # <= 2.4
    settings(role="prefill", graph_opt_level=1, full_cuda_graph=False),  # a prefill instance has no split mode
    dataclasses.replace(settings(only_prefill=True), use_cudagraph=False),
])
def test_deployments_without_normal_mode_kernels_in_graphs_pass(case):
    assert judge_normal_mode_graphs(case) == judge_normal_mode_graphs(settings())  # ([], [])


@pytest.mark.parametrize("guard, torch_api, missing", [
    ("none", True, ["this FastDeploy line never passes num_worst_tokens to DeepEP (FastDeploy 2.6 and later do)"]),
    ("none", False, ["this FastDeploy line never passes num_worst_tokens to DeepEP (FastDeploy 2.6 and later do)"]),
    ("always", False, []),  # a line passing it to every DeepEP flavour needs no torch-API flag
    ("FD_USE_PFCC_DEEP_EP", False,
     ["FD_USE_PFCC_DEEP_EP is not 1 (FastDeploy passes num_worst_tokens only to the torch-API DeepEP)"]),
    ("FD_USE_PFCC_DEEP_EP", True, []),
])
def test_what_keeps_the_worst_case_token_count_away_follows_the_lines_guard(guard, torch_api, missing):
    from fastdeploy_cudagraph_ext.deepep_graphs import _worst_tokens_missing

    deepep = DeepEPGraphSettings(worst_num_tokens=True, torch_api_deepep=torch_api,
                                 line=LineGraphs(worst_tokens_guard=guard))
    assert _worst_tokens_missing(deepep) == missing


def test_a_deployment_config_without_these_keys_gets_fastdeploys_defaults():
    """full_cuda_graph defaults to true, --ep-prefill-use-worst-num-tokens to off, FD_USE_PFCC_DEEP_EP to 0."""
    from fastdeploy_cudagraph_ext.deepep_graphs import graph_settings_of_config

    assert graph_settings_of_config({}, {}, 1, {}, 2) == DeepEPGraphSettings(graph_opt_level=1, nnodes=2)
    given = graph_settings_of_config({"ep-prefill-use-worst-num-tokens": True}, {"full_cuda_graph": False}, 1,
                                     {"FD_USE_PFCC_DEEP_EP": "1"}, 1)
    assert (given.full_cuda_graph, given.worst_num_tokens, given.torch_api_deepep) == (False, True, True)


def test_an_fd_config_without_these_fields_gets_fastdeploys_defaults(monkeypatch):
    from types import SimpleNamespace

    from fastdeploy_cudagraph_ext.deepep_graphs import graph_settings_of_fd_config

    monkeypatch.delenv("FD_USE_PFCC_DEEP_EP", raising=False)
    assert graph_settings_of_fd_config(SimpleNamespace(), LineGraphs()) == DeepEPGraphSettings()
    split = SimpleNamespace(graph_opt_config=SimpleNamespace(graph_opt_level=1, full_cuda_graph=False),
                            parallel_config=SimpleNamespace(ep_prefill_use_worst_num_tokens=True, nnode=2))
    assert graph_settings_of_fd_config(split, LineGraphs()) == DeepEPGraphSettings(
        graph_opt_level=1, full_cuda_graph=False, worst_num_tokens=True, nnodes=2)
    split.nnode = 3  # FDConfig's own node count (read first), where the line has one
    assert graph_settings_of_fd_config(split, LineGraphs()).nnodes == 3


def test_a_prefill_instance_capturing_prefill_graphs_is_refused():
    assert judge_normal_mode_graphs(settings(role="prefill", only_prefill=True)).problems


def test_the_plan_refuses_even_without_decode_graphs():
    with pytest.raises(PlanError) as error:
        plan_deployment(settings(only_prefill=True))
    assert "cudagraph_only_prefill: true" in error.value.problems[0]


def ep_config(tmp_path, name="normal.json", graph=None, launch=None, env=None):
    config = json.loads((CONFIGS / "ernie45-300b-a47b-ep8-mixed-mtp1.json").read_text())
    config["launch"]["graph-optimization-config"].update(graph or {})
    config["launch"].update(launch or {})
    config["environment"].update(env or {})
    (tmp_path / name).write_text(json.dumps(config))
    return str(tmp_path / name)


@pytest.mark.parametrize("graph", [{"cudagraph_only_prefill": True}, {"graph_opt_level": 1, "full_cuda_graph": False}])
def test_plan_and_doctor_report_the_same_refusal(machine, capsys, tmp_path, graph):  # noqa: F811
    machine()
    path = ep_config(tmp_path, graph=graph)
    assert cli.main(["plan", "--config", path, "--json"]) == 2
    planned = json.loads(capsys.readouterr().out)
    assert not planned["ok"] and "DeepEP's normal-mode dispatch/combine" in planned["problems"][0]
    code, report = doctor_json(capsys, "--config", path)
    assert code == 2 and finding(report, "deployment normal.json")["text"] == planned["problems"][0]
    assert cli.main(["plan", "--config", path]) == 2
    text = capsys.readouterr().out
    assert "plan refused" in text and planned["problems"][0] in text


def test_plan_shows_the_capturable_case_allowed(capsys, tmp_path):
    path = ep_config(tmp_path, graph={"graph_opt_level": 1, "full_cuda_graph": False},
                     launch={"ep-prefill-use-worst-num-tokens": True}, env={"FD_USE_PFCC_DEEP_EP": "1"})
    assert cli.main(["plan", "--config", path, "--json"]) == 0
    assert any(ALLOWED in w for w in json.loads(capsys.readouterr().out)["warnings"])


# ---- the runner gate, on the stand-ins' live modules (before FastDeploy's __init__, so before weights load) ------


def build_runner(**graph):
    fd_config = make_fd_config(k=0, max_num_seqs=4, sizes=(1, 2, 4), ep=True)
    for key, value in graph.items():
        setattr(fd_config.parallel_config if key == "ep_prefill_use_worst_num_tokens" else fd_config.graph_opt_config,
                key, value)
    runner_module = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    return runner_module.GPUModelRunner(fd_config, "gpu", 0, 0, 0)


@pytest.mark.standin
@pytest.mark.parametrize("graph, refused_on", [
    ({"cudagraph_only_prefill": True}, {"2.3", "develop"}),  # both capture prefill graphs (0df488c7 on)
    ({"graph_opt_level": 1, "full_cuda_graph": False}, {"develop"}),  # 2.3 has no split-graph capture
])
def test_the_runner_gate_refuses_per_line_before_the_model_is_built(fd_era, runtime, graph, refused_on):
    ext.activate()
    if fd_era in refused_on:
        with pytest.raises(PlanError) as error:
            build_runner(**graph)
        assert "refuses to start this worker before loading weights" in error.value.problems[0]
        assert "DeepEP's normal-mode dispatch/combine" in error.value.problems[0]
    else:
        build_runner(**graph)


@pytest.mark.standin
def test_the_runner_gate_allows_the_capturable_case_and_says_so(fd_era, runtime, monkeypatch, caplog):
    if fd_era != "develop":
        pytest.skip("FastDeploy passes num_worst_tokens from 2.6 on (the develop stand-in models it)")
    monkeypatch.setenv("FD_USE_PFCC_DEEP_EP", "1")
    ext.activate()
    with caplog.at_level(logging.INFO, "fastdeploy_cudagraph_ext"):
        build_runner(graph_opt_level=1, full_cuda_graph=False, ep_prefill_use_worst_num_tokens=True)
    assert any(r.getMessage().startswith("fastdeploy-cudagraph-ext: ") and ALLOWED in r.getMessage()
               for r in caplog.records)
    assert deepep_protocol.normal_mode_captures.allowed


@pytest.mark.standin
def test_the_gate_refuses_expert_parallelism_without_fastdeploys_ep_group(fd_era, runtime):
    ext.activate()
    fd_config = make_fd_config(k=0, max_num_seqs=4, sizes=(1, 2, 4), ep=True)
    fd_config.parallel_config.ep_group = None
    runner_module = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    with pytest.raises(PlanError, match=r"FastDeploy's EP process group was not found \(ParallelConfig.ep_group\)"):
        runner_module.GPUModelRunner(fd_config, "gpu", 0, 0, 0)
    assert deepep_agreement.exchange.all_gather is None


# ---- per FastDeploy line, from the real sources' facts (patches/releases/*.json) --------------------------------

LINE_FACTS = {  # (prefill-only graphs, split prefill graphs, num_worst_tokens passed, draft phase)
    "2.2.0": (False, False, "none", "force_draft_phase_on_parallel_config"),  # no proposer write at all
    "2.2.x": (False, False, "none", "force_draft_phase_on_parallel_config"),
    "2.3": (True, False, "none", "force_draft_phase_on_model_config"),  # written to parallel_config, read on model
    "2.4": (True, False, "none", "draft_phase_follows"),
    "2.5": (True, True, "none", "draft_phase_follows"),  # capture_model_prefill_and_mixed
    "2.6": (True, True, "FD_USE_PFCC_DEEP_EP", "draft_phase_follows"),  # --ep-prefill-use-worst-num-tokens
    "develop": (True, True, "FD_USE_PFCC_DEEP_EP", "draft_phase_follows"),
}


@pytest.mark.parametrize("line", LINE_FACTS)
def test_each_line_s_graphs_and_draft_phase_come_from_its_sources(line):
    from fastdeploy_cudagraph_ext.deepep_graphs import line_graphs_of
    from fastdeploy_cudagraph_ext.patch import patch_gpu_model_runner_step
    from fastdeploy_cudagraph_ext.registry import judge

    facts = line_facts(line)
    markers = {k: v for module in facts.values() for k, v in module.markers.items()}
    prefill_only, split, worst, draft = LINE_FACTS[line]
    assert line_graphs_of(markers) == LineGraphs(prefill_only, split, worst)
    assert judge(patch_gpu_model_runner_step.PATCH, facts).variant == draft
    assert markers["ParallelConfig.expert_parallel_group.attribute"] == "ep_group"


def test_plan_judges_normal_mode_graphs_on_the_line_it_names(capsys, tmp_path):
    """The split-graph mode captures prefill/mixed graphs only where the line has capture_model_prefill_and_mixed
    (2.5 on, facts): `plan --fd-line` refuses it there and plans it on 2.4, whose worker captures no such graph."""
    path = ep_config(tmp_path, graph={"graph_opt_level": 1, "full_cuda_graph": False})
    assert cli.main(["plan", "--config", path, "--fd-line", "2.6", "--json"]) == 2
    assert "static split-graph mode" in json.loads(capsys.readouterr().out)["problems"][0]
    assert cli.main(["plan", "--config", path, "--fd-line", "2.4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []


def test_both_kinds_of_prefill_graph_are_named_with_both_fixes():
    both = judge_normal_mode_graphs(settings(only_prefill=True, graph_opt_level=1, full_cuda_graph=False))
    assert both.problems[0].startswith(
        "with expert parallelism this deployment captures prefill graphs (graph-optimization-config "
        "cudagraph_only_prefill: true) and prefill/mixed graphs of the static split-graph mode (graph_opt_level: 1 "
        "with full_cuda_graph: false); in them")
    assert "Fix: set cudagraph_only_prefill: false (decode graphs use the capturable low-latency kernels); set " \
           "full_cuda_graph: true (or graph_opt_level: 0) in --graph-optimization-config; or, to capture" \
           in both.problems[0]
    # full_cuda_graph: false at graph_opt_level 0 makes no split graph: its fix is not offered
    prefill_only = judge_normal_mode_graphs(settings(only_prefill=True, graph_opt_level=0, full_cuda_graph=False))
    assert "Fix: set cudagraph_only_prefill: false (decode graphs use the capturable low-latency kernels); or, to " \
           "capture" in prefill_only.problems[0]


def test_a_line_s_unread_markers_stay_unknown():
    from fastdeploy_cudagraph_ext.deepep_graphs import line_graphs_of

    assert line_graphs_of({}) == LineGraphs(None, None, None)
    # a runner whose facts were read, without capture_model_prefill_and_mixed (2.2-2.4): no split prefill graphs
    read = line_graphs_of({"GPUModelRunner.capture_model.captures_graphs": "yes",
                           "GPUModelRunner.capture_model.prefill_only_branch": "no"})
    assert read == LineGraphs(False, False, None)
