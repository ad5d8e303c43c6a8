"""Stand-in GPUModelRunner of 2.2.0 at fa236927 (2025-09-08): capture_model has no MTP branch (batch = size, decode
length 1, for every size); _dummy_run(num_tokens, batch_size, expected_decode_len, in_capturing);
initialize_forward_meta(self); the agreed phase is written to parallel_config.moe_phase."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase


class GPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        super().__init__(fd_config, device)

    def _dummy_run(self, num_tokens, batch_size, expected_decode_len: int = 1, in_capturing: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, expected_decode_len=expected_decode_len,
                     in_capturing=in_capturing)

    def initialize_forward_meta(self):
        config = self.fd_config
        if config.parallel_config.use_ep and config.parallel_config.splitwise_role == "mixed":
            config.parallel_config.moe_phase.phase = "decode" if self.only_decode else "prefill"

    def capture_model(self) -> None:
        for batch_size in sorted(self.cudagraph_capture_sizes, reverse=True):
            self._dummy_run(num_tokens=self.parallel_config.max_num_batched_tokens, batch_size=batch_size,
                            in_capturing=True, expected_decode_len=1)
