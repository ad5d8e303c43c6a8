"""A DeepEP stand-in that enforces the low-latency rules of cuda-facts.md, per rank.

* normal (prefill) kernels dirty the shared buffer; a low-latency kernel on a dirty buffer fails
  (DeepEP: stale metadata, CUDA error 715);
* clean_low_latency_buffer is collective: a barrier before and after zeroing, counted per rank;
* the low-latency double buffer flips on the HOST at every dispatch/combine call, and the half a
  kernel uses is fixed when it is launched (so a graph bakes in its halves);
* with return_recv_hook=True the receive half is a second kernel launched by the hook;
* normal dispatch under capture breaks it unless given num_worst_tokens (DeepEP #62, #203).
Kernels launch on c10's current stream (torch-API DeepEP) or the framework's stream (Paddle's port).
"""
from __future__ import annotations

from fake_cuda import Runtime


class StaleBufferError(RuntimeError):
    pass


class AllocationInCaptureError(RuntimeError):
    """CUDA refuses allocation and synchronization while a stream is captured."""


class UnjoinedWorkError(RuntimeError):
    """DeepEP's normal dispatch waits on the CPU for the received count: under capture the capture breaks
    ("capturing stream has unjoined work", DeepEP #62), unless a fixed worst-case token count is given."""


class Collective:
    """Barrier bookkeeping shared by all ranks of one simulated EP group."""

    def __init__(self, ranks: int) -> None:
        self.barriers = [0] * ranks


class SimBuffer:
    def __init__(self, rank: int = 0, collective: Collective | None = None, torch_api: bool = True) -> None:
        self.rank = rank
        self.collective = collective or Collective(1)
        self.torch_api = torch_api
        self.dirty = False
        self.half = 0
        self.low_latency_kernels: list[tuple[str, int]] = []

    def _stream(self):
        return Runtime.c10.stream() if self.torch_api else Runtime.framework_stream()

    def _launch(self, name, kernel):
        Runtime.device.launch(self._stream(), kernel, name)

    def dispatch(self, x, num_worst_tokens=0):
        if Runtime.device.is_capturing() and not num_worst_tokens:
            raise UnjoinedWorkError(f"rank {self.rank}: normal dispatch under capture: capturing stream has unjoined work")

        def kernel():
            self.dirty = True
        self._launch("normal_dispatch", kernel)
        return x

    def combine(self, x):
        def kernel():
            self.dirty = True
        self._launch("normal_combine", kernel)
        return x

    def clean_low_latency_buffer(self, num_max_dispatch_tokens_per_rank, hidden, num_experts):
        def kernel():
            self.collective.barriers[self.rank] += 1
            self.dirty = False
            self.collective.barriers[self.rank] += 1
        self._launch("ll_clean", kernel)

    def _low_latency(self, kind, x, async_finish, return_recv_hook):
        if async_finish and return_recv_hook:
            raise ValueError("async_finish and return_recv_hook are mutually exclusive")
        half = self.half
        self.half ^= 1  # host-side flip at call time

        def send():
            if self.dirty:
                raise StaleBufferError(f"rank {self.rank}: low-latency {kind} on a dirty buffer (CUDA error 715)")
            self.low_latency_kernels.append((kind, half))
        self._launch(f"ll_{kind}_send", send)

        def recv_hook():
            self._launch(f"ll_{kind}_recv", lambda: None)
        return x, (recv_hook if return_recv_hook else None)

    def low_latency_dispatch(self, x, topk_idx, num_max_tokens, num_experts, use_fp8=False,
                             async_finish=False, return_recv_hook=False):
        out, hook = self._low_latency("dispatch", x, async_finish, return_recv_hook)
        return out, None, (topk_idx,), None, hook

    def low_latency_combine(self, x, topk_idx, topk_weights, handle, async_finish=False, return_recv_hook=False):
        out, hook = self._low_latency("combine", x, async_finish, return_recv_hook)
        return out, None, hook


class ActiveRankBuffer:
    """Several simulated ranks in one process share FastDeploy's process-wide DeepEPEngine (a singleton):
    its buffer forwards every call to the buffer of the rank being simulated right now (`rank`)."""

    def __init__(self) -> None:
        self.buffers: list[SimBuffer] = []
        self.rank = 0

    def __getattr__(self, name: str):
        if not self.buffers:
            raise AttributeError(name)
        return getattr(self.buffers[self.rank], name)


# Tests set these before FastDeploy's engine is built: the buffer a rank's engine gets.
CURRENT = {"buffer": None}
