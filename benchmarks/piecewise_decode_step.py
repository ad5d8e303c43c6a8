"""Piecewise decode step where the host sets the pace: what ordering graph replays against the compute stream costs.

A step is L pieces (61: one per DeepSeek-V3 layer); each piece = 2 small eager kernels (an attention stand-in) and
one graph of K small kernels. This is FastDeploy's static split-graph call: one run_program per forward, whose
graph pieces Paddle replays on the stream each was captured on while the attention between them runs on the
current stream (patch_cudagraph_piecewise_backend.py names the sources). Raw CUDA streams, events and graphs
through CuPy (Cython calls, no Python model of a framework in the timed loop); the policy drives them through the
thinnest device it accepts (`RawDevice` below: the framework's current stream is CuPy's). Modes, each as a ratio
to `limit` in the same run:
  limit             graphs launched on the compute stream itself: no cross-stream order at all (the lower bound)
  policy            what the plugin does for this call: one capture scope per step, so the attention runs on the
                    capture stream the pieces replay on (one hop per step, none per piece)
  policy_per_piece  one replay scope per piece (two stream waits each): what the policy would cost a framework
                    that called the graph backend once per piece (no FastDeploy line does)
  floor             two hand-written event waits per piece (cached events): any per-piece cross-stream order
  replay_sync       graph on the capture stream, then a device-wide synchronize (the closed FastDeploy PR #7344)
  eager             the K kernels launched one by one on the compute stream
Also: the host time of the replay scope and of the capture scope, each entered around nothing (us per call).

Usage: PYTHONPATH=. python benchmarks/piecewise_decode_step.py [--pieces 61] [--kernels 1 3 10 30]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import cupy

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from fastdeploy_cudagraph_ext.stream_policy import C10Status, CaptureStreamPolicy  # noqa: E402

STEPS = 30
REPEATS = 7
WIDTH = 4096
KERNEL = cupy.RawKernel(r"""
extern "C" __global__ void axpb(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] * 1.0001f + 0.0001f;
}""", "axpb")
GRID, BLOCK = ((WIDTH + 255) // 256,), (256,)


class RawDevice:
    """The policy's StreamDevice over CuPy streams: the framework's current stream is CuPy's current stream, which
    the eager kernels launch on (as Paddle's ops run on the GPUContext's current stream)."""

    def __init__(self) -> None:
        self._events: dict[int, cupy.cuda.Event] = {}

    def current_device(self) -> int:
        return 0

    def current_stream(self, device_id: int) -> cupy.cuda.Stream:
        return cupy.cuda.get_current_stream()

    def set_current_stream(self, device_id: int, stream: cupy.cuda.Stream) -> None:
        stream.use()

    def new_nonblocking_stream(self, device_id: int) -> cupy.cuda.Stream:
        return cupy.cuda.Stream(non_blocking=True)

    def wait_stream(self, waiter: cupy.cuda.Stream, waitee: cupy.cuda.Stream) -> None:
        self.stream_waiter(waiter, waitee)()

    def stream_waiter(self, waiter: cupy.cuda.Stream, waitee: cupy.cuda.Stream) -> Callable[[], None]:
        event = self._events.get(waitee.ptr)  # as PaddleStreamDevice.stream_waiter
        if event is None:
            event = self._events[waitee.ptr] = cupy.cuda.Event(disable_timing=True)
        record, wait = event.record, waiter.wait_event

        def wait_for_waitee() -> None:
            record(waitee)
            wait(event)
        return wait_for_waitee

    def raw_handle(self, stream: cupy.cuda.Stream) -> int:
        return stream.ptr

    def is_capturing(self) -> bool:
        return self.is_stream_capturing(cupy.cuda.get_current_stream())

    def is_stream_capturing(self, stream: cupy.cuda.Stream) -> bool:
        return cupy.cuda.runtime.streamIsCapturing(stream.ptr) != 0

    def end_and_discard_capture(self, stream: cupy.cuda.Stream) -> None:
        stream.end_capture()


def kernels(x: cupy.ndarray, count: int) -> None:
    """`count` small kernels on CuPy's current stream."""
    for _ in range(count):
        KERNEL(GRID, BLOCK, (x, cupy.int32(WIDTH)))


def run(pieces: int, k: int) -> dict[str, float]:
    compute = cupy.cuda.Stream(non_blocking=True)
    compute.use()  # the framework's current stream: every mode's eager kernels start on it
    policy = CaptureStreamPolicy(RawDevice(), C10Status(follows_framework=True))
    xs = [cupy.ones(WIDTH, dtype=cupy.float32) for _ in range(pieces)]
    graphs = []
    for x in xs:
        with policy.capture_scope(0) as capture:
            kernels(x, k)  # warmup
            capture.begin_capture()
            kernels(x, k)
            graphs.append(capture.end_capture())
    capture = policy.capture_stream(0)
    to_capture, to_compute = cupy.cuda.Event(disable_timing=True), cupy.cuda.Event(disable_timing=True)
    device = cupy.cuda.Device()

    def attention(x: cupy.ndarray) -> None:
        kernels(x, 2)

    def limit() -> None:
        for x, g in zip(xs, graphs):
            attention(x)
            g.launch(compute)

    def with_policy() -> None:
        with policy.capture_scope(0):
            for x, g in zip(xs, graphs):
                attention(x)
                g.launch(capture)

    def with_policy_per_piece() -> None:
        for x, g in zip(xs, graphs):
            attention(x)
            with policy.replay_scope(0):
                g.launch(capture)

    def floor() -> None:
        for x, g in zip(xs, graphs):
            attention(x)
            to_capture.record(compute)
            capture.wait_event(to_capture)
            g.launch(capture)
            to_compute.record(capture)
            compute.wait_event(to_compute)

    def replay_sync() -> None:
        for x, g in zip(xs, graphs):
            attention(x)
            g.launch(capture)
            device.synchronize()

    def eager() -> None:
        for x in xs:
            attention(x)
            kernels(x, k)

    modes = {"limit": limit, "policy": with_policy, "policy_per_piece": with_policy_per_piece, "floor": floor,
             "replay_sync": replay_sync, "eager": eager}
    best = {name: float("inf") for name in modes}
    for _ in range(REPEATS):  # modes interleaved, so that drift hits all alike
        for name, step in modes.items():
            step()
            device.synchronize()
            start = time.perf_counter()
            for _ in range(STEPS):
                step()
            device.synchronize()
            best[name] = min(best[name], (time.perf_counter() - start) / STEPS * 1e3)
    assert cupy.cuda.get_current_stream().ptr == compute.ptr, "a scope left the framework's stream switched"
    return best


def scope_us(calls: int = 20000) -> dict[str, float]:
    """Host time of the replay scope and of the capture scope, each entered around nothing (best of REPEATS), us
    per call."""
    compute = cupy.cuda.Stream(non_blocking=True)
    compute.use()
    policy = CaptureStreamPolicy(RawDevice(), C10Status(follows_framework=True))
    device = cupy.cuda.Device()
    best = {}
    for name, scope in (("replay_scope", policy.replay_scope), ("capture_scope", policy.capture_scope)):
        best[name] = float("inf")
        for _ in range(REPEATS):
            device.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                with scope(0):
                    pass
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
            device.synchronize()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=61, help="L: pieces per step (61: DeepSeek-V3's layers)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 3, 10, 30], help="K: kernels per graph")
    args = parser.parse_args()
    card = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    results = []
    for k in args.kernels:
        ms = run(args.pieces, k)
        ratios = {name: round(value / ms["limit"], 3) for name, value in ms.items() if name != "limit"}
        results.append({"K": k, "ms_per_step": {n: round(v, 3) for n, v in ms.items()}, "over_limit": ratios})
    scopes = {name: round(us, 3) for name, us in scope_us().items()}
    print(json.dumps({"card": card, "L": args.pieces, "results": results, "scope_alone_us": scopes}))
    print(f"{card}, L={args.pieces}: ms per step and / limit")
    for r in results:
        ms, over = r["ms_per_step"], r["over_limit"]
        print(f"  K={r['K']:>3}: limit {ms['limit']:.3f} ms | " + " | ".join(
            f"{name} {ms[name]:.3f} ({over[name]:.3f}x)" for name in over))
    print(f"  alone, per call: replay scope {scopes['replay_scope']:.2f} us, capture scope {scopes['capture_scope']:.2f} us")


if __name__ == "__main__":
    main()
