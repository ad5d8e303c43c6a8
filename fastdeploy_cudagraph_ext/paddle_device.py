"""The Paddle implementation of the stream policy's device interface (imported lazily, GPU builds only)."""
from __future__ import annotations

from .stream_policy import CaptureStreamPolicy


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

    def current_device(self) -> int:
        return int(self._paddle.device.get_device().split(":")[1])

    def current_stream(self, device_id: int) -> object:
        return self._paddle.device.current_stream(f"gpu:{device_id}")

    def set_current_stream(self, device_id: int, stream: object) -> None:
        self._paddle.device.set_stream(stream)

    def new_nonblocking_stream(self, device_id: int) -> object:
        return self._paddle.device.Stream(f"gpu:{device_id}")  # Paddle creates every new stream non-blocking

    def wait_stream(self, waiter: object, waitee: object) -> None:
        if self.raw_handle(waiter) != self.raw_handle(waitee):
            waiter.wait_stream(waitee)

    def raw_handle(self, stream: object) -> int:
        return int(stream.stream_base.cuda_stream)

    def is_capturing(self) -> bool:
        return bool(self._paddle.device.is_current_stream_capturing())


def paddle_policy() -> CaptureStreamPolicy:
    from .c10_bridge import paddle_c10_status

    return CaptureStreamPolicy(PaddleStreamDevice(), paddle_c10_status())
