"""Stand-in XPUModelRunner of develop at e53f5184 (2026-04-15; graphs since #6152): a ModelRunnerBase (not a GPUModelRunner);
capture_model warms every size with batch_size = size and decode length 1 (no MTP branch, no
sot_warmup_guard); _dummy_run(num_tokens, batch_size, expected_decode_len=1, in_capturing=False)."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase


class XPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        super().__init__(fd_config, device)

    def _dummy_run(self, num_tokens, batch_size, expected_decode_len: int = 1, in_capturing: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, expected_decode_len=expected_decode_len,
                     in_capturing=in_capturing)

    def capture_model(self) -> None:
        expected_decode_len = 1
        for batch_size in sorted(self.cudagraph_capture_sizes.copy(), reverse=True):
            self._dummy_run(num_tokens=self.scheduler_config.max_num_batched_tokens, batch_size=batch_size,
                            expected_decode_len=expected_decode_len, in_capturing=True)
