import importlib
import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import activation
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


def test_changed_signature_is_refused_and_nothing_stays_patched(fd_era, monkeypatch):
    backend = importlib.import_module(BACKEND)
    runner = importlib.import_module("fastdeploy.worker.gpu_model_runner")
    original_init = runner.GPUModelRunner.__dict__["__init__"]

    def changed(self, fd_config, runnable, extra):  # a FastDeploy release we never checked
        pass

    monkeypatch.setattr(backend.CudaGraphPiecewiseBackend, "__init__", changed)
    with pytest.raises(PatchRefused) as error:
        ext.activate()
    message = str(error.value)
    assert "patch capture_stream: refused" in message
    assert f"{BACKEND}:CudaGraphPiecewiseBackend matches no checked FastDeploy shape" in message
    assert "CudaGraphPiecewiseBackend.__init__(self, fd_config, runnable, extra) != expected" in message
    assert "FD_CUDAGRAPH_EXT_FORCE=1" in message
    assert not ext.is_active()
    assert runner.GPUModelRunner.__dict__["__init__"] is original_init  # all-or-nothing across patches


def test_force_applies_to_unrecognised_shape_with_a_warning(fd_era, monkeypatch, caplog):
    backend = importlib.import_module(BACKEND)

    def changed(self, fd_config, runnable, extra):
        pass

    monkeypatch.setattr(backend.CudaGraphPiecewiseBackend, "__init__", changed)
    monkeypatch.setenv("FD_CUDAGRAPH_EXT_FORCE", "1")
    reports = {r.patch: r for r in ext.activate()}
    assert reports["capture_stream"].verdict is Verdict.FORCED
    assert "FORCED onto an unchecked shape" in reports["capture_stream"].detail
    assert hasattr(backend.CudaGraphPiecewiseBackend.__call__, PATCH_MARKER)


def test_activation_from_inside_fastdeploys_own_import(tmp_path):
    """FastDeploy imports its model zoo (and so calls us) while the runner module is still importing."""
    package = tmp_path / "fastdeploy"
    (package / "worker").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "worker" / "__init__.py").write_text("")
    (package / "zoo.py").write_text("import fastdeploy_cudagraph_ext\nfastdeploy_cudagraph_ext.register()\n")
    (package / "worker" / "gpu_model_runner.py").write_text(textwrap.dedent('''
        import fastdeploy.zoo  # plugins load here, before the class below exists
        class GPUModelRunner:
            def __init__(self, fd_config, device, device_id, rank, local_rank): pass
            def capture_model(self): pass
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
