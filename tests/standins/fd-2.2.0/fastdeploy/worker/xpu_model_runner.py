"""Stand-in XPUModelRunner of 2.2.0 at fa236927 (2025-09-08): a ModelRunnerBase; capture_model captures no graphs;
_dummy_run(num_tokens, batch_size, in_capturing)."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase


class XPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, rank: int, local_rank: int):
        super().__init__(fd_config, device)

    def _dummy_run(self, num_tokens, batch_size, in_capturing: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, in_capturing=in_capturing)

    def capture_model(self) -> None:
        pass  # "XPU not support cuda graph currently"
