"""fd_facts: the ast reader, every marker reader on each variant, JSON, and the real-release fixtures.

The sources below are our own minimal snippets with the SHAPE of each FastDeploy variant (see the
comment on each); the fixtures in patches/releases/ are the facts read from the real releases.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext.fd_facts import (
    TARGET_MODULES, ClassFacts, MethodFacts, ModuleFacts, facts_from_json, facts_to_json, module_facts,
    module_path, tree_facts,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fd_release_facts import RELEASES_DIR, compatibility_rows, load_fixtures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import extract_fd_facts  # noqa: E402


def facts(source: str) -> ModuleFacts:
    return module_facts(textwrap.dedent(source))


def marks(source: str, prefix: str = "") -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in facts(source).markers.items() if k.startswith(prefix)}


# -- the reader ------------------------------------------------------------------------------------

def test_reader_records_bases_decorators_and_parameter_notation():
    got = facts("""
        @singleton
        class Engine(base.Layer, Mixin):
            @paddle.no_grad()
            def run(self, a, b=1, *args, c, d=2, **kw): pass
            def keyword_only(self, *, flag=False): pass
            async def later(self, /, x): pass
        def helper(x, y=None): pass
    """)
    engine = got.classes["Engine"]
    assert engine.bases == ("base.Layer", "Mixin") and engine.decorators == ("singleton",)
    assert engine.methods["run"] == MethodFacts(("self", "a", "b=", "*args", "c", "d=", "**kw"), ("paddle.no_grad",))
    assert engine.methods["keyword_only"].params == ("self", "*", "flag=")
    assert engine.methods["later"].params == ("self", "x")
    assert got.functions == {"helper": MethodFacts(("x", "y="))}


def test_reader_records_attributes_the_class_assigns():
    got = facts("""
        class Manager:
            _engine: Optional[int] = None
            limit = 3
            @classmethod
            def set_engine(cls, engine):
                cls._engine = engine
            def __init__(self, cfg):
                self.cfg, self.sizes = cfg, []
                self.count += 1
                local = cfg.other
                cfg.not_ours = 1
    """)
    assert got.classes["Manager"].attributes == ("_engine", "cfg", "count", "limit", "sizes")


def test_module_path_and_tree_facts_find_plain_modules_and_packages(tmp_path):
    (tmp_path / "fastdeploy" / "plugins" / "model_register").mkdir(parents=True)
    (tmp_path / "fastdeploy" / "config.py").write_text("class GraphOptimizationConfig:\n    pass\n")
    (tmp_path / "fastdeploy" / "plugins" / "model_register" / "__init__.py").write_text("def f(): pass\n")
    assert module_path(tmp_path, "fastdeploy.plugins.model_register").name == "__init__.py"
    got = tree_facts(tmp_path, ["fastdeploy.config", "fastdeploy.plugins.model_register", "fastdeploy.absent"])
    assert set(got) == {"fastdeploy.config", "fastdeploy.plugins.model_register"}
    assert "GraphOptimizationConfig" in got["fastdeploy.config"].classes


# -- capture loop markers (GPU and XPU runners) ------------------------------------------------------

GPU = "GPUModelRunner.capture_model."

# 2.2.0 shape: one loop, batch = size
NO_MTP_BRANCH = """
    class GPUModelRunner:
        def capture_model(self):
            for size in sorted(self.sizes, reverse=True):
                self._dummy_run(num_tokens=8, batch_size=size, in_capturing=True, expected_decode_len=1)
"""
# 2.2.x/2.3 shape: k=1 halving, target pass then a draft pass
HALVING = """
    class GPUModelRunner:
        def capture_model(self):
            if self.speculative_decoding and self.speculative_method == "mtp":
                for size in self.sizes:
                    self._dummy_run(num_tokens=8, batch_size=int(size / 2), in_capturing=True,
                                    expected_decode_len=1)
                for size in self.sizes:
                    self._dummy_run(num_tokens=8, batch_size=int(size / 2), in_capturing=True,
                                    expected_decode_len=3, accept_all_drafts=True)
            else:
                for size in self.sizes:
                    self._dummy_run(num_tokens=8, batch_size=size, in_capturing=True)
"""
# 2.4 shape: int(size/(k+1)), decode length 2k+1, accept_all_drafts; 2.3+ error hints
K_PLUS_1 = """
    class GPUModelRunner:
        def capture_model(self):
            try:
                if self.cfg.only_prefill:
                    for n in self.sizes:
                        self._dummy_run(num_tokens=n, batch_size=4, in_capturing=True, capture_prefill=True)
                elif self.speculative_decoding and self.speculative_method == "mtp":
                    for cap in self.sizes:
                        self._dummy_run(num_tokens=8, in_capturing=True, accept_all_drafts=True,
                                        batch_size=int(cap / (self.spec.num_speculative_tokens + 1)),
                                        expected_decode_len=self.spec.num_speculative_tokens * 2 + 1)
            except RuntimeError as e:
                if "out of memory" in str(e): raise
                if "CUDA error(700)" in str(e): raise
"""
# 2.6 shape: decode length (k+1)*2 through a local, SpecMethod list
DOUBLED = """
    class GPUModelRunner:
        def capture_model(self):
            if self.speculative_decoding and self.spec_method in [SpecMethod.MTP, SpecMethod.SUFFIX]:
                for cap in self.sizes:
                    decode_len = (self.spec.num_speculative_tokens + 1) * 2
                    self._dummy_run(num_tokens=8, batch_size=int(cap / (self.spec.num_speculative_tokens + 1)),
                                    in_capturing=True, expected_decode_len=decode_len, accept_all_drafts=True)
"""


@pytest.mark.parametrize("source, expected", [
    (NO_MTP_BRANCH, {"captures_graphs": "yes", "mtp_batch": "none", "mtp_decode_len": "none",
                     "mtp_accept_all_drafts": "none", "mtp_methods": "none", "error_hints": "none",
                     "prefill_only_branch": "no"}),
    (HALVING, {"mtp_batch": "size_over_2", "mtp_decode_len": "1", "mtp_accept_all_drafts": "no", "mtp_methods": "mtp"}),
    (K_PLUS_1, {"mtp_batch": "size_over_k_plus_1", "mtp_decode_len": "2k+1", "mtp_accept_all_drafts": "yes",
                "error_hints": "oom,error700", "prefill_only_branch": "yes"}),
    (DOUBLED, {"mtp_batch": "size_over_k_plus_1", "mtp_decode_len": "(k+1)*2", "mtp_methods": "mtp,suffix"}),
], ids=["none", "halving", "k_plus_1", "doubled"])
def test_gpu_capture_loop_markers(source, expected):
    got = marks(source, GPU)
    assert {k: got[k] for k in expected} == expected


def test_speculative_branch_without_method_test_takes_any_method_and_odd_formulas_are_other():
    got = marks("""
        class GPUModelRunner:
            def capture_model(self):
                if self.speculative_decoding:
                    for cap in self.sizes:
                        self._dummy_run(num_tokens=8, batch_size=cap - self.offset, in_capturing=True,
                                        expected_decode_len=self.spec.num_speculative_tokens * 7)
    """, GPU)
    assert (got["mtp_methods"], got["mtp_batch"], got["mtp_decode_len"]) == ("any", "other", "other")


def test_xpu_runner_that_only_logs_captures_no_graphs():
    got = marks("""
        class XPUModelRunner(ModelRunnerBase):
            def capture_model(self):
                logger.warn("no graphs on this device")
    """, "XPUModelRunner.capture_model.")
    assert got["captures_graphs"] == "no" and got["mtp_batch"] == "none"


def test_xpu_runner_capturing_with_batch_equal_to_size_has_no_mtp_branch():
    got = marks("""
        class XPUModelRunner(ModelRunnerBase):
            def capture_model(self):
                for size in sorted(self.sizes, reverse=True):
                    self._dummy_run(num_tokens=8, batch_size=size, expected_decode_len=1, in_capturing=True)
    """, "XPUModelRunner.capture_model.")
    assert got["captures_graphs"] == "yes" and got["mtp_batch"] == "none"


def test_initialize_forward_meta_names_where_the_phase_is_written():
    got = marks("""
        class GPUModelRunner:
            def initialize_forward_meta(self, is_dummy_or_profile_run=False):
                if self.fd_config.scheduler_config.splitwise_role == "mixed":
                    self.fd_config.model_config.moe_phase.phase = "decode"
    """, "GPUModelRunner.initialize_forward_meta.")
    assert got == {"moe_phase_on": "model_config", "splitwise_role_on": "scheduler_config",
                   "proposer_moe_phase_on": "none"}  # the draft model's phase: not written here


# -- config: who scales sizes by k+1 ---------------------------------------------------------------

# 2.6 shape: init scales every size once, guarded by a flag
CONFIG_SCALES_ALL = """
    class GraphOptimizationConfig:
        def init_with_cudagrpah_size(self, max_capture_size=0, num_speculative_tokens=0):
            if not self.sizes_done and num_speculative_tokens != 0:
                self.sizes = [s * (num_speculative_tokens + 1) for s in self.sizes]
            if num_speculative_tokens != 0:
                self.real_bsz_to_captured_size = {s // (num_speculative_tokens + 1): s for s in self.sizes}
            self.sizes_done = True
        def _set_cudagraph_sizes(self, max_capture_size=0):
            self.sizes = [8 * i for i in range(1, 17)]
"""
# 2.4/2.5 shape: the default ladder scaled by a factor FDConfig passes in
CONFIG_SCALES_DEFAULTS = """
    class GraphOptimizationConfig:
        def __init__(self):
            self.real_bsz_to_captured_size = {}
        def init_with_cudagrpah_size(self, max_capture_size=0):
            self.sizes = [s for s in self.sizes if s <= max_capture_size]
        def _set_cudagraph_sizes(self, max_capture_size=0, per_request=1):
            self.sizes = [8 * i * per_request for i in range(1, 17)]
    class FDConfig:
        def __init__(self):
            factor = self.spec.num_speculative_tokens + 1 if self.spec.method else 1
            self.graph._set_cudagraph_sizes(max_capture_size=64, per_request=factor)
            self.graph.real_bsz_to_captured_size = dict(self.pairs)
"""
# 2.2/2.3 shape: nothing scales
CONFIG_PLAIN = """
    class GraphOptimizationConfig:
        def init_with_cudagrpah_size(self, max_num_seqs=0):
            self.sizes = sorted(self.sizes, reverse=True)
        def _set_cudagraph_sizes(self, max_num_seqs=0):
            self.sizes = [1, 2, 4] + [8 * i for i in range(1, 17)]
"""


@pytest.mark.parametrize("source, init, guard, defaults, built_in", [
    (CONFIG_SCALES_ALL, "yes", "sizes_done", "no", "GraphOptimizationConfig.init_with_cudagrpah_size"),
    (CONFIG_SCALES_DEFAULTS, "no", "none", "yes", "FDConfig.__init__"),
    (CONFIG_PLAIN, "no", "none", "no", "none"),
], ids=["scales_all", "scales_defaults", "plain"])
def test_config_scaling_markers(source, init, guard, defaults, built_in):
    got = marks(source, "GraphOptimizationConfig.")
    assert got == {"init_with_cudagrpah_size.scales_by_k_plus_1": init,
                   "init_with_cudagrpah_size.rescale_guard": guard,
                   "_set_cudagraph_sizes.scales_by_k_plus_1": defaults,
                   "real_bsz_to_captured_size.built_in": built_in}


# -- backend ---------------------------------------------------------------------------------------

# 2.2-2.4 shape
BACKEND_TOKEN = """
    class CudaGraphPiecewiseBackend:
        def __call__(self, **kwargs):
            entry = self.concrete_size_entries.get(self.padded[n])
            if self.static:
                return self.run_static_model(entry, **kwargs)
            paddle.device.synchronize()
            entry.output_buffers = []
"""
# 2.6/develop shape
BACKEND_SHAPE_AND_MODE = """
    class CudaGraphPiecewiseBackend:
        def __call__(self, **kwargs):
            if self.spec and all(self.real_bsz_to_captured_size.values()):
                n = self.real_bsz_to_captured_size[running]
            entry = self.concrete_size_entries.get((self.padded[n], prefill))
            if static:
                return self.run_static_model(entry, is_decode=decode, **kwargs)
            self._validate_decode_capture_order(n)
            entry.output_buffer = None
"""


@pytest.mark.parametrize("source, expected", [
    (BACKEND_TOKEN, {"passes_is_decode": "no", "entry_key": "token", "reads_real_bsz_to_captured_size": "no",
                     "validates_decode_capture_order": "no", "output": "output_buffers", "synchronizes_device": "yes"}),
    (BACKEND_SHAPE_AND_MODE, {"passes_is_decode": "yes", "entry_key": "shape_and_mode",
                              "reads_real_bsz_to_captured_size": "yes", "validates_decode_capture_order": "yes",
                              "output": "output_buffer", "synchronizes_device": "no"}),
], ids=["token", "shape_and_mode"])
def test_backend_markers(source, expected):
    assert marks(source, "CudaGraphPiecewiseBackend.__call__.") == expected


# -- the in-forward low-latency clean ----------------------------------------------------------------

def _apply(condition: str) -> str:
    return f"""
        class MoEMethodBase:
            def apply(self, layer, x, gate):
                first = layer.layer_idx == layer.fd_config.model_config.moe_layer_start_index
                if layer.fd_config.parallel_config.moe_phase.phase == "prefill":
                    if layer.fd_config.scheduler_config.splitwise_role == "mixed"{condition}:
                        self.ep_prefill_runner.clean_low_latency_buffer()
                    return self.apply_ep_prefill(layer, x, gate)
                if layer.fd_config.scheduler_config.splitwise_role == "mixed"{condition}:
                    self.ep_decoder_runner.clean_low_latency_buffer()
                return self.apply_ep_decode(layer, x, gate)
    """


@pytest.mark.parametrize("condition, expected", [
    ("", "every_layer"), (" and layer.layer_idx == 0", "layer_idx_0"), (" and first", "moe_layer_start_index"),
], ids=["every_layer", "layer_idx_0", "moe_layer_start_index"])
def test_inline_clean_condition_and_callee(condition, expected):
    got = marks(_apply(condition), "MoEMethodBase.apply.")
    assert got["inline_clean"] == expected
    assert got["inline_clean_via"] == "ep_decoder_runner.clean_low_latency_buffer,ep_prefill_runner.clean_low_latency_buffer"
    assert (got["moe_phase_on"], got["splitwise_role_on"]) == ("parallel_config", "scheduler_config")


def test_apply_without_a_clean_says_none():
    got = marks("class MoEMethodBase:\n    def apply(self, layer, x, gate):\n        return x\n", "MoEMethodBase.apply.")
    assert (got["inline_clean"], got["inline_clean_via"]) == ("none", "none")


# -- ep.py -------------------------------------------------------------------------------------------

def test_ep_markers():
    got = facts("""
        class DeepEPBufferManager:
            @classmethod
            def set_engine(cls, engine):
                cls._engine = engine
        @singleton
        class DeepEPEngine:
            def low_latency_dispatch(self, x, idx):
                a, b, recv_hook = self.kernel(x)
                return a, b, recv_hook
            def low_latency_combine(self, x):
                return x, None
        class EPRunner:
            def clean_low_latency_buffer(self):
                self.ep_engine.clean_low_latency_buffer()
    """)
    assert got.markers == {
        "DeepEPEngine.low_latency_dispatch.returns_hook_last": "yes",
        "DeepEPEngine.low_latency_combine.returns_hook_last": "no",
        "EPRunner.clean_low_latency_buffer.calls": "ep_engine.clean_low_latency_buffer",
        "DeepEPBufferManager.set_engine.stores": "_engine",
    }


# -- plugins -----------------------------------------------------------------------------------------

def _loader(unset_body: str) -> str:
    return f"""
        PLUGINS_GROUP = "fastdeploy.model_register_plugins"
        def load_model_register_plugins():
            return load_plugins_by_group(group=PLUGINS_GROUP)
        def load_plugins_by_group(group):
            allowed = envs.FD_PLUGINS
            if allowed is None:
                {unset_body}
            return {{p.name: p.load() for p in found if p.name in allowed}}
    """


@pytest.mark.parametrize("body, expected", [
    ('logger.info("loading every plugin")', "all"), ("return {}", "none")], ids=["all", "none"])
def test_plugin_markers(body, expected):
    assert facts(_loader(body)).markers == {
        "load_plugins_by_group.fd_plugins_unset": expected,
        "load_plugins_by_group.allowlist_matches": "entry_point_name",
        "load_model_register_plugins.group": "fastdeploy.model_register_plugins",
    }


def test_a_reader_that_cannot_follow_the_code_says_so_and_the_others_still_report(monkeypatch):
    import fastdeploy_cudagraph_ext.fd_facts as fd_facts

    def _broken_markers(tree):
        raise AttributeError("'Call' object has no attribute 'id'")

    monkeypatch.setattr(fd_facts, "_MARKER_READERS", (_broken_markers, *fd_facts._MARKER_READERS))
    got = facts(_loader("return {}")).markers
    assert got["unreadable.broken_markers"] == "AttributeError: 'Call' object has no attribute 'id'"
    assert got["load_plugins_by_group.fd_plugins_unset"] == "none"


def test_a_formula_that_divides_by_zero_is_other():
    got = marks("""
        class GPUModelRunner:
            def capture_model(self):
                if self.speculative_decoding:
                    for cap in self.sizes:
                        self._dummy_run(batch_size=int(cap / (self.spec.num_speculative_tokens - 2)), in_capturing=True)
    """, GPU)
    assert got["mtp_batch"] == "other"


def test_modules_without_marked_classes_have_no_markers():
    assert facts("class Unrelated:\n    def capture_model(self): pass\n").markers == {}


# -- JSON ----------------------------------------------------------------------------------------------

def test_json_round_trip_is_exact():
    original = {"fastdeploy.worker.gpu_model_runner": facts(K_PLUS_1),
                "fastdeploy.x": ModuleFacts({"A": ClassFacts(("B",), ("d",), {"m": MethodFacts(("self", "*", "k="))}, ("x", "y"))},
                                            {"f": MethodFacts(("*args", "**kw"), ("cache",))}, {"A.m.k": "v"})}
    text = json.dumps(facts_to_json(original))
    assert facts_from_json(json.loads(text)) == original


def test_malformed_json_names_module_and_fix():
    with pytest.raises(ValueError, match=r"fastdeploy\.config are malformed .*extract_fd_facts"):
        facts_from_json({"fastdeploy.config": {"classes": {"A": {"methods": {}}}, "functions": {}, "markers": {}}})


# -- the real-release fixtures ---------------------------------------------------------------------------

FIXTURES = sorted(RELEASES_DIR.glob("fd-*.json"))


def test_all_seven_release_lines_have_a_fixture():
    assert [p.stem for p in FIXTURES] == sorted(
        f"fd-{line}" for line in ["2.2.0", "2.2.x", "2.3", "2.4", "2.5", "2.6", "develop"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_names_its_commit_and_covers_every_target_module(path):
    data = json.loads(path.read_text())
    assert path.stem == f"fd-{data['release_line']}"
    source = data["source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert datetime.fromisoformat(source["date"]).year >= 2025
    assert re.search(r"\(#\d{4,}\)$", source["subject"]), "an upstream commit names its PR"
    assert re.fullmatch(r"2\.\d+\.\d+(-dev)?", data["fastdeploy_version"])
    assert re.fullmatch(r"3\.\d+\.\d+", data["paddlepaddle_gpu"])
    modules = facts_from_json(data["modules"])
    assert set(modules) | set(data["absent_modules"]) == set(TARGET_MODULES)
    assert not set(modules) & set(data["absent_modules"])
    runner = modules["fastdeploy.worker.gpu_model_runner"]
    assert "capture_model" in runner.classes["GPUModelRunner"].methods
    assert runner.markers["GPUModelRunner.capture_model.mtp_batch"] in {"none", "size_over_2", "size_over_k_plus_1"}


# What the real sources say per line (read at the commits in the fixtures; see patches/README.md).
EXPECTED_TABLE = {
    #          backend entry key, MTP batch,       decode len, init scales, XPU graphs, FD_PLUGINS unset, inline clean
    "2.2.0": ("token", "none", "none", "no", "no", "all", "every_layer"),
    "2.2.x": ("token", "size_over_2", "1", "no", "no", "all", "layer_idx_0"),
    "2.3": ("token", "size_over_2", "1", "no", "no", "all", "moe_layer_start_index"),
    "2.4": ("token", "size_over_k_plus_1", "2k+1", "no", "no", "none", "moe_layer_start_index"),
    "2.5": ("shape_and_mode", "size_over_k_plus_1", "2k+1", "no", "yes", "none", "moe_layer_start_index"),
    "2.6": ("shape_and_mode", "size_over_k_plus_1", "(k+1)*2", "yes", "yes", "none", "moe_layer_start_index"),
    "develop": ("shape_and_mode", "size_over_k_plus_1", "(k+1)*2", "yes", "yes", "none", "moe_layer_start_index"),
}


@pytest.mark.parametrize("line", list(EXPECTED_TABLE))
def test_fixture_markers_match_what_the_sources_say(line):
    modules = facts_from_json(load_fixtures()[line]["modules"])
    m = {k: v for mod in modules.values() for k, v in mod.markers.items()}
    assert (m["CudaGraphPiecewiseBackend.__call__.entry_key"], m["GPUModelRunner.capture_model.mtp_batch"],
            m["GPUModelRunner.capture_model.mtp_decode_len"],
            m["GraphOptimizationConfig.init_with_cudagrpah_size.scales_by_k_plus_1"],
            m["XPUModelRunner.capture_model.captures_graphs"], m["load_plugins_by_group.fd_plugins_unset"],
            m["MoEMethodBase.apply.inline_clean"]) == EXPECTED_TABLE[line]


def test_compatibility_rows_cover_every_line_in_release_order():
    rows = compatibility_rows()
    assert [r["line"] for r in rows] == list(EXPECTED_TABLE)
    assert all(r["commit"] and r["paddlepaddle_gpu"] and r["backend"] for r in rows)
    assert rows[-2]["backend"].endswith("+ is_decode + order check")


# -- the extraction tool --------------------------------------------------------------------------------

def _tiny_tree(root: Path) -> None:
    (root / "fastdeploy" / "worker").mkdir(parents=True)
    (root / "fastdeploy" / "worker" / "gpu_model_runner.py").write_text(textwrap.dedent(HALVING))
    (root / "setup.py").write_text('FASTDEPLOY_VERSION = os.environ.get("FASTDEPLOY_VERSION", "2.9.1")\n')
    (root / "docs" / "get_started" / "installation").mkdir(parents=True)
    (root / "docs" / "get_started" / "installation" / "nvidia_gpu.md").write_text("pip install paddlepaddle-gpu==3.9.0 -i x\n")


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the tool's --git-dir mode runs git")


@needs_git
def test_tool_writes_a_fixture_from_a_git_commit(tmp_path):
    repo = tmp_path / "repo"
    _tiny_tree(repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "tiny (#1234)"], check=True)
    out = tmp_path / "out"
    assert extract_fd_facts.main(["--git-dir", str(repo / ".git"), "--ref", "HEAD", "--line", "9.9",
                                  "--repository", "me/FastDeploy", "--branch", "release/9.9", "--out", str(out)]) == 0
    data = json.loads((out / "fd-9.9.json").read_text())
    assert (data["fastdeploy_version"], data["paddlepaddle_gpu"], data["source"]["subject"]) == ("2.9.1", "3.9.0", "tiny (#1234)")
    assert re.fullmatch(r"[0-9a-f]{40}", data["source"]["commit"])
    assert list(data["modules"]) == ["fastdeploy.worker.gpu_model_runner"]
    assert data["modules"]["fastdeploy.worker.gpu_model_runner"]["markers"]["GPUModelRunner.capture_model.mtp_batch"] == "size_over_2"
    assert "fastdeploy.config" in data["absent_modules"]


def test_tool_reads_a_source_checkout(tmp_path):
    _tiny_tree(tmp_path / "src")
    assert extract_fd_facts.main(["--src", str(tmp_path / "src"), "--line", "local", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "fd-local.json").read_text())["release_line"] == "local"


@pytest.mark.parametrize("argv, message", [
    (["--src", "/nonexistent", "--line", "x"], "has no fastdeploy/ folder"),
    (["--git-dir", "/nonexistent", "--ref", "HEAD", "--line", "x"], "is not a git directory"),
    (["--src", "/tmp"], "--line"),
    (["--all"], "--mirrors"),
    (["--line", "x"], "either --git-dir"),
], ids=["no_tree", "no_git", "no_line", "all_without_mirrors", "no_source"])
def test_tool_user_errors_are_one_line_with_the_fix(argv, message, capsys, tmp_path):
    assert extract_fd_facts.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@needs_git
def test_tool_refuses_an_unknown_commit(tmp_path, capsys):
    repo = tmp_path / "repo"
    _tiny_tree(repo)
    subprocess.run(["git", "-C", str(repo), "init", "-q"], check=True)
    assert extract_fd_facts.main(["--git-dir", str(repo / ".git"), "--ref", "0" * 40, "--line", "x",
                                  "--out", str(tmp_path)]) == 2
    assert "is not a commit" in capsys.readouterr().err
