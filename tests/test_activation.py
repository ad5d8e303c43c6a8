import importlib
import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import activation
from fastdeploy_cudagraph_ext import import_hooks
from fastdeploy_cudagraph_ext.registry import PATCH_MARKER, PatchRefused, Verdict

BACKEND = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"


def test_entry_point_is_registered_for_fastdeploy():
    points = importlib.metadata.entry_points(group="fastdeploy.model_register_plugins")
    assert [p.value for p in points if p.name == "fastdeploy_cudagraph_ext"] == ["fastdeploy_cudagraph_ext:register"], (
        "install the project (pip install .) so its entry point is visible"
    )


def test_import_without_flag_patches_nothing(fd_era):
    backend = importlib.import_module(BACKEND)
    original = backend.CudaGraphPiecewiseBackend.__call__
    ext.register()  # what FastDeploy calls in every process
    assert not ext.is_active()
    assert backend.CudaGraphPiecewiseBackend.__call__ is original


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_flag_off_values_patch_nothing(fd_era, monkeypatch, value):
    monkeypatch.setenv("FD_CUDAGRAPH_EXT", value)
    ext.register()
    assert not ext.is_active()


def test_bad_flag_fails_startup(monkeypatch):
    monkeypatch.setenv("FD_CUDAGRAPH_EXT", "maybe")
    with pytest.raises(ValueError, match="FD_CUDAGRAPH_EXT='maybe'"):
        ext.register()


def test_flag_on_patches_already_imported_module_and_is_idempotent(fd_era, monkeypatch):
    backend = importlib.import_module(BACKEND)
    cls = backend.CudaGraphPiecewiseBackend
    original_call, original_clear = cls.__dict__["__call__"], cls.__dict__["clear_graph"]
    monkeypatch.setenv("FD_CUDAGRAPH_EXT", "1")
    ext.register()
    ext.register()
    reports = {r.patch: r for r in ext.activate()}
    assert reports["capture_stream"].verdict is Verdict.APPLIED
    assert getattr(cls.__dict__["__call__"], PATCH_MARKER) == "capture_stream"
    assert cls.__dict__["__call__"].__wrapped__ is original_call  # wrapped once, not twice
    ext.deactivate()
    assert cls.__dict__["__call__"] is original_call and cls.__dict__["clear_graph"] is original_clear


@pytest.mark.standin  # needs a FastDeploy whose modules are not imported yet
def test_patch_waits_for_fastdeploy_to_import_its_module(fd_era):
    ext.activate()
    assert activation.registry().reports["capture_stream"].verdict is Verdict.WAITING
    backend = importlib.import_module(BACKEND)
    assert activation.registry().reports["capture_stream"].verdict is Verdict.APPLIED
    assert hasattr(backend.CudaGraphPiecewiseBackend.__call__, PATCH_MARKER)


def test_revert_restores_added_attribute_by_deleting_it(fd_era):
    ep = importlib.import_module("fastdeploy.model_executor.layers.moe.ep")
    assert "clean_low_latency_buffer" not in ep.DeepEPBufferManager.__dict__
    ext.activate()
    assert "clean_low_latency_buffer" in ep.DeepEPBufferManager.__dict__
    ext.deactivate()
    assert "clean_low_latency_buffer" not in ep.DeepEPBufferManager.__dict__


def test_refusal_inside_an_import_is_recorded_and_surfaces_when_the_runner_is_built(fd_era, monkeypatch, runtime):
    from fd_configs import make_fd_config

    backend = importlib.import_module(BACKEND)
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    original_capture = runner.GPUModelRunner.__dict__["capture_model"]
    monkeypatch.delattr(backend.CudaGraphPiecewiseBackend, "clear_graph")  # a FastDeploy we never checked
    reports = {r.patch: r for r in ext.activate()}  # no raise here: we may be inside FastDeploy's import
    assert reports["capture_stream"].verdict is Verdict.REFUSED
    assert reports["capture_stream"].detail == "CudaGraphPiecewiseBackend.clear_graph is missing"
    with pytest.raises(PatchRefused) as error:
        runner.GPUModelRunner(make_fd_config(k=1), "gpu", 0, 0, 0)
    assert "group capture_stream is refused" in str(error.value) and "CUDA graphs are on" in str(error.value)
    assert not ext.is_active()
    assert runner.GPUModelRunner.__dict__["capture_model"] is original_capture  # nothing stays patched


def test_refusal_not_needed_by_the_deployment_lets_the_worker_start(fd_era, monkeypatch):
    from fd_configs import make_fd_config

    backend = importlib.import_module(BACKEND)
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    monkeypatch.delattr(backend.CudaGraphPiecewiseBackend, "clear_graph")
    ext.activate()
    fd_config = make_fd_config(k=1)
    fd_config.graph_opt_config.use_cudagraph = False
    runner.GPUModelRunner(fd_config, "gpu", 0, 0, 0)
    assert ext.is_active()


@pytest.mark.standin  # needs a FastDeploy whose modules are not imported yet
def test_import_finder_leaves_once_every_target_module_is_imported(fd_era):
    from fastdeploy_cudagraph_ext.compat import TARGET_MODULES

    ext.activate()
    for module in TARGET_MODULES:
        assert import_hooks._finder in __import__("sys").meta_path
        importlib.import_module(module)
    assert import_hooks._finder not in __import__("sys").meta_path


def test_import_finder_leaves_once_every_target_is_settled(fd_era, runtime):  # runtime: a CUDA process
    from fd_configs import make_fd_config

    ext.activate()
    assert import_hooks._finder in __import__("sys").meta_path  # targets pending
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    runner.GPUModelRunner(make_fd_config(k=0, sizes=(1, 2, 4, 8)), "gpu", 0, 0, 0)  # the gate settles every target
    assert import_hooks._finder not in __import__("sys").meta_path
    assert activation.registry().reports["capture_stream"].verdict is Verdict.APPLIED


def test_activation_from_inside_fastdeploys_own_import(tmp_path):
    """FastDeploy imports its model zoo (and so calls us) while the runner module is still importing."""
    package = tmp_path / "fastdeploy"
    (package / "worker").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "worker" / "__init__.py").write_text("")
    (package / "zoo.py").write_text("import fastdeploy_cudagraph_ext\nfastdeploy_cudagraph_ext.register()\n")
    (package / "config.py").write_text(textwrap.dedent('''
        class GraphOptimizationConfig:
            cudagraph_capture_sizes = None
            def init_with_cudagrpah_size(self, max_capture_size=0): pass
        def build(config):
            k = config.num_speculative_tokens if config.method in ["mtp"] else 0
            config.graph_opt_config.init_with_cudagrpah_size(max_capture_size=8 * (k + 1))
    '''))
    (package / "worker" / "gpu_model_runner.py").write_text(textwrap.dedent('''
        import fastdeploy.zoo  # plugins load here, before the class below exists
        class GPUModelRunner:
            fd_config = graph_opt_config = use_cudagraph = cudagraph_capture_sizes = None
            def __init__(self, fd_config, device, device_id, rank, local_rank): pass
            def capture_model(self):
                for size in self.cudagraph_capture_sizes:
                    self._dummy_run(num_tokens=1, batch_size=int(size / (self.k + 1)), in_capturing=True)
            def capture_model_prefill_and_mixed(self): pass
            def _dummy_run(self, num_tokens, batch_size, expected_decode_len=1, in_capturing=False,
                           capture_prefill=False, accept_all_drafts=False, reject_all_drafts=False): pass
            def initialize_forward_meta(self, is_dummy_or_profile_run=False): pass
    '''))
    script = textwrap.dedent('''
        import fastdeploy.worker.gpu_model_runner as r
        import json  # any later import lets the pending patches run
        import email.mime.text
        print(hasattr(r.GPUModelRunner.capture_model, "__fastdeploy_cudagraph_ext_patch__"))
    ''')
    env = {"PYTHONPATH": f"{tmp_path}:{__import__('os').getcwd()}", "FD_CUDAGRAPH_EXT": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert "patch mtp_capture_sizing: applied" in out.stderr


def test_concurrent_activation_wraps_each_method_once(fd_era):
    import threading

    backend = importlib.import_module(BACKEND)
    original = backend.CudaGraphPiecewiseBackend.__dict__["__call__"]
    barrier = threading.Barrier(8)

    def activate():
        barrier.wait()
        ext.activate()

    threads = [threading.Thread(target=activate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.CudaGraphPiecewiseBackend.__dict__["__call__"].__wrapped__ is original


# -- exact behaviour of each piece (mutation testing, issue 11) ------------------------------------------------
@pytest.fixture
def plugin_logger():
    import logging

    logger = logging.getLogger("fastdeploy_cudagraph_ext")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger  # the test clears its handlers: pytest adds its own during the call
    logger.handlers[:], logger.level, logger.propagate = saved


def test_patch_lines_reach_stderr_through_one_handler(plugin_logger, capsys):
    import logging

    plugin_logger.handlers.clear()
    activation._ensure_visible_logging()
    activation._ensure_visible_logging()
    [handler] = plugin_logger.handlers
    assert type(handler) is logging.StreamHandler and handler.stream is sys.stderr
    assert (plugin_logger.level, plugin_logger.propagate) == (logging.INFO, False)
    plugin_logger.info("patch x: applied")
    assert capsys.readouterr().err == "INFO patch x: applied\n"


def test_a_logger_the_worker_configured_is_left_alone(plugin_logger):
    import logging

    mine = logging.NullHandler()
    plugin_logger.handlers[:] = [mine]
    plugin_logger.propagate = True
    plugin_logger.setLevel(logging.WARNING)
    activation._ensure_visible_logging()
    assert plugin_logger.handlers == [mine] and plugin_logger.level == logging.WARNING and plugin_logger.propagate


def test_activate_uses_the_settings_given_and_reports_every_patch_in_order(fd_era):
    from fastdeploy_cudagraph_ext.flags import Settings
    from fastdeploy_cudagraph_ext.patch import ALL_PATCHES

    settings = Settings(enable=True, round_sizes=True)
    reports = ext.activate(settings)
    assert [r.patch for r in reports] == [p.name for p in ALL_PATCHES]
    assert activation.registry().settings is settings and ext.is_active()
    assert [r.patch for r in ext.activate()] == [p.name for p in ALL_PATCHES]  # again: the same registry's reports
    ext.deactivate()
    assert activation.registry() is None and not ext.is_active()


def test_activate_reads_the_flags_when_given_no_settings(fd_era, monkeypatch):
    from fastdeploy_cudagraph_ext.flags import Settings

    monkeypatch.setenv("FD_CUDAGRAPH_EXT", "1")
    monkeypatch.setenv("FD_CUDAGRAPH_EXT_ROUND_SIZES", "1")
    ext.activate()
    assert activation.registry().settings == Settings(enable=True, round_sizes=True)


def test_a_failing_activation_leaves_nothing_behind(fd_era, monkeypatch):
    from fastdeploy_cudagraph_ext import deepep_protocol
    from fastdeploy_cudagraph_ext.registry import Registry

    def broken(self):
        raise RuntimeError("hook failed")

    deepep_protocol.remember_engine("engine")
    monkeypatch.setattr(Registry, "watch_runners", broken)
    with pytest.raises(RuntimeError, match="hook failed"):
        ext.activate()
    assert activation.registry() is None and import_hooks._pending == {}
    assert deepep_protocol._engine is None  # deactivate() ran


def test_the_entry_point_reads_the_flags_once(fd_era, monkeypatch):
    from fastdeploy_cudagraph_ext import flags

    reads = []
    monkeypatch.setattr(flags, "read_settings", lambda: reads.append(1) or flags.Settings(enable=True))
    ext.register()
    assert reads == [1] and activation.registry().settings == flags.Settings(enable=True)
