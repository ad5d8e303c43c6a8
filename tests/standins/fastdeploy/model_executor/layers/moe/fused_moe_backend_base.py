"""Stand-in MoEMethodBase.apply (2.3 at 0df488c7: (layer, x, gate); develop at e53f5184: + topk_ids_hookfunc,
shared_experts, fc1_latent_proj, fc2_latent_proj): phase from the model config; mixed mode cleans inline at
the first MoE layer (moe_layer_start_index)."""
from fastdeploy import ERA
from fastdeploy.model_executor.layers.moe.ep import EPDecoderRunner, EPPrefillRunner


class MoEMethodBase:
    def __init__(self, fd_config):
        args = dict(top_k=2, hidden_size=8, num_experts=4, splitwise_role=fd_config.scheduler_config.splitwise_role,
                    moe_phase=None, num_max_dispatch_tokens_per_rank=fd_config.model_config.num_max_dispatch_tokens_per_rank)
        self.ep_prefill_runner = EPPrefillRunner(**args)
        self.ep_decoder_runner = EPDecoderRunner(**args)

    def _apply(self, layer, x, gate):
        config = layer.fd_config
        first_moe_layer = layer.layer_idx == config.model_config.moe_layer_start_index
        mixed = config.scheduler_config.splitwise_role == "mixed"
        if config.model_config.moe_phase.phase == "prefill":
            if mixed and first_moe_layer:
                self.ep_prefill_runner.clean_low_latency_buffer()
            return self.apply_ep_prefill(layer, x, gate)
        if mixed and first_moe_layer:
            self.ep_decoder_runner.clean_low_latency_buffer()
        return self.apply_ep_decode(layer, x, gate)

    if ERA == "2.3":

        def apply(self, layer, x, gate):
            return self._apply(layer, x, gate)

    else:

        def apply(self, layer, x, gate, topk_ids_hookfunc=None, shared_experts=None, fc1_latent_proj=None,
                  fc2_latent_proj=None):
            return self._apply(layer, x, gate)

    def apply_ep_prefill(self, layer, x, gate):
        return self.ep_prefill_runner.combine(self.ep_prefill_runner.dispatch(x, None, None), None, None)

    def apply_ep_decode(self, layer, x, gate):
        recv, _, handle = self.ep_decoder_runner.dispatch(x, None, None)
        return self.ep_decoder_runner.combine(recv, None, None, handle)
