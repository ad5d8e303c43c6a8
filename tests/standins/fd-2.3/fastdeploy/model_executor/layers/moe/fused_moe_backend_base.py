"""Stand-in MoEMethodBase of 2.3 at 0df488c7 (2025-11-06): apply(layer, x, gate); in mixed mode the first MoE layer
(moe_layer_start_index, #4450) cleans DeepEP's low-latency buffer inline."""
from standin_common import MoECommon

from fastdeploy.model_executor.layers.moe.ep import EPDecoderRunner, EPPrefillRunner


class MoEMethodBase(MoECommon):
    def __init__(self, fd_config):
        self._setup(fd_config, EPPrefillRunner, EPDecoderRunner)

    def apply(self, layer, x, gate):
        return self._apply(layer, x, gate)
