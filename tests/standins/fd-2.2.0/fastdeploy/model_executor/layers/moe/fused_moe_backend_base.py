"""Stand-in MoEMethodBase of 2.2.0 at fa236927 (2025-09-08): apply(layer, x, gate); in mixed mode every MoE layer cleans
DeepEP's low-latency buffer inline; the phase is read from parallel_config."""
from fastdeploy.model_executor.layers.moe.ep import EPDecoderRunner, EPPrefillRunner


class MoEMethodBase:
    def __init__(self, fd_config):
        args = dict(top_k=2, hidden=8, num_experts=4, splitwise_role=fd_config.parallel_config.splitwise_role,
                    moe_phase=None, num_max_dispatch_tokens_per_rank=fd_config.model_config.num_max_dispatch_tokens_per_rank)
        self.ep_prefill_runner = EPPrefillRunner(**args)
        self.ep_decoder_runner = EPDecoderRunner(**args)

    def apply(self, layer, x, gate):
        mixed = layer.fd_config.parallel_config.splitwise_role == "mixed"
        if layer.fd_config.parallel_config.moe_phase.phase == "prefill":
            if mixed:
                self.ep_prefill_runner.clean_low_latency_buffer()
            return self.ep_prefill_runner.combine(self.ep_prefill_runner.dispatch(x, None, None), None, None)
        if mixed:
            self.ep_decoder_runner.clean_low_latency_buffer()
        recv, _, handle = self.ep_decoder_runner.dispatch(x, None, None)
        return self.ep_decoder_runner.combine(recv, None, None, handle)
