"""The graph backend wrapper's per-call decision, unit by unit: the entry FastDeploy will pick and whether its path is
static (Dy2St), which captures a call made, and the variant chosen per line.

The lookups must compute what each line's CudaGraphPiecewiseBackend.__call__ computes (read from the real sources):
- 2.2.0 (fa236927) and 2.2.x-2.4 (2.3 at 0df488c7): the entry of real_shape_to_captured_size[tokens], the tokens read
  from the ids_remove_padding keyword (2.2.0) or forward_meta.ids_remove_padding; run_static_model when
  graph_opt_level > 0.
- 2.5 (f3fb7e03), 2.6 (7198b588), develop (c1b7c083): static_cudagraph_for_prefill = exist_prefill and not
  full_cuda_graph and dy2st; static_cudagraph_for_decode = not exist_prefill and full_cuda_graph and dy2st; the
  padding map is real_shape_to_captured_size_prefill for a static prefill, else real_shape_to_captured_size; the entry
  is keyed (padded shape, static prefill). With speculative_decoding and every real_bsz_to_captured_size value set,
  the shape is real_bsz_to_captured_size[running requests]: 2.6/develop take forward_meta.real_bsz where it is > 0,
  else (and always on 2.5) count them on the device.
"""
from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from fastdeploy_cudagraph_ext.fd_facts import ModuleFacts
from fastdeploy_cudagraph_ext.patch import patch_cudagraph_piecewise_backend as patch
from fastdeploy_cudagraph_ext.registry import ContractBroken


def entry(size: int, captured: bool = False, graph: object = None) -> SimpleNamespace:
    return SimpleNamespace(real_shape=size, captured=captured, cuda_graph=graph, use_cudagraph=True)


class Tokens:
    """A tensor with only a shape, as the lookup reads it."""

    def __init__(self, n: int) -> None:
        self.shape = [n]


# -- 2.2.0 to 2.4: entries keyed by padded token count ----------------------------------------------------------
def token_backend(graph_opt_level: int) -> SimpleNamespace:
    return SimpleNamespace(real_shape_to_captured_size={1: 1, 2: 2, 3: 4, 4: 4},
                           concrete_size_entries={4: entry(4), 2: entry(2), 1: entry(1)},
                           fd_config=SimpleNamespace(graph_opt_config=SimpleNamespace(graph_opt_level=graph_opt_level)))


@pytest.mark.parametrize("graph_opt_level, static", [(0, False), (1, True), (2, True)])
def test_token_keyed_lines_look_up_the_padded_entry_and_go_static_above_graph_opt_level_0(graph_opt_level, static):
    backend = token_backend(graph_opt_level)
    meta = SimpleNamespace(ids_remove_padding=Tokens(3))
    assert patch._token_keyed(backend, {"forward_meta": meta}) == (backend.concrete_size_entries[4], static, None)
    assert patch._token_keyed_by_ids(backend, {"ids_remove_padding": Tokens(3)}) == \
        (backend.concrete_size_entries[4], static, None)  # 2.2.0: the keyword itself


# -- 2.5 on: entries keyed by (padded shape, static prefill) ----------------------------------------------------
def mode_backend(full_cuda_graph: bool = True, dy2st: bool = False, **extra: object) -> SimpleNamespace:
    entries = {(s, p): entry(s) for s in (1, 2, 4, 8) for p in (False, True)}
    return SimpleNamespace(full_cuda_graph=full_cuda_graph, dy2st=dy2st, concrete_size_entries=entries,
                           real_shape_to_captured_size={1: 1, 2: 2, 3: 4, 4: 4},
                           real_shape_to_captured_size_prefill={1: 2, 2: 2, 3: 8, 4: 8}, **extra)


def mode_meta(tokens: int, exist_prefill: bool = False, **extra: object) -> dict:
    return {"forward_meta": SimpleNamespace(ids_remove_padding=Tokens(tokens), exist_prefill=exist_prefill, **extra)}


# (exist_prefill, full_cuda_graph, dy2st) -> (static prefill: the key's flag and the prefill padding, static path)
MODES = [
    ((False, False, False), (False, False)),
    ((False, False, True), (False, False)),  # split mode decode: dynamic graphs
    ((False, True, False), (False, False)),
    ((False, True, True), (False, True)),  # full-graph mode decode: static
    ((True, False, False), (False, False)),
    ((True, False, True), (True, True)),  # split mode prefill/mixed: static, prefill padding
    ((True, True, False), (False, False)),
    ((True, True, True), (False, False)),  # full-graph mode prefill: dynamic
]


@pytest.mark.parametrize("mode, expected", MODES)
def test_shape_and_mode_keyed_lines_pick_the_entry_and_path_fastdeploy_picks(mode, expected):
    exist_prefill, full_cuda_graph, dy2st = mode
    static_prefill, static = expected
    backend = mode_backend(full_cuda_graph, dy2st)
    padded = 8 if static_prefill else 4  # 3 tokens: prefill padding 8, decode padding 4
    assert patch._shape_and_mode_keyed(backend, mode_meta(3, exist_prefill)) == \
        (backend.concrete_size_entries[(padded, static_prefill)], static, None)


def speculative_backend(**extra: object) -> SimpleNamespace:
    # k=1: 1 running request -> 2 tokens, 2 -> 4; size 1 is unreachable
    return mode_backend(speculative_decoding=True, real_bsz_to_captured_size={1: 2, 2: 4}, **extra)


@pytest.mark.parametrize("real_bsz, size", [(1, 2), (2, 4)])
def test_a_running_request_count_on_the_host_picks_its_entry(real_bsz, size):
    backend = speculative_backend()
    assert patch._shape_and_mode_keyed(backend, mode_meta(1, real_bsz=real_bsz)) == \
        (backend.concrete_size_entries[(size, False)], False, None)


@pytest.mark.parametrize("backend", [
    mode_backend(speculative_decoding=False, real_bsz_to_captured_size={1: 2, 2: 4}),  # no speculative method
    mode_backend(speculative_decoding=True, real_bsz_to_captured_size={1: 2, 2: 0}),  # a value not set yet
    mode_backend(real_bsz_to_captured_size={1: 2, 2: 4}),  # a line without speculative_decoding
    mode_backend(speculative_decoding=True),  # a line without real_bsz_to_captured_size
], ids=["not-speculative", "map-incomplete", "no-speculative_decoding", "no-real_bsz_to_captured_size"])
def test_without_fastdeploys_speculative_branch_the_token_count_picks_the_entry(backend):
    # 3 tokens pad to 4; the speculative branch would have picked real_bsz_to_captured_size[1] = 2
    assert patch._shape_and_mode_keyed(backend, mode_meta(3, real_bsz=1)) == \
        (backend.concrete_size_entries[(4, False)], False, None)


@pytest.mark.parametrize("meta", [mode_meta(4), mode_meta(4, real_bsz=0)], ids=["2.5-no-real_bsz", "real_bsz-0"])
def test_running_requests_counted_on_the_device_give_every_reachable_entry_until_all_are_captured(meta):
    backend = speculative_backend()
    reachable = [backend.concrete_size_entries[(2, False)], backend.concrete_size_entries[(4, False)]]
    found, static, candidates = patch._shape_and_mode_keyed(backend, meta)
    assert (found, static) == (None, False) and sorted(candidates, key=lambda e: e.real_shape) == reachable
    reachable[0].cuda_graph = object()  # the call may still pick the other one: both stay candidates
    assert len(patch._shape_and_mode_keyed(backend, meta)[2]) == 2
    reachable[1].cuda_graph = object()
    assert patch._shape_and_mode_keyed(backend, meta) == (None, False, [])


def test_once_every_reachable_entry_is_captured_the_hot_path_reads_no_entry_again():
    """Entries only ever become captured until clear_graph (whose wrapper drops the answer): the replay path keeps it."""
    backend = speculative_backend()
    for e in backend.concrete_size_entries.values():
        e.cuda_graph = object()
    assert patch._shape_and_mode_keyed(backend, mode_meta(4)) == (None, False, [])
    backend.concrete_size_entries = {}  # any entry read now would be missing
    assert patch._shape_and_mode_keyed(backend, mode_meta(4)) == (None, False, [])
    assert patch._shape_and_mode_keyed(backend, mode_meta(4, exist_prefill=True)) == (None, False, [])


def test_static_entries_count_as_captured_by_their_captured_flag():
    """A Dy2St entry is captured when `captured` is set; its cuda_graph stays None (Paddle holds the graph)."""
    backend = speculative_backend(full_cuda_graph=True, dy2st=True)
    for e in backend.concrete_size_entries.values():
        e.captured = True
    assert patch._shape_and_mode_keyed(backend, mode_meta(4)) == (None, True, [])
    dynamic = speculative_backend()
    for e in dynamic.concrete_size_entries.values():
        e.captured = True  # not what a dynamic entry's capture sets
    assert len(patch._shape_and_mode_keyed(dynamic, mode_meta(4))[2]) == 2


# -- which entries a call captured -------------------------------------------------------------------------
@pytest.mark.parametrize("before, after, static, counted", [
    ([False, False], [(False, None), (False, "graph")], False, [2]),  # the second entry captured: only it
    ([True, False], [(False, "graph"), (False, "graph")], False, [2]),  # the first was captured before
    ([True], [(False, "graph")], False, []),  # a replay
    ([False], [(False, None)], False, []),  # a warmup that did not capture
    ([False], [(True, None)], True, [1]),  # a static capture: `captured` set, no cuda_graph
    ([False], [(True, None)], False, []),  # `captured` means nothing to a dynamic entry
], ids=["second-of-two", "first-before", "replay", "warmup", "static", "dynamic-ignores-captured"])
def test_a_call_counts_exactly_the_entries_it_captured(before, after, static, counted, caplog):
    entries = [entry(i + 1, captured, graph) for i, (captured, graph) in enumerate(after)]
    sizes = []
    with caplog.at_level(logging.WARNING, logger="fastdeploy_cudagraph_ext"):
        patch._log_lazy_captures(SimpleNamespace(), entries, static, before, sizes.append)
    assert sizes == counted
    assert caplog.text.count("while serving") == len(counted)


def test_an_entry_the_line_has_not_is_never_counted():
    sizes = []
    patch._log_lazy_captures(SimpleNamespace(), [None], False, [False], sizes.append)
    assert sizes == []


def test_a_capture_while_serving_is_logged_with_the_class_its_size_and_the_fix(caplog):
    class CudaGraphPiecewiseBackend:
        pass

    with caplog.at_level(logging.WARNING, logger="fastdeploy_cudagraph_ext"):
        patch._log_lazy_captures(CudaGraphPiecewiseBackend(), [entry(8, graph="graph")], False, [False], lambda s: None)
    assert caplog.messages == [
        "fastdeploy-cudagraph-ext: CudaGraphPiecewiseBackend captured a CUDA graph for size 8 while serving (outside "
        "capture_model): its warmup forwards ran only on ranks that saw this size; with expert parallelism their "
        "DeepEP collectives may have no partner on the other ranks. Capture every size at startup "
        "(cudagraph_capture_sizes)"]


# -- the variant per line and the conflict check ------------------------------------------------------------
def facts(**markers: str) -> dict[str, ModuleFacts]:
    names = {"entry_key": "CudaGraphPiecewiseBackend.__call__.entry_key",
             "kwargs_read": "CudaGraphPiecewiseBackend.__call__.kwargs_read",
             "own_capture_stream": "CudaGraphPiecewiseBackend.own_capture_stream",
             "synchronizes_after_replay": "CudaGraphPiecewiseBackend.synchronizes_after_replay"}
    return {patch.MODULE: ModuleFacts(markers={names[k]: v for k, v in markers.items()})}


NO_CONFLICT = {"own_capture_stream": "no", "synchronizes_after_replay": "no"}


@pytest.mark.parametrize("keyed, read, variant, reason", [
    ("token", "ids_remove_padding", "token_keyed_by_ids",
     "entries keyed by token count, read from ids_remove_padding (2.2.0)"),
    ("token", "forward_meta", "token_keyed", "entries keyed by token count (2.2.x-2.4)"),
    ("shape_and_mode", "forward_meta", "shape_and_mode_keyed", "entries keyed by (shape, static prefill) (2.5 on)"),
])
def test_the_variant_and_its_reason_follow_how_the_line_keys_its_entries(keyed, read, variant, reason):
    choice = patch.choose(facts(entry_key=keyed, kwargs_read=read, **NO_CONFLICT))
    assert (choice.variant, choice.reason) == (variant, reason)


@pytest.mark.parametrize("keyed, read", [("shape_and_mode", "ids_remove_padding"), ("other", "forward_meta")])
def test_a_keying_the_plugin_does_not_know_is_refused(keyed, read):
    with pytest.raises(ContractBroken, match="keys its entries in a way the plugin does not know"):
        patch.choose(facts(entry_key=keyed, kwargs_read=read, **NO_CONFLICT))


def test_a_backend_module_without_facts_is_refused_not_crashed():
    with pytest.raises(ContractBroken, match=r"cannot tell whether CudaGraphPiecewiseBackend already captures"):
        patch.choose({})


@pytest.mark.parametrize("missing", ["own_capture_stream", "synchronizes_after_replay"])
def test_one_conflict_marker_missing_is_enough_to_refuse(missing):
    markers = {**NO_CONFLICT, "entry_key": "token", "kwargs_read": "forward_meta"}
    del markers[missing]
    with pytest.raises(ContractBroken) as refused:
        patch.choose(facts(**markers))
    assert str(refused.value) == (
        "cannot tell whether CudaGraphPiecewiseBackend already captures on its own stream or synchronizes after "
        "replays (markers own_capture_stream/synchronizes_after_replay absent)")


# -- the runtime check: a process without CUDA streams ------------------------------------------------------
def test_without_cuda_the_capture_groups_say_why_exactly(no_cuda):
    assert patch.cuda_capture_missing() == (
        "Paddle is not compiled with CUDA (e.g. an XPU build): graphs captured through this backend are not CUDA "
        "graphs and FastDeploy's own capture runs as is")


def test_without_paddle_the_capture_groups_say_why_exactly(no_cuda, monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle", None)  # import paddle raises ImportError
    assert patch.cuda_capture_missing() == "Paddle is not importable in this process, so no CUDA stream to capture on"
