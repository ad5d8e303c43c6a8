"""metrics.py: decode steps counted by the patches' hooks (stand-ins, fake CUDA runtime), the two log lines, and the
prometheus_client export in FastDeploy's multiprocess mode (two processes), or none with one log line."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import paddle
import pytest

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import metrics
from fastdeploy_cudagraph_ext.metrics import STATS, UNKNOWN_SIZE, GraphStats

ROOT = Path(__file__).resolve().parents[1]
SIZES = [4, 2, 1]


@pytest.fixture(autouse=True)
def _fresh_stats():
    STATS.reset()
    yield
    STATS.reset()


class Model:
    def __init__(self, runtime):
        self.runtime = runtime
        self.out = paddle.zeros([4])

    def __call__(self, **kwargs):
        self.runtime.device.launch(self.runtime.framework_stream(), lambda: None, "attention")
        return self.out


def graph_backend(era, runtime, use_cudagraph=True, graph_opt_level=0):
    graph = SimpleNamespace(cudagraph_capture_sizes=SIZES, cudagraph_num_of_warmups=2, graph_opt_level=graph_opt_level,
                            real_shape_to_captured_size={1: 1, 2: 2, 3: 4, 4: 4}, full_cuda_graph=True,
                            cudagraph_capture_sizes_prefill=[], max_capture_shape_prefill=0,
                            use_cudagraph=use_cudagraph)
    module = importlib.import_module("fastdeploy.model_executor.graph_optimization.graph_optimization_backend")
    return module.GraphOptBackend(Model(runtime), SimpleNamespace(graph_opt_config=graph))


def forward(backend, tokens, prefill=False, step_graphs=True):
    meta = SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=prefill,
                           step_use_cudagraph=step_graphs and not prefill)
    return backend(forward_meta=meta)


def capture_model(backend):  # named as FastDeploy's runner method: its captures are not lazy ones
    for size in SIZES:
        forward(backend, size)  # warmups and capture
        forward(backend, size)  # a dummy decode step that replays: still no serving step


def test_each_decode_step_is_counted_once_with_its_size_padding_or_eager_reason(fd_era, runtime, caplog):
    ext.activate()
    backend = graph_backend(fd_era, runtime)
    metrics.reports_capture(capture_model)(backend)
    assert STATS.replays == {} and STATS.eager_steps == {}  # capture_model's forwards are no serving steps
    assert sorted(STATS.captures) == SIZES[::-1]
    for tokens in (4, 3, 3, 2, 1):  # captured size, padded twice (3 -> 4), captured sizes
        forward(backend, tokens)
    forward(backend, 5)  # over the largest captured size
    forward(backend, 3, prefill=True)
    forward(backend, 2, step_graphs=False)  # the runner turned graphs off for this decode step
    forward(backend, 0, step_graphs=False)  # an idle rank's empty forward (graphs off, as develop sets it): no step
    entries = backend.cudagraph_piecewise_backend.concrete_size_entries
    next(e for e in entries.values() if e.real_shape == 2).use_cudagraph = False
    forward(backend, 2)  # FastDeploy runs this size eagerly
    assert STATS.replays == {4: 3, 2: 1, 1: 1}
    assert STATS.padded == {4: 2, 2: 0, 1: 0}
    assert STATS.eager_steps == {"over_largest_size": 1, "prefill_or_mixed": 1, "graphs_off": 1,
                                 "size_not_captured": 1}
    assert STATS.coverage_line() == (
        "fastdeploy-cudagraph-ext: coverage: 5/9 decode steps replayed (55.6%), padding 2/15 graph tokens (13.3%), "
        "top eager reason: over_largest_size (1 steps)")
    forward(backend, 5)
    forward(backend, 5)
    forward(backend, 4)
    assert STATS.coverage_line() == (  # the next line covers the steps since the last one
        "fastdeploy-cudagraph-ext: coverage: 1/3 decode steps replayed (33.3%), padding 0/4 graph tokens (0.0%), "
        "top eager reason: over_largest_size (2 steps)")


@pytest.mark.parametrize("fd_era", ["develop"], indirect=True)
def test_a_step_whose_graph_the_device_picks_counts_as_one_replay_of_unknown_size(fd_era, runtime):
    """2.5 under MTP without real_bsz: FastDeploy counts the running requests on the device."""
    ext.activate()
    backend = graph_backend(fd_era, runtime)
    backend.fd_config.speculative_config = SimpleNamespace(method="mtp")
    backend.fd_config.graph_opt_config.real_bsz_to_captured_size = {1: 2, 2: 4}  # k=1
    backend.fd_config.graph_opt_config.real_shape_to_captured_size_prefill = {}

    def spec_forward(tokens):
        meta = SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=False, real_bsz=0,
                               step_use_cudagraph=True, seq_lens_this_time=paddle.full([tokens // 2], 2, "int32"))
        return backend(forward_meta=meta)

    metrics.reports_capture(lambda b: [spec_forward(4), spec_forward(2)])(backend)  # every reachable graph captured
    spec_forward(4)
    spec_forward(2)
    assert STATS.replays == {UNKNOWN_SIZE: 2} and STATS.padded == {} and STATS.eager_steps == {}


def test_graphs_off_counts_every_step_as_graphs_off(fd_era, runtime):
    ext.activate()
    backend = graph_backend(fd_era, runtime, use_cudagraph=False)
    forward(backend, 4)
    forward(backend, 3, prefill=True)
    assert STATS.eager_steps == {"graphs_off": 2} and STATS.replays == {}


@pytest.mark.parametrize(("meta", "reason"), [
    (dict(exist_prefill=True, step_use_cudagraph=True), "prefill_or_mixed"),
    (dict(exist_prefill=False, step_use_cudagraph=False), "graphs_off"),
    (dict(step_use_cudagraph=False), "prefill_or_mixed"),  # 2.2.0: no exist_prefill, graphs off for prefill
    (dict(exist_prefill=False, step_use_cudagraph=True), "over_largest_size"),
    (dict(step_use_cudagraph=True), "over_largest_size"),
])
def test_eager_reason_follows_fastdeploys_decision(meta, reason):
    from fastdeploy_cudagraph_ext.patch.patch_graph_opt_backend import eager_reason

    backend = SimpleNamespace(fd_config=SimpleNamespace(graph_opt_config=SimpleNamespace(use_cudagraph=True)))
    assert eager_reason(backend, SimpleNamespace(**meta)) == reason
    backend.fd_config.graph_opt_config.use_cudagraph = False
    assert eager_reason(backend, SimpleNamespace(**meta)) == "graphs_off"


def test_a_failed_capture_counts_as_capture_failed_and_records_no_cost():
    stats = GraphStats()
    with pytest.raises(ValueError):
        with stats.capture_cost(lambda: 0):
            raise ValueError("capture broke")
    assert stats.eager_steps == {"capture_failed": 1} and stats.captures == {}


def test_capture_cost_records_seconds_and_memory_per_size_summed_over_backends(caplog):
    reserved = iter([100, 100 + 3 * metrics.MIB, 0, metrics.MIB])
    stats = GraphStats()
    for _ in range(2):  # the target and the draft model capture the same size
        with stats.capture_cost(lambda: next(reserved)) as captured:
            pass
        captured(8)
    seconds, grown = stats.captures[8]
    assert grown == 4 * metrics.MIB and 0 <= seconds < 5
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        line = stats.capture_report("bridged", {"capture_stream": "applies", "mtp_sizing": "not needed"})
    assert line.startswith("fastdeploy-cudagraph-ext: captured 1 graphs in this worker (pid ")
    assert line.endswith(f"): sizes [8], {seconds:.2f} s, 4.0 MiB; c10 bridged; groups capture_stream applies, "
                         "mtp_sizing not needed")
    assert caplog.messages == [line]


def test_a_static_decode_step_counts_as_a_replay_of_its_size_not_as_a_capture(fd_era, runtime):
    """A Dy2St entry is captured when `captured` is set (its graphs live in the program, cuda_graph stays None)."""
    ext.activate()
    backend = graph_backend(fd_era, runtime, graph_opt_level=1)
    metrics.reports_capture(capture_model)(backend)
    captures = dict(STATS.captures)
    forward(backend, 3)
    assert STATS.replays == {4: 1} and STATS.padded == {4: 1} and STATS.eager_steps == {}
    assert STATS.captures == captures


def test_the_coverage_line_and_the_flush_run_at_their_intervals(caplog):
    now = [0.0]
    stats = GraphStats(clock=lambda: now[0])
    flushes = []
    stats.flush = lambda: flushes.append(now[0])
    with caplog.at_level("INFO", logger="fastdeploy_cudagraph_ext"):
        for t in range(0, 61):
            now[0] = float(t)
            stats.begin_step(3)
            stats.replayed(4)
    assert flushes == [float(t) for t in range(5, 61, 5)]
    assert caplog.messages == ["fastdeploy-cudagraph-ext: coverage: 61/61 decode steps replayed (100.0%), padding "
                               "61/244 graph tokens (25.0%), top eager reason: none"]


def test_a_deepep_clean_is_counted(runtime):
    from fastdeploy_cudagraph_ext import deepep_protocol
    from fastdeploy_cudagraph_ext.patch.patch_gpu_model_runner_step import clean_through_fastdeploy

    engine = SimpleNamespace(cleans=0)
    engine.clean_low_latency_buffer = lambda: setattr(engine, "cleans", engine.cleans + 1)
    deepep_protocol.remember_engine(engine)
    try:
        clean_through_fastdeploy()
    finally:
        deepep_protocol.reset_protocol()
    assert engine.cleans == 1 and STATS.cleans == 1


WORKER = textwrap.dedent("""
    import json, logging, os, sys
    from fastdeploy_cudagraph_ext.metrics import STATS
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    STATS.start(os.environ)
    spec = json.loads(sys.argv[1])
    reserved = iter(spec["reserved"])
    for size in spec["captured"]:
        with STATS.capture_cost(lambda: next(reserved)) as captured:
            pass
        captured(size)
    STATS.capture_report("follows_framework", {"capture_stream": "applies", "deepep_mixed": "not needed"})
    for tokens, size in spec["replays"]:
        STATS.begin_step(tokens)
        STATS.replayed(size)
    for reason in spec["eager"]:
        STATS.begin_step(1)
        STATS.eager(reason)
    for _ in range(spec["cleans"]):
        STATS.deepep_cleaned()
    print(json.dumps({"pid": os.getpid(), "exporter": STATS.exporter is not None}))
""")  # the exit flushes (atexit)


def run_worker(spec: dict, env: dict) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_two_workers_export_their_counts_in_fastdeploys_multiprocess_directory(tmp_path):
    prometheus_client = pytest.importorskip("prometheus_client", reason="the test extra installs prometheus_client")
    from prometheus_client import CollectorRegistry, multiprocess

    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    first, log1 = run_worker({"captured": [4, 2], "reserved": [0, 2 * metrics.MIB, 0, metrics.MIB],
                              "replays": [[4, 4], [3, 4], [2, 2]], "eager": ["over_largest_size"], "cleans": 1}, env)
    second, _ = run_worker({"captured": [4], "reserved": [0, metrics.MIB], "replays": [[1, 4]],
                            "eager": ["prefill_or_mixed", "over_largest_size"], "cleans": 2}, env)
    assert first["exporter"] and second["exporter"] and "metrics off" not in log1
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # as FastDeploy's /metrics route does
    value = registry.get_sample_value
    p = metrics.PREFIX
    assert value(p + "replays_total", {"size": "4"}) == 3 and value(p + "replays_total", {"size": "2"}) == 1
    assert value(p + "graph_tokens_total", {"size": "4"}) == 12 and value(p + "graph_tokens_total", {"size": "2"}) == 2
    assert value(p + "padded_tokens_total", {"size": "4"}) == 4 and value(p + "padded_tokens_total", {"size": "2"}) == 0
    assert value(p + "eager_decode_steps_total", {"reason": "over_largest_size"}) == 2
    assert value(p + "eager_decode_steps_total", {"reason": "prefill_or_mixed"}) == 1
    assert value(p + "deepep_buffer_cleans_total") == 3
    pid1, pid2 = str(first["pid"]), str(second["pid"])
    assert value(p + "graph_memory_bytes", {"size": "4", "pid": pid1}) == 2 * metrics.MIB
    assert value(p + "graph_memory_bytes", {"size": "2", "pid": pid1}) == metrics.MIB
    assert value(p + "graph_memory_bytes", {"size": "4", "pid": pid2}) == metrics.MIB
    assert value(p + "capture_seconds", {"size": "4", "pid": pid2}) >= 0
    assert value(p + "c10_info", {"verdict": "follows_framework", "pid": pid1}) == 1
    assert value(p + "group_info", {"group": "deepep_mixed", "verdict": "not needed", "pid": pid2}) == 1
    assert prometheus_client is not None


def test_without_the_multiprocess_directory_one_log_line_and_no_metrics(tmp_path):
    out, log = run_worker({"captured": [4], "reserved": [0, 0], "replays": [[3, 4]], "eager": [], "cleans": 0},
                          child_env())
    assert not out["exporter"]
    lines = [line for line in log.splitlines() if "metrics" in line]
    assert lines == ["fastdeploy-cudagraph-ext: metrics off: PROMETHEUS_MULTIPROC_DIR is unset (FastDeploy's API "
                     "server sets it for its workers); the coverage log lines still run"]


def test_without_prometheus_client_one_log_line_and_no_files(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['prometheus_client'] = None\n")
    prom = tmp_path / "prom"
    prom.mkdir()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(prom))
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    out, log = run_worker({"captured": [4], "reserved": [0, 0], "replays": [[3, 4]], "eager": ["graphs_off"],
                           "cleans": 1}, env)
    assert not out["exporter"]
    lines = [line for line in log.splitlines() if "metrics" in line]
    assert lines == ["fastdeploy-cudagraph-ext: metrics off: prometheus_client is not installed (pip install "
                     "prometheus_client, as FastDeploy's own metrics need); the coverage log lines still run"]
    assert list(prom.iterdir()) == []


def test_a_replay_of_an_unknown_size_counts_as_a_replay_without_padding():
    stats = GraphStats(clock=lambda: 0.0)
    for size in (4, UNKNOWN_SIZE, UNKNOWN_SIZE):
        stats.begin_step(3)
        stats.replayed(size)
    assert stats.replays == {4: 1, UNKNOWN_SIZE: 2} and stats.padded == {4: 1}
    assert stats.coverage_line().startswith("fastdeploy-cudagraph-ext: coverage: 3/3 decode steps replayed (100.0%), "
                                            "padding 1/4 graph tokens (25.0%)")
