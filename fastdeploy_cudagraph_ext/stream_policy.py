"""Where graph warmup, capture and replay run, and how they are ordered against the compute stream.

The policy is written against two small interfaces so the same code runs on Paddle in a
FastDeploy worker, on PyTorch in tests/gpu, and on a recording fake in CPU tests:

* `StreamDevice`: the framework's notion of the current stream (Paddle's GPUContext stream).
* `C10Streams`: the c10 "current stream" that torch-API C++ extensions (DeepEP) launch on.

Capture scope (warmup and capture): the capture stream waits on the caller's stream, becomes
the framework's current stream, c10 is moved to it where it keeps its own per-thread stream, and
on exit c10, then the framework's stream, are restored (each even if the other fails) and the
caller's stream waits on the capture stream. Where c10's set also moves the framework's stream
(Paddle semantics C), c10 is never set back to the thread's null default stream, and every scope
switches the framework's stream through the framework's own API before c10 is set (C's set would
delete a stream the framework still owns; the framework's own switch drops that ownership). If the body
raises with a capture still open, that capture is ended and discarded before anything waits on
the capture stream (waiting on a capturing stream would join its capture), and the body's
exception propagates. Replay scope: only the two stream waits; no lock, no c10 work, no
device-wide synchronize. It suits a call whose only GPU work is graph launches; a call that also runs ops of its
own on the current stream while its graphs replay on the capture stream (a static split-graph program) replays
in the capture scope instead, so that both land on one stream.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Protocol

log = logging.getLogger(__name__)


class CaptureEscapeError(RuntimeError):
    """Capturing now would produce a graph that silently lacks an extension's kernels."""


class StreamDevice(Protocol):
    def current_device(self) -> int: ...
    def current_stream(self, device_id: int) -> object: ...
    def set_current_stream(self, device_id: int, stream: object) -> None: ...
    def new_nonblocking_stream(self, device_id: int) -> object: ...
    def wait_stream(self, waiter: object, waitee: object) -> None: ...
    def stream_waiter(self, waiter: object, waitee: object) -> Callable[[], None]: ...
    def raw_handle(self, stream: object) -> int: ...
    def is_capturing(self) -> bool: ...
    def is_stream_capturing(self, stream: object) -> bool: ...
    def end_and_discard_capture(self, stream: object) -> None: ...


class C10Streams(Protocol):
    """A c10 library whose current stream is kept per thread, apart from the framework's."""

    def current_raw(self, device_id: int) -> int: ...
    def save(self, device_id: int) -> object: ...
    def saved_raw(self, saved: object) -> int: ...
    def restore(self, saved: object) -> None: ...
    def set_raw(self, device_id: int, raw: int) -> None: ...


@dataclass(frozen=True)
class C10Status:
    """What is known about the installed c10: it follows the framework, is bridged, or cannot be."""

    follows_framework: bool  # header-only compat, or c10 that returns (and sets) the framework's stream
    bridge: C10Streams | None = None  # set when c10 keeps its own per-thread stream and we can drive it
    problem: str = ""  # why there is no bridge although c10 keeps its own stream
    # Semantics C: c10's set also moves the framework's stream, so restoring the thread's default
    # (null) stream through set would null the framework's stream.
    set_moves_framework: bool = False


def torch_api_extensions_may_launch() -> bool:
    """True when a torch-API DeepEP (c10 current stream) is, or will be, used in this process."""
    flag = os.environ.get("FD_USE_PFCC_DEEP_EP", "0").strip().lower() in ("1", "true", "yes", "on")
    return flag or "deep_ep" in sys.modules or "paddlefleet.ops.deep_ep" in sys.modules


ESCAPE_FIX = (
    "Fix one of: run `fastdeploy-cudagraph-ext doctor` to see why the c10 bridge is unavailable; "
    "use Paddle's in-tree DeepEP (unset FD_USE_PFCC_DEEP_EP), which follows Paddle's stream; "
    "or disable CUDA graphs (graph_optimization_config use_cudagraph=false)."
)


def _run_all(*steps: Callable[[], None]) -> None:
    """Run every step even when an earlier one raises (each in its own `finally`); the last error propagates,
    with the earlier ones as its __context__."""
    if not steps:
        return
    try:
        steps[0]()
    finally:
        _run_all(*steps[1:])


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
        self._open_captures = 0  # capture scopes open on any thread: while 0, a replay skips the per-thread depth
        self._replay_orders: dict[int, _ReplayOrder] = {}  # device -> the waits of its last replay's caller

    def capture_stream(self, device_id: int) -> object:
        stream = self._streams.get(device_id)  # no lock once created: replays read it on every call
        if stream is None:
            with self._lock:
                stream = self._streams.get(device_id)
                if stream is None:
                    stream = self._streams[device_id] = self.device.new_nonblocking_stream(device_id)
        return stream

    def memory_reserved(self) -> int:
        """Device memory the framework's allocator holds on the current device (0 where the device cannot say)."""
        read = getattr(self.device, "memory_reserved", None)
        return read(self.device.current_device()) if read is not None else 0

    def _device_id(self, device_id: int | None) -> int:
        return self.device.current_device() if device_id is None else device_id

    def _replay_order(self, device_id: int, caller: object) -> _ReplayOrder:
        """The two waits between `caller` and the device's capture stream, built once per caller stream."""
        capture = self.capture_stream(device_id)
        order = self._replay_orders[device_id] = _ReplayOrder(
            caller, self.device.raw_handle(caller), capture, self.device.stream_waiter(capture, caller),
            self.device.stream_waiter(caller, capture))
        return order

    def _count_open_capture(self, change: int) -> None:
        with self._lock:
            self._open_captures += change

    def _depths(self) -> dict[int, int]:
        depths = getattr(self._local, "depths", None)
        if depths is None:
            depths = self._local.depths = {}
        return depths

    def _sync_c10(self, device_id: int, target: object, after: object) -> Callable[[], None] | None:
        """Point c10 at `target` if c10 does not follow by itself; returns the undo, which runs just before
        the framework's stream is set back to `after`."""
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
        target_raw = self.device.raw_handle(target)
        if bridge.current_raw(device_id) == target_raw:
            return None
        saved = bridge.save(device_id)
        if self.c10.set_moves_framework and bridge.saved_raw(saved) == 0:
            # The thread had no c10 stream of its own (the default stream): setting that back would null
            # the framework's stream. c10 goes to the framework stream being restored instead.
            after_raw = self.device.raw_handle(after)
            undo = lambda: bridge.set_raw(device_id, after_raw)  # noqa: E731
        else:
            undo = lambda: bridge.restore(saved)  # noqa: E731
        bridge.set_raw(device_id, target_raw)
        if bridge.current_raw(device_id) != target_raw:
            undo()
            raise CaptureEscapeError(
                "The c10 current stream did not move to the capture stream (read back a different stream); "
                "extension kernels would run outside the graph. " + ESCAPE_FIX
            )
        return undo

    def _abort_capture(self, capture: object) -> bool:
        """End and discard a capture the failed body left open, before anything waits on its stream
        (a stream that waits on an event of a capturing stream joins that capture). True when the
        capture stream may be waited on."""
        try:
            if self.device.is_stream_capturing(capture):
                self.device.end_and_discard_capture(capture)
                log.warning("capture aborted by an exception: the open capture was ended and discarded")
            return not self.device.is_stream_capturing(capture)
        except Exception:  # noqa: BLE001 - the body's exception is the one to propagate
            log.exception("could not end the capture left open by the failed body")
            return False

    def _capture_scope(self, device_id: int | None = None) -> Iterator[object]:
        """Run warmup or capture on the capture stream with c10 in step; re-entrant per thread."""
        dev = self._device_id(device_id)
        capture = self.capture_stream(dev)
        depths = self._depths()
        if depths.get(dev):
            depths[dev] += 1
            try:
                yield capture
            finally:
                depths[dev] -= 1
            return
        caller = self.device.current_stream(dev)
        self.device.wait_stream(capture, caller)  # inputs written on the caller's stream must be visible
        # Before any c10 set: under C this switch (Paddle's own, clear=false) also drops the framework's
        # ownership of its first stream, which C's c10 set (clear=true) would otherwise delete.
        self.device.set_current_stream(dev, capture)
        try:
            undo_c10 = self._sync_c10(dev, capture, caller)
        except BaseException:
            self.device.set_current_stream(dev, caller)
            raise
        # c10 first, then the framework's stream: where setting c10 also moves it, the last word is ours.
        restore = [
            undo_c10 or (lambda: None),
            lambda: self.device.set_current_stream(dev, caller),
            lambda: self.device.wait_stream(caller, capture),
        ]
        depths[dev] = 1
        self._count_open_capture(1)
        try:
            yield capture
        except BaseException:
            depths[dev] = 0
            self._count_open_capture(-1)
            if not self._abort_capture(capture):
                restore.pop()  # never join a capture that could not be ended
            try:
                _run_all(*restore)
            except Exception:  # noqa: BLE001 - never mask the body's exception
                log.exception("restoring the streams after a failed capture scope")
            raise
        depths[dev] = 0
        self._count_open_capture(-1)
        _run_all(*restore)

    def _eager_extension_scope(self, device_id: int | None = None) -> Iterator[None]:
        """Eager extension work (DeepEP's clean) on the framework's current stream instead of c10's own.

        Without this a torch-API kernel launched between steps goes to c10's legacy default stream,
        which a non-blocking capture stream does not order against.
        """
        if self.c10.follows_framework or self.c10.bridge is None:
            yield
            return
        dev = self._device_id(device_id)
        current = self.device.current_stream(dev)
        if self.c10.set_moves_framework:
            # C's set calls GPUContext::SetCUDAStream(..., clear=true), which deletes a stream the context still
            # owns (its first one, until anything switches it). Switching through the framework's own API first
            # (Paddle passes clear=false) drops that ownership, so the c10 set below destroys nothing.
            self.device.set_current_stream(dev, current)
        undo_c10 = self._sync_c10(dev, current, current)
        try:
            yield
        finally:
            if self.c10.set_moves_framework:  # c10's undo may have moved the framework's stream
                _run_all(undo_c10 or (lambda: None), lambda: self.device.set_current_stream(dev, current))
            elif undo_c10 is not None:
                undo_c10()

    def replay_scope(self, device_id: int | None = None) -> ContextManager[object]:
        """Order a replay (which runs on the stream it was captured on) against the current stream by stream waits
        alone. Enter it where it is made: the caller's stream is read here. It runs on every replayed forward, so its
        host work is the caller's stream and one cached `_ReplayOrder` (no object made per call)."""
        device = self.device
        dev = device.current_device() if device_id is None else device_id
        if self._open_captures:  # a replay inside this thread's capture scope is already on the capture stream
            depths = getattr(self._local, "depths", None)
            if depths and depths.get(dev):
                return nullcontext(self.capture_stream(dev))
        caller = device.current_stream(dev)
        order = self._replay_orders.get(dev)
        # The same stream object, or (a framework that wraps its stream anew per call) the same raw stream.
        if order is None or (order.caller is not caller and order.caller_raw != device.raw_handle(caller)):
            order = self._replay_order(dev, caller)
        return order

    # contextmanager applied by assignment, not as a decorator: mutation testing (tools/mutation.sh; mutmut skips
    # decorated functions) then reaches the scopes, the policy's core.
    capture_scope = contextmanager(_capture_scope)
    eager_extension_scope = contextmanager(_eager_extension_scope)


class _ReplayOrder:
    """The replay scope for one caller stream of a device, built once and entered on every replay of that caller:
    the capture stream waits on the caller's stream; on exit, even if the body raised, the caller's stream waits on
    the capture stream. It holds no state per entry, so it may be entered by several threads and nested."""

    __slots__ = ("caller", "caller_raw", "capture", "capture_waits", "caller_waits")

    def __init__(self, caller: object, caller_raw: int, capture: object, capture_waits: Callable[[], None],
                 caller_waits: Callable[[], None]) -> None:
        self.caller, self.caller_raw, self.capture = caller, caller_raw, capture
        self.capture_waits, self.caller_waits = capture_waits, caller_waits

    def __enter__(self) -> object:
        self.capture_waits()
        return self.capture

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.caller_waits()


_policy: CaptureStreamPolicy | None = None
_policy_lock = threading.Lock()


def get_policy() -> CaptureStreamPolicy:
    """The process's policy; built on first use from Paddle and its c10 (imports Paddle lazily).

    Once built it is read without the lock: the serving path calls this on every step."""
    global _policy
    policy = _policy
    if policy is not None:
        return policy
    with _policy_lock:
        if _policy is None:
            from .paddle_device import paddle_policy

            _policy = paddle_policy()
        return _policy


def installed_policy() -> CaptureStreamPolicy | None:
    """The process's policy if one is built or installed (builds none)."""
    return _policy


def install_policy(policy: CaptureStreamPolicy | None) -> CaptureStreamPolicy | None:
    """Replace the process's policy (tests, other device back-ends); returns the previous one."""
    global _policy
    with _policy_lock:
        previous, _policy = _policy, policy
        return previous
