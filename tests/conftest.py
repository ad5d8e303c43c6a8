"""Test set-up: real FastDeploy when importable, else our stand-ins for each era (tests/standins/fd-<era>:
one FastDeploy source tree per modelled release, each naming its upstream commit)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

STANDINS = Path(__file__).parent / "standins"
_spec = importlib.util.find_spec("fastdeploy")
# A second pytest run in one process (mutmut) already has the stand-ins on sys.path: they are not a real FastDeploy.
REAL_FASTDEPLOY = _spec is not None and STANDINS not in Path(_spec.origin or "").parents
ERAS = ["real"] if REAL_FASTDEPLOY else ["2.3", "develop"]
DEFAULT_ERA = "develop"
if not REAL_FASTDEPLOY:
    sys.path[:0] = [str(STANDINS / f"fd-{DEFAULT_ERA}"), str(STANDINS)]


def era_root(era: str) -> Path:
    return STANDINS / f"fd-{era}"


def pytest_configure(config):
    # mutmut's stats run (tools/mutation.sh) records which test calls which function in THIS process; a child
    # process (the c10 probe) cannot report to it and, run from its neutral cwd, cannot load mutmut's config.
    # The stats mode stays process-local (mutmut keeps its own copy); children run the unmutated code.
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
    config.addinivalue_line("markers", "standin: needs the FastDeploy stand-ins (skipped where a real FastDeploy is importable)")


def pytest_collection_modifyitems(config, items):
    if not REAL_FASTDEPLOY:
        return
    skip = pytest.mark.skip(reason="needs the FastDeploy stand-ins; a real FastDeploy is importable here")
    for item in items:
        if "standin" in item.keywords:
            item.add_marker(skip)


def _purge_fastdeploy() -> None:
    for name in [n for n in sys.modules if n == "fastdeploy" or n.startswith("fastdeploy.")]:
        del sys.modules[name]


@pytest.fixture(params=ERAS)
def fd_era(request, monkeypatch):
    """FastDeploy of one era, freshly imported; the plugin is deactivated afterwards."""
    import fastdeploy_cudagraph_ext as ext

    if request.param != "real":
        monkeypatch.syspath_prepend(str(era_root(request.param)))
        _purge_fastdeploy()
    yield request.param
    ext.deactivate()
    if request.param != "real":
        _purge_fastdeploy()


@pytest.fixture
def runtime():
    """A fresh fake CUDA runtime and a stream policy over it (c10 kept apart, bridged)."""
    from fake_cuda import Runtime

    from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy

    Runtime.reset()
    policy = CaptureStreamPolicy(Runtime.device, C10Status(follows_framework=False, bridge=Runtime.c10),
                                 extensions_may_launch=lambda: True)
    previous = install_policy(policy)
    yield Runtime
    install_policy(previous)


@pytest.fixture
def no_cuda():
    """A non-CUDA Paddle process: the CPU paddlepaddle wheel (as an XPU build) and no stream policy installed."""
    import paddle

    from fastdeploy_cudagraph_ext.stream_policy import install_policy

    assert not paddle.is_compiled_with_cuda()
    previous = install_policy(None)
    yield
    install_policy(previous)


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FD_CUDAGRAPH_EXT"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _plugin_log_reaches_caplog():
    """Every test sees the plugin's log records through caplog, whatever ran before it in this worker: activation
    gives the plugin's logger its own stderr handler and stops propagation when it has no handler yet, so which
    test activated first (xdist spreads them) decided whether a later caplog test saw anything. A handler present
    here keeps activation from doing that; the logger is restored after the test."""
    import logging

    logger = logging.getLogger("fastdeploy_cudagraph_ext")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = True
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
