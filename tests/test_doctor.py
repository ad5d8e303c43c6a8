"""doctor as a pre-flight check: never crashes, one verdict line, exit 0 only when the worker would start."""
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastdeploy_cudagraph_ext import cli, doctor

FAKE_PADDLE = {  # what `import paddle` does in the child, per case
    "healthy": "__version__ = '3.3.1'\ndef is_compiled_with_cuda():\n    return True\n",
    "cpu": "__version__ = '3.3.1'\ndef is_compiled_with_cuda():\n    return False\n",
    "broken": "from paddle.base import core  # a wheel missing its C++ core\n",
    "raising": "raise RuntimeError('libcudart.so.12: cannot open shared object file')\n",
    "segfault": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
}


def applies(*groups):
    return [SimpleNamespace(group=g, verdict="applies", reason="shape matches") for g in groups]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A FastDeploy 2.5 worker environment with a fake Paddle (chosen per test) and a fake c10 report."""
    def build(paddle: str = "healthy", c10=(True, "c10 follows Paddle's stream: nothing to bridge"), **env):
        (tmp_path / "paddle").mkdir(exist_ok=True)
        (tmp_path / "paddle" / "__init__.py").write_text(FAKE_PADDLE[paddle])
        (tmp_path / "fake_c10.py").write_text(f"def report():\n    return {c10!r}\n")
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
        monkeypatch.setattr(doctor, "C10_REPORT", "fake_c10:report")
        monkeypatch.setattr(doctor, "fastdeploy_version", lambda: "2.5.0")
        monkeypatch.setattr(doctor, "_group_verdicts", lambda root: applies("capture_stream", "mtp_sizing",
                                                                             "deepep_mixed"))
        for name in ("FD_CUDAGRAPH_EXT", "FD_PLUGINS", "NVSHMEM_QP_DEPTH", "FD_CUDAGRAPH_EXT_FORCE",
                     "FD_CUDAGRAPH_EXT_DROP_OVERSIZE"):
            monkeypatch.delenv(name, raising=False)
        defaults = {"FD_CUDAGRAPH_EXT": "1", "FD_PLUGINS": "fastdeploy_cudagraph_ext"}
        for name, value in {**defaults, **env}.items():
            if value is not None:
                monkeypatch.setenv(name, value)
    return build


def doctor_json(capsys, *args) -> tuple[int, dict]:
    code = cli.main(["doctor", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def finding(report: dict, check: str) -> dict:
    return next(f for f in report["findings"] if f["check"] == check)


def test_healthy_setup_would_start(machine, capsys):
    machine()
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("this worker would start with the plugin")
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "OK Paddle 3.3.1 (CUDA build)" in lines
    assert "OK c10 stream c10 follows Paddle's stream: nothing to bridge" in lines


@pytest.mark.parametrize("paddle, text", [
    ("broken", "importing it raised ModuleNotFoundError: No module named 'paddle.base'; fix or reinstall "
               "paddlepaddle-gpu"),
    ("raising", "importing it raised RuntimeError: libcudart.so.12: cannot open shared object file; fix or reinstall "
                "paddlepaddle-gpu"),
    ("segfault", "importing Paddle in a child process failed: the child killed by SIGSEGV (signal 11). The worker "
                 "imports Paddle the same way and would die too; reinstall paddlepaddle-gpu matching your FastDeploy"),
    ("cpu", "3.3.1 is a CPU-only build: no CUDA graphs can be captured and the plugin refuses to start. Install "
            "paddlepaddle-gpu matching your FastDeploy"),
])
def test_bad_paddle_is_a_finding_and_exit_non_zero(machine, capsys, paddle, text):
    machine(paddle)
    code, report = doctor_json(capsys)
    assert code == 2 and report["would_start"] is False
    assert finding(report, "Paddle") == {"check": "Paddle", "status": "fail", "text": text}
    assert report["verdict"] == f"this worker would refuse: Paddle: {text}"


def test_unbridgeable_c10_refuses(machine, capsys):
    machine(c10=(False, "torch-API DeepEP needs c10 in step and this Paddle's c10 cannot be bridged"))
    code, report = doctor_json(capsys)
    assert code == 2 and finding(report, "c10 stream")["status"] == "fail"


@pytest.mark.parametrize("env, check, status, text", [
    ({"FD_CUDAGRAPH_EXT": "maybe"}, "FD_CUDAGRAPH_EXT", "fail",
     "FD_CUDAGRAPH_EXT='maybe' is not a valid value. Accepted: 1/true/yes/on to enable, 0/false/no/off or unset to "
     "disable (case-insensitive). Fix the environment of the FastDeploy server and restart it."),
    ({"FD_CUDAGRAPH_EXT_DROP_OVERSIZE": "1"}, "FD_CUDAGRAPH_EXT_DROP_OVERSIZE", "fail",
     "FD_CUDAGRAPH_EXT_DROP_OVERSIZE is no longer supported: dropping capture sizes over DeepEP's token cap cannot "
     "make a deployment safe: a decode batch over num_max_dispatch_tokens_per_rank hits DeepEP's assert with or "
     "without a graph, so the plan refuses any deployment whose max_num_seqs*(k+1) exceeds the cap. Unset "
     "FD_CUDAGRAPH_EXT_DROP_OVERSIZE and lower --max-num-seqs or raise the cap, as the refusal says."),
    ({"FD_CUDAGRAPH_EXT": None}, "FD_CUDAGRAPH_EXT", "fail",
     "unset: the plugin stays off. Fix: FD_CUDAGRAPH_EXT=1 in the server's environment"),
    ({"FD_PLUGINS": None}, "FD_PLUGINS", "fail",
     "unset: FastDeploy 2.5.0 loads no plugin when it is unset (#4909). Fix: FD_PLUGINS=fastdeploy_cudagraph_ext (add "
     "your other plugins, comma-separated)"),
    ({"FD_PLUGINS": "other_plugin"}, "FD_PLUGINS", "fail",
     "'other_plugin' does not name fastdeploy_cudagraph_ext, so FastDeploy does not load it. Fix: "
     "FD_PLUGINS=fastdeploy_cudagraph_ext (add your other plugins, comma-separated)"),
    ({"NVSHMEM_QP_DEPTH": "128"}, "NVSHMEM_QP_DEPTH", "fail",
     "128 is below 2*(cap+1) = 258 for FastDeploy's default DeepEP cap 128: DeepEP low-latency kernels would hang. "
     "Fix: NVSHMEM_QP_DEPTH=258 or more"),
])
def test_environment_findings(machine, capsys, env, check, status, text):
    machine(**env)
    code, report = doctor_json(capsys)
    assert code == 2
    assert {"check": check, "status": status, "text": text} in report["findings"]


def test_fd_plugins_unset_works_on_fastdeploy_2_3(machine, capsys, monkeypatch):
    machine(FD_PLUGINS=None)
    monkeypatch.setattr(doctor, "fastdeploy_version", lambda: "2.3.0")
    code, report = doctor_json(capsys)
    assert code == 0 and finding(report, "FD_PLUGINS")["status"] == "warn"


def test_refused_group_fails_only_where_the_deployment_needs_it(machine, capsys, monkeypatch):
    machine()
    refused = [SimpleNamespace(group="mtp_sizing", verdict="refused", reason="capture_model lost its MTP branch")]
    monkeypatch.setattr(doctor, "_group_verdicts", lambda root: refused)
    code, report = doctor_json(capsys, "--config", "ernie45-300b-a47b-ep8-mixed-mtp1")  # MTP k=1: needs it
    assert code == 2 and finding(report, "group mtp_sizing")["text"] == (
        "refused: capture_model lost its MTP branch (this deployment needs it)")
    code, report = doctor_json(capsys, "--config", "ernie45-21b-a3b-dense-tp1")  # no MTP
    assert code == 0 and finding(report, "group mtp_sizing")["status"] == "warn"


def test_doctor_config_runs_the_plan_checks(machine, capsys, tmp_path):
    machine()
    config = json.loads((Path(__file__).parent.parent / "configs" / "ernie45-300b-a47b-ep8-mixed-mtp1.json").read_text())
    config["launch"]["max-num-seqs"] = 128
    (tmp_path / "big.json").write_text(json.dumps(config))
    code, report = doctor_json(capsys, "--config", str(tmp_path / "big.json"))
    assert code == 2 and "over DeepEP's low-latency cap" in finding(report, "deployment big.json")["text"]


def test_doctor_plans_the_deployment_as_the_installed_line_lays_it_out(machine, capsys, tmp_path):
    machine()  # FastDeploy 2.5.0: written sizes are tokens there
    config = json.loads((Path(__file__).parent.parent / "configs" / "deepseek-v3-ep16-mixed-mtp3.json").read_text())
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = [4, 6]
    (tmp_path / "sizes.json").write_text(json.dumps(config))
    code, report = doctor_json(capsys, "--config", str(tmp_path / "sizes.json"))
    assert code == 2 and finding(report, "deployment sizes.json")["text"].startswith(
        "capture size 6 is not a multiple of k+1=4")
    code, report = doctor_json(capsys, "--config", "deepseek-v3-ep16-mixed-mtp3")
    assert code == 0 and finding(report, "deployment deepseek-v3-ep16-mixed-mtp3")["text"] == (
        "plan OK on FastDeploy 2.5 (facts of f3fb7e03, 2026-04-14): 11 decode graphs "
        "[256, 224, 192, 160, 128, 96, 64, 32, 16, 8, 4]; a graph serves 64 of 64 decode batch sizes")
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = [4, 8]
    (tmp_path / "gap.json").write_text(json.dumps(config))
    code, report = doctor_json(capsys, "--config", str(tmp_path / "gap.json"))
    assert code == 0 and finding(report, "deployment gap.json")["text"].endswith(
        "a graph serves 2 of 64 decode batch sizes; batch sizes 3-64 run eagerly")


def test_doctor_config_error_is_a_user_error(machine, capsys):
    machine()
    assert cli.main(["doctor", "--config", "no-such-deployment"]) == 3
    assert "does not exist: neither a file nor a bundled config" in capsys.readouterr().err


def test_fd_src_reports_the_checkout_groups(capsys, tmp_path, monkeypatch):
    (tmp_path / "fastdeploy").mkdir()
    seen = []
    monkeypatch.setattr(doctor, "_group_verdicts", lambda root: seen.append(root) or applies("capture_stream"))
    code, report = doctor_json(capsys, "--fd-src", str(tmp_path))
    assert code == 0 and seen == [tmp_path]
    assert report["verdict"] == f"FastDeploy checkout {tmp_path} would start with the plugin"


@pytest.mark.parametrize("make, text", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "holds no fastdeploy/ package"),
    (lambda p: [(p / "f").write_text(""), p / "f"][1], "is a file, not a directory"),
])
def test_fd_src_wrong_directory_is_exit_2(capsys, tmp_path, make, text):
    path = make(tmp_path)
    assert cli.main(["doctor", "--fd-src", str(path)]) == 3
    assert text in capsys.readouterr().err


def test_child_probe_keeps_paddle_result_when_the_c10_stage_crashes(machine, tmp_path):
    machine()
    (tmp_path / "fake_c10.py").write_text("import os, signal\ndef report():\n    os.kill(os.getpid(), signal.SIGSEGV)\n")
    paddle, c10, ended = doctor.probe_paddle()
    assert paddle["cuda"] is True and c10 is None and ended == "killed by SIGSEGV (signal 11)"


def test_fastdeploy_version_from_version_txt(tmp_path, monkeypatch):
    (tmp_path / "fastdeploy").mkdir()
    (tmp_path / "fastdeploy" / "version.txt").write_text(textwrap.dedent("""\
        fastdeploy version: 2.4.0
    """))
    monkeypatch.setattr(doctor, "installed_root", lambda: tmp_path)
    monkeypatch.setattr(doctor, "FD_DISTS", ())
    assert doctor.fastdeploy_version() == "2.4.0" and doctor.release_line("2.4.0") == (2, 4)
