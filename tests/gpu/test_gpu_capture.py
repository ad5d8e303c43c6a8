"""E1 as tests, plus replay ordering: an extension that launches on c10's current stream, captured
under a framework that keeps its own current stream (Paddle compat generation 3), with and without the policy.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")

from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureEscapeError, CaptureStreamPolicy  # noqa: E402
from torch_device import FrameworkGraph, clear_last_cuda_error, new_stream  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SIZES = [256, 4096, 1 << 16, 1 << 20]
CUDA_STREAM_BLOCKING = 0
# An invalidated capture leaves the allocator holding a callback into its graph object: keep such graphs alive.
_FAILED_GRAPHS: list[FrameworkGraph] = []


def _messages(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__context__
    return "\n".join(parts)


def test_a_blocking_capture_stream_with_c10_at_legacy_fails(fw, ext) -> None:
    dev = torch.cuda.current_device()
    x = torch.zeros(1024, device="cuda")
    torch.cuda.synchronize()
    fw.set_current_stream(dev, new_stream(dev, CUDA_STREAM_BLOCKING))
    graph = FrameworkGraph(fw, dev)
    _FAILED_GRAPHS.append(graph)
    with pytest.raises(RuntimeError) as info:
        with graph.capture():
            ext.add_one_current(x)  # c10 still at the legacy stream
    text = _messages(info.value)
    assert "operation would make the legacy stream depend on a capturing blocking stream" in text or (
        "invalidated" in text
    ), text
    clear_last_cuda_error()
    torch.cuda.synchronize()  # the process stays usable
    x.add_(1)
    torch.cuda.synchronize()


@pytest.mark.parametrize("size", SIZES)
def test_b_nonblocking_capture_without_c10_sync_silently_drops_the_extension(fw, ext, size: int) -> None:
    dev = torch.cuda.current_device()
    withheld = C10Status(follows_framework=False, bridge=None, problem="bridge withheld by the test")
    policy = CaptureStreamPolicy(fw, withheld, extensions_may_launch=lambda: False)
    x = torch.zeros(size, device="cuda")
    y = torch.zeros(size, device="cuda")
    torch.cuda.synchronize()
    graph = FrameworkGraph(fw, dev)
    with policy.capture_scope(dev):
        with graph.capture():
            with fw.framework_ops(dev):
                y.add_(1)  # a framework kernel: captured
            ext.add_one_current(x)  # launches on c10 = legacy stream: runs now, outside the graph
    torch.cuda.synchronize()
    assert float(x[0]) == 1.0 and float(y[0]) == 0.0
    for _ in range(3):
        with policy.replay_scope(dev):
            graph.replay()
    torch.cuda.synchronize()
    assert torch.all(y == 3.0)  # the graph replays ...
    assert torch.all(x == 1.0)  # ... without the extension's kernel: silent wrong results


def test_b_escape_check_refuses_capture_when_the_bridge_is_withheld(fw, ext) -> None:
    dev = torch.cuda.current_device()
    withheld = C10Status(follows_framework=False, bridge=None, problem="bridge withheld by the test")
    policy = CaptureStreamPolicy(fw, withheld, extensions_may_launch=lambda: True)
    compute = fw.current_stream(dev)
    with pytest.raises(CaptureEscapeError, match="bridge withheld by the test"):
        with policy.capture_scope(dev):
            pytest.fail("capture must not start")
    assert fw.current_stream(dev) is compute
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


@pytest.mark.parametrize("size", SIZES)
def test_c_policy_puts_the_extension_kernel_inside_the_graph(fw, policy, ext, size: int) -> None:
    dev = torch.cuda.current_device()
    x = torch.zeros(size, device="cuda")
    torch.cuda.synchronize()
    graph = FrameworkGraph(fw, dev)
    with policy.capture_scope(dev) as capture:
        assert torch.cuda.current_stream().cuda_stream == capture.cuda_stream  # c10 moved by the bridge
        with graph.capture():
            ext.add_one_current(x)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # c10 restored
    torch.cuda.synchronize()
    assert torch.all(x == 0.0)  # captured, not run
    replays = 5
    for _ in range(replays):
        with policy.replay_scope(dev):
            graph.replay()
    torch.cuda.synchronize()
    assert torch.all(x == float(replays))


def _step_graph(fw, policy, ext, inp, out) -> FrameworkGraph:
    """out = inp * 2 + 1 (framework kernels) + 1 (extension kernel), warmed up then captured through the policy."""
    dev = torch.cuda.current_device()

    def body() -> None:
        with fw.framework_ops(dev):
            torch.mul(inp, 2.0, out=out)
            out.add_(1.0)
        ext.add_one_current(out)

    with policy.capture_scope(dev):
        body()  # warmup
    graph = FrameworkGraph(fw, dev)
    with policy.capture_scope(dev):
        with graph.capture():
            body()
    return graph


def _run_steps(fw, ext, graph, inp, out, replay, iterations: int) -> list[torch.Tensor]:
    """Each step: a long kernel then the input write on the compute stream, replay, output read on the compute stream."""
    dev = torch.cuda.current_device()
    results = []
    for i in range(iterations):
        with fw.framework_ops(dev):
            torch.cuda._sleep(1_000_000)  # keeps the compute stream busy so an unordered replay runs early
            inp.fill_(float(i))
        replay(graph)
        with fw.framework_ops(dev):
            results.append(out.clone())
    torch.cuda.synchronize()
    return results


@pytest.mark.parametrize("size", [4096, 1 << 20])
def test_replay_scope_orders_replays_against_the_compute_stream(fw, policy, ext, size: int) -> None:
    dev = torch.cuda.current_device()
    inp = torch.full((size,), -1.0, device="cuda")
    out = torch.zeros(size, device="cuda")
    graph = _step_graph(fw, policy, ext, inp, out)

    def ordered(g: FrameworkGraph) -> None:
        with policy.replay_scope(dev):
            g.replay()

    results = _run_steps(fw, ext, graph, inp, out, ordered, iterations=40)
    for i, got in enumerate(results):
        eager = torch.full_like(got, float(i)) * 2.0 + 1.0 + 1.0
        assert torch.equal(got, eager), f"step {i}: replay not ordered against the compute stream"


def test_unordered_replay_is_caught_by_the_ordering_test(fw, policy, ext) -> None:
    """The control: without replay_scope's waits the same loop reads stale inputs, so the test above has teeth."""
    inp = torch.full((4096,), -1.0, device="cuda")
    out = torch.zeros(4096, device="cuda")
    graph = _step_graph(fw, policy, ext, inp, out)
    results = _run_steps(fw, ext, graph, inp, out, FrameworkGraph.replay, iterations=20)
    wrong = sum(not torch.equal(got, torch.full_like(got, 2.0 * i + 2.0)) for i, got in enumerate(results))
    assert wrong > 0
