"""Every feature group applies or is 'not needed' (with a reason) on the REAL sources of each release line;
README's compatibility table agrees with the registry's verdicts."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from real_release import MIRROR, SKIP_REASON

from fastdeploy_cudagraph_ext import fd_facts
from fastdeploy_cudagraph_ext.compat import TARGET_MODULES, group_verdicts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "patches" / "releases").glob("fd-*.json"))
# The upstream commit each fixture names (newest upstream commit of its line, patches/README.md).
MIRROR_LINES = {p.stem.removeprefix("fd-"): json.loads(p.read_text())["source"]["commit"] for p in FIXTURES}
GROUPS = ("capture_stream", "mtp_sizing", "deepep_mixed")


def mirror_facts(commit):
    out = {}
    for module in TARGET_MODULES:
        path = "/".join(module.split(".")) + ".py"
        shown = subprocess.run(["git", "--git-dir", str(MIRROR), "show", f"{commit}:{path}"],
                               capture_output=True, text=True)
        if shown.returncode:  # a target module this line does not have yet
            continue
        source = shown.stdout
        out[module] = fd_facts.module_facts(source)
    return out


def assert_no_group_refused(verdicts):
    assert {v.group for v in verdicts} == set(GROUPS)
    for v in verdicts:
        assert v.verdict in ("applies", "not needed"), f"{v.group}: {v.verdict}: {v.reason}"
        assert v.reason.strip()


@pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
@pytest.mark.parametrize("line", MIRROR_LINES)
def test_no_group_is_refused_on_real_sources(line):
    verdicts = group_verdicts(mirror_facts(MIRROR_LINES[line]))
    assert_no_group_refused(verdicts)
    assert readme_row(line) == {v.group: v.verdict for v in verdicts}


@pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
def test_variants_follow_the_real_capture_loops():
    from fastdeploy_cudagraph_ext.patch import ALL_PATCHES
    from fastdeploy_cudagraph_ext.registry import judge

    gpu = next(p for p in ALL_PATCHES if p.name == "mtp_capture_sizing")
    xpu = next(p for p in ALL_PATCHES if p.name == "xpu_mtp_capture_sizing")
    assert judge(gpu, mirror_facts(MIRROR_LINES["2.3"])).variant == "planned_loop"  # size/2
    assert judge(gpu, mirror_facts(MIRROR_LINES["2.4"])).variant == "fastdeploy_loop"  # #5670: size/(k+1)
    develop = mirror_facts(MIRROR_LINES["develop"])
    assert "sizes: not needed (FastDeploy already scales every size by k+1" in judge(gpu, develop).detail
    assert judge(xpu, mirror_facts(MIRROR_LINES["2.4"])).detail == "XPU captures no graphs on this line"
    assert judge(xpu, mirror_facts(MIRROR_LINES["2.5"])).variant == "planned_loop"  # #6152: batch = size


@pytest.mark.skipif(not FIXTURES, reason="no per-release fixtures in patches/releases/ yet (the facts tool writes them)")
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_no_group_is_refused_on_any_release_fixture(fixture):
    raw = json.loads(fixture.read_text())
    facts = fd_facts.facts_from_json(raw["modules"])
    verdicts = group_verdicts(facts)
    assert_no_group_refused(verdicts)
    line = fixture.stem.removeprefix("fd-")
    assert readme_row(line) == {v.group: v.verdict for v in verdicts}
    commit, paddle = readme_cells(line)[4:6]
    assert commit == f"{raw['source']['commit'][:8]} ({raw['source']['date'][:10]})"
    assert paddle == raw["paddlepaddle_gpu"]


def readme_cells(line):
    """README's compatibility table row of a release line: line, one cell per group, commit read, paddlepaddle-gpu."""
    section = (ROOT / "README.md").read_text().split("## Compatibility", 1)[1].split("\n## ", 1)[0]
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if cells and cells[0] == line:
            return cells
    raise AssertionError(f"README's compatibility table has no row for {line}")


def readme_row(line):
    """The group columns of README's row: "applies"/"not needed" per group."""
    return {g: re.sub(r"\s*\(.*", "", cell) for g, cell in zip(GROUPS, readme_cells(line)[1:4])}


STANDINS = ROOT / "tests" / "standins"


@pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
@pytest.mark.parametrize("era", ["2.2.0", "2.3", "2.4", "develop"])
def test_standins_have_the_real_shapes_of_the_release_they_model(era):
    """Every patch gets the same verdict and variant on the stand-in tree as on the real commit it names."""
    from fastdeploy_cudagraph_ext.compat import source_facts
    from fastdeploy_cudagraph_ext.patch import ALL_PATCHES
    from fastdeploy_cudagraph_ext.registry import judge

    standin = source_facts(STANDINS / f"fd-{era}")
    commit = re.search(r"upstream commit ([0-9a-f]{40})", (STANDINS / f"fd-{era}" / "fastdeploy" / "__init__.py").read_text())
    real = mirror_facts(commit.group(1))
    for patch in ALL_PATCHES:
        ours, theirs = judge(patch, standin), judge(patch, real)
        assert (ours.verdict, ours.variant, ours.attributes) == (theirs.verdict, theirs.variant, theirs.attributes), \
            patch.name


@pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
def test_a_line_without_the_buffer_manager_still_gets_the_deepep_group():
    """2.2.0 has no DeepEPBufferManager (fastdeploy-surface.md): 2.3's facts without it, as a stand-in for 2.2.0."""
    import dataclasses

    facts = mirror_facts(MIRROR_LINES["2.3"])
    ep = "fastdeploy.model_executor.layers.moe.ep"
    classes = {name: c for name, c in facts[ep].classes.items() if name != "DeepEPBufferManager"}
    facts[ep] = dataclasses.replace(facts[ep], classes=classes)
    deepep = next(v for v in group_verdicts(facts) if v.group == "deepep_mixed")
    assert deepep.verdict == "applies"
    assert ("deepep_buffer_manager_clean: no fastdeploy.model_executor.layers.moe.ep:DeepEPBufferManager: 2.2.0 has "
            "no buffer manager, so nothing calls its clean") in deepep.reason
