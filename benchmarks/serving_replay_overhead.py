"""Serving-time host cost of the capture_stream wrapper on a replay (issue 11, item 1).

A decode step's call into the graph backend, host time per call (the GPU work is one tiny kernel, so the host
is the bottleneck), for a backend whose sizes are all captured and for one with a size that was never captured
(FastDeploy captures lazily; some sizes never occur):
  unwrapped     FastDeploy's own call (modelled below): look up the entry, replay
  wrapped       the same call through the plugin's wrapper (patch_cudagraph_piecewise_backend.build)
  replay_scope  policy.replay_scope() around nothing: the two stream waits the wrapper must add
  device_waits  the same two waits made through the device directly, no policy: the replay scope's floor (what the
                framework's event record and stream wait cost on this host), so the policy's own share is the rest
  capture_scope policy.capture_scope() around nothing: what every replay paid before issue 11 while any size was
                uncaptured (for reference)
  unwrapped_in_replay_scope  FastDeploy's call inside policy.replay_scope(): the floor, since the two waits are the
                wrapper's whole job on a replay
  graph_opt.*   FastDeploy's GraphOptBackend decision (2.3's) over the wrapped backend, with and
                without the plugin's decode_step_metrics wrapper: that wrapper's own cost per decode step (it counts
                the step, the replay the graph backend's wrapper noted included)
  bare_wrapper  the least any wrapper that decides by the call's entry can do: take the call's keywords, look the
                entry up as FastDeploy does, and pass the keywords on inside the replay scope; its paired extra over the
                floor is the wrapper's own floor on this host
  step.unwrapped_in_replay_scope  the whole decode step's floor: FastDeploy's two classes inside the replay scope;
                graph_opt.wrapped over it is the plugin's whole host cost per decode step, metrics on
The metrics are on (metrics.py exporting to a temporary PROMETHEUS_MULTIPROC_DIR, as in a FastDeploy worker).
The variants take turns in chunks of 50 calls; a variant's time is its median chunk, and what the wrapper adds is the
median of its paired chunk differences against the floor (drift cancels in each pair). The A/A control is the floor
measured twice: its paired difference (ideally 0 us) says how far an extra can be trusted. The wrapper should add
the two waits and the entry lookup FastDeploy itself makes, nothing else; issue 19's limits on the H200 are the replay
scope alone at most 4 us and the wrapper's extra at most 1 us, with the metrics on. Both sides are called as
instances, as the runner calls the backend. Streams are modelled as in tests/gpu (framework stream apart from c10, c10
moved by the ctypes bridge); the backends are our own minimal model of FastDeploy 2.3's
GraphOptBackend and CudaGraphPiecewiseBackend at 0df488c7 (tests/gpu/fd23_graph_path.py: entries keyed by padded
token count, warmups + capture on first use), shared with the GPU metrics test's worker.

Usage: PYTHONPATH=. python benchmarks/serving_replay_overhead.py [calls]   (default 20000)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "gpu")]  # the package and the torch model of Paddle's streams

from fastdeploy_cudagraph_ext.c10_bridge import c10_status  # noqa: E402
from fastdeploy_cudagraph_ext.metrics import STATS  # noqa: E402
from fastdeploy_cudagraph_ext.patch import patch_cudagraph_piecewise_backend  # noqa: E402
from fastdeploy_cudagraph_ext.stream_policy import CaptureStreamPolicy, install_policy  # noqa: E402
from fd23_graph_path import (  # noqa: E402
    DEVICE, SIZES, GraphOptBackend, PiecewiseBackend, fd_config, forward_meta, patched_classes)
from torch_device import libc10_cuda_path  # noqa: E402

REPEATS = 7
CHUNK = 50  # calls between device drains: the launch queue never fills, so the timer sees host time only


def chunk_us(calls_by_name: dict[str, Callable[[], object]], calls: int) -> dict[str, list[float]]:
    """Microseconds of host time per call, one value per chunk of CHUNK calls, REPEATS * calls // CHUNK chunks per
    variant. The variants take turns chunk by chunk, so the i-th chunks of any two variants ran back to back: drift
    (clock, other tenants) hits them alike, and their difference is a paired sample. The device is drained before
    every chunk, outside the timed region: otherwise a full launch queue makes host time equal device time."""
    times: dict[str, list[float]] = {name: [] for name in calls_by_name}
    for _ in range(REPEATS * (calls // CHUNK)):
        for name, call in calls_by_name.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(CHUNK):
                call()
            times[name].append((time.perf_counter() - start) / CHUNK * 1e6)
    torch.cuda.synchronize()
    return times


def paired_extra_us(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """The median over chunk pairs of `name` minus `baseline`: what `name` adds per call, drift cancelled."""
    return round(statistics.median(a - b for a, b in zip(times[name], times[baseline])), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="?", type=int, default=20000, help="calls per timed repeat")
    calls = parser.parse_args().calls
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fdcg-bench-prom-"))
    STATS.start(os.environ)  # the metrics on, as in a FastDeploy worker (needs prometheus_client)
    dev = torch.cuda.current_device()
    fw = DEVICE
    status = c10_status(libc10_cuda_path(), framework="torch")
    if status.bridge is None:
        raise SystemExit(f"c10 bridge unavailable: {status.problem}")
    policy = CaptureStreamPolicy(fw, status, extensions_may_launch=lambda: True)
    install_policy(policy)
    wrapped_class, wrapped_graph_opt = patched_classes()

    x = torch.ones(1024, device="cuda")

    def runnable(**kwargs: object) -> torch.Tensor:
        with fw.framework_ops(dev):
            return x * 2.0

    config = fd_config()
    all_captured, one_never = wrapped_class(config, runnable), wrapped_class(config, runnable)

    def capture_model() -> None:  # named as FastDeploy's runner method: these captures are not lazy ones
        for size in SIZES:
            all_captured(forward_meta=forward_meta(size))
        for size in SIZES[:-1]:  # size 1 never occurs while serving: never captured
            one_never(forward_meta=forward_meta(size))
        torch.cuda.synchronize()

    capture_model()
    step = forward_meta(3)  # padded to the captured size 4

    def empty_scope(scope: Callable) -> Callable[[], None]:
        def call() -> None:
            with scope():  # as the wrapper enters it: the current device is looked up
                pass
        return call

    def unwrapped_view(backend: PiecewiseBackend, cls: type = PiecewiseBackend) -> PiecewiseBackend:
        """FastDeploy's class (or `cls`) over the wrapped backend's state: called as the runner calls it (an
        instance call), so both sides pay the same call path and differ only by the wrapper."""
        view = cls.__new__(cls)
        view.__dict__ = backend.__dict__
        return view

    def bare_wrapper(backend: PiecewiseBackend) -> Callable[[], object]:
        original, lookup = PiecewiseBackend.__call__, patch_cudagraph_piecewise_backend._token_keyed

        def __call__(self: object, **kwargs: object) -> object:
            lookup(self, kwargs)
            with policy.replay_scope():
                return original(self, **kwargs)
        bare = unwrapped_view(backend, type("BareWrapped", (PiecewiseBackend,), {"__call__": __call__}))
        return lambda: bare(forward_meta=step)

    def in_replay_scope(plain: PiecewiseBackend) -> Callable[[], object]:
        def call() -> object:
            with policy.replay_scope():
                return plain(forward_meta=step)
        return call

    variants: dict[str, Callable[[], object]] = {}
    backends = {"all_captured": all_captured, "one_never_captured": one_never}
    for name, backend in backends.items():
        plain = unwrapped_view(backend)
        variants[f"{name}.unwrapped"] = lambda b=plain: b(forward_meta=step)
        variants[f"{name}.unwrapped_in_replay_scope"] = in_replay_scope(plain)
        variants[f"{name}.wrapped"] = lambda b=backend: b(forward_meta=step)
    # A/A control: the floor measured a second time, as its own variant: the noise in a paired difference.
    variants["all_captured.unwrapped_in_replay_scope_again"] = in_replay_scope(unwrapped_view(all_captured))
    # The wrapper's own decision: the call's entry, looked up as FastDeploy looks it up (the part it cannot skip).
    call_kwargs = {"forward_meta": step}  # the lookup reads the call's keyword arguments, as the wrapper passes them
    variants["entry_lookup"] = lambda: patch_cudagraph_piecewise_backend._token_keyed(all_captured, call_kwargs)
    variants["all_captured.bare_wrapper"] = bare_wrapper(all_captured)
    graph_opts = {"unwrapped": GraphOptBackend(runnable, config), "wrapped": wrapped_graph_opt(runnable, config)}
    for name, graph_opt in graph_opts.items():
        graph_opt.cudagraph_piecewise_backend = all_captured  # both over the same captured backend
        variants[f"graph_opt.{name}"] = lambda g=graph_opt: g(forward_meta=step)
    # The whole decode step's floor: FastDeploy's two classes in the replay scope; graph_opt.wrapped is the step as a
    # worker runs it, both classes patched.
    fastdeploy_step = GraphOptBackend(runnable, config)
    fastdeploy_step.cudagraph_piecewise_backend = unwrapped_view(all_captured)
    variants["step.unwrapped_in_replay_scope"] = in_replay_scope(fastdeploy_step)
    variants["replay_scope"] = empty_scope(policy.replay_scope)
    variants["capture_scope"] = empty_scope(policy.capture_scope)
    order = policy.replay_scope()  # the scope's own two waits, built once by the policy for this caller stream

    def device_waits() -> None:
        order.capture_waits()
        order.caller_waits()
    variants["device_waits"] = device_waits
    with fw.framework_ops(dev):  # the step's eager kernels run on the framework's compute stream
        times = chunk_us(variants, calls)
    us = {name: round(statistics.median(values), 3) for name, values in times.items()}
    # The floor is FastDeploy's own call inside the replay scope: the two waits are the wrapper's whole job.
    ratios = {f"{name}.wrapped_over_unwrapped_in_replay_scope": round(
        us[f"{name}.wrapped"] / us[f"{name}.unwrapped_in_replay_scope"], 3)
        for name in backends}
    ratios["a_a_control"] = round(
        us["all_captured.unwrapped_in_replay_scope_again"] / us["all_captured.unwrapped_in_replay_scope"], 3)
    ratios["capture_scope_over_replay_scope"] = round(us["capture_scope"] / us["replay_scope"], 3)
    extra = {name: paired_extra_us(times, f"{name}.wrapped", f"{name}.unwrapped_in_replay_scope")
             for name in backends}
    extra["a_a_control"] = paired_extra_us(
        times, "all_captured.unwrapped_in_replay_scope_again", "all_captured.unwrapped_in_replay_scope")
    extra["decode_step_metrics"] = paired_extra_us(times, "graph_opt.wrapped", "graph_opt.unwrapped")
    extra["step"] = paired_extra_us(times, "graph_opt.wrapped", "step.unwrapped_in_replay_scope")
    extra["bare_wrapper"] = paired_extra_us(
        times, "all_captured.bare_wrapper", "all_captured.unwrapped_in_replay_scope")
    extra["replay_scope_over_device_waits"] = paired_extra_us(times, "replay_scope", "device_waits")
    card = torch.cuda.get_device_name(dev)
    print(json.dumps({"card": card, "calls": calls, "us_per_call": us, "ratios": ratios, "wrapper_extra_us": extra}))
    print(f"{card}: wrapped / (FastDeploy's call in the replay scope) = "
          f"{ratios['all_captured.wrapped_over_unwrapped_in_replay_scope']:.3f} (all sizes captured), "
          f"{ratios['one_never_captured.wrapped_over_unwrapped_in_replay_scope']:.3f} (one size never captured), "
          f"A/A control {ratios['a_a_control']:.3f} ({extra['a_a_control']:+.2f} us); "
          f"unwrapped {us['all_captured.unwrapped']:.2f} us, replay scope alone {us['replay_scope']:.2f} us, "
          f"capture scope alone {us['capture_scope']:.2f} us, the device's two waits alone {us['device_waits']:.2f} us "
          f"(the policy's share {extra['replay_scope_over_device_waits']:+.2f} us); "
          f"wrapped - floor = {extra['all_captured']:.2f} / "
          f"{extra['one_never_captured']:.2f} us, the entry lookup alone {us['entry_lookup']:.2f} us, a bare wrapper "
          f"(lookup, keywords passed on) - floor = {extra['bare_wrapper']:.2f} us; "
          f"decode_step_metrics wrapper {extra['decode_step_metrics']:.2f} us; the plugin per decode step (both "
          f"wrappers, metrics on) - floor = {extra['step']:.2f} us; metrics exported: "
          f"{STATS.exporter is not None}, replays counted {sum(STATS.replays.values())}")

if __name__ == "__main__":
    main()
