"""Stand-in XPUModelRunner of 2.4 at f83673da (2026-04-08): a ModelRunnerBase; capture_model only logs that XPU has no
graphs; _dummy_run(num_tokens, batch_size, in_capturing)."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase


class XPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        super().__init__(fd_config, device)

    def _dummy_run(self, num_tokens, batch_size, in_capturing: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, in_capturing=in_capturing)

    def capture_model(self) -> None:
        pass  # "XPU not support cuda graph currently"
