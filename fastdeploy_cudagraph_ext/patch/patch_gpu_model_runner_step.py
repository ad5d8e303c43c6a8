"""GPUModelRunner.initialize_forward_meta: clean DeepEP's low-latency buffer once, eagerly, at prefill->decode."""
from __future__ import annotations

import functools
from typing import Callable

from .. import deepep_protocol
from ..fd_config import is_mixed_expert_parallel, moe_phase
from ..flags import Settings
from ..metrics import STATS
from ..registry import Contract, Patch
from ..stream_policy import get_policy

MODULE = "fastdeploy.worker.gpu_model_runner"


def clean_through_fastdeploy() -> None:
    """Clean through FastDeploy's engine; no engine yet means nothing ran on the buffer."""
    engine = deepep_protocol.current_engine()
    if engine is not None:
        with get_policy().eager_extension_scope():
            engine.clean_low_latency_buffer()
        STATS.deepep_cleaned()


def _new_protocol(settings: Settings) -> deepep_protocol.LowLatencyBufferProtocol:
    return deepep_protocol.LowLatencyBufferProtocol(
        clean=clean_through_fastdeploy,
        is_capturing=lambda: get_policy().device.is_capturing(),
        clean_every_decode=settings.clean_every_decode,
    )


def _wrap(original: Callable, settings: Settings) -> Callable:
    new_protocol = functools.partial(_new_protocol, settings)

    @functools.wraps(original)
    def initialize_forward_meta(self: object, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)  # agrees the phase across EP ranks and sets moe_phase
        if is_mixed_expert_parallel(self.fd_config):
            deepep_protocol.get_protocol(new_protocol).on_step(moe_phase(self.fd_config))
        return result

    return initialize_forward_meta


def build(cls: type, variant: str, settings: Settings) -> dict[str, object]:
    return {"initialize_forward_meta": _wrap(cls.initialize_forward_meta, settings)}


PATCH = Patch(
    name="deepep_transition_clean",
    group="deepep_mixed",
    module=MODULE,
    # Pass-through: 2.4 added is_dummy_or_profile_run; the wrapper reads only the agreed phase afterwards.
    contract=Contract(cls="GPUModelRunner", wraps=("initialize_forward_meta",)),
    why=(
        "In mixed mode one DeepEP buffer serves normal (prefill) and low-latency (decode) kernels; it must be "
        "cleaned after normal kernels and before the next low-latency kernel, and the clean is a collective "
        "barrier. FastDeploy cleans inside every forward, so the barrier is recorded into every decode graph."
    ),
    how=(
        "Wraps initialize_forward_meta: after FastDeploy agreed the step's MoE phase across EP ranks, the clean "
        "runs once, eagerly, on every rank, when the phase turns prefill->decode (or before every decode step with "
        "FD_CUDAGRAPH_EXT_CLEAN_EVERY_DECODE=1). Idle ranks take the same step decision, so they clean too."
    ),
    related_pr="FastDeploy PR #7344 (closed) called DeepEPBufferManager.clean_low_latency_buffer, which no release defines.",
    removal_plan="Remove once FastDeploy cleans at the phase transition instead of inside the MoE forward.",
    build=build,
)
