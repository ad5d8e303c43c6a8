"""The stream policy through a recording device: waits, switches, c10, restore, nesting, escape check."""
import threading

import pytest
from fake_cuda import LEGACY, RecordingC10, RecordingDevice

from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureEscapeError, CaptureStreamPolicy


def make(follows=False, bridged=True, extensions=True):
    device = RecordingDevice()
    c10 = RecordingC10(device)
    status = C10Status(follows_framework=follows, bridge=c10 if bridged else None,
                       problem="" if bridged else "symbols found but no calling convention proven")
    return device, c10, CaptureStreamPolicy(device, status, extensions_may_launch=lambda: extensions)


def test_capture_scope_orders_switches_and_restores():
    device, c10, policy = make()
    with policy.capture_scope() as capture:
        assert device.current_stream(0) is capture and not capture.blocking
        assert c10.stream() is capture
    assert device.log == [("new_stream", "capture"), ("wait", "capture", "compute"), ("set_stream", "capture"),
                          ("set_stream", "compute"), ("wait", "compute", "capture")]
    assert device.current_stream(0) is device.compute and c10.stream() is LEGACY


def test_capture_stream_is_created_once_per_device():
    device, _, policy = make()
    with policy.capture_scope() as first:
        pass
    with policy.capture_scope() as second:
        pass
    assert first is second and device.log.count(("new_stream", "capture")) == 1


def test_restore_on_exception():
    device, c10, policy = make()
    with pytest.raises(KeyError):
        with policy.capture_scope():
            raise KeyError("capture failed")
    assert device.current_stream(0) is device.compute and c10.stream() is LEGACY
    assert device.log[-1] == ("wait", "compute", "capture")


def test_nested_scopes_switch_once():
    device, c10, policy = make()
    with policy.capture_scope() as outer:
        with policy.capture_scope() as inner:
            assert inner is outer and c10.stream() is outer
        assert device.current_stream(0) is outer  # the inner exit must not restore early
    assert device.log.count(("set_stream", "capture")) == 1 and len(c10.sets) == 1


def test_replay_scope_waits_only_and_never_synchronizes():
    device, c10, policy = make()
    with policy.replay_scope():
        assert device.current_stream(0) is device.compute
    assert device.log == [("new_stream", "capture"), ("wait", "capture", "compute"), ("wait", "compute", "capture")]
    assert c10.sets == [] and ("synchronize",) not in device.log


def test_c10_that_follows_the_framework_is_not_written():
    device, c10, policy = make(follows=True)
    with policy.capture_scope():
        pass
    assert c10.sets == []


def test_c10_already_on_capture_stream_is_not_rewritten():
    device, c10, policy = make()
    capture = policy.capture_stream(0)
    c10.current = capture
    with policy.capture_scope():
        pass
    assert c10.sets == [] and c10.stream() is capture


def test_escape_check_refuses_capture_without_bridge_when_extensions_launch():
    device, c10, policy = make(bridged=False)
    with pytest.raises(CaptureEscapeError) as error:
        with policy.capture_scope():
            pytest.fail("the scope must not be entered")
    assert "no calling convention proven" in str(error.value)
    assert "Its kernels would run outside the graph" in str(error.value)
    assert "use_cudagraph=false" in str(error.value)
    assert device.current_stream(0) is device.compute


def test_no_bridge_is_fine_when_no_extension_launches():
    device, c10, policy = make(bridged=False, extensions=False)
    with policy.capture_scope() as capture:
        assert device.current_stream(0) is capture


def test_escape_check_catches_a_c10_that_does_not_move():
    device, c10, policy = make()
    c10.set_raw = lambda device_id, raw: None  # a bridge whose writes do not take
    with pytest.raises(CaptureEscapeError, match="did not move to the capture stream"):
        with policy.capture_scope():
            pass
    assert device.current_stream(0) is device.compute


def test_scopes_are_per_thread():
    device, c10, policy = make()
    seen = {}
    with policy.capture_scope():
        thread = threading.Thread(target=lambda: seen.setdefault("depth", policy._depths().get(0, 0)))
        thread.start()
        thread.join()
    assert seen["depth"] == 0


def test_eager_extension_scope_points_c10_at_the_framework_stream_and_restores():
    device, c10, policy = make()
    with policy.eager_extension_scope():
        assert c10.stream() is device.compute
    assert c10.stream() is LEGACY and ("set_stream", "capture") not in device.log


def test_eager_extension_scope_without_bridge_is_a_no_op():
    device, c10, policy = make(bridged=False)
    with policy.eager_extension_scope():
        assert c10.stream() is LEGACY


def test_paddle_device_refuses_a_cpu_build_before_any_stream_call():
    import paddle

    from fastdeploy_cudagraph_ext.paddle_device import PaddleStreamDevice

    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle is a CUDA build")
    with pytest.raises(RuntimeError, match="needs a CUDA build of Paddle.*Install paddlepaddle-gpu"):
        PaddleStreamDevice()
