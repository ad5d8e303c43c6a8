"""A recording CUDA stand-in for CPU tests: streams, events of ordering, graph capture and replay.

Kernels are Python closures. Launching one on a stream that is being captured records it into
the graph; replay runs the recorded closures again (no Python model code), as a real CUDA graph
would. The rules of E1 (cuda-facts.md) are modelled: while a graph captures on stream S, a kernel
launched on the legacy stream fails if S is blocking and silently runs eagerly if S is non-blocking.
And CUDA's join rule: a stream that waits on a capturing stream joins its capture, so its later
kernels are recorded into that graph instead of running.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

LEGACY_ERROR = "operation would make the legacy stream depend on a capturing blocking stream"
_ids = itertools.count(0x1000, 0x100)


@dataclass(eq=False)
class FakeStream:
    name: str
    blocking: bool
    handle: int = field(default_factory=lambda: next(_ids))


LEGACY = FakeStream("legacy", blocking=True, handle=0)


class RecordingDevice:
    """StreamDevice (stream_policy.py) over fake streams; `log` records every ordering operation."""

    def __init__(self) -> None:
        self.compute = FakeStream("compute", blocking=True)
        self.current: dict[int, FakeStream] = {}
        self.log: list[tuple] = []
        self.capturing: FakeStream | None = None
        self.graph: FakeGraph | None = None
        self.joined: set[FakeStream] = set()  # streams that joined the open capture by waiting on it

    def current_device(self) -> int:
        return 0

    def current_stream(self, device_id: int) -> FakeStream:
        return self.current.get(device_id, self.compute)

    def set_current_stream(self, device_id: int, stream: FakeStream) -> None:
        self.log.append(("set_stream", stream.name))
        self.current[device_id] = stream

    def new_nonblocking_stream(self, device_id: int) -> FakeStream:
        self.log.append(("new_stream", "capture"))
        return FakeStream("capture", blocking=False)

    def wait_stream(self, waiter: FakeStream, waitee: FakeStream) -> None:
        self.log.append(("wait", waiter.name, waitee.name))
        if self.capturing is not None and (waitee is self.capturing or waitee in self.joined):
            self.joined.add(waiter)

    def stream_waiter(self, waiter: FakeStream, waitee: FakeStream) -> Callable[[], None]:
        return lambda: self.wait_stream(waiter, waitee)

    def raw_handle(self, stream: FakeStream) -> int:
        return stream.handle

    def is_capturing(self) -> bool:
        return self.capturing is not None

    def is_stream_capturing(self, stream: FakeStream) -> bool:
        return stream is self.capturing or stream in self.joined

    def end_and_discard_capture(self, stream: FakeStream) -> None:
        self.log.append(("discard_capture", stream.name))
        self.capturing, self.graph = None, None
        self.joined.clear()

    def synchronize(self) -> None:
        if self.capturing is not None:
            raise RuntimeError("device synchronize during capture invalidates it")
        self.log.append(("synchronize",))

    def launch(self, stream: FakeStream, kernel: Callable[[], None], name: str = "kernel") -> None:
        """Run or record a kernel exactly as CUDA would for a launch on `stream`."""
        if self.capturing is not None:
            if stream is self.capturing or stream in self.joined:
                self.graph.kernels.append((name, kernel))
                return
            if stream is LEGACY and self.capturing.blocking:
                raise RuntimeError(LEGACY_ERROR)
        self.log.append(("eager", name, stream.name))
        kernel()


class RecordingC10:
    """A c10 whose thread-local current stream is separate from the framework's (Paddle compat generation 3)."""

    def __init__(self, device: RecordingDevice) -> None:
        self.device = device
        self.current = LEGACY
        self.sets: list[int] = []

    def stream(self) -> FakeStream:
        return self.current

    def current_raw(self, device_id: int) -> int:
        return self.current.handle

    def save(self, device_id: int) -> FakeStream:
        return self.current

    def saved_raw(self, saved: FakeStream) -> int:
        return saved.handle

    def restore(self, saved: FakeStream) -> None:
        self.current = saved

    def set_raw(self, device_id: int, raw: int) -> None:
        self.sets.append(raw)
        known = [self.device.compute, LEGACY, *self.device.current.values()]
        self.current = next(s for s in known if s.handle == raw)


class FakeGraph:
    """Captures on the framework's current stream at capture_begin; replays on that same stream."""

    def __init__(self, device: RecordingDevice) -> None:
        self.device = device
        self.kernels: list[tuple[str, Callable[[], None]]] = []
        self.stream: FakeStream | None = None
        self.replays = 0

    def capture_begin(self) -> None:
        self.stream = self.device.current_stream(0)
        self.device.capturing, self.device.graph = self.stream, self
        self.device.log.append(("capture_begin", self.stream.name))

    def capture_end(self) -> None:
        self.device.capturing, self.device.graph = None, None
        self.device.joined.clear()
        self.device.log.append(("capture_end", self.stream.name))

    def replay(self) -> None:
        self.device.log.append(("replay", self.stream.name))
        self.replays += 1
        for _, kernel in self.kernels:
            kernel()

    def kernel_names(self) -> list[str]:
        return [name for name, _ in self.kernels]


class Runtime:
    """What the FastDeploy stand-ins call instead of paddle.device.* (which a CPU build cannot run)."""

    device: RecordingDevice = RecordingDevice()
    c10: RecordingC10 = RecordingC10(device)

    @classmethod
    def reset(cls) -> None:
        cls.device = RecordingDevice()
        cls.c10 = RecordingC10(cls.device)

    @classmethod
    def framework_stream(cls) -> FakeStream:
        return cls.device.current_stream(0)
