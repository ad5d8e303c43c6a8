"""Stand-in forward_meta.py of 2.3 at 0df488c7: the ForwardMeta fields the plugin reads."""
from dataclasses import dataclass

import paddle


@dataclass
class ForwardMeta:
    ids_remove_padding: paddle.Tensor
    step_use_cudagraph: bool = False
