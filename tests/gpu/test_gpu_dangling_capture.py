"""A model that raises mid-capture inside the policy's capture scope (FastDeploy does not end the capture
then): the scope must end and discard the open capture before anything waits on the capture stream (a
stream that waits on a capturing stream JOINS its capture), let the model's exception through, and the
next eager step must run, not be recorded into a dangling capture."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# Torch graphs whose capture was ended behind their back: kept alive so no destructor runs mid-session.
_ABANDONED: list[torch.cuda.CUDAGraph] = []


class ModelError(RuntimeError):
    pass


@pytest.mark.parametrize("size", [4096, 1 << 20])
def test_a_model_raising_mid_capture_leaves_no_dangling_capture(fw, policy, ext, size: int) -> None:
    dev = torch.cuda.current_device()
    x = torch.zeros(size, device="cuda")
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    _ABANDONED.append(graph)
    error = ModelError("the model raised mid-capture")
    with pytest.raises(ModelError) as raised:
        with policy.capture_scope(dev) as capture:
            graph.capture_begin()  # on c10's current stream, which the bridge moved to the capture stream
            with fw.framework_ops(dev):
                x.add_(100.0)  # captured, never run
            ext.add_one_current(x)  # captured, never run
            raise error  # ... and nobody calls capture_end
    assert raised.value is error  # the model's own exception, unmasked
    assert not fw.is_stream_capturing(capture), "the capture stream is still capturing"
    assert not fw.is_stream_capturing(fw.current_stream(dev)), "the compute stream joined the capture"
    assert fw.current_stream(dev) is not capture
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # c10 restored

    # The next eager step: a framework kernel and an extension kernel, both must run now.
    with fw.framework_ops(dev):
        x.add_(1.0)
    ext.add_one_current(x)
    torch.cuda.synchronize()
    assert torch.all(x == 2.0), "the next step did not run eagerly (captured into a dangling capture?)"


def test_after_an_aborted_capture_the_next_capture_works(fw, policy, ext) -> None:
    dev = torch.cuda.current_device()
    x = torch.zeros(4096, device="cuda")
    torch.cuda.synchronize()
    broken = torch.cuda.CUDAGraph()
    _ABANDONED.append(broken)
    with pytest.raises(ModelError):
        with policy.capture_scope(dev):
            broken.capture_begin()
            raise ModelError("first capture fails")
    from torch_device import FrameworkGraph

    graph = FrameworkGraph(fw, dev)
    with policy.capture_scope(dev):
        with graph.capture():
            ext.add_one_current(x)
    for _ in range(3):
        with policy.replay_scope(dev):
            graph.replay()
    torch.cuda.synchronize()
    assert torch.all(x == 3.0)
