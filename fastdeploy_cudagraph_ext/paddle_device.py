"""The Paddle implementation of the stream policy's device interface (imported lazily, GPU builds only)."""
from __future__ import annotations

import ctypes
import functools
import logging
from typing import Callable

from .stream_policy import CaptureStreamPolicy

log = logging.getLogger(__name__)
CUDA_STREAM_CAPTURE_STATUS_NONE = 0  # cudaStreamCaptureStatusNone; Active = 1, Invalidated = 2


@functools.lru_cache(maxsize=None)
def _cudart() -> ctypes.CDLL:
    """The CUDA runtime Paddle loaded (found in this process's mappings; by soname otherwise)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libcudart.so" in path:
                lib = ctypes.CDLL(path)
                break
        else:
            import paddle

            lib = ctypes.CDLL(f"libcudart.so.{paddle.version.cuda().split('.')[0]}")
    lib.cudaStreamIsCapturing.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.cudaStreamEndCapture.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.cudaGraphDestroy.argtypes = [ctypes.c_void_p]
    return lib


def _no_wait() -> None:
    """The waits of a stream on itself: none."""


class PaddleStreamDevice:
    """Paddle's per-place current stream (the GPUContext stream that capture_begin captures on)."""

    def __init__(self) -> None:
        import paddle

        if not paddle.is_compiled_with_cuda():
            # Stream calls on a CPU build raise or crash the process (cuda-facts.md): never reach them.
            raise RuntimeError(
                "fastdeploy-cudagraph-ext needs a CUDA build of Paddle to capture graphs; this Paddle is a CPU "
                "build. Install paddlepaddle-gpu matching your FastDeploy, or leave FD_CUDAGRAPH_EXT unset."
            )
        self._paddle = paddle
        self._events: dict[int, object] = {}  # raw stream -> the one event recorded on it for every wait

    def current_device(self) -> int:
        return int(self._paddle.device.get_device().split(":")[1])

    def current_stream(self, device_id: int) -> object:
        return self._paddle.device.current_stream(f"gpu:{device_id}")

    def set_current_stream(self, device_id: int, stream: object) -> None:
        # core._set_current_stream -> GPUContext::SetCUDAStream(stream, clear=false) (cuda_streams_py.cc at
        # 7156cb65): it also drops the context's ownership of its first stream, which the policy relies on
        # before a semantics-C c10 set (clear=true) that would otherwise delete that stream.
        self._paddle.device.set_stream(stream)

    def new_nonblocking_stream(self, device_id: int) -> object:
        return self._paddle.device.Stream(f"gpu:{device_id}")  # Paddle creates every new stream non-blocking

    def wait_stream(self, waiter: object, waitee: object) -> None:
        self.stream_waiter(waiter, waitee)()

    def stream_waiter(self, waiter: object, waitee: object) -> Callable[[], None]:
        """A call that makes `waiter` wait for the work queued on `waitee` so far, each time it is made, through one
        event per waitee stream, created once and re-recorded (Paddle's Stream.wait_stream makes an event per call).
        A wait reads the event's latest record when it is queued, so a re-record never changes a wait already
        queued. A stream never waits on itself."""
        key = self.raw_handle(waitee)
        if self.raw_handle(waiter) == key:
            return _no_wait
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = self._paddle.device.Event()  # on the current place: the worker's GPU
        record, wait = event.record, waiter.wait_event

        def wait_for_waitee() -> None:
            record(waitee)
            wait(event)

        return wait_for_waitee

    def memory_reserved(self, device_id: int) -> int:
        return int(self._paddle.device.cuda.memory_reserved(device_id))

    def raw_handle(self, stream: object) -> int:
        return int(stream.stream_base.cuda_stream)

    def is_capturing(self) -> bool:
        return bool(self._paddle.device.is_current_stream_capturing())

    def is_stream_capturing(self, stream: object) -> bool:
        status = ctypes.c_int(CUDA_STREAM_CAPTURE_STATUS_NONE)
        err = _cudart().cudaStreamIsCapturing(self.raw_handle(stream), ctypes.byref(status))
        if err != 0:
            raise RuntimeError(f"cudaStreamIsCapturing failed with CUDA error {err}")
        return status.value != CUDA_STREAM_CAPTURE_STATUS_NONE

    def end_and_discard_capture(self, stream: object) -> None:
        if self.is_capturing():
            # Paddle's own capture (FastDeploy captures through paddle.device.cuda.graphs.CUDAGraph, whose
            # capture_end calls core.CUDAGraph.end_capture()): end it through Paddle so that Paddle's capture
            # state is reset too, and drop the graph. Reached only on a CUDA build (__init__ refuses others).
            try:
                self._paddle.base.core.CUDAGraph.end_capture().reset()
            except Exception:  # noqa: BLE001 - e.g. an invalidated capture: ended through the runtime below
                log.warning("Paddle could not end the aborted capture; ending it through the CUDA runtime",
                            exc_info=True)
            if not self.is_stream_capturing(stream):
                return
        cudart = _cudart()
        graph = ctypes.c_void_p()
        cudart.cudaStreamEndCapture(self.raw_handle(stream), ctypes.byref(graph))  # an invalidated capture errs
        if graph.value:
            cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()  # clear the sticky error an invalidated capture leaves for the next launch


def paddle_policy() -> CaptureStreamPolicy:
    from .c10_bridge import paddle_c10_status

    return CaptureStreamPolicy(PaddleStreamDevice(), paddle_c10_status())
