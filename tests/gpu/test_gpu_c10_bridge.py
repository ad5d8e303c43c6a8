"""The c10 bridge against PyTorch's real libc10_cuda.so: calibration, set/get/restore, what torch and extensions see."""
from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")

from fastdeploy_cudagraph_ext.c10_bridge import APART, REGS16, SYMBOLS, probe  # noqa: E402
from torch_device import libc10_cuda_path  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_libc10_cuda_is_per_thread_apart_in_the_pytorch_layout(c10_torch_status) -> None:
    """Classified by behaviour in child processes through the `torch` framework adapter (real streams)."""
    verdict = probe(libc10_cuda_path(), "torch")  # cached by the fixture's probe
    assert verdict.problem == "", verdict.problem
    assert verdict.symbols_found == SYMBOLS
    assert (verdict.behaviour, verdict.convention, verdict.offset) == (APART, REGS16, 8)
    assert c10_torch_status.bridge is not None and not c10_torch_status.follows_framework
    assert not c10_torch_status.set_moves_framework


def test_set_get_restore_moves_torch_and_extensions(c10_torch_status, ext) -> None:
    bridge = c10_torch_status.bridge
    dev = torch.cuda.current_device()
    pool_stream = torch.cuda.Stream()  # a pool stream: its c10 id is NOT its raw pointer
    other = torch.cuda.Stream()
    torch.cuda.set_stream(pool_stream)
    try:
        saved = bridge.save(dev)
        bridge.set_raw(dev, other.cuda_stream)
        assert torch.cuda.current_stream().cuda_stream == other.cuda_stream
        assert bridge.current_raw(dev) == other.cuda_stream
        assert ext.current_stream_ptr() == other.cuda_stream  # what a torch-API extension launches on
        bridge.restore(saved)
        assert torch.cuda.current_stream() == pool_stream  # exactly the saved stream, id included
    finally:
        torch.cuda.set_stream(torch.cuda.default_stream())


def test_bridge_leaves_other_threads_alone(c10_torch_status) -> None:
    bridge = c10_torch_status.bridge
    dev = torch.cuda.current_device()
    side = torch.cuda.Stream()
    saved = bridge.save(dev)
    bridge.set_raw(dev, side.cuda_stream)
    seen = {}

    def other_thread() -> None:
        seen["torch"] = torch.cuda.current_stream(dev).cuda_stream
        seen["bridge"] = bridge.current_raw(dev)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    bridge.restore(saved)
    assert seen == {"torch": 0, "bridge": 0}  # the other thread still sees the legacy stream
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
