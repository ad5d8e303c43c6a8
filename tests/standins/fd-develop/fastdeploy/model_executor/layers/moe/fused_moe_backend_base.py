"""Stand-in MoEMethodBase of develop at e53f5184 (2026-04-15): apply(layer, x, gate, topk_ids_hookfunc,
shared_experts, fc1_latent_proj, fc2_latent_proj); in mixed mode the first MoE layer cleans inline."""
from standin_common import MoECommon

from fastdeploy.model_executor.layers.moe.ep import EPDecoderRunner, EPPrefillRunner


class MoEMethodBase(MoECommon):
    def __init__(self, fd_config):
        self._setup(fd_config, EPPrefillRunner, EPDecoderRunner)

    def apply(self, layer, x, gate, topk_ids_hookfunc=None, shared_experts=None, fc1_latent_proj=None,
              fc2_latent_proj=None):
        return self._apply(layer, x, gate)
