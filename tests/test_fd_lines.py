"""`plan` speaks one FastDeploy line: what a size means, the ladder and its cap, and the MTP loop come from the line's
facts (patches/releases/fd-<line>.json, shipped in the wheel) through the plan builder the worker runs."""
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext import cli, deployment, doctor, fd_lines
from fastdeploy_cudagraph_ext.capture_plan import USUAL_LADDER

ROOT = Path(__file__).resolve().parent.parent
DEEPSEEK = json.loads(deployment.bundled_text("deepseek-v3-ep16-mixed-mtp3"))


def write(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(config))
    return str(path)


def with_sizes(sizes: list[int]) -> dict:
    config = copy.deepcopy(DEEPSEEK)  # k=3, max-num-seqs 64, cap 256
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = sizes
    return config


def test_on_2_6_written_sizes_are_requests_that_fastdeploy_scales_by_k_plus_1(tmp_path, capsys):
    assert cli.main(["plan", "--config", write(tmp_path, with_sizes([2, 6, 10, 16])), "--fd-line", "2.6",
                     "--json"]) == cli.OK
    result = json.loads(capsys.readouterr().out)
    assert [c["capture_size"] for c in result["captures"]] == [64, 40, 24, 8]
    assert [(r["written"], r["size"], r["status"]) for r in result["sizes"]] == [
        (16, 64, "captured"), (10, 40, "captured"), (6, 24, "captured"), (2, 8, "captured")]
    assert result["fastdeploy_line"]["sizes_mean"].startswith("sizes are REQUESTS, each multiplied by k+1=4")


def test_on_2_5_the_same_sizes_are_tokens_and_refused(tmp_path, capsys):
    assert cli.main(["plan", "--config", write(tmp_path, with_sizes([2, 6, 10, 16])), "--fd-line", "2.5"]) == \
        cli.REFUSED
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  - ")]
    assert [p.split()[3] for p in problems] == ["2", "6", "10"]
    assert all("is not a multiple of k+1=4" in p for p in problems)


# The facts per line, checked against FastDeploy's config.py at each line's commit (fixtures from the mirror):
# 2.2.0 keeps sizes up to max_num_seqs with no cap; 2.2's ladder has no 288..512; 2.2.x-2.4 cap at 512 tokens
# (max_num_seqs*(k+1) under MTP); 2.5 caps only without speculative decoding; 2.6/develop cap at 512 requests.
@pytest.mark.parametrize("line, k, seqs, largest", [
    ("2.2.0", 1, 300, 300), ("2.2.x", 1, 300, 512), ("2.3", 3, 64, 256), ("2.4", 3, 256, 512),
    ("2.5", 0, 300, 300), ("2.5", 0, 1000, 512), ("2.5", 3, 256, 1024), ("2.6", 3, 600, 2048),
    ("develop", 1, 100, 200),
])
def test_the_largest_size_fastdeploy_keeps_per_line(line, k, seqs, largest):
    assert fd_lines.line(line).largest(seqs, k) == largest


def test_ladders_and_limits_per_line():
    lines = fd_lines.lines()
    assert list(lines) == ["2.2.0", "2.2.x", "2.3", "2.4", "2.5", "2.6", "develop"]
    assert fd_lines.newest().line == "2.6"  # the newest release; develop is named only by --fd-line
    for name, line in lines.items():  # 2.2's ladder jumps from 256 to 544
        assert line.ladder_base == tuple(s for s in USUAL_LADDER if not (name.startswith("2.2") and 256 < s < 544))
    assert {name: ln.max_num_seqs_limit for name, ln in lines.items()} == {
        "2.2.0": 256, "2.2.x": 256, "2.3": 256, "2.4": 256, "2.5": 256, "2.6": 512, "develop": 512}
    assert {name: ln.decode_len(3) for name, ln in lines.items()} == {
        "2.2.0": 8, "2.2.x": 8, "2.3": 8, "2.4": 7, "2.5": 7, "2.6": 8, "develop": 8}  # 2.4/2.5's own loop: 2k+1


def test_the_default_ladder_on_2_2_0_is_fastdeploys_own(tmp_path, capsys):
    config = with_sizes([])
    del config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"]
    del config["launch"]["speculative-config"]
    config["launch"].update({"max-num-seqs": 256, "enable-expert-parallel": False})
    assert cli.main(["plan", "--config", write(tmp_path, config), "--fd-line", "2.2.0", "--json"]) == cli.OK
    sizes = sorted(c["capture_size"] for c in json.loads(capsys.readouterr().out)["captures"])
    assert sizes == [s for s in USUAL_LADDER if s <= 256]
    config["launch"]["max-num-seqs"] = 257
    assert cli.main(["plan", "--config", write(tmp_path, config), "--fd-line", "2.2.0", "--json"]) == cli.REFUSED
    result = json.loads(capsys.readouterr().out)
    assert result["problems"] == ["max-num-seqs 257 is above 256, which FastDeploy 2.2.0 (facts of fa236927, "
                                  "2025-09-08) asserts at start-up (FDConfig.check: max_num_seqs <= 256). Fix: lower "
                                  "--max-num-seqs to 256 or less"]
    assert result["fixes"] == [[[{"path": ["launch", "max-num-seqs"], "action": "set", "value": 256}]]]


def test_sizes_fastdeploy_drops_are_shown_as_not_captured(tmp_path, capsys):
    assert cli.main(["plan", "--config", write(tmp_path, with_sizes([16, 32, 600])), "--fd-line", "2.3"]) == cli.OK
    out = capsys.readouterr().out
    assert "   600      -          8          600   256  dropped by FastDeploy: over its largest size 256" in out
    assert ("warning: FastDeploy 2.3 keeps sizes up to 256 tokens and drops the larger written sizes [600] without "
            "a word: they are not captured") in out


@pytest.mark.parametrize("version, line", [
    ("2.2.0", "2.2.0"), ("2.2.3", "2.2.x"), ("2.3.0-dev", "2.3"), ("2.5.1", "2.5"), ("2.6.0", "2.6"),
    ("2.6.0-dev", "develop"), ("3.0.0", None), ("unknown version", None), (None, None),
])
def test_an_installed_version_maps_to_its_line(version, line):
    found = fd_lines.line_of_version(version)
    assert (found.line if found else None) == line


def test_the_default_line_is_the_installed_one_else_the_newest_and_plan_says_which(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "fastdeploy_version", lambda: "2.4.0")
    assert cli.main(["plan", "--json"]) == cli.OK
    chosen = json.loads(capsys.readouterr().out)["fastdeploy_line"]
    assert (chosen["line"], chosen["chosen"]) == ("2.4", "the installed FastDeploy 2.4.0")
    monkeypatch.setattr(doctor, "fastdeploy_version", lambda: None)
    assert cli.main(["plan"]) == cli.OK
    assert ("fastdeploy : FastDeploy 2.6 (facts of 7198b588, 2026-06-01), assumed: no FastDeploy installed here "
            "(--fd-line picks another)") in capsys.readouterr().out
    assert cli.main(["plan", "--fd-line", "9.9"]) == cli.USER_ERROR
    assert "argument --fd-line: invalid choice: '9.9'" in capsys.readouterr().err


def test_the_built_package_ships_every_lines_facts_and_plans_from_them(tmp_path):
    """What setuptools puts in the wheel (build_py of the pyproject), used without the source checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "fastdeploy_cudagraph_ext", "configs", "patches"):
        copy_from = ROOT / name
        (shutil.copytree if copy_from.is_dir() else shutil.copy)(copy_from, source / name)
    built = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
                            "--build-lib", str(tmp_path / "lib")], cwd=source, capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    shutil.rmtree(source)  # nothing left to fall back on
    shipped = sorted(p.name for p in (tmp_path / "lib" / "fastdeploy_cudagraph_ext" / "_releases").glob("*.json"))
    assert shipped == sorted(p.name for p in (ROOT / "patches" / "releases").glob("fd-*.json"))
    planned = subprocess.run([sys.executable, "-m", "fastdeploy_cudagraph_ext.cli", "plan", "--fd-line", "2.3",
                              "--json"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "lib")},
                             capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["fastdeploy_line"]["line"] == "2.3"


# A 2.2-shaped ladder builder (our own snippet with the shape the facts record: no 288..512).
LADDER_22 = """
class GraphOptimizationConfig:
    def _set_cudagraph_sizes(self, max_capture_size=0):
        draft_capture_sizes = [1, 2, 4] + [8 * i for i in range(1, 17)]
        draft_capture_sizes += [16 * i for i in range(9, 17)]
        draft_capture_sizes += [32 * i for i in range(17, 33)]
        draft_capture_sizes.append(max_capture_size)
"""


def test_the_worker_and_plan_lay_out_the_same_sizes_from_the_line_s_ladder(tmp_path, monkeypatch, capsys):
    from types import ModuleType, SimpleNamespace

    from fastdeploy_cudagraph_ext.capture_plan import plan_deployment
    from fastdeploy_cudagraph_ext.fd_config import deployment_settings
    from fastdeploy_cudagraph_ext.flags import Settings

    source = tmp_path / "config.py"
    source.write_text(LADDER_22)
    module = ModuleType("fastdeploy.config")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, "fastdeploy.config", module)
    line = fd_lines.line("2.2.x")
    largest = line.largest(200, 1)  # MTP k=1, 200 requests: min(512, 400) tokens
    ladder = sorted({s for s in line.ladder_base if s <= largest} | {largest})  # what 2.2.x's FDConfig holds
    fd_config = SimpleNamespace(
        graph_opt_config=SimpleNamespace(cudagraph_capture_sizes=ladder, use_cudagraph=True,
                                         cudagraph_only_prefill=False),
        scheduler_config=SimpleNamespace(max_num_seqs=200, max_num_batched_tokens=8192, splitwise_role="mixed"),
        speculative_config=SimpleNamespace(method="mtp", num_speculative_tokens=1),
        parallel_config=SimpleNamespace(use_ep=False), model_config=SimpleNamespace())
    fd_config.get_max_chunk_tokens = lambda: 8192
    worker = plan_deployment(deployment_settings(fd_config, Settings(enable=True)))

    config = json.loads(deployment.bundled_text("ernie45-300b-a47b-ep8-mixed-mtp1"))
    config["launch"].update({"max-num-seqs": 200, "enable-expert-parallel": False})
    assert cli.main(["plan", "--config", write(tmp_path, config), "--fd-line", "2.2.x", "--json"]) == cli.OK
    planned = [c["capture_size"] for c in json.loads(capsys.readouterr().out)["captures"]]
    # FastDeploy's 2.2 ladder (no 288..512) is recognised as its own and laid out again at k+1 per request;
    # read as the usual ladder it would pass for user sizes, and size 1 would stop the worker
    assert worker.sizes == planned and planned[0] == 400 and planned[-1] == 2


def expected_readme_cells(line: fd_lines.LineSizing) -> list[str]:
    """README's per-line sizing row, written from the line's facts."""
    if line.sizes_are_requests:
        keeps = f"min({line.cap}, max-num-seqs) requests"
    elif line.cap is None:
        keeps = "max-num-seqs tokens (no k+1, no cap)"
    elif line.cap_without_speculative_only:
        keeps = f"max-num-seqs*(k+1) tokens with MTP, else min({line.cap}, max-num-seqs)"
    else:
        keeps = f"min({line.cap}, max-num-seqs*(k+1)) tokens"
    gap = [s for s in USUAL_LADDER if s not in line.ladder_base]
    ladder = "1, 2, 4, 8..1024" if not gap else f"1, 2, 4, 8..{min(gap) - 32}, then {max(gap) + 32}..1024"
    loop = (f"FastDeploy's: size/(k+1) requests, {'2k+1' if line.decode_len(3) == 7 else '(k+1)*2'} steps"
            if line.fastdeploy_mtp_loop else "the plugin's: size/(k+1) requests, (k+1)*2 steps")
    return [line.line, "requests, times k+1" if line.sizes_are_requests else "tokens", keeps, ladder,
            str(line.max_num_seqs_limit), loop]


@pytest.mark.parametrize("name", list(fd_lines.lines()))
def test_readme_says_per_line_what_the_facts_say(name):
    section = (ROOT / "README.md").read_text().split("## Capture sizing", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in row.strip().strip("|").split("|")] for row in section.splitlines()
            if row.startswith("| ")]
    assert expected_readme_cells(fd_lines.line(name)) in rows


FDCONFIG_25_SHAPE = """
class GraphOptimizationConfig:
    def _set_cudagraph_sizes(self, max_capture_size=0, dec_token_per_query_per_step=1):
        draft_capture_sizes = [i * dec_token_per_query_per_step for i in [1, 2, 4]]
        draft_capture_sizes += [16 * i * dec_token_per_query_per_step for i in range(9, 11)]
        draft_capture_sizes.append(max_capture_size)
class FDConfig:
    def __init__(self):
        max_capture_shape = self.scheduler_config.max_num_seqs
        if self.speculative_config is not None:
            max_capture_shape = self.scheduler_config.max_num_seqs * (self.speculative_config.num_speculative_tokens + 1)
        max_capture_shape = max_capture_shape if self.speculative_config is not None else min(384, max_capture_shape)
    def check(self):
        assert self.scheduler_config.max_num_seqs <= 128, "too many"
"""
FDCONFIG_UNREADABLE = """
class GraphOptimizationConfig:
    def _set_cudagraph_sizes(self, max_capture_size=0):
        draft_capture_sizes = list(self.candidates)
class FDConfig:
    def __init__(self):
        self.graph_opt_config.init_with_cudagrpah_size(max_num_seqs=self.parallel_config.max_num_seqs)
    def check(self):
        pass
"""


@pytest.mark.parametrize("source, expected", [
    (FDCONFIG_25_SHAPE, {"GraphOptimizationConfig._set_cudagraph_sizes.ladder": "1,2,4,144,160",
                         "FDConfig.__init__.decode_capture_max": "max_num_seqs*(k+1)",
                         "FDConfig.__init__.decode_capture_cap": "384_without_speculative",
                         "FDConfig.check.max_num_seqs_limit": "128"}),
    (FDCONFIG_UNREADABLE, {"GraphOptimizationConfig._set_cudagraph_sizes.ladder": "other",
                           "FDConfig.__init__.decode_capture_max": "max_num_seqs",
                           "FDConfig.__init__.decode_capture_cap": "none",
                           "FDConfig.check.max_num_seqs_limit": "none"}),
], ids=["2.5-shape", "unreadable"])
def test_sizing_markers_read_fdconfig_s_shape(source, expected):
    from fastdeploy_cudagraph_ext.fd_facts import module_facts

    markers = module_facts(source).markers
    assert {k: v for k, v in markers.items() if k in expected} == expected


def test_facts_without_a_sizing_marker_are_a_clear_error():
    raw = json.loads((ROOT / "patches" / "releases" / "fd-2.5.json").read_text())
    del raw["modules"]["fastdeploy.config"]["markers"]["FDConfig.check.max_num_seqs_limit"]
    with pytest.raises(fd_lines.LineError, match="the facts of FastDeploy 2.5 lack a sizing marker the plan needs "
                                                 r"\(KeyError: 'FDConfig.check.max_num_seqs_limit'\)"):
        fd_lines.LineSizing.from_fixture(raw)
    raw["modules"]["fastdeploy.config"]["markers"]["FDConfig.check.max_num_seqs_limit"] = "none"
    raw["modules"]["fastdeploy.config"]["markers"]["GraphOptimizationConfig._set_cudagraph_sizes.ladder"] = "other"
    with pytest.raises(fd_lines.LineError, match="ValueError"):
        fd_lines.LineSizing.from_fixture(raw)
