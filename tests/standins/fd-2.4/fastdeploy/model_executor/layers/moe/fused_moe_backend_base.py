"""Stand-in MoEMethodBase of 2.4 at f83673da (2026-04-08): apply(layer, x, gate, topk_ids_hookfunc); in mixed mode the first MoE layer
(moe_layer_start_index, #4450) cleans DeepEP's low-latency buffer inline."""
from standin_common import MoECommon

from fastdeploy.model_executor.layers.moe.ep import EPDecoderRunner, EPPrefillRunner


class MoEMethodBase(MoECommon):
    def __init__(self, fd_config):
        self._setup(fd_config, EPPrefillRunner, EPDecoderRunner)

    def apply(self, layer, x, gate, topk_ids_hookfunc=None):
        return self._apply(layer, x, gate)
