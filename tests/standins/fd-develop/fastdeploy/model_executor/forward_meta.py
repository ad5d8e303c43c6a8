"""Stand-in forward_meta.py of develop at e53f5184: the ForwardMeta fields the plugin reads."""
from dataclasses import dataclass

import paddle


@dataclass
class ForwardMeta:
    ids_remove_padding: paddle.Tensor
    step_use_cudagraph: bool = False
    exist_prefill: bool = False
    real_bsz: int = 0  # running requests, set on the host by the runner (0: counted on the device)
