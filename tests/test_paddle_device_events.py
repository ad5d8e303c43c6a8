"""PaddleStreamDevice orders streams through one event per waitee stream, created once (no Paddle GPU build here:
the device is built around a recording stand-in of paddle.device's Event and Stream calls)."""
from __future__ import annotations

from types import SimpleNamespace

from fastdeploy_cudagraph_ext.paddle_device import PaddleStreamDevice


class Stream:
    def __init__(self, handle: int, log: list) -> None:
        self.stream_base = SimpleNamespace(cuda_stream=handle)
        self.log = log

    def wait_event(self, event: "Event") -> None:
        self.log.append(("wait", self.stream_base.cuda_stream, event.number, event.recorded_on))


class Event:
    made = 0

    def __init__(self) -> None:
        Event.made += 1
        self.number, self.recorded_on = Event.made, None

    def record(self, stream: Stream) -> None:
        self.recorded_on = stream.stream_base.cuda_stream


def device() -> PaddleStreamDevice:
    dev = PaddleStreamDevice.__new__(PaddleStreamDevice)  # __init__ refuses a CPU build of Paddle
    dev._paddle = SimpleNamespace(device=SimpleNamespace(Event=Event))
    dev._events = {}
    return dev


def test_waits_reuse_one_event_per_waitee_stream_recorded_before_each_wait():
    Event.made = 0
    log: list = []
    dev, compute, capture = device(), Stream(0x10, log), Stream(0x20, log)
    for _ in range(3):  # three replay scopes
        dev.wait_stream(capture, compute)
        dev.wait_stream(compute, capture)
    assert Event.made == 2  # one per waitee stream, not one per wait
    assert log == [("wait", 0x20, 1, 0x10), ("wait", 0x10, 2, 0x20)] * 3


def test_a_stream_never_waits_on_itself():
    log: list = []
    dev = device()
    dev.wait_stream(Stream(0x10, log), Stream(0x10, log))  # two Paddle wrappers of one stream
    assert log == [] and dev._events == {}


def test_a_waiter_built_once_re_records_its_one_event_before_every_wait():
    Event.made = 0
    log: list = []
    dev, compute, capture = device(), Stream(0x10, log), Stream(0x20, log)
    capture_waits = dev.stream_waiter(capture, compute)
    for _ in range(3):
        capture_waits()
        dev._events[0x10].recorded_on = None  # the next wait must record again (the compute stream's work since)
    assert Event.made == 1 and log == [("wait", 0x20, 1, 0x10)] * 3
    assert dev.stream_waiter(compute, Stream(0x10, log))() is None and log == [("wait", 0x20, 1, 0x10)] * 3
