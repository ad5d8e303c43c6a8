"""Every wrong deployment config a README reader could plausibly write: the user-error exit code (3) and one exact
paragraph each, whose fix (computed from the value given) the validator accepts."""
import copy
import json
import os

import pytest

from fastdeploy_cudagraph_ext import cli, deployment, fd_lines

BASE = json.loads(deployment.bundled_text("ernie45-300b-a47b-ep8-mixed-mtp1"))


def edited(where: str, update: dict) -> dict:
    config = copy.deepcopy(BASE)
    target = {"top": config, "launch": config["launch"], "model_config": config["model_config"],
              "environment": config["environment"], "graph": config["launch"]["graph-optimization-config"],
              "spec": config["launch"]["speculative-config"]}[where]
    target.update(update)
    return config


def without_fd_plugins() -> dict:
    config = copy.deepcopy(BASE)
    del config["environment"]["FD_PLUGINS"]
    return config


WRONG = [
    ('launch', {'max-num-seqs': 'sixty-four'},
     'launch.max-num-seqs is "sixty-four": expected a whole number (a JSON integer, not a string, decimal or boolean). Fix: change the value'),
    ('model_config', {'num_max_dispatch_tokens_per_rank': 'lots'},
     'model_config.num_max_dispatch_tokens_per_rank is "lots": expected a whole number (a JSON integer, not a string, decimal or boolean). Fix: change the value'),
    ('environment', {'NVSHMEM_QP_DEPTH': 'deep'},
     'environment.NVSHMEM_QP_DEPTH is "deep": expected a positive whole number of queue entries. Fix: "NVSHMEM_QP_DEPTH": "1024" (at least 2*(num_max_dispatch_tokens_per_rank+1))'),
    ('graph', {'cudagraph_capture_sizes': '4,8,16'},
     'launch.graph-optimization-config.cudagraph_capture_sizes is "4,8,16": expected a list. Fix: write it as [4, 8, 16]'),
    ('graph', {'cudagraph_capture_sizes': 8},
     'launch.graph-optimization-config.cudagraph_capture_sizes is 8: expected a list. Fix: write it as [8]'),
    ('graph', {'cudagraph_capture_sizes': {'a': 1}},
     'launch.graph-optimization-config.cudagraph_capture_sizes is {"a": 1}: expected a list. Fix: change the value'),
    ('graph', {'cudagraph_capture_sizes': [4, 4.5]},
     'launch.graph-optimization-config.cudagraph_capture_sizes[1] is 4.5: expected a whole number (a JSON integer, not a string, decimal or boolean). Fix: write it as 4'),
    ('graph', {'cudagraph_capture_sizes': []},
     'launch.graph-optimization-config.cudagraph_capture_sizes is []: FastDeploy refuses an empty list ("forbidden to set the capture sizes to an empty list"). Fix: leave the key out to use FastDeploy\'s default ladder (or list sizes, or set use_cudagraph to false)'),
    ('launch', {'graph-optimization-config': '{use_cudagraph: true}'},
     'launch.graph-optimization-config is a string that is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)): expected an object, or a JSON string of one as FastDeploy\'s command line takes it. Fix: write it as an object, e.g. {"use_cudagraph": true}'),
    ('top', {'launch': []},
     'launch is []: expected an object. Fix: change the value'),
    ('top', {'environment': []},
     'environment is []: expected an object. Fix: change the value'),
    ('top', {'model_config': []},
     'model_config is []: expected an object. Fix: change the value'),
    ('environment', {'FD_CUDAGRAPH_EXT_DROP_OVERSIZE': '1'},
     'environment.FD_CUDAGRAPH_EXT_DROP_OVERSIZE is no longer supported: dropping capture sizes over DeepEP\'s token cap cannot make a deployment safe: a decode batch over num_max_dispatch_tokens_per_rank hits DeepEP\'s assert with or without a graph, so the plan refuses any deployment whose max_num_seqs*(k+1) exceeds the cap. Unset FD_CUDAGRAPH_EXT_DROP_OVERSIZE and lower --max-num-seqs or raise the cap, as the refusal says. Fix: remove environment.FD_CUDAGRAPH_EXT_DROP_OVERSIZE'),
    ('environment', {'FD_CUDAGRAPH_EXT': 'maybe'},
     'environment.FD_CUDAGRAPH_EXT is "maybe": expected 1/true/yes/on to enable, 0/false/no/off to disable (the plugin refuses anything else at start-up). Fix: "FD_CUDAGRAPH_EXT": "1"'),
    ('launch', {'max_num_seqs': 64},
     'launch.max_num_seqs is not a known key (did you mean "max-num-seqs"?). Fix: rename it to "max-num-seqs"; see plan --schema or docs/deployment-config.md in the project'),
    ('environment', {'FD_CUDAGRAPH_EXT': True},
     'environment.FD_CUDAGRAPH_EXT is true: expected a string (environment values are text). Fix: quote it: "1"'),
    ('launch', {'enable-expert-parallel': 'true'},
     'launch.enable-expert-parallel is "true": expected true or false (--enable-expert-parallel takes no value). Fix: "enable-expert-parallel": true'),
    ('spec', {'num_speculative_tokens': 6},
     "launch.speculative-config.num_speculative_tokens is 6: expected 1..5 (FastDeploy's range). Fix: write it as 5"),
    ('spec', {'num_speculative_token': 2},
     'launch.speculative-config.num_speculative_token is not a known key (did you mean "num_speculative_tokens"?). Fix: rename it to "num_speculative_tokens"; see plan --schema or docs/deployment-config.md in the project'),
    ('top', {'nnodes': 2},
     'nnodes is not a known key (the node count comes from launch.ips (one IP per node), as in FastDeploy). Fix: remove it; see plan --schema or docs/deployment-config.md in the project'),
    ('launch', {'splitwise-role': 'both'},
     'launch.splitwise-role is "both": expected one of \'mixed\', \'prefill\' or \'decode\'. Fix: use one of those'),
    ('environment', {'FD_CUDAGRAPH_EXTT': '1'},
     'environment.FD_CUDAGRAPH_EXTT is not a known key (did you mean "FD_CUDAGRAPH_EXT"?). Fix: rename it to "FD_CUDAGRAPH_EXT"; see plan --schema or docs/deployment-config.md in the project'),
    ('environment', {'fd_plugins': 'x'},
     'environment.fd_plugins is not a known key (did you mean "FD_PLUGINS"?). Fix: rename it to "FD_PLUGINS"; see plan --schema or docs/deployment-config.md in the project'),
    ('launch', {'data-parallel-size': 16},
     'launch.ips is null: tensor-parallel-size*data-parallel-size = 16 ranks need 2 nodes of 8 GPUs, and FastDeploy asserts one IP per node. Fix: "ips": ["<node0 IP>", "<node1 IP>"] (node 0 first)'),
    ('launch', {'max-num-seqs': True},
     'launch.max-num-seqs is true: expected a whole number (a JSON integer, not a string, decimal or boolean). Fix: change the value'),
    ('launch', {'max-num-seqs': 0},
     'launch.max-num-seqs is 0: expected at least 1. Fix: write it as 1'),
    ('launch', {'max-num-seqs': 64.0},
     'launch.max-num-seqs is 64.0: expected a whole number (a JSON integer, not a string, decimal or boolean). Fix: write it as 64'),
    ('launch', {'enable-prefix-cache': True},
     'launch.enable-prefix-cache is not a known key (did you mean "enable-prefix-caching"?). Fix: rename it to "enable-prefix-caching"; see plan --schema or docs/deployment-config.md in the project'),
    ('model_config', {'num_max_dispatch_tokens': 256},
     'model_config.num_max_dispatch_tokens is not a known key (did you mean "num_max_dispatch_tokens_per_rank"?). Fix: rename it to "num_max_dispatch_tokens_per_rank"; see plan --schema or docs/deployment-config.md in the project'),
]


def test_plugin_on_without_fd_plugins_is_an_error(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(without_fd_plugins()))
    assert cli.main(["plan", "--config", str(path)]) == 3
    assert capsys.readouterr().err == f"deployment config x.json: {NO_PLUGINS}\n"


NO_PLUGINS = 'environment.FD_PLUGINS is unset: expected a comma-separated list that names fastdeploy_cudagraph_ext. FastDeploy 2.4 and later load no plugin when FD_PLUGINS is unset (#4909) and every FastDeploy loads only the plugins listed. Fix: "FD_PLUGINS": "fastdeploy_cudagraph_ext" (add your other plugins, comma-separated)'


@pytest.mark.parametrize("where, update, message", WRONG)
def test_wrong_field_gives_one_exact_paragraph(where, update, message, tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(edited(where, update)))
    assert cli.main(["plan", "--config", str(path)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"deployment config x.json: {message}\n"
    assert "Traceback" not in captured.err


WHOLE_FILE = {
    "[]": "the file holds []: expected a JSON object with \"launch\" (and optionally \"model_config\", \"environment\", \"description\"). Fix: see plan --schema or docs/deployment-config.md in the project or a bundled config (plan --list)",
    "null": "the file holds null: expected a JSON object with \"launch\" (and optionally \"model_config\", \"environment\", \"description\"). Fix: see plan --schema or docs/deployment-config.md in the project or a bundled config (plan --list)",
    "\"x\"": "the file holds \"x\": expected a JSON object with \"launch\" (and optionally \"model_config\", \"environment\", \"description\"). Fix: see plan --schema or docs/deployment-config.md in the project or a bundled config (plan --list)",
    "{\"launch\": {": "the file is not JSON (Expecting property name enclosed in double quotes at line 1, column 13): expected a JSON object. Fix: correct the JSON there",
    "{\"launch\": {}}": "launch.model is missing: expected the model FastDeploy serves (its --model: a path or name). Fix: add it (see plan --schema or docs/deployment-config.md in the project)"
}


@pytest.mark.parametrize("text", sorted(WHOLE_FILE))
def test_wrong_file_gives_one_exact_paragraph(text, tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(text)
    assert cli.main(["plan", "--config", str(path)]) == 3
    assert capsys.readouterr().err == f"deployment config x.json: {WHOLE_FILE[text]}\n"


def test_non_utf8_file(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_bytes(b'{"launch": "\xff"}')
    assert cli.main(["plan", "--config", str(path)]) == 3
    assert capsys.readouterr().err == ("deployment config x.json: the file is not UTF-8 text (byte 12): expected a JSON "
                                        "file. Fix: save it as UTF-8\n")


def test_misspelled_speculative_method_is_not_silently_no_mtp(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(edited("spec", {"method": "MTP"})))
    assert cli.main(["plan", "--config", str(path)]) == 3
    assert capsys.readouterr().err == (
        "deployment config x.json: launch.speculative-config.method is \"MTP\": expected one of 'mtp', "
        "'ngram_match', 'hybrid_mtp_ngram', 'naive', 'ngram' or 'suffix'. Fix: write it as \"mtp\"\n")


@pytest.mark.parametrize("update, message", [
    ({"quantization": None}, "launch.quantization is null: expected what FastDeploy's --quantization takes: a string, "
                             "a number, a list of strings or whole numbers, or an object. Fix: write the value as on "
                             "FastDeploy's command line"),
    ({"port": True}, "launch.port is true: expected a value (--port is not a switch). Fix: write the value "
                     "FastDeploy's --port takes"),
])
def test_passed_through_flags_are_checked_too(update, message, tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(edited("launch", update)))
    assert cli.main(["plan", "--config", str(path)]) == 3
    assert capsys.readouterr().err == f"deployment config x.json: {message}\n"


# ---- property: generated configs (every field, wrong types, extreme values) ------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
    st.sampled_from(["", "8", " 64 ", "4.0", "4.5", "-1", "false", "true", "off", "YES", "1e3", "mtp", "MTP", "x",
                     "4,8,16", "[2, 4]", "{}", '{"use_cudagraph": false}', "999999999999"]),
    st.lists(st.one_of(st.integers(-2, 600), st.sampled_from(["8", 4.0, 4.5, True])), max_size=6),
    st.dictionaries(st.sampled_from(["a", "use_cudagraph", "method"]), st.integers(0, 3), max_size=2),
)
FIELDS = [
    ("launch", "max-num-seqs"), ("launch", "max-num-batched-tokens"), ("launch", "tensor-parallel-size"),
    ("launch", "data-parallel-size"), ("launch", "enable-expert-parallel"), ("launch", "use-internode-ll-two-stage"),
    ("launch", "splitwise-role"), ("launch", "ips"), ("launch", "model"), ("launch", "port"),
    ("launch", "graph-optimization-config"), ("launch", "speculative-config"), ("launch", "max_num_seqs"),
    ("launch", "graph-optimization-config", "use_cudagraph"),
    ("launch", "graph-optimization-config", "cudagraph_capture_sizes"),
    ("launch", "graph-optimization-config", "cudagraph_only_prefill"),
    ("launch", "graph-optimization-config", "graph_opt_level"),
    ("launch", "speculative-config", "method"), ("launch", "speculative-config", "num_speculative_tokens"),
    ("model_config", "num_max_dispatch_tokens_per_rank"), ("model_config",), ("environment",),
    ("environment", "NVSHMEM_QP_DEPTH"), ("environment", "FD_CUDAGRAPH_EXT"), ("environment", "FD_PLUGINS"),
    ("environment", "FD_CUDAGRAPH_EXT_ROUND_SIZES"), ("environment", "fd_plugins"), ("description",), ("launch",),
]
# values that are right in type but extreme or in conflict: what a plan refuses rather than the parser
PLAUSIBLE = {
    ("launch", "max-num-seqs"): st.integers(1, 100_000),
    ("launch", "data-parallel-size"): st.integers(1, 32),
    ("launch", "tensor-parallel-size"): st.integers(1, 16),
    ("launch", "enable-expert-parallel"): st.booleans(),
    ("launch", "use-internode-ll-two-stage"): st.booleans(),
    ("launch", "graph-optimization-config", "cudagraph_capture_sizes"): st.lists(st.integers(1, 3000), min_size=1,
                                                                                   max_size=8),
    ("launch", "speculative-config", "num_speculative_tokens"): st.integers(1, 5),
    ("model_config", "num_max_dispatch_tokens_per_rank"): st.integers(1, 4096),
    ("environment", "NVSHMEM_QP_DEPTH"): st.integers(1, 10_000).map(str),
}
BASES = [json.loads(deployment.bundled_text(n)) for n in deployment.bundled_names()]


@st.composite
def generated_configs(draw) -> dict:
    config = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(FIELDS + list(PLAUSIBLE) * 2))
        value = draw(PLAUSIBLE[path] if path in PLAUSIBLE and draw(st.booleans()) else ANY_VALUE)
        config = deployment.apply_edits(config, (deployment.Edit(path, "set", value),))
    return config


def _problem_paths(raw) -> list[str]:
    try:
        deployment.parse("x.json", json.dumps(raw).encode())
    except deployment.ConfigError as error:
        return [p.split(" ", 1)[0] for p in error.problems]
    return []


@settings(max_examples=int(os.environ.get("PLAN_PROPERTY_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # capsys read per example
@given(config=generated_configs(), line=st.sampled_from(list(fd_lines.lines())))
def test_generated_configs_exit_per_the_table_and_every_fix_removes_its_own_error(config, line, tmp_path_factory,
                                                                                   capsys):
    path = tmp_path_factory.mktemp("gen") / "x.json"
    path.write_text(json.dumps(config))
    code = cli.main(["plan", "--config", str(path), "--json", "--fd-line", line])
    captured = capsys.readouterr()
    assert code in (cli.OK, cli.REFUSED, cli.USER_ERROR) and "Traceback" not in captured.out + captured.err
    result = json.loads(captured.out)
    assert result["ok"] is (code == cli.OK)
    for problem, fixes in zip(result["problems"], result["fixes"]):
        for fix in fixes:
            fixed = deployment.apply_edits(config, tuple(deployment.Edit(tuple(e["path"]), e["action"], e["value"])
                                                         for e in fix))
            if code == cli.USER_ERROR:  # a config error: its field has no error left
                assert problem.split(" ", 1)[0] not in _problem_paths(fixed), (problem, fix)
            else:  # a refused plan: the plan's problem is gone, and the fix itself is a valid config
                assert _problem_paths(fixed) == [], (problem, fix)
                after = cli._plan(deployment.parse("x.json", json.dumps(fixed).encode()), fd_lines.line(line))
                assert problem not in after["problems"], (problem, fix)


@pytest.mark.parametrize("where, update, fixed", [
    ("graph", {"use_cudagraph": "false"}, False),  # the operator's intent kept, never flipped
    ("graph", {"use_cudagraph": "true"}, True),
    ("spec", {"num_speculative_tokens": "3"}, 3),  # a quoted number becomes that number
    ("spec", {"num_speculative_tokens": "9"}, 5),  # ... or the nearest valid one
    ("spec", {"num_speculative_tokens": 0}, 1),
    ("graph", {"cudagraph_capture_sizes": ["8", 16]}, 8),
    ("launch", {"enable-expert-parallel": "false"}, False),
    ("launch", {"max-num-seqs": " 64 "}, 64),
])
def test_a_mistyped_value_is_fixed_to_what_the_operator_meant(where, update, fixed, tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(edited(where, update)))
    assert cli.main(["plan", "--config", str(path), "--json"]) == cli.USER_ERROR
    error = json.loads(capsys.readouterr().out)
    (problem,), ((fix,),) = error["problems"], error["fixes"]
    assert fix[0]["value"] == fixed and problem.endswith(f"{json.dumps(fixed)}")


def test_a_huge_parallel_size_names_the_node_count_without_listing_every_node(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(edited("launch", {"tensor-parallel-size": 10**12})))
    assert cli.main(["plan", "--config", str(path)]) == cli.USER_ERROR
    assert capsys.readouterr().err.endswith(
        'Fix: "ips": ["<node0 IP>", "<node1 IP>", ... (1000000000000 in all), "<node999999999999 IP>"] '
        '(node 0 first)\n')
