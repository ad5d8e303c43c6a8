"""CudaGraphPiecewiseBackend: capture on a dedicated stream with c10 in step; order replays by stream waits."""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator

from .. import deepep_protocol
from ..flags import Settings
from ..registry import Contract, Patch, within
from ..stream_policy import get_policy

MODULE = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"
ALL_CAPTURED = "_fastdeploy_cudagraph_ext_all_captured"


def _entry_done(entry: object) -> bool:
    # Dynamic entries own a CUDAGraph once captured; Dy2St entries set `captured`; others never capture.
    return (getattr(entry, "cuda_graph", None) is not None or bool(getattr(entry, "captured", False))
            or not getattr(entry, "use_cudagraph", True))


def _capturable_entries(backend: object) -> list[object]:
    """Entries a call may still capture. Develop also keys static-prefill entries (shape, True); they
    capture only in split mode (Dy2St without full_cuda_graph), so elsewhere they never count."""
    split_mode = getattr(backend, "dy2st", False) and not getattr(backend, "full_cuda_graph", True)
    return [entry for key, entry in getattr(backend, "concrete_size_entries", {}).items()
            if split_mode or not (isinstance(key, tuple) and key[1])]


def _all_captured(backend: object) -> bool:
    """Cached once true: after capture_model every call is a replay, and replays must stay cheap."""
    if getattr(backend, ALL_CAPTURED, False):
        return True
    entries = _capturable_entries(backend)
    done = bool(entries) and all(_entry_done(e) for e in entries)
    if done:
        setattr(backend, ALL_CAPTURED, True)
    return done


@contextmanager
def _stream_scope(backend: object) -> Iterator[None]:
    policy = get_policy()
    if _all_captured(backend):
        with policy.replay_scope():
            yield
        return
    # Warmup and capture (and any replay of an already captured size) run on the capture stream.
    with policy.capture_scope(), deepep_protocol.capture_audit(type(backend).__name__):
        yield


def _wrap_clear_graph(original: Callable) -> Callable:
    @functools.wraps(original)
    def clear_graph(self: object) -> object:
        result = original(self)
        setattr(self, ALL_CAPTURED, False)  # RL weight reload: the next calls capture again
        return result

    return clear_graph


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    # Both shapes ('token_keyed' and 'shape_and_mode_keyed') are wrapped the same way: FastDeploy's own body
    # picks the entry, warms up, captures and replays; run_static_model (and develop's is_decode) is untouched.
    return {"__call__": within(cls.__call__, _stream_scope), "clear_graph": _wrap_clear_graph(cls.clear_graph)}


PATCH = Patch(
    name="capture_stream",
    group="capture_stream",
    module=MODULE,
    # Pass-through wrappers: the constructor and run_static_model (2.5's is_decode, ...) are FastDeploy's own.
    contract=Contract(cls="CudaGraphPiecewiseBackend", wraps=("__call__", "clear_graph")),
    why=(
        "FastDeploy captures on Paddle's current (compute) stream and never updates c10's current stream, on "
        "which torch-API DeepEP launches its low-latency kernels: capture fails ('operation would make the legacy "
        "stream depend on a capturing blocking stream') or the kernels silently run outside the graph."
    ),
    how=(
        "Wraps __call__: until every size is captured, FastDeploy's own warmup/capture body runs inside the stream "
        "policy's capture scope (dedicated non-blocking stream per device, waits on the caller's stream, c10 moved "
        "in step and read back, everything restored on exit); afterwards each call runs in the replay scope (capture "
        "stream waits on the compute stream, compute stream waits on the replay; no device synchronize). "
        "clear_graph resets the 'all captured' cache."
    ),
    related_pr="FastDeploy PR #7344 (closed unmerged): same goal, but synchronized the device after every replay, "
    "hard-coded c10 offsets and leaked is_decode into the model forward.",
    removal_plan=(
        "Remove once FastDeploy captures on a dedicated stream with c10 kept in step (or Paddle's compat layer makes "
        "setCurrentCUDAStream and Paddle's stream one, Paddle PR #78652, everywhere) and orders replays by events."
    ),
    build=build,
)
