"""Stand-in XPUModelRunner: a stub before 2026; develop's MTP capture as the XPU PRs wrote it (k taken as 0)."""
from fastdeploy import ERA
from fastdeploy.worker.gpu_model_runner import GPUModelRunner, sot_warmup_guard

if ERA == "2.3":

    class XPUModelRunner:
        def capture_model(self) -> None:
            pass  # "XPU not support cuda graph currently"

else:

    class XPUModelRunner(GPUModelRunner):
        @sot_warmup_guard(True)
        def capture_model(self) -> None:
            if self.graph_opt_config.cudagraph_only_prefill:
                for size in sorted(self.cudagraph_capture_sizes, reverse=True):
                    self._dummy_run(num_tokens=size, batch_size=self.scheduler_config.max_num_seqs,
                                    in_capturing=True, capture_prefill=True)
                return
            num_speculative_tokens = 0  # the review finding on PR #7761
            for size in sorted(self.cudagraph_capture_sizes, reverse=True):
                self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(),
                                batch_size=int(size / (num_speculative_tokens + 1)), in_capturing=True,
                                expected_decode_len=(num_speculative_tokens + 1) * 2)
