"""patches/*.json and the patch code must agree."""
import importlib

import pytest

from fastdeploy_cudagraph_ext.patch import ALL_PATCHES
from fastdeploy_cudagraph_ext.registry import Registry, resolve_class, shape_differences
from fastdeploy_cudagraph_ext.release_lines import load_release_lines

LINES = load_release_lines()
KNOWN_SHAPES = {
    "capture_stream": {"token_keyed", "shape_and_mode_keyed"},
    "mtp_capture_sizing": {"k1_halving", "floor_division"},
    "xpu_mtp_capture_sizing": {"planned_loop", ""},
    "deepep_transition_clean": {"phase_per_step"},
    "moe_inline_clean_scope": {"layer_x_gate"},
    "ep_runner_inline_clean": {"runner_clean"},
    "deepep_capture_checks": {"hook_last"},
    "deepep_buffer_manager_clean": {"classmethods_only"},
}


def test_release_lines_cover_2_2_to_develop():
    assert [line.name for line in LINES] == ["2.2", "2.3", "2.4", "2.5", "develop"]


@pytest.mark.parametrize("line", LINES, ids=lambda line: line.name)
def test_every_line_names_every_patch_and_only_known_shapes(line):
    assert set(line.patches) == {p.name for p in ALL_PATCHES}
    for name, spec in line.patches.items():
        assert spec.shape in KNOWN_SHAPES[name], f"{line.name}:{name} shape {spec.shape!r} unknown to the code"
        assert spec.not_needed or spec.shape, f"{line.name}:{name} needs a shape or a not_needed reason"


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.name)
def test_shapes_name_the_patched_methods(patch):
    for line in LINES:
        spec = line.patches[patch.name]
        if spec.not_needed:
            continue
        added = {"clean_low_latency_buffer"}  # attributes a patch adds rather than replaces
        assert set(patch.attributes) - added <= set(spec.methods), f"{line.name}: {patch.name} checks too little"


def test_code_shape_names_cover_the_data():
    used = {(name, spec.shape) for line in LINES for name, spec in line.patches.items()}
    for name, shapes in KNOWN_SHAPES.items():
        assert {s for n, s in used if n == name} == shapes, f"{name}: shapes in code and data differ"


def test_installed_fastdeploy_matches_a_release_line(fd_era):
    era_line = {"2.3": "2.3", "develop": "develop"}.get(fd_era)
    registry = Registry(ALL_PATCHES)
    for patch in ALL_PATCHES:
        module = importlib.import_module(patch.module)
        cls = resolve_class(getattr(module, patch.class_name), patch.class_name)
        shape, detail, diffs = registry.match(patch, cls)
        assert not diffs, f"{patch.name}: {diffs}"
        if era_line and shape is not None:
            expected = next(line for line in LINES if line.name == era_line).patches[patch.name]
            assert not shape_differences(cls, expected), f"{patch.name} matched another era's shape"
