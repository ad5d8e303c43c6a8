import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext import cli, deployment

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, standins=None):
    """`standins`: the stand-in era ("2.3", "develop") to put on the path as the installed FastDeploy."""
    env = dict(os.environ)
    standin_roots = [str(ROOT / "tests" / "standins" / f"fd-{standins}"), str(ROOT / "tests" / "standins")]
    paths = [str(ROOT)] + (standin_roots if standins else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run([sys.executable, "-m", "fastdeploy_cudagraph_ext.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_main_job_plans_the_embedded_default(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "deployment : ernie45-300b-a47b-ep8-mixed-mtp1.json" in out
    assert "   128     64          4          128   128  OK" in out
    assert "plan OK: 11 decode graphs" in out
    assert "FD_CUDAGRAPH_EXT=1 FD_PLUGINS=fastdeploy_cudagraph_ext python -m fastdeploy.entrypoints" in out


@pytest.mark.parametrize("name", sorted(deployment.bundled()))
def test_every_bundled_deployment_plans_cleanly(name, capsys):
    assert cli.main(["plan", "--config", str(ROOT / "configs" / name), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    step = plan["inputs"]["num_speculative_tokens"] + 1
    assert plan["captures"] and all(c["capture_size"] == c["batch_size"] * step for c in plan["captures"])


def test_plan_reports_why_each_bad_size_is_refused(tmp_path, capsys):
    config = json.loads((ROOT / "configs" / "deepseek-v3-ep16-mixed-mtp3.json").read_text())
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = [6, 8, 512]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    assert cli.main(["plan", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert "nearest valid sizes: 4, 8" in out
    assert "capture size 512 exceeds max_num_seqs*(k+1)=256" in out
    assert "     8      2          8            8   256  OK" in out


def test_plan_missing_config_is_a_clear_error(capsys):
    assert cli.main(["plan", "--config", "/nonexistent.json"]) == 2
    assert "deployment config /nonexistent.json does not exist" in capsys.readouterr().err


@pytest.mark.standin  # a machine with neither FastDeploy nor a CUDA Paddle, as CI is
def test_doctor_without_fastdeploy_reports_it_and_exits_zero():
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fastdeploy"] is None
    assert {row["verdict"] for row in report["patches"]} == {"FastDeploy not found"}
    assert report["paddle_cuda"] is False
    assert "c10 follows Paddle's stream" in report["c10"]["verdict"]


def test_doctor_gives_each_group_the_registrys_verdict_on_a_fastdeploy():
    result = run_cli("doctor", standins="develop")
    assert result.returncode == 0, result.stderr
    assert "capture_stream               applies: capture_stream: default: contract holds" in result.stdout
    assert "xpu_mtp_capture_sizing: planned_loop" in result.stdout


def test_doctor_reports_not_needed_where_fastdeploy_is_right():
    result = run_cli("doctor", standins="2.3")
    assert "xpu_mtp_capture_sizing: XPU captures no graphs on this line" in result.stdout
