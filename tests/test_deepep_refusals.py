"""DeepEP failures refused at capture, before capture and before the first collective (issue 18, items 2-4), driven
through the patched stand-ins: a capture whose phase is prefill, a draft model whose phase drifts, a buffer created
lazily, and EP ranks that disagree. Each fails with its message, before any rank waits on another."""
import dataclasses
import importlib
import threading
from types import SimpleNamespace

import paddle
import pytest
from deep_ep_sim import CURRENT
from fake_cuda import FakeGraph
from deep_ep_sim import Collective
from test_deepep_protocol import MixedEPWorker, SimRank, one_rank_group, rank_group  # noqa: F401 - fixtures

import fastdeploy_cudagraph_ext as ext
from fastdeploy_cudagraph_ext import deepep_agreement, deepep_protocol
from fastdeploy_cudagraph_ext.deepep_agreement import RankDisagreement, RankPlan, agree
from fastdeploy_cudagraph_ext.deepep_agreement import paddle_all_gather  # before one_rank_group replaces it
from fastdeploy_cudagraph_ext.deepep_protocol import DeepEPProtocolError

pytestmark = pytest.mark.standin


def prefill_capture(worker, tokens=4):
    """A step whose agreed phase is prefill, run through the graph backend (cudagraph_only_prefill, split mode)."""
    worker.runner.only_decode = False
    worker.runner.initialize_forward_meta()
    return worker.backend(forward_meta=SimpleNamespace(ids_remove_padding=paddle.zeros([tokens]), exist_prefill=True))


def entry(worker, size=4):
    entries = worker.backend.concrete_size_entries
    return entries.get(size) or entries.get((size, False))


# ---- item 2: normal-mode kernels inside a capture ----------------------------------------------------------------


def test_a_normal_mode_call_inside_a_capture_is_refused_and_the_capture_discarded(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    with pytest.raises(DeepEPProtocolError) as error:
        prefill_capture(worker)
    assert str(error.value).startswith(
        "MoE layer 0 (SimpleNamespace): DeepEP normal-mode dispatch was reached while a CUDA graph is being captured. "
        "Normal-mode kernels wait on the CPU for the received token count and cannot be captured (DeepEP #62); the "
        "capture was discarded.")
    assert "Fix: capture decode steps only (cudagraph_only_prefill: false, full_cuda_graph: true)" in str(error.value)
    assert ("discard_capture", "capture") in runtime.device.log and entry(worker).cuda_graph is None
    assert not runtime.device.is_capturing()


def test_every_rank_refuses_a_prefill_capture_before_any_collective(rank_group, fd_era):
    """Four EP ranks, each its own runner, device and graph backend: all take the same (agreed) prefill step into
    a capture, and each stops in its first MoE layer, before a barrier or a low-latency kernel."""
    collective = Collective(4)
    ranks = [SimRank(r, fd_era, rank_group, collective) for r in range(4)]
    for rank in ranks:
        with rank.running(), pytest.raises(DeepEPProtocolError, match="MoE layer 0 .*: DeepEP normal-mode dispatch"):
            prefill_capture(rank.worker)
        assert ("discard_capture", "capture") in rank.device.log
    assert collective.barriers == [0, 0, 0, 0]
    assert all(buffer.low_latency_kernels == [] for buffer in rank_group.buffers)


def test_the_capturable_case_captures_normal_mode_kernels(fd_era, runtime, monkeypatch):
    if fd_era != "develop":
        pytest.skip("FastDeploy passes num_worst_tokens from 2.6 on (the develop stand-in models it)")
    monkeypatch.setenv("FD_USE_PFCC_DEEP_EP", "1")
    ext.activate()

    def capturable(fd_config):
        fd_config.graph_opt_config.graph_opt_level, fd_config.graph_opt_config.full_cuda_graph = 1, False
        fd_config.parallel_config.ep_prefill_use_worst_num_tokens = True

    worker = MixedEPWorker(fd_era, setup=capturable)
    worker.moe.ep_prefill_runner.num_worst_tokens = 4096  # what FastDeploy computes with the flag on
    prefill_capture(worker)
    assert "normal_dispatch" in entry(worker).cuda_graph.kernel_names()


def test_the_capturable_case_still_refuses_a_runner_without_worst_tokens(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era)
    deepep_protocol.normal_mode_captures.allowed = True  # as if the gate allowed it
    with pytest.raises(DeepEPProtocolError, match="normal-mode dispatch was reached while a CUDA graph"):
        prefill_capture(worker)  # num_worst_tokens 0: DeepEP would wait on the CPU


def with_draft_model(worker):
    """An MTP draft model: FastDeploy deep-copies the config, so its MoE reads its own phase (prefill at start)."""
    from fastdeploy.config import MoEPhase

    target = worker.fd_config
    draft = SimpleNamespace(
        model_config=SimpleNamespace(moe_phase=MoEPhase("prefill"),
                                     moe_layer_start_index=target.model_config.moe_layer_start_index),
        parallel_config=SimpleNamespace(moe_phase=MoEPhase("prefill")),
        scheduler_config=target.scheduler_config)
    worker.runner.proposer = SimpleNamespace(fd_config=draft)
    worker.runner.speculative_decoding = True
    worker.layers.append(SimpleNamespace(fd_config=draft, layer_idx=61))  # the draft model's MoE layer
    return draft


def test_the_draft_model_gets_the_agreed_phase_where_the_line_lets_it_drift(fd_era, runtime):
    """2.3 writes the draft's phase to parallel_config while its MoE reads model_config: without the plugin's
    write, decode captures would hold the draft's normal-mode kernels."""
    ext.activate()
    worker = MixedEPWorker(fd_era)
    draft = with_draft_model(worker)
    worker.step(decode=False)
    worker.step(decode=True)  # capture: target and draft layers both low-latency
    assert draft.model_config.moe_phase.phase == "decode"
    assert set(entry(worker).cuda_graph.kernel_names()) == {"ll_dispatch_send", "ll_dispatch_recv",
                                                            "ll_combine_send", "ll_combine_recv"}
    worker.step(decode=False)
    assert draft.model_config.moe_phase.phase == "prefill"  # and back: never low-latency with a prefill batch


# ---- item 3: the buffer, before any capture -------------------------------------------------------------------


def no_warmups(fd_config):
    fd_config.graph_opt_config.cudagraph_num_of_warmups = 0  # the first forward of a size is its capture


def test_a_dropped_buffer_is_created_and_cleaned_eagerly_before_the_first_capture(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era, setup=no_warmups)
    engine = worker.moe.ep_decoder_runner.ep_engine
    engine.clear_deep_ep_buffer()  # e.g. FastDeploy's RL flow dropped it (DeepEPBufferManager.clear_buffer)
    worker.step(decode=True)  # the worker's first decode step captures size 4
    assert engine.creations == 1 and worker.buffer.collective.barriers == [2]  # created, then cleaned, eagerly
    assert "ll_clean" not in entry(worker).cuda_graph.kernel_names()


def test_a_buffer_creation_reached_inside_a_capture_is_refused(fd_era, runtime):
    ext.activate()
    worker = MixedEPWorker(fd_era, setup=no_warmups)
    engine = worker.moe.ep_decoder_runner.ep_engine
    worker.step(decode=False)
    worker.step(decode=True, tokens=4)
    engine.clear_deep_ep_buffer()  # dropped between captures, no phase transition since
    with pytest.raises(DeepEPProtocolError) as error:
        worker.step(decode=True, tokens=2)  # captures size 2: the first low-latency call would create it
    assert str(error.value).startswith(
        "MoE layer 0 (SimpleNamespace): DeepEP buffer creation (DeepEPEngine.create_deep_ep_buffer) was reached "
        "while a CUDA graph is being captured")
    assert "Fix: recreate the buffer (DeepEPBufferManager.recreate_buffer) before capture_model" in str(error.value)
    assert engine.creations == 0 and entry(worker, 2).cuda_graph is None


def test_an_engine_built_inside_a_capture_is_refused(fd_era, runtime):
    ext.activate()
    ep = importlib.import_module("fastdeploy.model_executor.layers.moe.ep")  # patched as FastDeploy imports it
    with deepep_protocol.capture_audit("toy"):
        FakeGraph(runtime.device).capture_begin()
        with pytest.raises(DeepEPProtocolError, match=r"outside any MoE layer: DeepEP engine construction "
                                                      r"\(DeepEPEngine.__init__\) was reached while a CUDA graph"):
            ep.DeepEPEngine(128, 8, 4, 8, 0, "mixed", None)
    assert deepep_protocol.current_engine() is None


# ---- item 4: EP ranks agree before DeepEP's first collective -----------------------------------------------------


BASE = RankPlan(capture_sizes=(8, 4, 2), num_speculative_tokens=1, num_max_dispatch_tokens_per_rank=128,
                hidden_size=7168, num_experts=256, nvshmem_qp_depth="1024", plugin_version="0.1.0",
                fastdeploy_version="2.6.0")
DIFFERENT = {"capture_sizes": (8, 2, 4), "num_speculative_tokens": 2, "num_max_dispatch_tokens_per_rank": 256,
             "hidden_size": 4096, "num_experts": 288, "nvshmem_qp_depth": "unset", "plugin_version": "0.2.0",
             "fastdeploy_version": "2.5.0"}


class ThreadedGroup:
    """An EP group of threads: all_gather_object waits for every rank (a rank that never arrives times out)."""

    def __init__(self, ranks):
        self.barrier = threading.Barrier(ranks, timeout=20)
        self.slots = [None] * ranks

    def all_gather(self, rank):
        def gather(plan):
            self.slots[rank] = plan
            self.barrier.wait()
            return list(self.slots)
        return gather


def run_ranks(plans):
    group, outcomes = ThreadedGroup(len(plans)), [None] * len(plans)

    def rank(r):
        try:
            agree(plans[r], group.all_gather(r))
            outcomes[r] = "agreed"
        except RankDisagreement as error:
            outcomes[r] = str(error)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a rank hangs"
    return outcomes


@pytest.mark.parametrize("field", list(DIFFERENT))
def test_ranks_that_differ_in_any_value_all_stop_with_one_message(field):
    odd = dataclasses.replace(BASE, **{field: DIFFERENT[field]})
    outcomes = run_ranks([BASE, BASE, odd, BASE])
    assert len(set(outcomes)) == 1, outcomes  # every rank stops, with the same message
    shown = lambda v: repr(list(v) if isinstance(v, tuple) else v)
    assert f"{field}: ranks 0, 1, 3 {shown(getattr(BASE, field))}; rank 2 {shown(DIFFERENT[field])}" in outcomes[0]
    assert outcomes[0].startswith("fastdeploy-cudagraph-ext stops every EP rank before DeepEP's first collective: "
                                  "the 4 ranks disagree")
    assert "Fix: " in outcomes[0] and deepep_agreement._FIXES[field] in outcomes[0]


def test_ranks_that_agree_all_go_on():
    assert run_ranks([BASE] * 4) == ["agreed"] * 4


@pytest.mark.parametrize("field", list(DIFFERENT))
def test_the_worker_exchanges_its_plan_once_before_deepep_builds_its_buffer(fd_era, runtime, monkeypatch, field):
    """Rank 0 is this worker (runner gate, then FastDeploy's MoE layers build the engine); rank 1 differs."""
    sent = []

    def peer_that_differs(group):
        def gather(plan):
            sent.append((group, plan))
            return [plan, {**plan, field: DIFFERENT[field]}]
        return gather

    monkeypatch.setattr(deepep_agreement, "paddle_all_gather", peer_that_differs)
    monkeypatch.setenv("NVSHMEM_QP_DEPTH", "1024")
    ext.activate()
    with pytest.raises(RankDisagreement) as error:
        MixedEPWorker(fd_era)
    (group, plan), = sent  # once, through FastDeploy's EP group, before the engine's buffer exists
    shown = repr(list(DIFFERENT[field]) if isinstance(DIFFERENT[field], tuple) else DIFFERENT[field])
    mine = plan[field]
    assert f"{field}: rank 0 {repr(list(mine) if isinstance(mine, tuple) else mine)}; rank 1 {shown}" in str(error.value)
    assert deepep_protocol.current_engine() is None and CURRENT["buffer"].collective.barriers == [0]
    assert group is not None and group.ranks == list(range(8))
    assert plan == {"capture_sizes": (4, 2, 1), "num_speculative_tokens": 0, "num_max_dispatch_tokens_per_rank": 128,
                    "hidden_size": 8, "num_experts": 4, "nvshmem_qp_depth": "1024", "plugin_version": ext.__version__,
                    "fastdeploy_version": plan["fastdeploy_version"]}


def test_the_exchange_runs_once_even_when_the_engine_is_built_again(fd_era, runtime, monkeypatch):
    calls = []
    monkeypatch.setattr(deepep_agreement, "paddle_all_gather", lambda group: lambda plan: calls.append(1) or [plan])
    ext.activate()
    worker = MixedEPWorker(fd_era)
    worker.step(decode=False)
    worker.step(decode=True)
    moe_base = importlib.import_module("fastdeploy.model_executor.layers.moe.fused_moe_backend_base")
    moe_base.MoEMethodBase(worker.fd_config)  # more MoE layers: FastDeploy's singleton engine, built once
    assert calls == [1]


def test_the_exchange_runs_once_however_often_it_is_made_ready():
    """A second ready() (an engine FastDeploy builds again, e.g. after clear_deep_ep_buffer) exchanges nothing."""
    sent = []
    exchange = deepep_agreement._Exchange()
    exchange.engine = {}
    exchange.all_gather = lambda plan: sent.append(plan) or [plan]
    exchange.ready()  # the deployment is not known yet (the runner gate has not run): nothing to exchange
    exchange.deployment = lambda: dataclasses.asdict(BASE)
    exchange.all_gather = None
    exchange.ready()  # the gather is not known yet: nothing to exchange
    exchange.all_gather = lambda plan: sent.append(plan) or [plan]
    exchange.ready()
    exchange.ready()
    assert sent == [dataclasses.asdict(BASE)]


def test_the_plan_goes_through_paddles_all_gather_object_over_fastdeploys_group(monkeypatch):
    """Called as paddle.distributed.all_gather_object(object_list, obj, group=None) takes it (paddle 3.3.1)."""
    import inspect

    import paddle.distributed as dist

    real = inspect.signature(dist.all_gather_object)
    group = object()

    def all_gather_object(*args, **kwargs):
        bound = real.bind(*args, **kwargs).arguments
        assert bound["group"] is group
        bound["object_list"].extend([bound["obj"], {"rank": 1}])

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    assert paddle_all_gather(group)({"rank": 0}) == [{"rank": 0}, {"rank": 1}]


def test_two_fields_that_differ_are_named_in_one_message_with_both_fixes():
    odd = dataclasses.replace(BASE, hidden_size=4096, nvshmem_qp_depth="unset")
    assert deepep_agreement.disagreement([dataclasses.asdict(BASE), dataclasses.asdict(odd)]) == (
        "fastdeploy-cudagraph-ext stops every EP rank before DeepEP's first collective: the 2 ranks disagree, and "
        "DeepEP would hang all of them (DeepEP #208). hidden_size: rank 0 7168; rank 1 4096 | nvshmem_qp_depth: "
        "rank 0 '1024'; rank 1 'unset'. Fix: serve the same model on every rank; set the same NVSHMEM_QP_DEPTH in "
        "every node's environment.")


def test_a_rank_plan_reads_what_the_worker_runs(monkeypatch):
    from fastdeploy_cudagraph_ext import doctor
    from fastdeploy_cudagraph_ext.patch.patch_gpu_model_runner_step import _rank_plan_of

    monkeypatch.setattr(doctor, "fastdeploy_version", lambda: None)  # no installed FastDeploy to name
    graph = SimpleNamespace(use_cudagraph=True, cudagraph_capture_sizes=[2, 8, 4])
    fd_config = SimpleNamespace(graph_opt_config=graph, model_config=SimpleNamespace(hidden_size="7168"))
    assert _rank_plan_of(fd_config, 1, None)() == {
        "capture_sizes": (8, 4, 2), "num_speculative_tokens": 1, "hidden_size": 7168, "nvshmem_qp_depth": "unset",
        "plugin_version": ext.__version__, "fastdeploy_version": "unknown"}
    graph.use_cudagraph = False  # graphs off: no sizes, whatever the config lists
    assert _rank_plan_of(fd_config, 1, 1024)()["capture_sizes"] == ()
    assert _rank_plan_of(fd_config, 1, 1024)()["nvshmem_qp_depth"] == "1024"
