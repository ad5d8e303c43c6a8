"""CudaGraphPiecewiseBackend: capture on a dedicated stream with c10 in step; order replays by stream waits.

Each call is classified before FastDeploy's body runs, from the inputs FastDeploy itself uses to pick the
call's entry (read from the real sources: 2.2-2.4 key entries by `real_shape_to_captured_size[tokens]`;
2.5/2.6/develop by `(padded shape, is_static_prefill)`, the shape taken from `real_bsz_to_captured_size` under
speculative decoding, from `forward_meta.real_bsz` in 2.6/develop):
* its entry is captured, dynamic path (`entry.cuda_graph.replay()`, the call's only GPU work): the replay scope
  alone (two stream waits);
* its entry is captured, static (Dy2St) path: the capture scope, as at capture. The forward is one run_program
  call (FastDeploy refuses SOT graph breaks, graph_optimization_backend.py at e53f5184), whose graph pieces
  Paddle replays on the stream each was captured on (phi CUDAGraph::Replay launches on the stream stored at
  BeginCapture, paddle/phi/backends/gpu/cuda/cuda_graph.cc at 2c3ba4b2) while its other ops run on the current
  stream (split mode: the attention ops FastDeploy puts on FLAGS_cuda_graph_blacklist, append_attn_backend.py at
  e53f5184, left between the pieces by cuda_graph_extract_pass.cc at cc9bebb1). So the current stream must be the
  capture stream, or pieces and attention race. One hop per call, none per piece;
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
from ..registry import ANY_VARIANT, NO_FACTS, Choice, Contract, ContractBroken, Patch, Variant
from .. import stream_policy
from ..stream_policy import get_policy, installed_policy

MODULE = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"
FORWARD_META_MODULE = "fastdeploy.model_executor.forward_meta"
# 2.5 (and 2.6/develop without real_bsz) count running requests on the device: the call's entry is then one of
# the entries real_bsz_to_captured_size reaches. {is_static_prefill: True} per backend once all of those are captured.
REACHABLE_CAPTURED = "_fastdeploy_cudagraph_ext_reachable_captured"
log = logging.getLogger("fastdeploy_cudagraph_ext")
_logged: set[str] = set()


def _log_once(key: str, message: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        log.warning(message, *args)


# A lookup returns (entry, static, candidates). Where the call's own entry can be told: (that entry, None where the
# line has no entry for it; static; None). Where the device picks it (2.5 under MTP): (None; static; the entries it
# may pick, or [] once every one of them is captured). Each lookup is one function without helper calls: it runs on
# every replay.
Lookup = tuple[object | None, bool, list[object] | None]


def _token_keyed(backend: object, kwargs: dict) -> Lookup:
    """2.2.x-2.4: one entry per padded token count; Dy2St (static) when graph_opt_level > 0."""
    key = backend.real_shape_to_captured_size[kwargs["forward_meta"].ids_remove_padding.shape[0]]
    return backend.concrete_size_entries.get(key), backend.fd_config.graph_opt_config.graph_opt_level > 0, None


def _token_keyed_by_ids(backend: object, kwargs: dict) -> Lookup:
    """2.2.0: as 2.2.x, the token count read from the ids_remove_padding keyword itself."""
    key = backend.real_shape_to_captured_size[kwargs["ids_remove_padding"].shape[0]]
    return backend.concrete_size_entries.get(key), backend.fd_config.graph_opt_config.graph_opt_level > 0, None


def _shape_and_mode_keyed(backend: object, kwargs: dict) -> Lookup:
    """2.5/2.6/develop: entries keyed (padded shape, is_static_prefill)."""
    meta = kwargs["forward_meta"]
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
                return None, static, []
            entries = [backend.concrete_size_entries.get((padding[s], static_prefill)) for s in set(bsz_map.values())]
            if all(e is not None and _is_captured(e, static) for e in entries):
                cached[static_prefill] = True  # until clear_graph: entries only ever become captured
                return None, static, []
            return None, static, entries
        shape = bsz_map[running]
    else:
        shape = meta.ids_remove_padding.shape[0]
    return backend.concrete_size_entries.get((padding[shape], static_prefill)), static, None


def _is_captured(entry: object, static: bool) -> bool:
    return entry.captured if static else entry.cuda_graph is not None


def _drop_new_outputs(entry: object, output: str, kept: int) -> None:
    """Forget the output buffers an aborted capture added: a list (output_buffers) or one (2.2.0's output_buffer)."""
    if output == "output_buffer":
        entry.output_buffer = None
    else:
        del entry.output_buffers[kept:]


@contextmanager
def _undo_aborted_capture(backend: object, entries: list[object], output: str) -> Iterator[None]:
    """If FastDeploy's capture (or our audit of it) raises, its entry must not look captured, nor the
    capture-order check advanced: the next call captures again instead of replaying a broken graph."""
    fresh = [(e, len(e.output_buffers) if output == "output_buffers" else 0)
             for e in entries if e is not None and e.cuda_graph is None and not e.captured]
    capture_index = getattr(backend, "_decode_capture_index", None)  # develop's capture-order check
    manager = getattr(backend, "cuda_graph_manager", None)  # Dy2St: batch sizes it will replay
    static_captured = set(getattr(manager, "captured_batch_size", ()))
    try:
        yield
    except BaseException:
        for entry, buffers in fresh:
            entry.cuda_graph = None
            entry.captured = False
            _drop_new_outputs(entry, output, buffers)
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


def _wrap_call(original: Callable, lookup: Callable[[object, dict], Lookup], output: str) -> Callable:
    @functools.wraps(original)
    def __call__(self: object, **kwargs: object) -> object:
        try:
            entry, static, candidates = lookup(self, kwargs)
        except (AttributeError, KeyError, IndexError, TypeError) as error:
            _log_once("unsure", "fastdeploy-cudagraph-ext: %s: could not compute the call's graph entry (%r); "
                      "running it in the capture scope (correct, slower)", type(self).__name__, error)
            return _capture_call(self, kwargs, list(getattr(self, "concrete_size_entries", {}).values()), False)
        if candidates is None:  # the serving path: the call's own entry
            if entry is None or not entry.use_cudagraph or not (entry.captured if static else
                                                                entry.cuda_graph is not None):
                return _call_unreplayed(self, kwargs, entry, static)
            replayed = entry.real_shape
        elif candidates:
            _log_once("inexact", "fastdeploy-cudagraph-ext: %s cannot tell which graph a call uses without reading "
                      "the device, and not every graph it may use is captured: such calls run in the capture scope "
                      "(correct, slower)", type(self).__name__)
            return _capture_call(self, kwargs, candidates, static)
        else:  # every graph the call may use is captured
            replayed = UNKNOWN_SIZE
        STATS.replayed_size = replayed  # the step's wrapper (decode_step_metrics) counts it
        policy = stream_policy._policy or get_policy()  # no call once the policy is built
        with policy.capture_scope() if static else policy.replay_scope():
            return original(self, **kwargs)

    def _call_unreplayed(self: object, kwargs: dict, entry: object, static: bool) -> object:
        """The call's own entry does not replay: FastDeploy runs it eagerly, or it warms up or captures."""
        if entry is not None and not entry.use_cudagraph:
            STATS.eager(SIZE_NOT_CAPTURED)
            return original(self, **kwargs)  # FastDeploy runs this size eagerly
        return _capture_call(self, kwargs, [entry], static)

    def _capture_call(self: object, kwargs: dict, entries: list[object], static: bool) -> object:
        """A call that may warm up or capture one of `entries`: FastDeploy's body in the capture scope, audited."""
        before = [e is not None and _is_captured(e, static) for e in entries]
        with STATS.capture_cost(get_policy().memory_reserved) as captured, get_policy().capture_scope(), \
                _undo_aborted_capture(self, entries, output), deepep_protocol.capture_audit(type(self).__name__):
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


def cuda_capture_missing() -> str | None:
    """Why this process has no CUDA stream to capture on (a non-CUDA Paddle, e.g. XPU), or None. A policy installed
    by another device back-end (or a test) counts as one. Only is_compiled_with_cuda is asked: the stream calls
    of a CPU build raise or crash (cuda-facts.md)."""
    if installed_policy() is not None:
        return None
    try:
        import paddle
    except ImportError:
        return "Paddle is not importable in this process, so no CUDA stream to capture on"
    if paddle.is_compiled_with_cuda():
        return None
    return ("Paddle is not compiled with CUDA (e.g. an XPU build): graphs captured through this backend are not "
            "CUDA graphs and FastDeploy's own capture runs as is")


_CONFLICT_FIX = ("Fix: install an upstream FastDeploy without PR #7344 (README's compatibility table lists the lines "
                 "read), revert #7344 in your build, or unset FD_CUDAGRAPH_EXT to serve with that backend's own capture")


def _conflicts(markers: Mapping[str, str]) -> None:
    """The closed PR #7344's shape (vendors cherry-pick it): never run both. The synchronize around capture, on
    every real line, is not a conflict."""
    stream = markers.get("CudaGraphPiecewiseBackend.own_capture_stream")
    after_replay = markers.get("CudaGraphPiecewiseBackend.synchronizes_after_replay")
    if stream is None or after_replay is None:
        raise ContractBroken("cannot tell whether CudaGraphPiecewiseBackend already captures on its own stream or "
                             "synchronizes after replays (markers own_capture_stream/synchronizes_after_replay absent)")
    found = [what for what, flag in (("makes its own capture stream", stream),
                                     ("synchronizes the device after replays", after_replay)) if flag == "yes"]
    if found:
        raise ContractBroken(f"this FastDeploy's CudaGraphPiecewiseBackend already {' and '.join(found)} (the closed "
                             f"PR #7344's shape): the plugin's capture stream would nest inside its stream and its "
                             f"device-wide synchronize would stay after every replay. {_CONFLICT_FIX}")


def choose(facts: Mapping[str, ModuleFacts]) -> Choice:
    """How FastDeploy keys its entries (the call's own entry is looked up the same way), and where the token count
    is read from (2.2.0: the ids_remove_padding keyword)."""
    markers = facts.get(MODULE, NO_FACTS).markers
    _conflicts(markers)
    keyed = markers.get("CudaGraphPiecewiseBackend.__call__.entry_key")
    read = markers.get("CudaGraphPiecewiseBackend.__call__.kwargs_read")
    if keyed == "token" and read == "ids_remove_padding":
        return Choice("token_keyed_by_ids", "entries keyed by token count, read from ids_remove_padding (2.2.0)")
    if keyed == "token" and read == "forward_meta":
        return Choice("token_keyed", "entries keyed by token count (2.2.x-2.4)")
    if keyed == "shape_and_mode" and read == "forward_meta":
        return Choice("shape_and_mode_keyed", "entries keyed by (shape, static prefill) (2.5 on)")
    raise ContractBroken(f"CudaGraphPiecewiseBackend.__call__ keys its entries in a way the plugin does not know "
                         f"(markers entry_key={keyed!r}, kwargs_read={read!r}), so it cannot tell a replay from a "
                         f"capture")


LOOKUPS = {"token_keyed_by_ids": _token_keyed_by_ids, "token_keyed": _token_keyed,
           "shape_and_mode_keyed": _shape_and_mode_keyed}


def build(cls: type, variant: Variant, settings: Settings) -> dict[str, object]:
    return {"__call__": _wrap_call(cls.__call__, LOOKUPS[variant], variant.line["output_buffers"]),
            "clear_graph": _wrap_clear_graph(cls.clear_graph)}


PATCH = Patch(
    name="capture_stream",
    group="capture_stream",
    module=MODULE,
    # Pass-through wrappers: the constructor and run_static_model (2.5's is_decode, ...) are FastDeploy's own.
    contract=Contract(
        cls="CudaGraphPiecewiseBackend", wraps=("__call__", "clear_graph"),
        names={
            ANY_VARIANT: ("CudaGraphPiecewiseBackend.concrete_size_entries",
                          "CudaGraphPiecewiseBackend.real_shape_to_captured_size",
                          "ConcreteSizeEntry.use_cudagraph", "ConcreteSizeEntry.captured", "ConcreteSizeEntry.cuda_graph",
                          "ConcreteSizeEntry.real_shape",
                          "ConcreteSizeEntry.output_buffers|ConcreteSizeEntry.output_buffer"),
            "token_keyed_by_ids": ("CudaGraphPiecewiseBackend.fd_config",),
            "token_keyed": ("CudaGraphPiecewiseBackend.fd_config", "ForwardMeta.ids_remove_padding"),
            "shape_and_mode_keyed": ("CudaGraphPiecewiseBackend.full_cuda_graph", "CudaGraphPiecewiseBackend.dy2st",
                                     "CudaGraphPiecewiseBackend.real_shape_to_captured_size_prefill",
                                     "ForwardMeta.ids_remove_padding", "ForwardMeta.exist_prefill"),
        },
        # read with getattr defaults, or on a path whose failure falls back to the capture scope (logged)
        tolerates=("CudaGraphPiecewiseBackend.real_bsz_to_captured_size", "CudaGraphPiecewiseBackend.speculative_decoding",
                   "CudaGraphPiecewiseBackend._decode_capture_index", "CudaGraphPiecewiseBackend.cuda_graph_manager",
                   "Dy2StCudaGraphManager.captured_batch_size", "ForwardMeta.real_bsz", "FDConfig.graph_opt_config",
                   "GraphOptimizationConfig.graph_opt_level")),
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
        "device synchronize), except a static (Dy2St) call, which replays in the capture scope as it captured: its "
        "graph pieces replay on the capture stream and its other ops (split mode's attention) must run there too. "
        "clear_graph drops the cached 'every reachable graph captured' answer."
    ),
    related_pr="FastDeploy PR #7344 (closed unmerged): same goal, but synchronized the device after every replay, "
    "hard-coded c10 offsets and leaked is_decode into the model forward.",
    removal_plan=(
        "Remove once FastDeploy captures on a dedicated stream with c10 kept in step (or Paddle's compat layer makes "
        "setCurrentCUDAStream and Paddle's stream one, Paddle PR #78652, everywhere) and orders replays by events."
    ),
    build=build,
    choose=choose,
    facts_from=(FORWARD_META_MODULE,),
    runtime=cuda_capture_missing,
)
