"""When DeepEP's shared low-latency buffer is cleaned in mixed expert-parallel mode, and capture-time checks.

Rules (cuda-facts.md, DeepEP low-latency):
* normal (prefill) kernels dirty the buffer; it must be cleaned before the next low-latency kernel;
* the clean is COLLECTIVE (NVSHMEM barriers): every EP rank must clean at the same step or all hang;
* a clean recorded into a decode graph costs two barriers on every replay.
So the clean runs once, eagerly, at the agreed prefill->decode transition (or before every decode
step when the operator asks), never inside a graph. FastDeploy's own in-forward cleans are suppressed.
The double buffer flips on the host at every low-latency call, so a graph must contain an even number.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from . import deepep_agreement


class DeepEPProtocolError(RuntimeError):
    """A captured graph would replay DeepEP low-latency kernels incorrectly."""


class LowLatencyBufferProtocol:
    """Per-process (per EP rank) state of the mixed-mode clean protocol."""

    def __init__(self, clean: Callable[[], None], is_capturing: Callable[[], bool], clean_every_decode: bool = False) -> None:
        self._clean = clean
        self._is_capturing = is_capturing
        self.clean_every_decode = clean_every_decode
        self.phase: str | None = None  # None: normal kernels may have run (profile run) -> clean on first decode

    def on_step(self, phase: str | None) -> None:
        """Called once per step after the ranks agreed on the phase, before the step's forward."""
        if phase == "decode" and (self.phase != "decode" or self.clean_every_decode):
            if self._is_capturing():
                raise DeepEPProtocolError(
                    "DeepEP's low-latency buffer clean was reached while a CUDA graph is being captured; it is a "
                    "collective barrier and must run eagerly. This is a bug in the step order: report it."
                )
            self._clean()
        self.phase = phase


class _ThreadState(threading.local):
    suppress_inline_clean = 0
    audit: _CaptureAudit | None = None
    moe_layer: object = None  # the MoE layer whose forward runs now (names it in capture errors)


_state = _ThreadState()


def _suppress_inline_cleans() -> Iterator[None]:
    """FastDeploy's MoE forward cleans inline; inside this scope those cleans are skipped (the protocol owns them)."""
    _state.suppress_inline_clean += 1
    try:
        yield
    finally:
        _state.suppress_inline_clean -= 1


suppress_inline_cleans = contextmanager(_suppress_inline_cleans)  # by assignment: mutmut skips decorated functions


def _moe_forward(layer: object) -> Iterator[None]:
    """One MoE layer's forward: FastDeploy's inline cleans skipped, the layer remembered for capture errors."""
    outer, _state.moe_layer = _state.moe_layer, layer
    try:
        with suppress_inline_cleans():
            yield
    finally:
        _state.moe_layer = outer


moe_forward = contextmanager(_moe_forward)  # by assignment: mutmut skips decorated functions


def _layer_name() -> str:
    layer = _state.moe_layer
    if layer is None:
        return "outside any MoE layer"
    index = getattr(layer, "layer_idx", None)  # FastDeploy's FusedMoE.layer_idx
    return f"MoE layer {index} ({type(layer).__name__})" if index is not None else type(layer).__name__


class _NormalModeCaptures:
    """Set once by the runner gate: whether this deployment may capture normal-mode kernels (intranode with a
    fixed worst-case token count)."""

    allowed = False


normal_mode_captures = _NormalModeCaptures()


def check_normal_mode_call(kind: str, num_worst_tokens: int) -> None:
    """A DeepEP normal-mode (prefill) call while a graph is captured: refused before the capture ends, unless the
    gate allowed the capturable case and this runner passes DeepEP a worst-case token count."""
    if normal_mode_captures.allowed and num_worst_tokens > 0:
        return
    raise DeepEPProtocolError(
        f"{_layer_name()}: DeepEP normal-mode {kind} was reached while a CUDA graph is being captured. Normal-mode "
        f"kernels wait on the CPU for the received token count and cannot be captured (DeepEP #62); the capture "
        f"was discarded. The step's MoE phase was prefill inside a captured step. Fix: capture decode steps only "
        f"(cudagraph_only_prefill: false, full_cuda_graph: true), or, intranode, start FastDeploy with "
        f"--ep-prefill-use-worst-num-tokens and FD_USE_PFCC_DEEP_EP=1 (FastDeploy 2.6 or later)."
    )


def check_buffer_creation(what: str, is_capturing: bool) -> None:
    """A DeepEP buffer (or its low-latency RDMA area) allocated while a graph is captured: refused, never run."""
    if is_capturing:
        raise DeepEPProtocolError(
            f"{_layer_name()}: DeepEP {what} was reached while a CUDA graph is being captured; creating a DeepEP "
            f"buffer allocates and synchronizes every EP rank, which a graph cannot hold. The plugin creates the "
            f"buffer eagerly before the first capture: this creation comes from code that rebuilt or dropped it "
            f"after that (e.g. DeepEPBufferManager.clear_buffer between captures). Fix: recreate the buffer "
            f"(DeepEPBufferManager.recreate_buffer) before capture_model."
        )


def inline_cleans_suppressed() -> bool:
    return _state.suppress_inline_clean > 0


class _CaptureAudit:
    def __init__(self) -> None:
        self.low_latency_calls = 0
        self.unfinished_hooks: list[str] = []


def _capture_audit(graph_name: str) -> Iterator[None]:
    """Around one backend call that may capture: low-latency calls under capture must come in pairs, hooks called."""
    if _state.audit is not None:  # nested backends (draft inside target) share the outer audit
        yield
        return
    audit = _state.audit = _CaptureAudit()
    try:
        yield
    finally:
        _state.audit = None
    if audit.unfinished_hooks:
        raise DeepEPProtocolError(
            f"{graph_name}: DeepEP low-latency {', '.join(audit.unfinished_hooks)} returned a receive hook that was "
            f"not called in the same captured forward; the graph would lack the receive half. Call the hook "
            f"before the forward returns (FastDeploy's EPDecoderRunner does), or disable CUDA graphs."
        )
    if audit.low_latency_calls % 2:
        raise DeepEPProtocolError(
            f"{graph_name}: the captured forward made {audit.low_latency_calls} DeepEP low-latency calls, an odd "
            f"number. DeepEP flips its double buffer on the host at every call, so replays of this graph would use "
            f"the wrong half. Each MoE layer must dispatch and combine inside the same graph."
        )


capture_audit = contextmanager(_capture_audit)  # by assignment: mutmut skips decorated functions


def audit_active() -> bool:
    """True inside a backend call that may capture; eager DeepEP calls elsewhere need no further check."""
    return _state.audit is not None


def record_low_latency_call(kind: str, hook: object) -> object:
    """Count a low-latency call made under capture and return the hook to hand back (wrapped to see it called)."""
    audit = _state.audit
    if audit is None:
        return hook
    if hook is None:
        raise DeepEPProtocolError(
            f"DeepEP low-latency {kind} under CUDA graph capture must use async_finish=False, return_recv_hook=True "
            f"(send and receive kernels on the capture stream); it returned no receive hook."
        )
    audit.low_latency_calls += 1
    audit.unfinished_hooks.append(kind)

    def hook_then_mark() -> object:
        result = hook()
        audit.unfinished_hooks.remove(kind)
        return result

    return hook_then_mark


_protocol: LowLatencyBufferProtocol | None = None
_protocol_lock = threading.Lock()


def get_protocol(factory: Callable[[], LowLatencyBufferProtocol]) -> LowLatencyBufferProtocol:
    global _protocol
    with _protocol_lock:
        if _protocol is None:
            _protocol = factory()
        return _protocol


def reset_protocol() -> None:
    global _protocol, _engine
    with _protocol_lock:
        _protocol = None
        _engine = None
        normal_mode_captures.allowed = False
    deepep_agreement.reset_exchange()


_engine: object | None = None  # FastDeploy's DeepEPEngine, a process singleton (see deepep_engine_handle)


def remember_engine(engine: object) -> None:
    global _engine
    _engine = engine


def current_engine() -> object | None:
    """FastDeploy's DeepEP engine; None until FastDeploy built one (then nothing ran on the buffer yet)."""
    return _engine


def install_protocol(protocol: LowLatencyBufferProtocol | None) -> LowLatencyBufferProtocol | None:
    """Replace this process's protocol (a simulation of several EP ranks in one process); returns the previous one."""
    global _protocol
    with _protocol_lock:
        previous, _protocol = _protocol, protocol
        return previous
