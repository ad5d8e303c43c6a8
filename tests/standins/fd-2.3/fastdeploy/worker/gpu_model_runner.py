"""Stand-in GPUModelRunner of 2.3 at 0df488c7 (2025-11-06): MTP capture warms size/2 requests (right for k=1
only) and skips size 1, after its two early exits (graphs off; cudagraph_only_prefill: prefill graphs by token count);
initialize_forward_meta(self) has no is_dummy_or_profile_run; _dummy_run has 7 parameters."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase, sot_warmup_guard


class GPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        super().__init__(fd_config, device)

    def _dummy_run(self, num_tokens, batch_size, expected_decode_len: int = 1, in_capturing: bool = False,
                   capture_prefill: bool = False, accept_all_drafts: bool = False, reject_all_drafts: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, expected_decode_len=expected_decode_len,
                     in_capturing=in_capturing, accept_all_drafts=accept_all_drafts)

    def initialize_forward_meta(self):
        self._agree_phase(self.fd_config.model_config.moe_phase)
        phase = self.fd_config.model_config.moe_phase.phase  # agreed: the target's MoE reads it here
        proposer = getattr(self, "proposer", None)  # as FastDeploy: the draft model's config copy (parallel_config)
        if self.speculative_decoding and proposer is not None:
            proposer.fd_config.parallel_config.moe_phase.phase = phase

    @sot_warmup_guard(True)
    def capture_model(self) -> None:
        if not self.use_cudagraph:  # as 0df488c7: graphs off, nothing captured
            return
        if self.fd_config.graph_opt_config.cudagraph_only_prefill:  # prefill graphs only, by token count
            for num_tokens in sorted(self.cudagraph_capture_sizes, reverse=True):
                self._dummy_run(num_tokens=num_tokens, batch_size=self.scheduler_config.max_num_seqs,
                                in_capturing=True, expected_decode_len=1, capture_prefill=True)
            return
        for batch_size in sorted(self.cudagraph_capture_sizes, reverse=True):
            if self.speculative_decoding and self.speculative_method == "mtp":
                if batch_size == 1:
                    continue
                assert batch_size % 2 == 0
                self._dummy_run(num_tokens=self.scheduler_config.max_num_batched_tokens,
                                batch_size=int(batch_size / 2), in_capturing=True, expected_decode_len=1)
            else:
                self._dummy_run(num_tokens=self.scheduler_config.max_num_batched_tokens,
                                batch_size=batch_size, in_capturing=True, expected_decode_len=1)
