"""GraphOptBackend.__call__: count the decode steps FastDeploy runs eagerly, by reason (metrics.py).

FastDeploy decides there whether a forward reaches the graph backend (read from the real sources of every line:
`use_cudagraph` off -> `runnable`; `step_use_cudagraph` false, a prefill in the batch (2.5 on: `exist_prefill`), or
more tokens than the largest captured size (2.2.0: `max_captre_batch`, 2.2.x-2.4: `max_captre_size` or
`cudagraph_switch_threshold`, 2.5 on: `max_captre_size`) -> eager). The thresholds differ per line, so the
reason is read after FastDeploy's call, only for a forward that did not reach the graph backend (whose wrapper
notes the size it replayed, counted here once the step ends, and counts its own eager runs): graphs off, a prefill
in the batch, or over the largest size.
"""
from __future__ import annotations

import functools
from typing import Callable

from ..flags import Settings
from ..metrics import GRAPHS_OFF, OVER_LARGEST_SIZE, PREFILL_OR_MIXED, STATS
from ..registry import ANY_VARIANT, Contract, Patch
from .patch_cudagraph_piecewise_backend import cuda_capture_missing

MODULE = "fastdeploy.model_executor.graph_optimization.graph_optimization_backend"
FORWARD_META_MODULE = "fastdeploy.model_executor.forward_meta"


def eager_reason(backend: object, meta: object) -> str:
    """Why FastDeploy ran this forward without the graph backend."""
    if not backend.fd_config.graph_opt_config.use_cudagraph:
        return GRAPHS_OFF
    prefill = getattr(meta, "exist_prefill", None)
    if prefill or (prefill is None and not meta.step_use_cudagraph):  # 2.2.0: step_use_cudagraph is off for prefill
        return PREFILL_OR_MIXED
    if not meta.step_use_cudagraph:  # the runner turned graphs off for a decode step (cudagraph_only_prefill, ...)
        return GRAPHS_OFF
    return OVER_LARGEST_SIZE


def _wrap_call(original: Callable) -> Callable:
    @functools.wraps(original)
    def __call__(self: object, **kwargs: object) -> object:
        meta = kwargs["forward_meta"]
        tokens = meta.ids_remove_padding.shape[0]
        if not tokens:  # an idle rank's empty forward is no step (FastDeploy counts "only the actual load" too)
            return original(self, **kwargs)
        STATS.begin_step(tokens)
        result = original(self, **kwargs)
        STATS.end_step(eager_reason, self, meta)
        return result

    return __call__


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"__call__": _wrap_call(cls.__call__)}


PATCH = Patch(
    name="decode_step_metrics",
    group="capture_stream",
    module=MODULE,
    # Pass-through: FastDeploy's __call__ takes **kwargs on every line; forward_meta is read from them.
    contract=Contract(cls="GraphOptBackend", wraps=("__call__",),
                      names={ANY_VARIANT: ("GraphOptBackend.fd_config", "ForwardMeta.ids_remove_padding",
                                           "ForwardMeta.step_use_cudagraph")},
                      # 2.2.0's ForwardMeta has no exist_prefill (read with a default); FDConfig's fields are set
                      # from its args, where no source fact sees them (as in fd_config.CONFIG_READS)
                      tolerates=("ForwardMeta.exist_prefill", "FDConfig.graph_opt_config",
                                 "GraphOptimizationConfig.use_cudagraph")),
    why=(
        "FastDeploy runs a decode step eagerly, silently, when the runner turned graphs off for the step, a prefill "
        "is in the batch or the batch is over the largest captured size; operators cannot see how many steps "
        "missed their graphs, nor why."
    ),
    how=(
        "Wraps __call__: notes the forward's real token count, runs FastDeploy's call unchanged, then counts the "
        "step in metrics.py: one replay of the size the graph backend's wrapper noted (with its padding), or, when "
        "the forward did not reach the graph backend, one eager decode step with its reason (graphs off, prefill "
        "or mixed batch, over the largest size)."
    ),
    related_pr="None upstream: FastDeploy's GraphOptBackend keeps only debug counters (_debug_count_cudagraph_replay, "
    "develop) and logs them at debug level.",
    removal_plan="Remove once FastDeploy exports its own CUDA graph coverage metrics.",
    build=build,
    facts_from=(FORWARD_META_MODULE,),
    # its group's other member, capture_stream, is not needed without CUDA; counts without replays would mislead
    runtime=cuda_capture_missing,
)
