"""Where graph warmup, capture and replay run, and how they are ordered against the compute stream.

The policy is written against two small interfaces so the same code runs on Paddle in a
FastDeploy worker, on PyTorch in tests/gpu, and on a recording fake in CPU tests:

* `StreamDevice`: the framework's notion of the current stream (Paddle's GPUContext stream).
* `C10Streams`: the c10 "current stream" that torch-API C++ extensions (DeepEP) launch on.

Capture scope (warmup and capture): the capture stream waits on the caller's stream, becomes
the framework's current stream, c10 is moved to it where it does not follow by itself, and on
exit everything is restored and the caller's stream waits on the capture stream.
Replay scope: only the two stream waits; no device-wide synchronize.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol


class CaptureEscapeError(RuntimeError):
    """Capturing now would produce a graph that silently lacks an extension's kernels."""


class StreamDevice(Protocol):
    def current_device(self) -> int: ...
    def current_stream(self, device_id: int) -> object: ...
    def set_current_stream(self, device_id: int, stream: object) -> None: ...
    def new_nonblocking_stream(self, device_id: int) -> object: ...
    def wait_stream(self, waiter: object, waitee: object) -> None: ...
    def raw_handle(self, stream: object) -> int: ...
    def is_capturing(self) -> bool: ...


class C10Streams(Protocol):
    """A c10 library whose current stream is kept apart from the framework's (thread-local)."""

    def current_raw(self, device_id: int) -> int: ...
    def save(self, device_id: int) -> object: ...
    def restore(self, saved: object) -> None: ...
    def set_raw(self, device_id: int, raw: int) -> None: ...


@dataclass(frozen=True)
class C10Status:
    """What is known about the installed c10: it follows the framework, is bridged, or cannot be."""

    follows_framework: bool  # header-only compat: c10's current stream IS the framework's
    bridge: C10Streams | None = None  # set when c10 keeps its own thread-local and we can drive it
    problem: str = ""  # why there is no bridge although c10 keeps its own stream


def torch_api_extensions_may_launch() -> bool:
    """True when a torch-API DeepEP (c10 current stream) is, or will be, used in this process."""
    flag = os.environ.get("FD_USE_PFCC_DEEP_EP", "0").strip().lower() in ("1", "true", "yes", "on")
    return flag or "deep_ep" in sys.modules or "paddlefleet.ops.deep_ep" in sys.modules


ESCAPE_FIX = (
    "Fix one of: run `fastdeploy-cudagraph-ext doctor` to see why the c10 bridge is unavailable; "
    "use Paddle's in-tree DeepEP (unset FD_USE_PFCC_DEEP_EP), which follows Paddle's stream; "
    "or disable CUDA graphs (graph_optimization_config use_cudagraph=false)."
)


class CaptureStreamPolicy:
    """One non-blocking capture stream per device; scopes that keep every stream view in step."""

    def __init__(
        self,
        device: StreamDevice,
        c10: C10Status,
        extensions_may_launch: Callable[[], bool] = torch_api_extensions_may_launch,
    ) -> None:
        self.device = device
        self.c10 = c10
        self.extensions_may_launch = extensions_may_launch
        self._streams: dict[int, object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def capture_stream(self, device_id: int) -> object:
        with self._lock:
            stream = self._streams.get(device_id)
            if stream is None:
                stream = self._streams[device_id] = self.device.new_nonblocking_stream(device_id)
            return stream

    def _device_id(self, device_id: int | None) -> int:
        return self.device.current_device() if device_id is None else device_id

    def _depths(self) -> dict[int, int]:
        depths = getattr(self._local, "depths", None)
        if depths is None:
            depths = self._local.depths = {}
        return depths

    def _sync_c10(self, device_id: int, capture_raw: int) -> Callable[[], None] | None:
        """Point c10 at the capture stream if it does not follow by itself; returns the undo."""
        if self.c10.follows_framework:
            return None
        bridge = self.c10.bridge
        if bridge is None:
            if self.extensions_may_launch():
                raise CaptureEscapeError(
                    "A torch-API C++ extension (DeepEP through Paddle's compat layer) launches on c10's current "
                    "stream, which this Paddle keeps apart from Paddle's stream, and it cannot be moved to the "
                    f"capture stream: {self.c10.problem}. Its kernels would run outside the graph. " + ESCAPE_FIX
                )
            return None
        if bridge.current_raw(device_id) == capture_raw:
            return None
        saved = bridge.save(device_id)
        bridge.set_raw(device_id, capture_raw)
        if bridge.current_raw(device_id) != capture_raw:
            bridge.restore(saved)
            raise CaptureEscapeError(
                "The c10 current stream did not move to the capture stream (read back a different stream); "
                "extension kernels would run outside the graph. " + ESCAPE_FIX
            )
        return lambda: bridge.restore(saved)

    @contextmanager
    def capture_scope(self, device_id: int | None = None) -> Iterator[object]:
        """Run warmup or capture on the capture stream with c10 in step; re-entrant per thread."""
        dev = self._device_id(device_id)
        capture = self.capture_stream(dev)
        depths = self._depths()
        if depths.get(dev, 0):
            depths[dev] += 1
            try:
                yield capture
            finally:
                depths[dev] -= 1
            return
        caller = self.device.current_stream(dev)
        self.device.wait_stream(capture, caller)  # inputs written on the caller's stream must be visible
        self.device.set_current_stream(dev, capture)
        try:
            undo_c10 = self._sync_c10(dev, self.device.raw_handle(capture))
        except BaseException:
            self.device.set_current_stream(dev, caller)
            raise
        depths[dev] = 1
        try:
            yield capture
        finally:
            depths[dev] = 0
            # c10 first: where setting c10 also moves the framework's stream, the last word is ours.
            if undo_c10 is not None:
                undo_c10()
            self.device.set_current_stream(dev, caller)
            self.device.wait_stream(caller, capture)

    @contextmanager
    def eager_extension_scope(self, device_id: int | None = None) -> Iterator[None]:
        """Eager extension work (DeepEP's clean) on the framework's current stream instead of c10's own.

        Without this a torch-API kernel launched between steps goes to c10's legacy default stream,
        which a non-blocking capture stream does not order against.
        """
        if self.c10.follows_framework or self.c10.bridge is None:
            yield
            return
        dev = self._device_id(device_id)
        undo_c10 = self._sync_c10(dev, self.device.raw_handle(self.device.current_stream(dev)))
        try:
            yield
        finally:
            if undo_c10 is not None:
                undo_c10()

    @contextmanager
    def replay_scope(self, device_id: int | None = None) -> Iterator[object]:
        """Order a replay (which runs on the stream it was captured on) by stream waits alone."""
        dev = self._device_id(device_id)
        capture = self.capture_stream(dev)
        if self._depths().get(dev, 0):  # replay inside a capture scope is already on the capture stream
            yield capture
            return
        caller = self.device.current_stream(dev)
        self.device.wait_stream(capture, caller)
        try:
            yield capture
        finally:
            self.device.wait_stream(caller, capture)


_policy: CaptureStreamPolicy | None = None
_policy_lock = threading.Lock()


def get_policy() -> CaptureStreamPolicy:
    """The process's policy; built on first use from Paddle and its c10 (imports Paddle lazily)."""
    global _policy
    with _policy_lock:
        if _policy is None:
            from .paddle_device import paddle_policy

            _policy = paddle_policy()
        return _policy


def install_policy(policy: CaptureStreamPolicy | None) -> CaptureStreamPolicy | None:
    """Replace the process's policy (tests, other device back-ends); returns the previous one."""
    global _policy
    with _policy_lock:
        previous, _policy = _policy, policy
        return previous
