"""Stand-in GPUModelRunner of develop at e53f5184 (2026-04-15): MTP capture warms int(size/(k+1)) requests with
decode length (k+1)*2 and accept_all_drafts; initialize_forward_meta(self, is_dummy_or_profile_run=False)."""
from fastdeploy.worker.model_runner_base import ModelRunnerBase, sot_warmup_guard


class GPUModelRunner(ModelRunnerBase):
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        super().__init__(fd_config, device)
        self.fastdeploy_loop_ran = False  # tests check that FastDeploy's own loop runs on develop

    def _dummy_run(self, num_tokens, batch_size, expected_decode_len: int = 1, in_capturing: bool = False,
                   capture_prefill: bool = False, accept_all_drafts: bool = False, reject_all_drafts: bool = False):
        self._record(num_tokens=num_tokens, batch_size=batch_size, expected_decode_len=expected_decode_len,
                     in_capturing=in_capturing, accept_all_drafts=accept_all_drafts)

    def initialize_forward_meta(self, is_dummy_or_profile_run=False):
        self._agree_phase(self.fd_config.model_config.moe_phase)
        phase = self.fd_config.model_config.moe_phase.phase  # agreed: the target's MoE reads it here
        proposer = getattr(self, "proposer", None)  # as FastDeploy: the draft model's config copy (model_config)
        if self.speculative_decoding and proposer is not None:
            proposer.fd_config.model_config.moe_phase.phase = phase

    @sot_warmup_guard(True)
    def capture_model(self) -> None:
        if not self.use_cudagraph:  # as e53f5184: graphs off, nothing captured
            return
        self.fastdeploy_loop_ran = True
        k = self.speculative_config.num_speculative_tokens
        if self.graph_opt_config.cudagraph_only_prefill:  # prefill graphs only (the MoE phase is prefill)
            for num_tokens in sorted(self.cudagraph_capture_sizes, reverse=True):
                self._dummy_run(num_tokens=num_tokens, batch_size=self.scheduler_config.max_num_seqs,
                                in_capturing=True, expected_decode_len=1, capture_prefill=True)
            return
        for capture_size in sorted(self.cudagraph_capture_sizes, reverse=True):
            if self.speculative_decoding and self.speculative_method == "mtp":
                self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(),
                                batch_size=int(capture_size / (self.speculative_config.num_speculative_tokens + 1)),
                                in_capturing=True, expected_decode_len=(k + 1) * 2, accept_all_drafts=True)
            else:
                self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(), batch_size=capture_size,
                                in_capturing=True, expected_decode_len=1)

    @sot_warmup_guard(True)
    def capture_model_prefill_and_mixed(self) -> None:
        """Static split-graph mode: prefill/mixed steps captured by token count (capture_prefill)."""
        for capture_size in sorted(self.graph_opt_config.cudagraph_capture_sizes_prefill, reverse=True):
            self._dummy_run(num_tokens=capture_size, batch_size=1, in_capturing=True, expected_decode_len=1,
                            capture_prefill=True)
