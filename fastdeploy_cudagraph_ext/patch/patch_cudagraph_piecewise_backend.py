"""CudaGraphPiecewiseBackend: capture on a dedicated stream with c10 in step; order replays by stream waits.

Each call is classified before FastDeploy's body runs, from the inputs FastDeploy itself uses to pick the
call's entry (read from the real sources: 2.2-2.4 key entries by `real_shape_to_captured_size[tokens]`;
2.5/2.6/develop by `(padded shape, is_static_prefill)`, the shape taken from `real_bsz_to_captured_size` under
speculative decoding, from `forward_meta.real_bsz` in 2.6/develop):
* its entry is captured: the replay scope alone (two stream waits);
* it will warm up or capture: the capture scope and the DeepEP capture audit; an aborted capture is undone;
* its entry does not use graphs: FastDeploy's call as is.
"""
from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

from .. import deepep_protocol
from ..fd_facts import ModuleFacts
from ..flags import Settings
from ..metrics import SIZE_NOT_CAPTURED, STATS, UNKNOWN_SIZE
from ..registry import NO_FACTS, Choice, Contract, ContractBroken, Patch
from ..stream_policy import get_policy

MODULE = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"
# 2.5 (and 2.6/develop without real_bsz) count running requests on the device: the call's entry is then one of
# the entries real_bsz_to_captured_size reaches. {is_static_prefill: True} per backend once all of those are captured.
REACHABLE_CAPTURED = "_fastdeploy_cudagraph_ext_reachable_captured"
log = logging.getLogger("fastdeploy_cudagraph_ext")
_logged: set[str] = set()


def _log_once(key: str, message: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        log.warning(message, *args)


def _token_keyed(backend: object, meta: object) -> tuple[list[object], bool, bool]:
    """2.2-2.4: one entry per padded token count; Dy2St (static) when graph_opt_level > 0."""
    key = backend.real_shape_to_captured_size[meta.ids_remove_padding.shape[0]]
    return [backend.concrete_size_entries.get(key)], backend.fd_config.graph_opt_config.graph_opt_level > 0, True


def _shape_and_mode_keyed(backend: object, meta: object) -> tuple[list[object], bool, bool]:
    """2.5/2.6/develop: entries keyed (padded shape, is_static_prefill). Returns (entries, static, exact)."""
    exist_prefill = meta.exist_prefill
    static_prefill = bool(exist_prefill and not backend.full_cuda_graph and backend.dy2st)
    static = static_prefill or bool(not exist_prefill and backend.full_cuda_graph and backend.dy2st)
    padding = backend.real_shape_to_captured_size_prefill if static_prefill else backend.real_shape_to_captured_size
    bsz_map = getattr(backend, "real_bsz_to_captured_size", None)  # absent before 2.5: no speculative branch
    if getattr(backend, "speculative_decoding", False) and bsz_map and all(bsz_map.values()):
        running = getattr(meta, "real_bsz", 0)  # 2.6/develop: set on the host by the runner; 2.5 has none
        if running <= 0:  # FastDeploy counts running requests on the device: any entry the map reaches
            cached = getattr(backend, REACHABLE_CAPTURED, None)
            if cached is None:
                cached = {}
                setattr(backend, REACHABLE_CAPTURED, cached)
            if cached.get(static_prefill):
                return [], static, False
            entries = [backend.concrete_size_entries.get((padding[s], static_prefill)) for s in set(bsz_map.values())]
            if all(e is not None and _is_captured(e, static) for e in entries):
                cached[static_prefill] = True  # until clear_graph: entries only ever become captured
                return [], static, False
            return entries, static, False
        shape = bsz_map[running]
    else:
        shape = meta.ids_remove_padding.shape[0]
    return [backend.concrete_size_entries.get((padding[shape], static_prefill))], static, True


def _is_captured(entry: object, static: bool) -> bool:
    return entry.captured if static else entry.cuda_graph is not None


@contextmanager
def _undo_aborted_capture(backend: object, entries: list[object]) -> Iterator[None]:
    """If FastDeploy's capture (or our audit of it) raises, its entry must not look captured, nor the
    capture-order check advanced: the next call captures again instead of replaying a broken graph."""
    fresh = [(e, len(e.output_buffers)) for e in entries if e is not None and e.cuda_graph is None and not e.captured]
    capture_index = getattr(backend, "_decode_capture_index", None)  # develop's capture-order check
    manager = getattr(backend, "cuda_graph_manager", None)  # Dy2St: batch sizes it will replay
    static_captured = set(getattr(manager, "captured_batch_size", ()))
    try:
        yield
    except BaseException:
        for entry, buffers in fresh:
            entry.cuda_graph = None
            entry.captured = False
            del entry.output_buffers[buffers:]
        if capture_index is not None:
            backend._decode_capture_index = capture_index
        if manager is not None:
            manager.captured_batch_size.intersection_update(static_captured)
        raise


def _inside_capture_model() -> bool:
    """Called only after a capture happened: is a runner's capture_model (develop: also
    capture_model_prefill_and_mixed) on the stack?"""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name.startswith("capture_model"):
            return True
        frame = frame.f_back
    return False


def _log_lazy_captures(backend: object, entries: list[object], static: bool, before: list[bool],
                       captured: Callable[[object], None]) -> None:
    for entry, was_captured in zip(entries, before):
        if was_captured or entry is None or not _is_captured(entry, static):
            continue
        captured(entry.real_shape)  # metrics: this call's seconds and memory are this size's capture cost
        if not _inside_capture_model():
            log.warning("fastdeploy-cudagraph-ext: %s captured a CUDA graph for size %s while serving (outside "
                        "capture_model): its warmup forwards ran only on ranks that saw this size; with expert "
                        "parallelism their DeepEP collectives may have no partner on the other ranks. Capture every "
                        "size at startup (cudagraph_capture_sizes)", type(backend).__name__, entry.real_shape)


def _wrap_call(original: Callable, entries_of: Callable[[object, object], tuple[list[object], bool, bool]]) -> Callable:
    @functools.wraps(original)
    def __call__(self: object, **kwargs: object) -> object:
        try:
            entries, static, exact = entries_of(self, kwargs["forward_meta"])
        except (AttributeError, KeyError, IndexError, TypeError) as error:
            _log_once("unsure", "fastdeploy-cudagraph-ext: %s: could not compute the call's graph entry (%r); "
                      "running it in the capture scope (correct, slower)", type(self).__name__, error)
            entries, static, exact = list(getattr(self, "concrete_size_entries", {}).values()), False, None
        if exact:  # the serving path: one known entry, no generator, no helper calls
            entry = entries[0]
            if entry is not None:
                if not entry.use_cudagraph:
                    STATS.eager(SIZE_NOT_CAPTURED)
                    return original(self, **kwargs)  # FastDeploy runs this size eagerly
                if entry.captured if static else entry.cuda_graph is not None:
                    STATS.replayed(entry.real_shape)
                    with get_policy().replay_scope():
                        return original(self, **kwargs)
        elif exact is False and not entries:  # every graph the call may use is captured
            STATS.replayed(UNKNOWN_SIZE)
            with get_policy().replay_scope():
                return original(self, **kwargs)
        if exact is False:
            _log_once("inexact", "fastdeploy-cudagraph-ext: %s cannot tell which graph a call uses without reading "
                      "the device, and not every graph it may use is captured: such calls run in the capture scope "
                      "(correct, slower)", type(self).__name__)
        before = [e is not None and _is_captured(e, static) for e in entries]
        with STATS.capture_cost(get_policy().memory_reserved) as captured, get_policy().capture_scope(), \
                _undo_aborted_capture(self, entries), deepep_protocol.capture_audit(type(self).__name__):
            result = original(self, **kwargs)
        _log_lazy_captures(self, entries, static, before, captured)
        return result

    return __call__


def _wrap_clear_graph(original: Callable) -> Callable:
    @functools.wraps(original)
    def clear_graph(self: object) -> object:
        result = original(self)  # new, uncaptured entries: the next calls capture again
        if hasattr(self, REACHABLE_CAPTURED):
            delattr(self, REACHABLE_CAPTURED)
        return result

    return clear_graph


def choose(facts: Mapping[str, ModuleFacts]) -> Choice:
    """How FastDeploy keys its entries (the call's own entry is looked up the same way)."""
    keyed = facts.get(MODULE, NO_FACTS).markers.get("CudaGraphPiecewiseBackend.__call__.entry_key")
    if keyed == "token":
        return Choice("token_keyed", "entries keyed by token count (2.2-2.4)")
    if keyed == "shape_and_mode":
        return Choice("shape_and_mode_keyed", "entries keyed by (shape, static prefill) (2.5 on)")
    raise ContractBroken(f"CudaGraphPiecewiseBackend.__call__ keys its entries in a way the plugin does not know "
                         f"(marker entry_key={keyed!r}), so it cannot tell a replay from a capture")


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    entries_of = _shape_and_mode_keyed if variant == "shape_and_mode_keyed" else _token_keyed
    return {"__call__": _wrap_call(cls.__call__, entries_of), "clear_graph": _wrap_clear_graph(cls.clear_graph)}


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
        "Wraps __call__ and decides per call, from the entry FastDeploy will pick (keyed as the line keys it): a "
        "call that warms up or captures runs FastDeploy's own body inside the stream policy's capture scope "
        "(dedicated non-blocking stream per device, waits on the caller's stream, c10 moved in step and read back, "
        "everything restored on exit, an aborted capture ended and undone); a call whose entry is captured runs in "
        "the replay scope alone (capture stream waits on the compute stream, compute stream waits on the replay; no "
        "device synchronize). clear_graph drops the cached 'every reachable graph captured' answer."
    ),
    related_pr="FastDeploy PR #7344 (closed unmerged): same goal, but synchronized the device after every replay, "
    "hard-coded c10 offsets and leaked is_decode into the model forward.",
    removal_plan=(
        "Remove once FastDeploy captures on a dedicated stream with c10 kept in step (or Paddle's compat layer makes "
        "setCurrentCUDAStream and Paddle's stream one, Paddle PR #78652, everywhere) and orders replays by events."
    ),
    build=build,
    choose=choose,
)
