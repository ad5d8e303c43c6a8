"""The stream policy through a recording device: waits, switches, c10, restore, nesting, escape check,
failure paths (a capture left open by a failing body) and the lock-free policy look-up."""
import sys
import threading

import pytest
from fake_cuda import LEGACY, FakeGraph, FakeStream, RecordingC10, RecordingDevice

from fastdeploy_cudagraph_ext import stream_policy
from fastdeploy_cudagraph_ext.stream_policy import (
    C10Status,
    CaptureEscapeError,
    CaptureStreamPolicy,
    get_policy,
    install_policy,
    torch_api_extensions_may_launch,
)


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


def test_a_c10_that_does_not_move_is_undone_without_nulling_the_framework_stream_under_c():
    device, c10, _ = make()
    policy = CaptureStreamPolicy(device, C10Status(False, c10, set_moves_framework=True), lambda: True)
    restored = []
    c10.restore = restored.append
    real_set_raw = c10.set_raw
    c10.set_raw = lambda device_id, raw: real_set_raw(device_id, raw) if raw != policy.capture_stream(0).handle else None
    with pytest.raises(CaptureEscapeError, match="did not move"):
        with policy.capture_scope():
            pass
    assert restored == []  # restoring the saved default (null) stream would null the framework's stream
    assert c10.sets[-1] == device.compute.handle and device.current_stream(0) is device.compute


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


# ---------------------------------------------------------------- failure paths


class ModelError(RuntimeError):
    pass


def test_a_capture_left_open_by_a_failing_body_is_discarded_before_any_wait():
    device, c10, policy = make()
    graph = FakeGraph(device)
    error = ModelError("the model raised mid-capture")
    with pytest.raises(ModelError) as raised:
        with policy.capture_scope():
            graph.capture_begin()  # FastDeploy does not end the capture when the model raises
            raise error
    assert raised.value is error  # the original exception, unmasked
    discard = device.log.index(("discard_capture", "capture"))
    assert device.log[discard + 1:] == [("set_stream", "compute"), ("wait", "compute", "capture")]
    assert not device.is_capturing() and device.joined == set()
    assert device.current_stream(0) is device.compute and c10.stream() is LEGACY
    ran = []
    device.launch(device.compute, lambda: ran.append("step"), "next_eager_step")
    assert ran == ["step"]  # the next step runs; it is not recorded into a dangling capture


def test_a_capture_that_cannot_be_ended_is_never_waited_on():
    device, c10, policy = make()
    graph = FakeGraph(device)

    def fail(stream):
        raise RuntimeError("cudaStreamEndCapture failed")

    device.end_and_discard_capture = fail
    with pytest.raises(ModelError):
        with policy.capture_scope():
            graph.capture_begin()
            raise ModelError("the model raised mid-capture")
    assert ("wait", "compute", "capture") not in device.log and device.joined == set()
    assert device.current_stream(0) is device.compute and c10.stream() is LEGACY


def test_a_failing_body_without_an_open_capture_restores_and_waits():
    device, c10, policy = make()
    with pytest.raises(ModelError):
        with policy.capture_scope():
            raise ModelError("warmup failed")
    assert ("discard_capture", "capture") not in device.log
    assert device.log[-2:] == [("set_stream", "compute"), ("wait", "compute", "capture")]


@pytest.mark.parametrize("body_raises", [False, True])
def test_undo_c10_raising_still_restores_the_framework_stream(body_raises, caplog):
    device, c10, policy = make()

    def broken_restore(saved):
        raise OSError("c10 restore failed")

    c10.restore = broken_restore
    expected = ModelError if body_raises else OSError
    with pytest.raises(expected):
        with policy.capture_scope():
            if body_raises:
                raise ModelError("the body's error wins")
    assert device.current_stream(0) is device.compute
    assert device.log[-2:] == [("set_stream", "compute"), ("wait", "compute", "capture")]
    # Under a failing body the restore's own error is logged with its traceback, never raised over the body's.
    logged = [(r.getMessage(), r.exc_info[1]) for r in caplog.records if r.name == "fastdeploy_cudagraph_ext.stream_policy"]
    assert [(m, str(e)) for m, e in logged] == ([("restoring the streams after a failed capture scope",
                                                  "c10 restore failed")] if body_raises else [])


def test_eager_extension_scope_restores_the_framework_stream_where_c10_set_moves_it():
    device, c10, _ = make()
    policy = CaptureStreamPolicy(device, C10Status(False, c10, set_moves_framework=True), lambda: True)
    device.set_current_stream(0, device.compute)
    with policy.eager_extension_scope():
        device.current[0] = LEGACY  # what a c10 set under semantics C does to the framework's stream
    assert device.current_stream(0) is device.compute


# ---------------------------------------------------------------- the escape check's trigger


@pytest.mark.parametrize("how", ["flag", "deep_ep", "paddlefleet"])
def test_torch_api_extensions_are_detected(monkeypatch, how):
    monkeypatch.delenv("FD_USE_PFCC_DEEP_EP", raising=False)
    for name in ("deep_ep", "paddlefleet.ops.deep_ep"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert not torch_api_extensions_may_launch()
    if how == "flag":
        monkeypatch.setenv("FD_USE_PFCC_DEEP_EP", "1")
    else:
        monkeypatch.setitem(sys.modules, "deep_ep" if how == "deep_ep" else "paddlefleet.ops.deep_ep", object())
    assert torch_api_extensions_may_launch()


def test_the_default_policy_refuses_an_escape_when_torch_api_deep_ep_is_used(monkeypatch):
    monkeypatch.setenv("FD_USE_PFCC_DEEP_EP", "1")
    device = RecordingDevice()
    policy = CaptureStreamPolicy(device, C10Status(False, None, "no convention proven"))  # production default
    with pytest.raises(CaptureEscapeError):
        with policy.capture_scope():
            pass


# ---------------------------------------------------------------- serving path


def test_an_installed_policy_is_read_without_the_lock(monkeypatch):
    device, c10, policy = make()
    previous = install_policy(policy)
    try:
        class NoLock:
            def __enter__(self):
                raise AssertionError("get_policy took the lock on the serving path")

            def __exit__(self, *exc):
                return False

        monkeypatch.setattr(stream_policy, "_policy_lock", NoLock())
        assert get_policy() is policy
    finally:
        monkeypatch.undo()
        install_policy(previous)


def test_replay_scope_takes_no_lock_once_the_capture_stream_exists(monkeypatch):
    device, c10, policy = make()
    policy.capture_stream(0)

    class NoLock:
        def __enter__(self):
            raise AssertionError("a replay took the policy's lock")

        def __exit__(self, *exc):
            return False

    policy._lock = NoLock()
    with policy.replay_scope():
        pass
    assert device.log[-2:] == [("wait", "capture", "compute"), ("wait", "compute", "capture")]


# ---------------------------------------------------------------- exact behaviour of each piece (issue 11 mutation run)


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), (" YES ", True), ("On", True), ("0", False),
                                       ("no", False), ("", False), ("2", False)])
def test_the_pfcc_flag_values(monkeypatch, value, on):
    for name in ("deep_ep", "paddlefleet.ops.deep_ep"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("FD_USE_PFCC_DEEP_EP", value)
    assert torch_api_extensions_may_launch() is on


def test_the_escape_message_is_exact():
    _, _, policy = make(bridged=False)
    with pytest.raises(CaptureEscapeError) as error:
        with policy.capture_scope():
            pass
    assert str(error.value) == (
        "A torch-API C++ extension (DeepEP through Paddle's compat layer) launches on c10's current stream, which "
        "this Paddle keeps apart from Paddle's stream, and it cannot be moved to the capture stream: symbols found "
        "but no calling convention proven. Its kernels would run outside the graph. Fix one of: run "
        "`fastdeploy-cudagraph-ext doctor` to see why the c10 bridge is unavailable; use Paddle's in-tree DeepEP "
        "(unset FD_USE_PFCC_DEEP_EP), which follows Paddle's stream; or disable CUDA graphs (graph_optimization_config "
        "use_cudagraph=false).")


def test_a_c10_that_does_not_move_is_restored_to_its_saved_stream_and_the_message_is_exact():
    device, c10, policy = make()
    c10.current = own = device.compute  # the thread has a c10 stream of its own: the plain restore
    restored = []
    c10.restore = restored.append
    c10.set_raw = lambda device_id, raw: c10.sets.append(raw)  # writes do not take
    with pytest.raises(CaptureEscapeError) as error:
        with policy.capture_scope():
            pass
    assert restored == [own]
    assert str(error.value).startswith("The c10 current stream did not move to the capture stream (read back a "
                                       "different stream); extension kernels would run outside the graph. Fix one of:")


def test_under_c_a_thread_with_its_own_c10_stream_gets_it_back():
    device, c10, _ = make()
    policy = CaptureStreamPolicy(device, C10Status(False, c10, set_moves_framework=True), lambda: True)
    own = device.current[1] = device.compute
    c10.current = own
    restored = []
    real_restore = c10.restore
    c10.restore = lambda saved: (restored.append(saved), real_restore(saved))
    with policy.capture_scope(device_id=0) as capture:
        assert c10.stream() is capture
    assert restored == [own] and c10.sets == [capture.handle]


def test_under_c_the_default_c10_stream_is_replaced_by_the_framework_stream_being_restored():
    device, c10, _ = make()
    policy = CaptureStreamPolicy(device, C10Status(False, c10, set_moves_framework=True), lambda: True)
    with policy.capture_scope() as capture:
        pass
    assert c10.sets == [capture.handle, device.compute.handle] and c10.stream() is device.compute


def test_scopes_use_the_device_they_are_given_with_one_capture_stream_each():
    device, c10, policy = make()
    with policy.capture_scope(device_id=3) as three:
        assert device.current[3] is three and 0 not in device.current
        assert policy._depths() == {3: 1}
        with policy.replay_scope(device_id=3) as replay:
            assert replay is three
        with policy.replay_scope(device_id=0) as zero:
            assert zero is not three
    assert policy._depths() == {3: 0}
    assert device.current[3] is device.compute and policy.capture_stream(3) is three
    assert policy._streams == {3: three, 0: zero}


def test_a_body_error_resets_the_depth_so_the_next_scope_switches_again():
    device, c10, policy = make()
    with pytest.raises(ModelError):
        with policy.capture_scope():
            raise ModelError("warmup failed")
    assert policy._depths() == {0: 0}
    with policy.capture_scope():
        pass
    assert device.log.count(("set_stream", "capture")) == 2


def test_an_aborted_capture_is_logged(caplog):
    device, c10, policy = make()
    with caplog.at_level("WARNING", logger=stream_policy.log.name), pytest.raises(ModelError):
        with policy.capture_scope():
            FakeGraph(device).capture_begin()
            raise ModelError("mid-capture")
    assert [r.getMessage() for r in caplog.records] == [
        "capture aborted by an exception: the open capture was ended and discarded"]


def test_a_capture_that_stays_open_after_the_discard_is_never_waited_on():
    device, c10, policy = make()
    device.end_and_discard_capture = lambda stream: device.log.append(("discard_capture", "ignored"))
    with pytest.raises(ModelError):
        with policy.capture_scope():
            FakeGraph(device).capture_begin()
            raise ModelError("mid-capture")
    assert ("wait", "compute", "capture") not in device.log and device.current_stream(0) is device.compute


def test_run_all_runs_every_step_and_raises_the_last_error_chained_to_the_earlier():
    ran = []

    def fail(name):
        ran.append(name)
        raise KeyError(name)

    with pytest.raises(KeyError) as error:
        stream_policy._run_all(lambda: fail("a"), lambda: ran.append("b"), lambda: fail("c"))
    assert ran == ["a", "b", "c"]
    assert error.value.args == ("c",) and error.value.__context__.args == ("a",)  # the last, chained to the first
    stream_policy._run_all()  # nothing to run


def test_get_policy_builds_the_paddle_policy_once(monkeypatch):
    from fastdeploy_cudagraph_ext import paddle_device

    built = []
    monkeypatch.setattr(paddle_device, "paddle_policy", lambda: built.append("policy") or object())
    previous = install_policy(None)
    try:
        first = get_policy()
        assert get_policy() is first and built == ["policy"]
        assert install_policy(None) is first
    finally:
        install_policy(previous)


def test_each_device_s_capture_stream_is_made_on_that_device():
    device, c10, policy = make()
    made = []
    real = device.new_nonblocking_stream
    device.new_nonblocking_stream = lambda device_id: (made.append(device_id), real(device_id))[1]
    policy.capture_stream(2)
    policy.capture_stream(5)
    policy.capture_stream(2)
    assert made == [2, 5]


def test_a_thread_that_waited_for_the_lock_takes_the_stream_another_thread_made():
    device, c10, policy = make()
    existing = object()
    got = []
    with policy._lock:  # another thread is creating the stream right now
        worker = threading.Thread(target=lambda: got.append(policy.capture_stream(0)))
        worker.start()
        worker.join(0.2)  # it missed the lock-free read and now waits for the lock
        policy._streams[0] = existing
    worker.join()
    assert got == [existing] and ("new_stream", "capture") not in device.log


def test_a_capture_that_cannot_be_ended_is_logged_with_its_error(caplog):
    device, c10, policy = make()

    def fail(stream):
        raise RuntimeError("cudaStreamEndCapture failed")

    device.end_and_discard_capture = fail
    with caplog.at_level("WARNING", logger=stream_policy.log.name), pytest.raises(ModelError):
        with policy.capture_scope():
            FakeGraph(device).capture_begin()
            raise ModelError("mid-capture")
    [record] = caplog.records
    assert record.getMessage() == "could not end the capture left open by the failed body"
    assert record.exc_info[1].args == ("cudaStreamEndCapture failed",)


def test_nested_capture_scopes_count_their_depth_per_device_and_replays_inside_add_no_waits():
    device, c10, policy = make()
    with policy.capture_scope(device_id=1):
        with policy.capture_scope(device_id=1):
            with policy.capture_scope(device_id=1):
                assert policy._depths() == {1: 3}
            assert policy._depths() == {1: 2}
            logged = len(device.log)
            with policy.replay_scope(device_id=1):
                pass
            assert len(device.log) == logged  # a replay inside a capture is already on the capture stream
        assert policy._depths() == {1: 1}
        with policy.replay_scope(device_id=1):
            pass
        assert len(device.log) == logged
    assert policy._depths() == {1: 0}
    assert device.log.count(("set_stream", "capture")) == 1 and len(c10.sets) == 1


def test_replay_and_eager_scopes_use_the_device_they_are_given():
    device, c10, policy = make()
    device.current[1] = one = FakeStream("compute-1", blocking=True)
    with policy.replay_scope(device_id=1) as capture:
        pass
    assert device.log[-2:] == [("wait", "capture", "compute-1"), ("wait", "compute-1", "capture")]
    assert capture is policy.capture_stream(1)
    with policy.eager_extension_scope(device_id=1):
        assert c10.stream() is one
    assert c10.sets == [one.handle] and c10.stream() is LEGACY


def test_eager_extension_scope_under_c_restores_c10_before_the_framework_stream():
    device, c10, _ = make()
    policy = CaptureStreamPolicy(device, C10Status(False, c10, set_moves_framework=True), lambda: True)
    own = FakeStream("thread-own", blocking=True)
    device.current[0] = own  # known to the fake c10's set
    c10.current = own  # this thread has a c10 stream of its own: it gets it back
    device.set_current_stream(0, device.compute)
    with policy.eager_extension_scope():
        assert c10.stream() is device.compute
    assert c10.stream() is own and device.current_stream(0) is device.compute


@pytest.mark.parametrize("moves_framework", [False, True])
def test_eager_extension_scope_switches_the_framework_stream_through_the_framework_before_c10_only_under_c(
        moves_framework):
    device, c10, _ = make()
    policy = CaptureStreamPolicy(device, C10Status(False, c10, set_moves_framework=moves_framework), lambda: True)
    real_set_raw = c10.set_raw
    c10.set_raw = lambda device_id, raw: (device.log.append(("c10_set", raw)), real_set_raw(device_id, raw))
    with policy.eager_extension_scope():
        pass
    first_c10 = device.log.index(("c10_set", device.compute.handle))
    # Under C the framework's own switch (Paddle: clear=false) must come first: it drops the framework's ownership
    # of its first stream, which C's c10 set (clear=true) would delete. Elsewhere the framework stream is untouched.
    assert device.log[:first_c10] == ([("set_stream", "compute")] if moves_framework else [])


# ---------------------------------------------------------------- the cached replay order (issue 19, item 4)


def test_replay_scope_follows_a_new_caller_stream_and_reuses_the_order_of_an_unchanged_one():
    device, c10, policy = make()
    made = []
    waiter = device.stream_waiter
    device.stream_waiter = lambda a, b: made.append((a.name, b.name)) or waiter(a, b)
    for _ in range(3):
        with policy.replay_scope() as capture:
            pass
    assert made == [("capture", "compute"), ("compute", "capture")]  # built once for the compute stream
    device.current[0] = other = FakeStream("other", blocking=True)
    with policy.replay_scope() as again:
        assert again is capture
    assert device.log[-2:] == [("wait", "capture", "other"), ("wait", "other", "capture")]
    device.current[0] = FakeStream("other-rewrapped", blocking=True, handle=other.handle)  # a new wrapper, same stream
    with policy.replay_scope():
        pass
    assert device.log[-2:] == [("wait", "capture", "other"), ("wait", "other", "capture")] and len(made) == 4


def test_open_capture_scopes_are_counted_back_to_zero_and_a_replay_on_another_thread_still_waits():
    device, c10, policy = make()
    with pytest.raises(KeyError):
        with policy.capture_scope():
            raise KeyError("capture failed")
    assert policy._open_captures == 0
    with policy.capture_scope(), policy.capture_scope():
        assert policy._open_captures == 1
        logged = len(device.log)
        thread = threading.Thread(target=lambda: policy.replay_scope(0).__enter__())
        thread.start()
        thread.join()
        assert device.log[logged:] == [("wait", "capture", "capture")]  # that thread's current stream is the capture
    assert policy._open_captures == 0


def test_an_unchanged_caller_stream_object_reuses_its_order_without_asking_for_the_raw_handle():
    device, c10, policy = make()
    with policy.replay_scope():
        pass
    asked = []
    raw_handle = device.raw_handle
    device.raw_handle = lambda stream: asked.append(stream.name) or raw_handle(stream)
    with policy.replay_scope():
        pass
    assert asked == []  # the same stream object: the cached order, no lookup of the raw stream per replay


def test_memory_reserved_reads_the_current_device_or_is_zero_where_the_device_cannot_say():
    device, c10, policy = make()
    assert policy.memory_reserved() == 0  # the recording device has no allocator to ask
    device.current_device = lambda: 3
    device.memory_reserved = lambda device_id: {3: 5 << 20}[device_id]
    assert policy.memory_reserved() == 5 << 20
