"""Contracts, groups and the runner gate (the one place a refusal surfaces)."""
import dataclasses
import importlib

import pytest

from fastdeploy_cudagraph_ext.fd_facts import module_facts
from fastdeploy_cudagraph_ext.flags import Settings
from fastdeploy_cudagraph_ext.patch import ALL_PATCHES, NEEDS, RUNNERS
from fastdeploy_cudagraph_ext import import_hooks
from fastdeploy_cudagraph_ext.registry import (
    PATCH_MARKER, Choice, Contract, ContractBroken, GroupVerdict, Patch, PatchRefused, PatchReport, Registry, Verdict,
    group_verdict, group_verdicts_of, judge, resolve_class, within,
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
    def __init__(self, fd_config, device, device_id, rank, local_rank):
        self.fd_config = self.graph_opt_config = self.use_cudagraph = self.cudagraph_capture_sizes = None
    def _dummy_run(self, {dummy}): pass
    def capture_model(self):
        for batch_size in self.cudagraph_capture_sizes:
            if self.speculative_decoding:
                self._dummy_run(num_tokens=1, batch_size={batch}, in_capturing=True)
'''


CONFIG = "fastdeploy.config"
CONFIG_SOURCE = '''
class GraphOptimizationConfig:
    def __init__(self):
        self.cudagraph_capture_sizes = None
    def init_with_cudagrpah_size(self, {cap}=0): pass
class FDConfig:
    def __init__(self, spec, graph):
        if spec.method in [{methods}]:
            self.max_capture_shape = 8 * (spec.num_speculative_tokens + 1)
        graph.init_with_cudagrpah_size(max_capture_size=self.max_capture_shape)
'''


def runner_facts(dummy="num_tokens, batch_size, expected_decode_len=1, in_capturing=False", batch="int(batch_size / 2)",
                 cap="max_capture_size", methods='"mtp"'):
    return {RUNNER: module_facts(GPU_RUNNER.format(dummy=dummy, batch=batch)),
            CONFIG: module_facts(CONFIG_SOURCE.format(cap=cap, methods=methods))}


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
    assert {v.group: v.verdict for v in reg.group_verdicts()} == {"capture_stream": "applies",
                                                                 "deepep_mixed": "refused"}


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
class ConcreteSizeEntry:
    real_shape: int
    use_cudagraph: bool = True
    captured: bool = False
    cuda_graph: object = None
    {output}: object = None
class CudaGraphPiecewiseBackend:
    def __init__(self, fd_config, runnable):
        self.fd_config = fd_config
        self.real_shape_to_captured_size = self.concrete_size_entries = {{}}
    def __call__(self, **kwargs):
        {body}
    def clear_graph(self): pass
'''
FORWARD_META = "fastdeploy.model_executor.forward_meta"
TOKEN_KEYED = ("entry = self.concrete_size_entries.get("
               "self.real_shape_to_captured_size[kwargs['forward_meta'].ids_remove_padding.shape[0]])")


def backend_facts(body=TOKEN_KEYED, output="output_buffers"):
    return {BACKEND: module_facts(BACKEND_SOURCE.format(body=body, output=output)),
            FORWARD_META: module_facts("class ForwardMeta:\n    ids_remove_padding: object\n")}


def test_backend_variant_follows_how_fastdeploy_keys_its_entries():
    capture = patch_named("capture_stream")
    assert judge(capture, backend_facts()).variant == "token_keyed"
    by_ids = judge(capture, backend_facts(TOKEN_KEYED.replace("kwargs['forward_meta'].ids_remove_padding",
                                                              "kwargs['ids_remove_padding']"), output="output_buffer"))
    assert by_ids.variant == "token_keyed_by_ids" and by_ids.variant.line["output_buffers"] == "output_buffer"
    unknown = judge(capture, backend_facts("return self.runnable(**kwargs)"))
    assert unknown.verdict is Verdict.REFUSED
    assert unknown.detail == ("CudaGraphPiecewiseBackend.__call__ keys its entries in a way the plugin does not know "
                              "(markers entry_key='other', kwargs_read='none'), so it cannot tell a replay from a capture")


# -- issue 15: every FastDeploy name a patch touches is declared and checked on the line ----------------------
def test_a_declared_attribute_missing_on_the_line_refuses_at_the_gate_not_in_the_worker():
    facts = backend_facts()
    facts[FORWARD_META] = module_facts("class ForwardMeta:\n    input_ids: object\n")  # ids_remove_padding renamed
    report = judge(patch_named("capture_stream"), facts)
    assert report.verdict is Verdict.REFUSED
    assert report.detail == "ForwardMeta.ids_remove_padding is missing (read or written by the patch)"


def test_neither_spelling_of_a_declared_name_refuses_naming_both():
    report = judge(patch_named("capture_stream"), backend_facts(output="outputs"))
    assert report.detail == ("ConcreteSizeEntry.output_buffers or ConcreteSizeEntry.output_buffer is missing "
                             "(read or written by the patch)")


def test_the_line_s_spelling_of_a_passed_keyword_reaches_the_patch():
    assert judge(CAPTURE, runner_facts()).variant.line["max_capture_size"] == "max_capture_size"
    assert judge(CAPTURE, runner_facts(cap="max_num_seqs")).variant.line["max_capture_size"] == "max_num_seqs"
    gone = judge(CAPTURE, runner_facts(cap="max_shape"))
    assert gone.verdict is Verdict.REFUSED
    assert gone.detail == ("GraphOptimizationConfig.init_with_cudagrpah_size(self, max_shape=) lacks max_capture_size "
                           "or max_num_seqs")


def test_an_optional_keyword_is_passed_only_where_the_line_has_it():
    assert judge(CAPTURE, runner_facts()).variant.line["accept_all_drafts"] == ""
    with_drafts = runner_facts(dummy="num_tokens, batch_size, expected_decode_len=1, in_capturing=False, "
                                     "accept_all_drafts=False")
    assert judge(CAPTURE, with_drafts).variant.line["accept_all_drafts"] == "accept_all_drafts"


def test_k_counts_for_the_methods_the_line_s_fdconfig_scales_for():
    assert judge(CAPTURE, runner_facts()).variant.line["k_plus_1_methods"] == "mtp"
    suffix = runner_facts(methods='"mtp", "suffix"')
    assert judge(CAPTURE, suffix).variant.line["k_plus_1_methods"] == "mtp,suffix"
    enum = runner_facts(methods="SpecMethod.MTP, SpecMethod.SUFFIX, SpecMethod.NGRAM")
    assert judge(CAPTURE, enum).variant.line["k_plus_1_methods"] == "mtp,ngram,suffix"


def test_a_line_whose_fdconfig_names_no_method_counts_every_accepted_method():
    facts = runner_facts()
    facts[CONFIG] = module_facts(CONFIG_SOURCE.format(cap="max_num_seqs", methods='"mtp"').replace(
        "if spec.method in", "if spec.other in") + "class SpeculativeConfig:\n    def __init__(self):\n"
        "        self.method_list = ['ngram_match', 'mtp']\n")
    assert judge(CAPTURE, facts).variant.line["k_plus_1_methods"] == "mtp,ngram_match"
    facts[CONFIG] = module_facts(CONFIG_SOURCE.format(cap="max_num_seqs", methods='"mtp"').replace(
        "if spec.method in", "if spec.other in"))
    unknown = judge(CAPTURE, facts)
    assert unknown.verdict is Verdict.REFUSED and "cannot tell which speculative methods" in unknown.detail


PR_7344_CALL = (TOKEN_KEYED + "\n        with stream_guard(self._capture_stream):\n"
                "            entry.cuda_graph.replay()\n            paddle.device.synchronize()")


@pytest.mark.parametrize("shape,conflict", [
    ("self._capture_stream = paddle.device.Stream()", "makes its own capture stream"),
    (TOKEN_KEYED + "\n        entry.cuda_graph.replay()\n        paddle.device.synchronize()",
     "synchronizes the device after replays"),
    (PR_7344_CALL, "makes its own capture stream and synchronizes the device after replays"),
])
def test_a_backend_with_pr_7344_s_shape_is_refused_naming_the_conflict_and_the_fix(shape, conflict):
    report = judge(patch_named("capture_stream"), backend_facts(TOKEN_KEYED + "\n        " + shape))
    assert report.verdict is Verdict.REFUSED
    assert report.detail.startswith(f"this FastDeploy's CudaGraphPiecewiseBackend already {conflict} (the closed PR "
                                    f"#7344's shape)")
    assert "Fix: install an upstream FastDeploy without PR #7344" in report.detail


def test_a_synchronize_around_capture_is_not_a_conflict():
    around = (TOKEN_KEYED + "\n        paddle.device.synchronize()\n        graph.capture_begin()\n"
              "        graph.capture_end()\n        paddle.device.synchronize()\n        entry.cuda_graph.replay()")
    report = judge(patch_named("capture_stream"), backend_facts(around))
    assert report.verdict is Verdict.APPLIED


# -- the pieces, each with its exact behaviour (mutation testing, issue 11) ------------------------------------
def _patch(name="p", group="deepep_mixed", module="m", contract=Contract("C", wraps=("f",)), **overrides):
    fields = {"build": lambda *a: {}} | {f: f"{f} text" for f in METADATA} | overrides
    return Patch(name=name, group=group, module=module, contract=contract, **fields)


def test_a_patch_that_changes_nothing_cannot_be_declared():
    with pytest.raises(ValueError) as error:
        _patch(contract=Contract("C"))
    assert str(error.value) == "patch 'p' changes no FastDeploy attribute"
    for contract in (Contract("C", adds=("a",)), Contract("C", wraps_if_present=("w",))):
        assert _patch(contract=contract).contract is contract


def test_metadata_errors_name_every_missing_field_in_order():
    with pytest.raises(ValueError) as error:
        _patch(why=" ", removal_plan="")
    assert str(error.value) == "patch 'p' lacks metadata: why, removal_plan"


def test_report_line_is_what_the_operator_reads():
    report = PatchReport("capture_stream", Verdict.NOT_NEEDED, "no graphs")
    assert report.line() == "fastdeploy-cudagraph-ext: patch capture_stream: not needed (no graphs)"
    assert (report.variant, report.attributes) == (None, ())


def test_within_runs_the_original_inside_the_context_and_keeps_its_identity():
    events = []

    class Scope:
        def __init__(self, owner):
            self.owner = owner

        def __enter__(self):
            events.append(("enter", self.owner))

        def __exit__(self, *exc):
            events.append(("exit", self.owner))

    def original(self, a, b=2):
        """FastDeploy's method."""
        events.append(("call", a, b))
        return a + b

    method = within(original, Scope)
    assert method("runner", 1, b=5) == 6
    assert events == [("enter", "runner"), ("call", 1, 5), ("exit", "runner")]
    assert method.__wrapped__ is original and method.__doc__ == "FastDeploy's method."


def test_resolve_class_sees_through_wrapped_and_closures_by_name():
    class Engine:
        pass

    def wrapper():
        return Engine

    wrapper.__wrapped__ = Engine
    assert resolve_class(Engine, "Engine") is Engine
    assert resolve_class(wrapper, "Other") is Engine

    def singleton(cls):
        other = int

        def get():
            return other, cls

        return get

    assert resolve_class(singleton(Engine), "Engine") is Engine
    assert resolve_class(singleton(Engine), "Missing") is None  # a closed-over class of another name is not it
    assert resolve_class(lambda: None, "Engine") is None
    assert resolve_class(None, "Engine") is None


def test_methods_of_same_module_bases_are_inherited_and_overridden():
    facts = {MOE: module_facts("class Base:\n    def apply(self, layer, x, gate): pass\n"
                               "    def other(self): pass\n"
                               "class Mid(Base):\n    def apply(self, layer, x): pass\n"
                               "class MoEMethodBase(pkg.mod.Mid):\n    pass\n")}
    report = judge(dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply", "other"),
                                                                uses={"apply": ("gate",)})), facts)
    assert report.verdict is Verdict.REFUSED  # Mid's apply (no gate) overrides Base's
    assert report.detail == "MoEMethodBase.apply(self, layer, x) lacks gate"


def test_used_names_are_read_through_stars_and_defaults():
    contract = Contract("MoEMethodBase", wraps=("apply",), uses={"apply": ("args", "kwargs", "gate", "hook")})
    patch = dataclasses.replace(APPLY, contract=contract)
    assert judge(patch, moe_facts("self, *args, gate=None, hook, **kwargs")).verdict is Verdict.APPLIED
    missing = judge(patch, moe_facts("self, layer, *, gate=None"))
    assert missing.detail == "MoEMethodBase.apply(self, layer, *, gate=) lacks args, kwargs, hook"


def test_a_used_method_that_is_gone_and_an_optional_class_are_reported_exactly():
    uses_gone = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",),
                                                             uses={"apply": ("gate",), "forward": ("x",)}))
    report = judge(uses_gone, moe_facts("self, layer, x"))
    assert report.detail == "MoEMethodBase.apply(self, layer, x) lacks gate; MoEMethodBase.forward is missing"
    optional = dataclasses.replace(APPLY, contract=Contract("Gone", adds=("a",), optional_class="old line"))
    assert judge(optional, moe_facts("self")) == PatchReport(APPLY.name, Verdict.NOT_NEEDED, f"no {MOE}:Gone: old line")
    required = dataclasses.replace(APPLY, contract=Contract("Gone", adds=("a",)))
    assert judge(required, {}) == PatchReport(APPLY.name, Verdict.REFUSED, f"{MOE}:Gone not found in this FastDeploy")


def test_an_applied_report_names_its_variant_and_every_attribute_it_replaces():
    contract = Contract("MoEMethodBase", wraps=("apply",), wraps_if_present=("two", "absent"), adds=("new",))
    report = judge(dataclasses.replace(APPLY, contract=contract),
                   {MOE: module_facts("class MoEMethodBase:\n    def apply(self): pass\n    def two(self): pass\n")})
    assert report == PatchReport(APPLY.name, Verdict.APPLIED, "default: contract holds", "default", ("apply", "two", "new"))


def test_a_variant_chooser_that_finds_nothing_to_do_is_not_needed_before_names_are_checked():
    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",), uses={"apply": ("gone",)}),
                                choose=lambda facts: Choice(None, "this line needs nothing"))
    assert judge(patch, moe_facts("self")) == PatchReport(APPLY.name, Verdict.NOT_NEEDED, "this line needs nothing")


def test_live_methods_come_from_the_class_with_source_signatures_preferred():
    class Live:
        def apply(self, layer, x, gate):
            pass

        @staticmethod
        def helper(a):
            pass

        not_callable = 3

    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply", "helper"),
                                                         uses={"apply": ("gate",), "helper": ("a",)}))
    assert judge(patch, {}, Live).verdict is Verdict.APPLIED  # no source: the live signatures
    report = judge(patch, moe_facts("self, layer"), Live)  # the source's signature wins where it has one
    assert report.detail == "MoEMethodBase.apply(self, layer) lacks gate"


def test_group_verdicts_refused_wins_all_not_needed_is_not_needed_else_applies():
    applied = PatchReport("a", Verdict.APPLIED, "ok")
    idle = PatchReport("b", Verdict.NOT_NEEDED, "nothing")
    refused = PatchReport("c", Verdict.REFUSED, "gone")
    assert group_verdict("g", [applied, refused, idle]) == GroupVerdict("g", "refused", "c: gone")
    also = PatchReport("d", Verdict.REFUSED, "renamed")
    assert group_verdict("g", [refused, idle, also]) == GroupVerdict("g", "refused", "c: gone; d: renamed")
    assert group_verdict("g", [idle, idle]) == GroupVerdict("g", "not needed", "b: nothing; b: nothing")
    assert group_verdict("g", [idle, applied]) == GroupVerdict("g", "applies", "b: nothing; a: ok")
    assert group_verdict("g", []) == GroupVerdict("g", "applies", "")


def test_group_verdicts_of_facts_judge_each_group_in_declaration_order():
    first = _patch("x", group="g1", module=MOE, contract=Contract("MoEMethodBase", wraps=("apply",)))
    second = _patch("y", group="g2", module=MOE, contract=Contract("Gone", wraps=("f",)))
    third = _patch("z", group="g1", module=MOE, contract=Contract("MoEMethodBase", adds=("apply",)))
    assert group_verdicts_of([first, second, third], moe_facts("self")) == [
        GroupVerdict("g1", "applies", "x: default: contract holds; z: FastDeploy defines MoEMethodBase.apply itself"),
        GroupVerdict("g2", "refused", f"y: {MOE}:Gone not found in this FastDeploy"),
    ]


def test_a_registry_refuses_duplicate_names_and_groups_without_a_need_rule():
    with pytest.raises(ValueError) as duplicate:
        Registry([_patch("p"), _patch("p")], NEEDS, RUNNERS)
    assert str(duplicate.value) == "duplicate patch names: ['p', 'p']"
    with pytest.raises(ValueError) as unknown:
        Registry([_patch("p", group="zeta"), _patch("q", group="alpha")], NEEDS, RUNNERS)
    assert str(unknown.value) == "groups without a need rule: ['alpha', 'zeta']"
    reg = Registry([_patch("p")], NEEDS, {"m": "C"})
    assert dict(reg.runners) == {"m": "C"} and reg.settings == Settings() and reg.stopped is False
    assert reg.group_members("deepep_mixed") == [reg.patches["p"]] and reg.group_members("other") == []


def test_a_failing_setattr_restores_what_was_already_replaced():
    class Target:
        def f(self):
            return "f"

    original = Target.__dict__["f"]
    new_f = lambda self: "new"  # noqa: E731

    class Meta(type):
        def __setattr__(cls, name, value):
            if name == "g":
                raise TypeError("read-only g")
            super().__setattr__(name, value)

    Guarded = Meta("Guarded", (), {"f": original})
    with pytest.raises(TypeError, match="read-only g"):
        Registry._replace(Guarded, {"f": new_f, "added": new_f, "g": new_f}, "marker")
    assert Guarded.__dict__["f"] is original and "added" not in Guarded.__dict__
    originals = Registry._replace(Target, {"f": new_f, "added": 1}, "marker")  # an int takes no marker: still set
    assert Target.__dict__["added"] == 1 and getattr(new_f, PATCH_MARKER) == "marker"
    Registry._restore(Target, originals)
    assert Target.__dict__["f"] is original and "added" not in Target.__dict__


def test_a_patch_waits_when_its_module_is_not_imported_and_keeps_its_first_report():
    patch = _patch(module="fastdeploy_cudagraph_ext_test_never_imported")
    reg = Registry([patch], NEEDS, RUNNERS)
    try:
        report = reg.apply_when_imported(patch)
        assert report == PatchReport("p", Verdict.WAITING, "fastdeploy_cudagraph_ext_test_never_imported not imported yet")
        assert reg.reports["p"] is report
        reg.reports["p"] = applied = PatchReport("p", Verdict.APPLIED, "meanwhile")
        reg.apply_when_imported(patch)
        assert reg.reports["p"] is applied  # a later wait does not overwrite what happened
    finally:
        import_hooks.cancel_all()


def test_a_group_refusal_records_why_each_reverted_member_is_gone(fd_era, monkeypatch):
    reg = registry()
    for name in ("deepep_transition_clean", "moe_inline_clean_scope"):
        reg.apply_to_module(patch_named(name), importlib.import_module(patch_named(name).module))
    _refuse_deepep_mixed(reg, monkeypatch)
    for name in ("deepep_transition_clean", "moe_inline_clean_scope"):
        assert reg.reports[name] == PatchReport(name, Verdict.REFUSED, "reverted: group deepep_mixed refused")
    assert reg.refused == {"deepep_mixed": "ep_runner_inline_clean: EPRunner.clean_low_latency_buffer is missing"}


def test_a_reverted_patch_forgets_its_report(fd_era):
    reg = registry()
    patch = patch_named("capture_stream")
    reg.apply_to_module(patch, importlib.import_module(patch.module))
    assert reg.revert(patch.name) and patch.name not in reg.reports


def test_the_stop_message_names_every_needed_refused_group(fd_era, monkeypatch, runtime):  # runtime: CUDA
    from fd_configs import make_fd_config

    backend = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
    reg = registry()
    monkeypatch.delattr(backend.CudaGraphPiecewiseBackend, "clear_graph")
    reg.apply_to_module(patch_named("capture_stream"), backend)
    _refuse_deepep_mixed(reg, monkeypatch)
    with pytest.raises(PatchRefused) as error:
        reg.runner_built("GPUModelRunner", make_fd_config(k=1, ep=True))
    assert str(error.value) == (
        "fastdeploy-cudagraph-ext stops this worker: group capture_stream is refused (capture_stream: "
        "CudaGraphPiecewiseBackend.clear_graph is missing) and this deployment needs it (CUDA graphs are on) | group "
        "deepep_mixed is refused (ep_runner_inline_clean: EPRunner.clean_low_latency_buffer is missing) and this "
        "deployment needs it (CUDA graphs are on and expert parallelism runs in mixed mode). Every patch was reverted. "
        "Use a FastDeploy release listed in README's compatibility table, or unset FD_CUDAGRAPH_EXT to serve without "
        "the plugin.")


def test_facts_of_a_module_not_imported_yet_come_from_the_installed_source(fd_era):
    """A module a patch reads facts from may not be imported yet when the patch is judged."""
    import sys

    from fastdeploy_cudagraph_ext.registry import _module_facts

    assert "fastdeploy.config" not in sys.modules
    facts = _module_facts("fastdeploy.config", None)
    assert "init_with_cudagrpah_size" in facts.classes["GraphOptimizationConfig"].methods
    assert "fastdeploy.config" not in sys.modules  # read, never imported
    assert _module_facts("fastdeploy.no_such_module", None) is None


def test_without_cuda_the_capture_stream_group_is_not_needed_even_when_refused(fd_era, monkeypatch, no_cuda):
    from fd_configs import make_fd_config

    backend = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
    reg = registry()
    monkeypatch.delattr(backend.CudaGraphPiecewiseBackend, "clear_graph")
    reg.apply_to_module(patch_named("capture_stream"), backend)
    assert "capture_stream" in reg.refused
    reg.runner_built("GPUModelRunner", make_fd_config(k=1))  # not stopped
    assert reg.reports["capture_stream"].verdict is Verdict.REFUSED


def test_without_cuda_an_applied_capture_stream_patch_is_reverted_at_the_gate(fd_era, no_cuda):
    from fd_configs import make_fd_config

    backend = importlib.import_module("fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend")
    original = backend.CudaGraphPiecewiseBackend.__dict__["__call__"]
    reg = registry()
    assert reg.apply_to_module(patch_named("capture_stream"), backend).verdict is Verdict.APPLIED
    reg.runner_built("GPUModelRunner", make_fd_config(k=1))
    report = reg.reports["capture_stream"]
    assert report.verdict is Verdict.NOT_NEEDED and report.detail.startswith("Paddle is not compiled with CUDA")
    assert backend.CudaGraphPiecewiseBackend.__dict__["__call__"] is original


def test_a_refused_group_not_needed_logs_one_exact_line(fd_era, monkeypatch, caplog):
    from fd_configs import make_fd_config

    reg = registry()
    _refuse_deepep_mixed(reg, monkeypatch)
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        assert reg.runner_built("GPUModelRunner", make_fd_config(k=1, ep=False)) == {}
    assert ("fastdeploy-cudagraph-ext: group deepep_mixed: refused (ep_runner_inline_clean: "
            "EPRunner.clean_low_latency_buffer is missing); not needed for this deployment: expert parallelism is off "
            "or not in mixed mode") in [r.getMessage() for r in caplog.records]


@pytest.mark.standin  # needs a FastDeploy whose modules are not imported yet
def test_building_a_runner_imports_every_pending_target_but_the_other_platforms_runner(fd_era, caplog):
    import sys

    from fd_configs import make_fd_config

    reg = registry()
    assert RUNNER not in sys.modules
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        reg.runner_built("GPUModelRunner", make_fd_config(k=1))
    assert {p.module for p in ALL_PATCHES} - set(sys.modules) == {"fastdeploy.worker.xpu_model_runner"}
    assert RUNNER in sys.modules and import_hooks._pending == {}


def test_a_target_that_cannot_be_imported_is_logged_as_not_needed(fd_era, monkeypatch, caplog):
    from fd_configs import make_fd_config

    broken = _patch("p", module="fastdeploy_cudagraph_ext_test_missing_module")
    reg = Registry([broken], NEEDS, RUNNERS)
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        reg.runner_built("GPUModelRunner", make_fd_config(k=1))
    assert ("fastdeploy-cudagraph-ext: fastdeploy_cudagraph_ext_test_missing_module is not importable in this worker "
            "(ModuleNotFoundError: No module named 'fastdeploy_cudagraph_ext_test_missing_module'); its patches are "
            "not needed here") in [r.getMessage() for r in caplog.records]


def test_runner_attributes_come_from_applied_patches_of_that_runner_only(fd_era):
    from fd_configs import make_fd_config

    runner = importlib.import_module(RUNNER)
    seen = []

    def on_init(fd_config, settings, variant):
        seen.append((fd_config, settings, variant))
        return {"planned": 1}

    gpu = dataclasses.replace(CAPTURE, on_runner_init=on_init)
    xpu = dataclasses.replace(gpu, name="other", contract=dataclasses.replace(CAPTURE.contract, cls="XPUModelRunner"))
    reg = Registry([gpu, xpu], NEEDS, RUNNERS, Settings(round_sizes=True))
    reg.apply_to_module(gpu, runner)
    config = make_fd_config(k=1)
    assert reg.runner_built("GPUModelRunner", config) == {"planned": 1}
    assert seen == [(config, Settings(round_sizes=True), reg.reports["mtp_capture_sizing"].variant)]


def test_the_gate_reads_fd_config_by_keyword_and_sets_attributes_after_fastdeploys_init(fd_era):
    from fd_configs import make_fd_config

    runner = importlib.import_module(RUNNER)
    calls = []
    gpu = dataclasses.replace(CAPTURE, on_runner_init=lambda fd_config, settings, variant: calls.append(fd_config) or {"x": 7})
    reg = Registry([gpu], NEEDS, RUNNERS)
    reg._install_gate("GPUModelRunner", runner)
    reg._install_gate("GPUModelRunner", runner)  # once per module
    reg.apply_to_module(gpu, runner)
    config = make_fd_config(k=1)
    built = runner.GPUModelRunner(fd_config=config, device="gpu", device_id=0, rank=0, local_rank=0)
    assert calls == [config] and built.x == 7
    assert getattr(runner.GPUModelRunner.__init__, PATCH_MARKER) == "runner_gate"
    assert runner.GPUModelRunner.__init__.__wrapped__.__name__ == "__init__"
    reg.revert_all()
    assert not hasattr(runner.GPUModelRunner.__init__, PATCH_MARKER)


def test_reports_of_refusals_are_filed_under_the_patch_s_name(fd_era, monkeypatch):
    moe = importlib.import_module(MOE)
    reg = registry()
    _refuse_deepep_mixed(reg, monkeypatch)
    reg.apply_to_module(APPLY, moe)
    assert reg.reports[APPLY.name] == PatchReport(APPLY.name, Verdict.REFUSED, "group deepep_mixed refused")
    assert None not in reg.reports


def test_a_judging_error_is_filed_under_the_patch_s_name(fd_era):
    broken = dataclasses.replace(CAPTURE, choose=lambda facts: {}["marker"])
    reg = registry([broken])
    reg.apply_to_module(broken, importlib.import_module(RUNNER))
    assert reg.reports[broken.name] == PatchReport(broken.name, Verdict.REFUSED, "could not judge: KeyError: 'marker'")


def test_a_build_that_does_not_match_its_contract_is_refused_exactly(fd_era):
    broken = dataclasses.replace(CAPTURE, build=lambda cls, variant, settings: {"capture_model": 1, "unexpected": 1})
    reg = registry([broken])
    report = reg.apply_to_module(broken, importlib.import_module(RUNNER))
    assert reg.reports[broken.name] == report == PatchReport(broken.name, Verdict.REFUSED, (
        "could not apply: ValueError: built ['capture_model', 'unexpected'], its contract names ['capture_model']"))


def test_a_class_the_source_has_but_the_live_module_lacks_is_refused(fd_era, monkeypatch):
    runner = importlib.import_module(RUNNER)
    monkeypatch.delattr(runner, "GPUModelRunner")
    report = registry().apply_to_module(CAPTURE, runner)
    assert report == PatchReport(CAPTURE.name, Verdict.REFUSED, f"{RUNNER} has no class GPUModelRunner")


def test_a_module_without_the_class_is_judged_not_crashed(fd_era):
    import types

    module = types.ModuleType("fastdeploy_cudagraph_ext_test_empty")
    patch = _patch(module=module.__name__)
    reg = Registry([patch], NEEDS, RUNNERS)
    report = reg.apply_to_module(patch, module)
    assert report == PatchReport("p", Verdict.REFUSED, f"{module.__name__}:C not found in this FastDeploy")
    reg._install_gate("Missing", module)  # a runner module without its class: no gate, no error
    assert reg._gates == {}


def test_names_are_read_exactly_whatever_their_letters():
    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",), uses={"apply": ("X", "gateX")}))
    assert judge(patch, moe_facts("self, X, *, gateX=None")).verdict is Verdict.APPLIED


def test_every_defined_addition_and_every_missing_wrap_is_named():
    facts = {MOE: module_facts("class MoEMethodBase:\n    def a(self): pass\n    def b(self): pass\n")}
    adds = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", adds=("a", "b")))
    assert judge(adds, facts) == PatchReport(APPLY.name, Verdict.NOT_NEEDED, "FastDeploy defines MoEMethodBase.a, b itself")
    wraps = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("x", "a", "y")))
    assert judge(wraps, facts) == PatchReport(APPLY.name, Verdict.REFUSED,
                                              "MoEMethodBase.x is missing; MoEMethodBase.y is missing")


def test_a_broken_contract_and_every_name_problem_are_reported_under_the_patch_s_name():
    def broken(facts):
        raise ContractBroken("mtp_batch='size' is no variant this patch knows")

    assert judge(dataclasses.replace(APPLY, choose=broken), moe_facts("self")) == PatchReport(
        APPLY.name, Verdict.REFUSED, "mtp_batch='size' is no variant this patch knows")
    uses = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",),
                                                        uses={"forward": ("x",), "apply": ("gate",)}))
    assert judge(uses, moe_facts("self, layer")) == PatchReport(
        APPLY.name, Verdict.REFUSED, "MoEMethodBase.forward is missing; MoEMethodBase.apply(self, layer) lacks gate")


def test_live_classmethods_and_staticmethods_count_as_methods():
    class Live:
        @classmethod
        def clean(cls, handle):
            pass

        @staticmethod
        def helper(a):
            pass

    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("clean", "helper"),
                                                         uses={"clean": ("handle",), "helper": ("a",)}))
    assert judge(patch, {}, Live).verdict is Verdict.APPLIED


def test_every_recorded_report_is_logged_as_its_line(fd_era, caplog):
    patch = patch_named("capture_stream")
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        report = registry().apply_to_module(patch, importlib.import_module(patch.module))
    assert report.line() in [r.getMessage() for r in caplog.records]


def test_a_behaviour_marker_the_patch_relies_on_refuses_with_its_value_when_it_differs():
    engine = '''
class DeepEPEngine:
    def __init__(self): pass
    def low_latency_dispatch(self, x):
        return recv, count, handle, {dispatch}
    def low_latency_combine(self, x):
        return combined, hook
'''
    patch = patch_named("deepep_capture_checks")
    assert judge(patch, {EP: module_facts(engine.format(dispatch="hook"))}).verdict is Verdict.APPLIED  # no two-stage
    report = judge(patch, {EP: module_facts(engine.format(dispatch="event"))})  # the hook is not returned last
    assert report.verdict is Verdict.REFUSED
    assert report.detail == ("marker DeepEPEngine.low_latency_dispatch.returns_hook_last is 'no' on this line; the "
                             "patch relies on 'yes'")


# ---- a class's members through its bases (mutation survivors of 2026-12-05) -----------------------------------


HIERARCHY = {
    "fd.a": """
import pkg.mod
class Base:
    x = 1
    def m(self): pass
class Mid(Base):
    y = 2
class Other:
    z = 3
class Child(Mid, pkg.mod.Other):
    def c(self): self.w = 1
class Extra:
    e = 1
class Left(Extra, Base):
    pass
class Right(Base):
    pass
class Diamond(Left, Right):
    pass
class Shared:
    a_only = 1
""",
    "fd.b": """
class Shared:
    b_only = 1
class Near(Shared):
    pass
""",
}


def test_class_members_walk_every_base_once_by_its_last_dotted_name():
    from fastdeploy_cudagraph_ext.registry import _class_members

    facts = {name: module_facts(source) for name, source in HIERARCHY.items()}
    modules = ("fd.missing", "fd.a", "fd.b")
    assert _class_members(facts, modules, "Child") == {"c", "w", "y", "x", "m", "z"}
    assert _class_members(facts, modules, "Diamond") == {"e", "x", "m"}  # Base reached twice, Extra still walked
    assert _class_members(facts, modules, "Near") == {"b_only"}  # a base is looked up in its own module first
    assert _class_members(facts, modules, "Nowhere") is None


def test_a_marker_value_the_patch_does_not_accept_is_reported_with_the_values_it_relies_on():
    facts = {MOE: module_facts("class MoEMethodBase:\n    def apply(self): pass\n"
                               "class CudaGraphPiecewiseBackend:\n    def __call__(self, **kwargs): pass\n")}
    contract = Contract("MoEMethodBase", wraps=("apply",),
                        markers={"CudaGraphPiecewiseBackend.own_capture_stream": ("yes", ""),  # here: "no"
                                 "MoEMethodBase.apply.not_a_marker": ("yes",)})  # absent on every line
    report = judge(dataclasses.replace(APPLY, contract=contract), facts)
    assert report.verdict is Verdict.REFUSED
    assert report.detail == ("marker CudaGraphPiecewiseBackend.own_capture_stream is 'no' on this line; the patch "
                             "relies on 'yes' or 'absent'; marker MoEMethodBase.apply.not_a_marker is 'absent' on "
                             "this line; the patch relies on 'yes'")


# ---- the registry's open survivors of 2026-12-05, each test checked against its hand-applied mutant ---------------


def test_a_used_method_of_another_class_that_is_gone_is_named_once():
    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",),
                                                         uses={"Router.route": ("x",), "MoEMethodBase.apply": ("y",)}))
    assert judge(patch, moe_facts("self, x")) == PatchReport(
        APPLY.name, Verdict.REFUSED, "Router.route is missing; MoEMethodBase.apply(self, x) lacks y")


SUBCLASS = {MOE: module_facts("from elsewhere import Base\nclass MoEMethodBase(Base):\n    def apply(self): pass\n"
                              "class Router:\n    def route(self): pass\n")}


class _Inherited:  # the live class's base lives in a module no fact covers (as paddle.nn.Layer does)
    def forward(self):
        pass


class _LiveMoE(_Inherited):
    def apply(self):
        pass


def test_a_name_the_live_patched_class_inherits_from_an_unread_module_is_present():
    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",),
                                                         names={"*": ("MoEMethodBase.forward",)}))
    assert judge(patch, SUBCLASS, _LiveMoE).verdict is Verdict.APPLIED
    assert judge(patch, SUBCLASS).detail == "MoEMethodBase.forward is missing (read or written by the patch)"


def test_the_live_patched_class_lends_its_methods_to_no_other_class():
    patch = dataclasses.replace(APPLY, contract=Contract("MoEMethodBase", wraps=("apply",),
                                                         names={"*": ("Router.forward",)}))
    assert judge(patch, SUBCLASS, _LiveMoE) == PatchReport(
        APPLY.name, Verdict.REFUSED, "Router.forward is missing (read or written by the patch)")


def test_without_an_installed_fastdeploy_a_module_not_imported_has_no_facts(monkeypatch):
    from fastdeploy_cudagraph_ext import fd_facts
    from fastdeploy_cudagraph_ext.registry import _module_facts

    monkeypatch.setattr(fd_facts, "installed_root", lambda: None)
    assert _module_facts("fastdeploy.config", None) is None


def test_the_module_being_loaded_is_judged_from_its_own_file_not_the_installed_tree(fd_era, tmp_path):
    """A module that runs from another file than the installed tree's (a shadowing checkout on sys.path) is judged by
    what runs: the facts of the loaded module's file."""
    source = tmp_path / "fdcg_test_shadow.py"
    source.write_text("class C:\n    def f(self, x):\n        self.state = x\n", encoding="utf-8")
    spec = importlib.util.spec_from_file_location("fdcg_test_shadow", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    patch = _patch(module="fdcg_test_shadow", group="capture_stream",
                   contract=Contract("C", wraps=("f",), names={"*": ("C.state",)}),
                   build=lambda cls, variant, settings: {"f": cls.f})
    reg = Registry([patch], NEEDS, RUNNERS)
    assert reg.apply_to_module(patch, module).verdict is Verdict.APPLIED
    reg.revert_all()


def test_only_patches_with_a_runner_hook_are_called_when_the_runner_is_built(fd_era):
    from fd_configs import make_fd_config

    runner = importlib.import_module(RUNNER)
    gpu = dataclasses.replace(CAPTURE, on_runner_init=lambda fd_config, settings, variant: {"planned": 1})
    hookless = _patch("hookless", group="mtp_sizing", module=RUNNER,
                      contract=Contract("GPUModelRunner", adds=("_fdcg_test_added",)),
                      build=lambda cls, variant, settings: {"_fdcg_test_added": 1})
    reg = Registry([gpu, hookless], NEEDS, RUNNERS)
    for patch in (gpu, hookless):
        assert reg.apply_to_module(patch, runner).verdict is Verdict.APPLIED
    assert reg.runner_built("GPUModelRunner", make_fd_config(k=1)) == {"planned": 1}
    reg.revert_all()


def test_a_group_not_needed_in_this_process_names_each_distinct_reason_once(fd_era, caplog):
    import types

    from fd_configs import make_fd_config

    module = types.ModuleType("fdcg_test_empty")  # its class is gone: the group is refused
    members = [_patch(name, group="capture_stream", module=module.__name__, runtime=lambda why=why: why)
               for name, why in (("a", "no CUDA"), ("b", "no CUDA"), ("c", "no graphs here"))]
    reg = Registry(members, NEEDS, RUNNERS)
    reg.apply_to_module(members[0], module)
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        assert reg.runner_built("GPUModelRunner", make_fd_config(k=1)) == {}  # needed, but not in this process
    assert ("fastdeploy-cudagraph-ext: group capture_stream: refused (a: fdcg_test_empty:C not found in this FastDeploy); "
            "not needed for this deployment: no CUDA; no graphs here") in [r.getMessage() for r in caplog.records]
