"""A PyTorch model of Paddle's two "current streams", to drive the capture policy on a real GPU.

In a Paddle build whose compat c10 keeps its own thread-local (generation 3 in cuda-facts.md),
Paddle's kernels run on Paddle's current stream while a torch-API extension (DeepEP) launches on
c10's current stream, which defaults to the legacy stream and which Paddle never moves. Here:

* the framework's current stream is a per-device Python variable (`TorchFrameworkDevice`);
* c10's thread-local is PyTorch's real one (`torch.cuda.current_stream`), reached by the policy
  only through the ctypes bridge on `libc10_cuda.so`;
* "framework kernels" are torch ops run under `framework_ops()`, which puts c10 on the framework
  stream for their duration only and then restores it;
* `FrameworkGraph` captures like Paddle: on the framework's current stream, touching c10 only
  around capture_begin/capture_end (torch insists on it) and replaying on the captured stream.
"""
from __future__ import annotations

import ctypes
import glob
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

CUDA_STREAM_NON_BLOCKING = 1
# The C calls under torch.cuda's Python wrappers: Paddle's device reaches its own through one wrapper each.
_record, _wait, _current_device = torch._C._CudaEventBase.record, torch._C._CudaEventBase.wait, torch._C._cuda_getDevice


def libc10_cuda_path() -> str:
    return os.path.join(os.path.dirname(torch.__file__), "lib", "libc10_cuda.so")


def _cudart() -> ctypes.CDLL:
    major = torch.version.cuda.split(".")[0]
    try:
        return ctypes.CDLL(f"libcudart.so.{major}")  # already loaded by torch: found by its soname
    except OSError:
        site = os.path.dirname(os.path.dirname(torch.__file__))
        found = sorted(glob.glob(os.path.join(site, "nvidia", "**", f"libcudart.so.{major}*"), recursive=True))
        if not found:
            raise
        return ctypes.CDLL(found[0])


def clear_last_cuda_error() -> int:
    """Read and reset the runtime's last error (a failed capture leaves one for the next launch to trip on)."""
    return _cudart().cudaGetLastError()


def new_stream(device_id: int, flags: int) -> torch.cuda.ExternalStream:
    """A stream of its own (torch's pool hands out recycled, always non-blocking streams); never destroyed."""
    cudart = _cudart()
    cudart.cudaStreamCreateWithFlags.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
    cudart.cudaStreamCreateWithFlags.restype = ctypes.c_int
    handle = ctypes.c_void_p()
    with torch.cuda.device(device_id):
        err = cudart.cudaStreamCreateWithFlags(ctypes.byref(handle), flags)
    if err != 0:
        raise RuntimeError(f"cudaStreamCreateWithFlags({flags}) failed with CUDA error {err}")
    return torch.cuda.ExternalStream(handle.value, device=torch.device("cuda", device_id))


class TorchFrameworkDevice:
    """`StreamDevice` whose current stream is a per-device variable, apart from c10's thread-local."""

    def __init__(self) -> None:
        self._current: dict[int, torch.cuda.Stream] = {}
        self._events: dict[int, torch.cuda.Event] = {}  # as PaddleStreamDevice: one event per waitee stream

    def current_device(self) -> int:
        return _current_device()

    def current_stream(self, device_id: int) -> torch.cuda.Stream:
        stream = self._current.get(device_id)
        if stream is None:  # the framework's own compute stream, like Paddle's GPUContext stream
            stream = self._current[device_id] = new_stream(device_id, CUDA_STREAM_NON_BLOCKING)
        return stream

    def set_current_stream(self, device_id: int, stream: object) -> None:
        self._current[device_id] = stream

    def new_nonblocking_stream(self, device_id: int) -> torch.cuda.Stream:
        return new_stream(device_id, CUDA_STREAM_NON_BLOCKING)

    def wait_stream(self, waiter: object, waitee: object) -> None:
        self.stream_waiter(waiter, waitee)()

    def stream_waiter(self, waiter: object, waitee: object) -> Callable[[], None]:
        event = self._events.get(waitee.cuda_stream)
        if event is None:
            event = self._events[waitee.cuda_stream] = torch.cuda.Event()

        def wait_for_waitee() -> None:  # torch.cuda.Event.record and Stream.wait_event without their Python layers
            _record(event, waitee)
            _wait(event, waiter)

        return wait_for_waitee

    def memory_reserved(self, device_id: int) -> int:
        return torch.cuda.memory_reserved(device_id)

    def raw_handle(self, stream: object) -> int:
        return stream.cuda_stream

    def is_capturing(self) -> bool:
        return self.is_stream_capturing(self.current_stream(self.current_device()))

    def is_stream_capturing(self, stream: object) -> bool:
        cudart = _cudart()
        cudart.cudaStreamIsCapturing.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        status = ctypes.c_int(0)
        err = cudart.cudaStreamIsCapturing(ctypes.c_void_p(stream.cuda_stream), ctypes.byref(status))
        if err != 0:
            raise RuntimeError(f"cudaStreamIsCapturing failed with CUDA error {err}")
        return status.value != 0  # cudaStreamCaptureStatusNone

    def end_and_discard_capture(self, stream: object) -> None:
        cudart = _cudart()
        cudart.cudaStreamEndCapture.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        cudart.cudaGraphDestroy.argtypes = [ctypes.c_void_p]
        graph = ctypes.c_void_p()
        cudart.cudaStreamEndCapture(ctypes.c_void_p(stream.cuda_stream), ctypes.byref(graph))
        if graph.value:
            cudart.cudaGraphDestroy(graph)
        clear_last_cuda_error()  # an invalidated capture leaves an error for the next launch to trip on

    @contextmanager
    def framework_ops(self, device_id: int | None = None) -> Iterator[torch.cuda.Stream]:
        """Torch ops in this block are framework kernels: on the framework's stream; c10 restored after."""
        dev = self.current_device() if device_id is None else device_id
        stream = self.current_stream(dev)
        with torch.cuda.stream(stream):
            yield stream


class FrameworkGraph:
    """A CUDA graph captured and replayed the way Paddle does it, on the framework's current stream."""

    def __init__(self, device: TorchFrameworkDevice, device_id: int | None = None) -> None:
        self.device = device
        self.device_id = device.current_device() if device_id is None else device_id
        self.graph = torch.cuda.CUDAGraph()
        self.stream: torch.cuda.Stream | None = None

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Capture on the framework's current stream; c10 keeps its own value inside the block."""
        stream = self.device.current_stream(self.device_id)
        with torch.cuda.stream(stream):  # torch begins capture on c10's current stream
            self.graph.capture_begin()
        self.stream = stream
        try:
            yield
        finally:
            with torch.cuda.stream(stream):  # ... and requires it to end on the same one
                self.graph.capture_end()

    def replay(self) -> None:
        """Launch on the stream it was captured on (Paddle's CUDAGraph::Replay does the same)."""
        with torch.cuda.stream(self.stream):
            self.graph.replay()
