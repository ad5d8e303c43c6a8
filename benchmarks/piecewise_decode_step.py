"""Piecewise decode step where the host sets the pace: what ordering graph replays against the compute stream costs.

A step is L pieces (61: one per DeepSeek-V3 layer); each piece = 2 small eager kernels on the compute stream (an
attention stand-in) and one graph of K small kernels. Raw CUDA streams, events and graphs through CuPy (Cython
calls, no Python model of a framework in the timed loop); the policy drives them through the thinnest device it
accepts (`RawDevice` below). Modes, each as a ratio to `limit` in the same run:
  limit         graph launched on the compute stream itself: no cross-stream order needed (the lower bound)
  policy        graph launched on the capture stream inside policy.replay_scope() (two stream waits, one cached
                event per stream)
  policy_fresh  the same with a new event per wait (what the policy cost before events were cached)
  floor         the same launch with two hand-written event waits (cached events): any cross-stream order costs this
  replay_sync   graph on the capture stream, then a device-wide synchronize (the closed FastDeploy PR #7344)
  eager         the K kernels launched one by one on the compute stream
Also: the replay scope's own host time per call (us), entered around nothing.

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
    """The policy's StreamDevice over CuPy streams: the framework's current stream is a per-device variable."""

    def __init__(self, compute: cupy.cuda.Stream, cache_events: bool = True) -> None:
        self._current = {0: compute}
        self._events: dict[int, cupy.cuda.Event] = {}
        self._cache_events = cache_events

    def current_device(self) -> int:
        return 0

    def current_stream(self, device_id: int) -> cupy.cuda.Stream:
        return self._current[device_id]

    def set_current_stream(self, device_id: int, stream: cupy.cuda.Stream) -> None:
        self._current[device_id] = stream

    def new_nonblocking_stream(self, device_id: int) -> cupy.cuda.Stream:
        return cupy.cuda.Stream(non_blocking=True)

    def wait_stream(self, waiter: cupy.cuda.Stream, waitee: cupy.cuda.Stream) -> None:
        self.stream_waiter(waiter, waitee)()

    def stream_waiter(self, waiter: cupy.cuda.Stream, waitee: cupy.cuda.Stream) -> Callable[[], None]:
        if not self._cache_events:
            def wait_with_a_new_event() -> None:
                event = cupy.cuda.Event(disable_timing=True)
                event.record(waitee)
                waiter.wait_event(event)
            return wait_with_a_new_event
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
        return self.is_stream_capturing(self._current[0])

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
    policy = CaptureStreamPolicy(RawDevice(compute), C10Status(follows_framework=True))
    fresh = CaptureStreamPolicy(RawDevice(compute, cache_events=False), C10Status(follows_framework=True))
    xs = [cupy.ones(WIDTH, dtype=cupy.float32) for _ in range(pieces)]
    graphs = []
    with compute:
        for x in xs:
            with policy.capture_scope(0) as capture, capture:
                kernels(x, k)  # warmup
                capture.begin_capture()
                kernels(x, k)
                graphs.append(capture.end_capture())
    capture = policy.capture_stream(0)
    fresh._streams[0] = capture  # both policies order the same capture stream
    to_capture, to_compute = cupy.cuda.Event(disable_timing=True), cupy.cuda.Event(disable_timing=True)
    device = cupy.cuda.Device()

    def attention(x: cupy.ndarray) -> None:
        kernels(x, 2)

    def limit() -> None:
        for x, g in zip(xs, graphs):
            attention(x)
            g.launch(compute)

    def with_policy(p: CaptureStreamPolicy) -> Callable[[], None]:
        def step() -> None:
            for x, g in zip(xs, graphs):
                attention(x)
                with p.replay_scope(0):
                    g.launch(capture)
        return step

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

    modes = {"limit": limit, "policy": with_policy(policy), "policy_fresh": with_policy(fresh), "floor": floor,
             "replay_sync": replay_sync, "eager": eager}
    best = {name: float("inf") for name in modes}
    with compute:  # eager kernels of every mode go to the compute stream
        for _ in range(REPEATS):  # modes interleaved, so that drift hits all alike
            for name, step in modes.items():
                step()
                device.synchronize()
                start = time.perf_counter()
                for _ in range(STEPS):
                    step()
                device.synchronize()
                best[name] = min(best[name], (time.perf_counter() - start) / STEPS * 1e3)
    return best


def replay_scope_us(calls: int = 20000) -> float:
    """Host time of the replay scope entered around nothing (best of REPEATS), us per call."""
    compute = cupy.cuda.Stream(non_blocking=True)
    policy = CaptureStreamPolicy(RawDevice(compute), C10Status(follows_framework=True))
    device, best = cupy.cuda.Device(), float("inf")
    for _ in range(REPEATS):
        device.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            with policy.replay_scope(0):
                pass
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
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
    scope = round(replay_scope_us(), 3)
    print(json.dumps({"card": card, "L": args.pieces, "results": results, "replay_scope_alone_us": scope}))
    print(f"{card}, L={args.pieces}: ms per step and / limit")
    for r in results:
        ms, over = r["ms_per_step"], r["over_limit"]
        print(f"  K={r['K']:>3}: limit {ms['limit']:.3f} ms | " + " | ".join(
            f"{name} {ms[name]:.3f} ({over[name]:.3f}x)" for name in over))
    print(f"  replay scope alone: {scope:.2f} us per call")


if __name__ == "__main__":
    main()
