import dataclasses
import importlib

import pytest

from fastdeploy_cudagraph_ext.patch import ALL_PATCHES
from fastdeploy_cudagraph_ext.registry import Patch, Registry, Verdict, resolve_class, signature_of

METADATA = ("why", "how", "related_pr", "removal_plan")


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.name)
def test_every_patch_carries_its_metadata(patch):
    for field in METADATA:
        assert len(getattr(patch, field).strip()) > 20, f"{patch.name} lacks a real {field}"
    assert all(":" in s and "." in s.split(":")[1] for s in patch.symbols)


@pytest.mark.parametrize("missing", METADATA)
def test_patch_without_metadata_cannot_be_declared(missing):
    fields = {f: "text" for f in METADATA} | {missing: "  "}
    with pytest.raises(ValueError, match=f"lacks metadata: {missing}"):
        Patch(name="p", symbols=("m:C.f",), build=lambda cls, shape: {}, **fields)


def test_patches_are_documented_in_the_patch_index():
    import fastdeploy_cudagraph_ext.patch as index

    for patch in ALL_PATCHES:
        assert f"** " in index.__doc__ and f"{patch.name} **" in index.__doc__, f"{patch.name} missing in the index"


def test_signature_marks_variadics():
    def f(self, entry, *args, is_decode=False, **kwargs):
        pass

    assert signature_of(f) == ("self", "entry", "*args", "is_decode", "**kwargs")


def test_apply_then_revert_restores_identical_objects(fd_era):
    module = importlib.import_module("fastdeploy.model_executor.layers.moe.ep")
    registry = Registry(ALL_PATCHES)
    patch = next(p for p in ALL_PATCHES if p.name == "deepep_capture_checks")
    cls = resolve_class(module.DeepEPEngine, "DeepEPEngine")  # FastDeploy's @singleton hides the class
    before = {name: cls.__dict__[name] for name in patch.attributes}
    assert registry.apply_to_module(patch, module).verdict is Verdict.APPLIED
    assert all(cls.__dict__[name] is not before[name] for name in patch.attributes)
    assert registry.apply_to_module(patch, module).verdict is Verdict.APPLIED  # idempotent
    assert registry.revert(patch.name)
    assert {name: cls.__dict__[name] for name in patch.attributes} == before
    assert not registry.revert(patch.name)


def test_failure_midway_leaves_class_untouched(fd_era):
    module = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    patch = next(p for p in ALL_PATCHES if p.name == "mtp_capture_sizing")
    before = dict(module.GPUModelRunner.__dict__)

    def broken_build(cls, shape):
        return {"__init__": lambda self: None, "capture_model": None, "unexpected": 1}

    broken = dataclasses.replace(patch, build=broken_build)
    with pytest.raises(ValueError, match="built"):
        Registry([broken]).apply_to_module(broken, module)
    assert dict(module.GPUModelRunner.__dict__) == before


@pytest.mark.standin
@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # XPU runners before 2026 capture no graphs
def test_xpu_runner_without_graph_capture_is_not_needed(fd_era):
    module = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    patch = next(p for p in ALL_PATCHES if p.name == "xpu_mtp_capture_sizing")
    report = Registry(ALL_PATCHES).apply_to_module(patch, module)
    assert report.verdict is Verdict.NOT_NEEDED
    assert "captures no graphs" in report.detail


@pytest.mark.standin
@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_xpu_runner_with_mtp_capture_is_patched(fd_era):
    module = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    patch = next(p for p in ALL_PATCHES if p.name == "xpu_mtp_capture_sizing")
    report = Registry(ALL_PATCHES).apply_to_module(patch, module)
    assert report.verdict is Verdict.APPLIED and report.detail == "FastDeploy develop shape 'planned_loop'"
