import copy
import json
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext import cli, deployment

ROOT = Path(__file__).resolve().parent.parent
ERNIE = json.loads(deployment.bundled_text("ernie45-300b-a47b-ep8-mixed-mtp1"))


def write(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_main_job_plans_the_default_bundled_deployment(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "deployment : ernie45-300b-a47b-ep8-mixed-mtp1 - ERNIE-4.5-300B" in out
    assert "   128     64          4          128   128  OK" in out
    assert "plan OK: 11 decode graphs; the worker accepts this deployment" in out
    assert "defaults   : cudagraph_capture_sizes: FastDeploy's default ladder" in out
    assert "FD_CUDAGRAPH_EXT=1 FD_PLUGINS=fastdeploy_cudagraph_ext python -m fastdeploy.entrypoints" in out


@pytest.mark.parametrize("name", deployment.bundled_names())
def test_every_bundled_deployment_plans_cleanly_by_name(name, capsys):
    assert cli.main(["plan", "--config", name, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    step = plan["settings"]["num_speculative_tokens"] + 1
    assert plan["ok"] and plan["captures"] and all(c["capture_size"] == c["batch_size"] * step for c in plan["captures"])


def test_list_names_every_bundled_config(capsys):
    assert cli.main(["plan", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in deployment.bundled_names())
    assert "ernie45-300b-a47b-ep8-mixed-mtp1 (default)" in out


def test_schema_is_exported_with_fastdeploy_spellings(capsys):
    assert cli.main(["plan", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) == {"description", "launch", "model_config", "environment"}
    assert "max-num-seqs" in schema["$defs"]["Launch"]["properties"]


def test_multi_node_launch_line_carries_the_nodes(capsys):
    assert cli.main(["plan", "--config", "deepseek-v3-ep16-mixed-mtp3"]) == 0
    out = capsys.readouterr().out
    assert ("launch (run this same line on each of the 2 nodes 10.0.0.1, 10.0.0.2; FastDeploy takes a node's rank "
            "from the position of its own IP in --ips):") in out
    assert "--ips 10.0.0.1,10.0.0.2" in out


def test_plan_reports_why_each_bad_size_is_refused(tmp_path, capsys):
    config = json.loads(deployment.bundled_text("deepseek-v3-ep16-mixed-mtp3"))
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = [6, 8, 512]
    assert cli.main(["plan", "--config", write(tmp_path, config), "--fd-line", "2.5"]) == 2
    out = capsys.readouterr().out
    assert "plan refused: the worker would stop before loading weights, because:" in out
    assert "  - capture size 6 is not a multiple of k+1=4 (each request decodes 4 tokens); nearest valid sizes: 4, 8" in out
    assert "     8      2          7            8   256  valid (plan refused)" in out  # 2.5's own loop: 2k+1 steps
    # FDConfig 2.5 keeps sizes up to max_num_seqs*(k+1) tokens and drops larger ones before the worker sees them
    assert "   512      -          7          512   256  dropped by FastDeploy: over its largest size 256" in out
    assert "     6      -          7            6   256  not a multiple of k+1=4" in out
    assert "launch: not shown: the worker would refuse this plan" in out and "api_server" not in out


def test_default_ladder_over_the_cap_says_where_the_cap_lives(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["launch"]["max-num-seqs"] = 128
    assert cli.main(["plan", "--config", write(tmp_path, config), "--json"]) == 2
    (problem,) = json.loads(capsys.readouterr().out)["problems"]
    assert "FastDeploy's default ladder (not your sizes)" in problem
    assert "lower --max-num-seqs to 64 or less" in problem and "in the model's config.json" in problem


def test_graphs_off_plans_nothing_and_says_so(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["launch"]["graph-optimization-config"] = '{"use_cudagraph": false}'  # FastDeploy's CLI form
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == 0
    out = capsys.readouterr().out
    assert ("no decode graphs: CUDA graphs are off (use_cudagraph: false): FastDeploy runs every step eagerly and the "
            "plugin captures nothing; its patches stay installed but idle") in out
    assert "--graph-optimization-config '{\"use_cudagraph\":false}'" in out  # the validated value, re-serialized


def test_no_expert_parallel_says_no_cap_applies(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    del config["launch"]["enable-expert-parallel"]
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == 0
    assert "expert parallel off: no DeepEP, no token cap to check" in capsys.readouterr().out


def test_missing_cap_shows_fastdeploys_default_explicitly(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["model_config"] = {}
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == 0
    assert ("num_max_dispatch_tokens_per_rank 128 (FastDeploy's default when the model's config.json lacks it: check "
            "your model's config.json and copy its value here)") in capsys.readouterr().out


def test_plugin_off_is_said(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["environment"] = {"FD_CUDAGRAPH_EXT": "0"}
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == 0
    assert "plugin     : OFF: FD_CUDAGRAPH_EXT is not set to 1" in capsys.readouterr().out


def test_missing_file_and_directory_are_clear_errors(tmp_path, capsys):
    assert cli.main(["plan", "--config", "/nonexistent.json"]) == 3
    assert capsys.readouterr().err == (
        "deployment config /nonexistent.json: does not exist: neither a file nor a bundled config. Fix: give a path "
        f"to a JSON file, or one of: {', '.join(deployment.bundled_names())}\n")
    assert cli.main(["plan", "--config", str(tmp_path)]) == 3
    assert capsys.readouterr().err == (
        f"deployment config {tmp_path}: is a directory: expected a JSON file or a bundled config's name. Fix: give "
        f"the file inside it, or a name from plan --list\n")


def test_json_errors_are_json(tmp_path, capsys):
    assert cli.main(["plan", "--config", str(tmp_path), "--json"]) == 3
    error = json.loads(capsys.readouterr().out)
    assert error["ok"] is False and error["error"] == "config" and error["problems"][0].startswith("is a directory")


def test_many_sizes_plan_with_a_warning(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    del config["launch"]["enable-expert-parallel"]
    config["launch"]["max-num-seqs"] = 256  # the most FastDeploy 2.5 accepts (FDConfig.check)
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = list(range(2, 513, 2))
    assert cli.main(["plan", "--config", write(tmp_path, config), "--fd-line", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "plan OK: 256 decode graphs" in out and "warning: 256 decode graphs" in out


def test_output_piped_into_head_ends_quietly(tmp_path):
    import subprocess
    import sys
    config = copy.deepcopy(ERNIE)
    del config["launch"]["enable-expert-parallel"]
    config["launch"]["max-num-seqs"] = 10_000
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = list(range(2, 20_001, 2))
    path = write(tmp_path, config)  # with --all a table far larger than a pipe's buffer
    result = subprocess.run(f"{sys.executable} -m fastdeploy_cudagraph_ext.cli plan --all --config {path} | head -1",
                            shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.startswith("deployment : deploy.json") and "Traceback" not in result.stderr


# ---- issue 16: statuses, refused launch, exit codes, export, long plans, BOM, EP degree ------------------------


def test_rows_over_the_deepep_cap_never_read_ok_and_the_refused_plan_offers_no_launch_line(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["launch"]["max-num-seqs"] = 256  # k=1: 512 tokens per rank against cap 128 (the default ladder)
    config["model_config"] = {"num_max_dispatch_tokens_per_rank": 256}
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == cli.REFUSED
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:6].strip().isdigit()]
    over = [r for r in rows if int(r.split()[0]) > 256]
    assert over and all(r.endswith("over DeepEP cap 256") for r in over)
    assert not any(r.endswith("  OK") for r in rows)  # a refused plan has no OK row
    assert "launch: not shown: the worker would refuse this plan" in out and "api_server" not in out
    assert cli.main(["plan", "--config", write(tmp_path, config), "--json"]) == cli.REFUSED
    result = json.loads(capsys.readouterr().out)
    assert result["launch"]["command"] is None and "would refuse" in result["launch"]["withheld"]
    assert {r["status"] for r in result["sizes"] if r["size"] > 256} == {"over_deepep_cap"}
    assert not any(r["captured"] for r in result["sizes"])


def test_expert_parallel_of_degree_one_is_off_as_in_fastdeploy(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["launch"].update({"tensor-parallel-size": 1, "data-parallel-size": 1, "max-num-seqs": 512})
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == cli.OK
    out = capsys.readouterr().out
    assert ("expert parallel OFF although enable-expert-parallel is set: tensor-parallel-size*data-parallel-size = 1, "
            "and FastDeploy turns EP on only for a degree above 1") in out
    assert "over DeepEP cap" not in out and "plan OK" in out


def test_a_leading_utf8_bom_is_accepted(tmp_path, capsys):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + deployment.bundled_text("ernie45-21b-a3b-dense-tp1").encode())
    assert cli.main(["plan", "--config", str(path)]) == cli.OK
    assert "plan OK" in capsys.readouterr().out


def test_export_writes_a_bundled_config_that_plans_and_never_overwrites(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "--export", "deepseek-v3-ep16-mixed-mtp3", "my-deployment.json"]) == cli.OK
    assert "wrote my-deployment.json" in capsys.readouterr().out
    assert (tmp_path / "my-deployment.json").read_text() == deployment.bundled_text("deepseek-v3-ep16-mixed-mtp3")
    assert cli.main(["plan", "--config", "my-deployment.json"]) == cli.OK
    capsys.readouterr()
    assert cli.main(["plan", "--export", "deepseek-v3-ep16-mixed-mtp3", "my-deployment.json"]) == cli.USER_ERROR
    assert "my-deployment.json exists; nothing written" in capsys.readouterr().err
    assert cli.main(["plan", "--export", "ernie45-21b-a3b-dense-tp1"]) == cli.OK  # default FILE: NAME.json
    assert (tmp_path / "ernie45-21b-a3b-dense-tp1.json").is_file()
    assert cli.main(["plan", "--export", "no-such"]) == cli.USER_ERROR
    assert "not a bundled config" in capsys.readouterr().err


def test_long_plans_show_first_and_last_rows_and_all_shows_every_row(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    del config["launch"]["enable-expert-parallel"]
    config["launch"]["max-num-seqs"] = 250
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = list(range(2, 1001, 2))
    path = write(tmp_path, config)
    assert cli.main(["plan", "--config", path, "--fd-line", "2.5"]) == cli.OK
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:6].strip().isdigit()]
    assert len(rows) == 2 * cli.EDGE_ROWS and rows[0].split()[0] == "1000" and rows[-1].split()[0] == "2"
    assert f"   ...  {500 - 2 * cli.EDGE_ROWS} more sizes (--all shows every row)" in out
    assert "launch; it carries 500 capture sizes:" in out
    assert cli.main(["plan", "--config", path, "--all", "--fd-line", "2.5"]) == cli.OK
    assert len([line for line in capsys.readouterr().out.splitlines() if line[:6].strip().isdigit()]) == 500


def test_help_texts_explain_json_and_decode_len(capsys):
    assert cli.main(["plan", "--help"]) == cli.OK
    out = " ".join(capsys.readouterr().out.split())
    assert "--json print the result as one JSON object" in out
    assert ("decode_len: steps each warmup request lives, so that it reaches decode (with MTP: (k+1)*2, or 2k+1 "
            "where FastDeploy 2.4/2.5's own loop captures; else 1)") in out


# The one exit-code table: --help prints it, README shows it, and plan and doctor follow it.
def test_exit_code_table_is_the_same_in_help_and_readme(capsys):
    readme = (ROOT / "README.md").read_text()
    for code, name, text in cli.EXIT_CODES:
        assert f"| {code} | {name} | {text} |" in readme
    assert readme.count("| code | meaning | when |") == 1  # documented once
    for argv in ([], ["plan"], ["doctor"]):
        assert cli.main([*argv, "--help"]) == cli.OK
        assert cli._exit_table() in capsys.readouterr().out


def test_exit_codes_follow_the_table(tmp_path, capsys, monkeypatch):
    assert cli.main(["plan", "--no-such-option"]) == cli.USER_ERROR
    assert "error: unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert cli.main(["plan", "--config", "/nonexistent.json"]) == cli.USER_ERROR
    config = copy.deepcopy(ERNIE)
    config["launch"]["max-num-seqs"] = 128
    assert cli.main(["plan", "--config", write(tmp_path, config)]) == cli.REFUSED
    assert cli.main(["doctor", "--config", write(tmp_path, config), "--fd-src", str(tmp_path)]) == cli.USER_ERROR
    capsys.readouterr()

    def broken(*_):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "_plan", broken)
    assert cli.main(["plan"]) == cli.INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err == ("fastdeploy-cudagraph-ext: internal error: KeyError: 'boom' (a bug in this tool; please report it "
                   "with the command line)\n") and "Traceback" not in err


@pytest.mark.parametrize("name", deployment.bundled_names())
def test_every_bundled_plan_shows_its_coverage(name, capsys):
    assert cli.main(["plan", "--config", name, "--fd-line", "2.6"]) == cli.OK
    out = capsys.readouterr().out
    seqs = json.loads(deployment.bundled_text(name))["launch"]["max-num-seqs"]
    assert f"coverage   : {seqs} of {seqs} decode batch sizes (100%) replay a graph, mean padding " in out
    assert "  batches 1           graph " in out


def test_sizes_that_leave_gaps_show_the_batches_that_run_eagerly(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)  # k=1, 64 requests, cap 128
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = [2, 4, 8]
    path = write(tmp_path, config)
    assert cli.main(["plan", "--config", path, "--fd-line", "2.5"]) == cli.OK
    out = capsys.readouterr().out
    assert "coverage   : 4 of 64 decode batch sizes (6%) replay a graph, mean padding 6.2%; 60 run eagerly" in out
    assert "  batches 3-4         graph 8 (padding 0%-25%, mean 12.5%)" in out
    assert "  batches 5-64        eager: no graph holds them (FastDeploy runs them without one)" in out
    assert cli.main(["plan", "--config", path, "--fd-line", "2.5", "--json"]) == cli.OK
    cover = json.loads(capsys.readouterr().out)["coverage"]
    assert (cover["batches"], cover["served"], cover["served_share"]) == (64, 4, 0.0625)
    assert cover["ranges"][-1] == {"first": 5, "last": 64, "graph": None, "padding_min": 0.0, "padding_max": 0.0,
                                   "padding_mean": 0.0}


def test_a_refused_plan_has_no_coverage(tmp_path, capsys):
    config = copy.deepcopy(ERNIE)
    config["launch"]["max-num-seqs"] = 128  # over the cap
    assert cli.main(["plan", "--config", write(tmp_path, config), "--json"]) == cli.REFUSED
    assert json.loads(capsys.readouterr().out)["coverage"] is None
