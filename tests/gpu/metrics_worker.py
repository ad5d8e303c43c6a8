"""One worker for test_gpu_metrics.py: FastDeploy 2.3's graph path (fd23_graph_path.py) on a real GPU, both backends
wrapped by the plugin's patches, captured through capture_model, then serving the token counts given in argv. Prints
its counts as JSON."""
from __future__ import annotations

import json
import logging
import os
import sys

import torch
from fd23_graph_path import DEVICE, SIZES, fd_config, forward_meta, patched_classes

from fastdeploy_cudagraph_ext import metrics
from fastdeploy_cudagraph_ext.metrics import STATS
from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy, install_policy


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    STATS.start(os.environ)
    install_policy(CaptureStreamPolicy(DEVICE, C10Status(follows_framework=True)))
    dev = torch.cuda.current_device()
    x = torch.arange(8, dtype=torch.float32, device="cuda")
    out = torch.zeros(8, device="cuda")

    def runnable(**kwargs):
        with DEVICE.framework_ops(dev):
            torch.mul(x, 2.0, out=out)
            return out

    _, graph_opt = patched_classes()
    model = graph_opt(runnable, fd_config())

    def forward(tokens: int, prefill: bool = False):
        return model(forward_meta=forward_meta(tokens, prefill))

    def capture_model(runner: object) -> None:
        for size in SIZES:
            forward(size)

    metrics.reports_capture(capture_model)(model)
    model.cudagraph_piecewise_backend.concrete_size_entries[1].use_cudagraph = False  # FastDeploy runs 1 eagerly
    for tokens in json.loads(sys.argv[1]):
        result = forward(abs(tokens), prefill=tokens < 0)  # a negative count: a step with a prefill in it
        with DEVICE.framework_ops(dev):
            assert torch.equal(result, x * 2.0), tokens
    torch.cuda.synchronize()
    logging.getLogger("fastdeploy_cudagraph_ext").info(STATS.coverage_line())
    print(json.dumps({"pid": os.getpid(), "replays": STATS.replays, "padded": STATS.padded,
                      "eager": STATS.eager_steps, "captures": sorted(STATS.captures)}))


if __name__ == "__main__":
    main()
