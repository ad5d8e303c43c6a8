"""Contracts, groups and the runner gate (the one place a refusal surfaces)."""
import dataclasses
import importlib

import pytest

from fastdeploy_cudagraph_ext.fd_facts import module_facts
from fastdeploy_cudagraph_ext.flags import Settings
from fastdeploy_cudagraph_ext.patch import ALL_PATCHES, NEEDS, RUNNERS
from fastdeploy_cudagraph_ext.registry import (
    Contract, Patch, PatchRefused, Registry, Verdict, judge, resolve_class,
)

METADATA = ("why", "how", "related_pr", "removal_plan")
EP = "fastdeploy.model_executor.layers.moe.ep"
MOE = "fastdeploy.model_executor.layers.moe.fused_moe_backend_base"
RUNNER = "fastdeploy.worker.gpu_model_runner"


def patch_named(name):
    return next(p for p in ALL_PATCHES if p.name == name)


def registry(patches=ALL_PATCHES):
    return Registry(patches, NEEDS, RUNNERS, Settings())


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.name)
def test_every_patch_carries_its_metadata(patch):
    for field in METADATA:
        assert len(getattr(patch, field).strip()) > 20, f"{patch.name} lacks a real {field}"
    assert patch.group in {n.group for n in NEEDS}


@pytest.mark.parametrize("missing", METADATA)
def test_patch_without_metadata_cannot_be_declared(missing):
    fields = {f: "text" for f in METADATA} | {missing: "  "}
    with pytest.raises(ValueError, match=f"lacks metadata: {missing}"):
        Patch(name="p", group="g", module="m", contract=Contract("C", wraps=("f",)), build=lambda *a: {}, **fields)


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.name)
def test_every_patch_is_documented_with_symbol_why_how_pr_removal(patch):
    import fastdeploy_cudagraph_ext.patch as index

    doc = index.__doc__
    assert f"== group {patch.group} ==" in doc
    block = doc.split(f"** {patch.name} **", 1)[1].split("**", 1)[0]
    for label in ("Symbol:", "Why:", "How:", "PR:", "Removal:"):
        assert label in block, f"{patch.name}: '{label}' missing in patch/__init__.py"
    assert f"{patch.contract.cls}." in block


# -- contracts on facts -------------------------------------------------------------------------------------
APPLY = patch_named("moe_inline_clean_scope")
CAPTURE = patch_named("mtp_capture_sizing")


def moe_facts(signature):
    return {MOE: module_facts(f"class MoEMethodBase:\n    def apply({signature}): pass\n")}


def test_pass_through_wrapper_tolerates_new_parameters():
    for signature in ("self, layer, x, gate", "self, layer, x, gate, topk_ids_hookfunc=None",
                      "self, layer, x, gate, topk_ids_hookfunc=None, shared_experts=None, fc1_latent_proj=None"):
        assert judge(APPLY, moe_facts(signature)).verdict is Verdict.APPLIED


def test_a_wrapped_method_that_is_gone_refuses():
    report = judge(APPLY, {MOE: module_facts("class MoEMethodBase:\n    def forward(self): pass\n")})
    assert report.verdict is Verdict.REFUSED and report.detail == "MoEMethodBase.apply is missing"


GPU_RUNNER = '''
class GPUModelRunner:
    def __init__(self, fd_config, device, device_id, rank, local_rank): pass
    def _dummy_run(self, {dummy}): pass
    def capture_model(self):
        for batch_size in self.cudagraph_capture_sizes:
            if self.speculative_decoding:
                self._dummy_run(num_tokens=1, batch_size={batch}, in_capturing=True)
'''


def runner_facts(dummy="num_tokens, batch_size, expected_decode_len=1, in_capturing=False", batch="int(batch_size / 2)"):
    return {RUNNER: module_facts(GPU_RUNNER.format(dummy=dummy, batch=batch))}


def test_a_required_parameter_that_is_renamed_refuses():
    report = judge(CAPTURE, runner_facts(dummy="num_tokens, batch_size, decode_len=1, in_capturing=False"))
    assert report.verdict is Verdict.REFUSED
    assert "_dummy_run(self, num_tokens, batch_size, decode_len=, in_capturing=) lacks expected_decode_len" in report.detail


def test_variant_comes_from_the_capture_loop_marker_not_from_signatures():
    assert judge(CAPTURE, runner_facts(batch="int(batch_size / 2)")).variant == "planned_loop"
    k_plus_1 = runner_facts(batch="int(batch_size / (self.speculative_config.num_speculative_tokens + 1))")
    assert judge(CAPTURE, k_plus_1).variant == "fastdeploy_loop"
    unknown = judge(CAPTURE, runner_facts(batch="batch_size"))
    assert unknown.verdict is Verdict.REFUSED and "mtp_batch='size'" in unknown.detail


def test_added_attribute_that_fastdeploy_defines_is_not_needed():
    facts = {EP: module_facts("class DeepEPBufferManager:\n    def clean_low_latency_buffer(cls): pass\n")}
    report = judge(patch_named("deepep_buffer_manager_clean"), facts)
    assert report.verdict is Verdict.NOT_NEEDED and "defines DeepEPBufferManager.clean_low_latency_buffer" in report.detail


# -- apply / revert / groups on the stand-ins -----------------------------------------------------------------
def test_apply_then_revert_restores_identical_objects(fd_era):
    module = importlib.import_module(EP)
    reg = registry()
    patch = patch_named("deepep_capture_checks")
    cls = resolve_class(module.DeepEPEngine, "DeepEPEngine")  # FastDeploy's @singleton hides the class
    before = {name: value for name, value in cls.__dict__.items() if name.startswith("low_latency_")}
    report = reg.apply_to_module(patch, module)
    assert report.verdict is Verdict.APPLIED
    assert set(report.attributes) == set(before)  # the two-stage calls only where the line has them
    assert ("low_latency_dispatch_two_stage" in before) == (fd_era != "2.3")
    assert all(cls.__dict__[name] is not before[name] for name in report.attributes)
    assert reg.apply_to_module(patch, module) is report  # idempotent
    assert reg.revert(patch.name)
    assert {name: cls.__dict__[name] for name in report.attributes} == before
    assert not reg.revert(patch.name)


def test_a_failing_build_is_recorded_as_refused_and_leaves_the_class_untouched(fd_era):
    module = importlib.import_module(RUNNER)
    before = dict(module.GPUModelRunner.__dict__)
    broken = dataclasses.replace(CAPTURE, build=lambda cls, variant, settings: {"capture_model": 1, "unexpected": 1})
    report = registry([broken]).apply_to_module(broken, module)
    assert report.verdict is Verdict.REFUSED and "could not apply" in report.detail
    assert dict(module.GPUModelRunner.__dict__) == before


def test_a_refused_patch_reverts_its_whole_group_and_only_it(fd_era, monkeypatch):
    runner = importlib.import_module(RUNNER)
    ep = importlib.import_module(EP)
    moe = importlib.import_module(MOE)
    reg = registry()
    original_step = runner.GPUModelRunner.__dict__["initialize_forward_meta"]
    original_apply = moe.MoEMethodBase.__dict__["apply"]
    for name in ("deepep_transition_clean", "moe_inline_clean_scope", "capture_stream"):
        assert reg.apply_to_module(patch_named(name), importlib.import_module(patch_named(name).module)).verdict \
            is Verdict.APPLIED
    monkeypatch.delattr(ep.EPRunner, "clean_low_latency_buffer")  # a FastDeploy without the inline clean hook
    assert reg.apply_to_module(patch_named("ep_runner_inline_clean"), ep).verdict is Verdict.REFUSED
    assert runner.GPUModelRunner.__dict__["initialize_forward_meta"] is original_step
    assert moe.MoEMethodBase.__dict__["apply"] is original_apply
    assert "deepep_mixed" in reg.refused and "capture_stream" not in reg.refused
    assert "capture_stream" in reg._applied  # the other group stays


@pytest.mark.standin
@pytest.mark.parametrize("fd_era", ["2.3"], indirect=True)  # XPU runners before 2026 capture no graphs
def test_xpu_runner_without_graph_capture_is_not_needed(fd_era):
    module = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    report = registry().apply_to_module(patch_named("xpu_mtp_capture_sizing"), module)
    assert report.verdict is Verdict.NOT_NEEDED
    assert report.detail == "XPU captures no graphs on this line"


@pytest.mark.standin
@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_xpu_runner_that_captures_graphs_is_patched(fd_era):
    module = importlib.import_module("fastdeploy.worker.xpu_model_runner")
    report = registry().apply_to_module(patch_named("xpu_mtp_capture_sizing"), module)
    assert report.verdict is Verdict.APPLIED and report.variant == "planned_loop"


# -- the runner gate: where needed-ness is decided ------------------------------------------------------------
def _refuse_deepep_mixed(reg, monkeypatch):
    ep = importlib.import_module(EP)
    monkeypatch.delattr(ep.EPRunner, "clean_low_latency_buffer")
    reg.apply_to_module(patch_named("ep_runner_inline_clean"), ep)


def test_needed_refused_group_stops_the_worker_and_reverts_everything(fd_era, monkeypatch):
    from fd_configs import make_fd_config

    runner = importlib.import_module(RUNNER)
    original_init = runner.GPUModelRunner.__dict__["__init__"]
    reg = registry()
    reg._install_gate("GPUModelRunner", runner)
    reg.apply_to_module(CAPTURE, runner)
    _refuse_deepep_mixed(reg, monkeypatch)
    with pytest.raises(PatchRefused) as error:
        runner.GPUModelRunner(make_fd_config(k=1, ep=True), "gpu", 0, 0, 0)
    message = str(error.value)
    assert "group deepep_mixed is refused (ep_runner_inline_clean: EPRunner.clean_low_latency_buffer is missing)" in message
    assert "this deployment needs it (CUDA graphs are on and expert parallelism runs in mixed mode)" in message
    assert reg.stopped
    assert runner.GPUModelRunner.__dict__["__init__"] is original_init  # the gate is gone too
    assert not hasattr(runner.GPUModelRunner.capture_model, "__fastdeploy_cudagraph_ext_patch__")


def test_refused_group_the_deployment_does_not_need_only_logs(fd_era, monkeypatch, caplog):
    from fd_configs import make_fd_config

    runner = importlib.import_module(RUNNER)
    reg = registry()
    reg._install_gate("GPUModelRunner", runner)
    _refuse_deepep_mixed(reg, monkeypatch)
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        runner.GPUModelRunner(make_fd_config(k=1, ep=False), "gpu", 0, 0, 0)
    assert not reg.stopped
    assert ("group deepep_mixed: refused (ep_runner_inline_clean: EPRunner.clean_low_latency_buffer is missing); not "
            "needed for this deployment: expert parallelism is off or not in mixed mode") in caplog.text


def test_a_patch_of_an_already_refused_group_is_not_applied_later(fd_era, monkeypatch):
    moe = importlib.import_module(MOE)
    original_apply = moe.MoEMethodBase.__dict__["apply"]
    reg = registry()
    _refuse_deepep_mixed(reg, monkeypatch)
    report = reg.apply_to_module(APPLY, moe)  # FastDeploy imports the MoE module after the refusal
    assert report.verdict is Verdict.REFUSED and report.detail == "group deepep_mixed refused"
    assert moe.MoEMethodBase.__dict__["apply"] is original_apply


def test_an_error_while_judging_is_recorded_not_raised_into_fastdeploys_import(fd_era):
    module = importlib.import_module(RUNNER)

    def broken_choose(facts):
        raise KeyError("marker")

    broken = dataclasses.replace(CAPTURE, choose=broken_choose)
    report = registry([broken]).apply_to_module(broken, module)
    assert report.verdict is Verdict.REFUSED and report.detail == "could not judge: KeyError: 'marker'"


def test_a_base_named_like_its_subclass_is_not_followed_into_itself():
    facts = {MOE: module_facts("import base\nclass MoEMethodBase(base.MoEMethodBase):\n    def apply(self, layer, x, gate): pass\n")}
    assert judge(APPLY, facts).verdict is Verdict.APPLIED


BACKEND = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"
BACKEND_SOURCE = '''
class CudaGraphPiecewiseBackend:
    def __init__(self, fd_config, runnable): pass
    def __call__(self, **kwargs):
        {body}
    def clear_graph(self): pass
'''


def test_backend_variant_follows_how_fastdeploy_keys_its_entries():
    capture = patch_named("capture_stream")
    token = BACKEND_SOURCE.format(body="entry = self.concrete_size_entries.get("
                                       "self.real_shape_to_captured_size[kwargs['forward_meta'].ids_remove_padding.shape[0]])")
    assert judge(capture, {BACKEND: module_facts(token)}).variant == "token_keyed"
    unknown = judge(capture, {BACKEND: module_facts(BACKEND_SOURCE.format(body="return self.runnable(**kwargs)"))})
    assert unknown.verdict is Verdict.REFUSED
    assert unknown.detail == ("CudaGraphPiecewiseBackend.__call__ keys its entries in a way the plugin does not know "
                              "(marker entry_key='other'), so it cannot tell a replay from a capture")
