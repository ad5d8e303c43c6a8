"""Stand-in GPUModelRunner of 2.4 at f83673da (2026-04-08): MTP capture warms int(size/(k+1)) requests with decode
length 2k+1 and accept_all_drafts (#5670); initialize_forward_meta(self, is_dummy_or_profile_run=False) (#5132);
_dummy_run has 7 parameters. Sizes are NOT scaled by FastDeploy on this line."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase, sot_warmup_guard


class GPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        super().__init__(fd_config, device)

    def _dummy_run(self, num_tokens, batch_size, expected_decode_len: int = 1, in_capturing: bool = False,
                   capture_prefill: bool = False, accept_all_drafts: bool = False, reject_all_drafts: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, expected_decode_len=expected_decode_len,
                     in_capturing=in_capturing, accept_all_drafts=accept_all_drafts)

    def initialize_forward_meta(self, is_dummy_or_profile_run=False):
        self._agree_phase()
        phase = self.fd_config.model_config.moe_phase.phase  # agreed: the target's MoE reads it here
        proposer = getattr(self, "proposer", None)  # as FastDeploy: the draft model's config copy (model_config)
        if self.speculative_decoding and proposer is not None:
            proposer.fd_config.model_config.moe_phase.phase = phase

    @sot_warmup_guard(True)
    def capture_model(self) -> None:
        self.fastdeploy_loop_ran = True  # tests check that FastDeploy's own loop runs on 2.4
        for capture_size in sorted(self.cudagraph_capture_sizes, reverse=True):
            if self.speculative_decoding and self.speculative_method == "mtp":
                self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(),
                                batch_size=int(capture_size / (self.speculative_config.num_speculative_tokens + 1)),
                                in_capturing=True,
                                expected_decode_len=self.speculative_config.num_speculative_tokens * 2 + 1,
                                accept_all_drafts=True)
            else:
                self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(), batch_size=capture_size,
                                in_capturing=True, expected_decode_len=1)
