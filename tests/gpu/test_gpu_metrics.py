"""Metrics on a real GPU: two worker processes capture and replay through the plugin's patches in one
PROMETHEUS_MULTIPROC_DIR; captured, padded, over-largest, not-captured and prefill steps each counted exactly, in the
processes, in the merged metrics (as FastDeploy's /metrics reads them) and in the log lines."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")
prometheus_client = pytest.importorskip("prometheus_client", reason="carry the prometheus_client wheel (README)")
from prometheus_client import multiprocess  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
HERE = Path(__file__).resolve().parent
P = "fastdeploy_cudagraph_ext_"
# token counts per step: 4 and 2 hit captured sizes, 3 is padded to 4, 6 is over the largest size (4), 1's entry
# runs eagerly (not captured), -3 is a step with a prefill in it
WORKERS = [[4, 3, 3, 2, 6, 1], [3, 4, 6, 6, -3, 2, 2]]


def run_worker(steps: list[int], prom_dir: Path) -> tuple[dict, list[str]]:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(HERE / "metrics_worker.py"), json.dumps(steps)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stderr.splitlines() if "fastdeploy-cudagraph-ext" in line]
    return json.loads(done.stdout.splitlines()[-1]), lines


def test_two_workers_count_every_kind_of_step_exactly(tmp_path: Path) -> None:
    (first, log1), (second, log2) = (run_worker(steps, tmp_path) for steps in WORKERS)
    assert first["replays"] == {"4": 3, "2": 1} and first["padded"] == {"4": 2, "2": 0}
    assert first["eager"] == {"over_largest_size": 1, "size_not_captured": 1}
    assert second["replays"] == {"4": 2, "2": 2} and second["padded"] == {"4": 1, "2": 0}
    assert second["eager"] == {"over_largest_size": 2, "prefill_or_mixed": 1}
    for out, log in ((first, log1), (second, log2)):
        assert out["captures"] == [1, 2, 4]
        summary = [l for l in log if "captured 3 graphs" in l]
        assert len(summary) == 1 and f"(pid {out['pid']}): sizes [4, 2, 1], " in summary[0], log
        assert summary[0].endswith("c10 follows_framework; groups none"), summary  # no registry in this worker
    assert log1[-1] == ("fastdeploy-cudagraph-ext: coverage: 4/6 decode steps replayed (66.7%), padding 2/14 graph "
                        "tokens (14.3%), top eager reason: over_largest_size (1 steps)")
    assert log2[-1] == ("fastdeploy-cudagraph-ext: coverage: 4/7 decode steps replayed (57.1%), padding 1/12 graph "
                        "tokens (8.3%), top eager reason: over_largest_size (2 steps)")

    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # as FastDeploy's /metrics route does
    value = registry.get_sample_value
    assert value(P + "replays_total", {"size": "4"}) == 5 and value(P + "replays_total", {"size": "2"}) == 3
    assert value(P + "replays_total", {"size": "1"}) is None
    assert value(P + "graph_tokens_total", {"size": "4"}) == 20 and value(P + "graph_tokens_total", {"size": "2"}) == 6
    assert value(P + "padded_tokens_total", {"size": "4"}) == 3 and value(P + "padded_tokens_total", {"size": "2"}) == 0
    eager = {r: value(P + "eager_decode_steps_total", {"reason": r}) for r in
             ("over_largest_size", "size_not_captured", "prefill_or_mixed", "capture_failed", "graphs_off")}
    assert eager == {"over_largest_size": 3, "size_not_captured": 1, "prefill_or_mixed": 1, "capture_failed": None,
                     "graphs_off": None}
    for out in (first, second):
        for size in ("4", "2", "1"):
            assert value(P + "capture_seconds", {"size": size, "pid": str(out["pid"])}) > 0
            assert value(P + "graph_memory_bytes", {"size": size, "pid": str(out["pid"])}) >= 0
        assert value(P + "c10_info", {"verdict": "follows_framework", "pid": str(out["pid"])}) == 1
