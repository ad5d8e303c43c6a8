"""Stand-in forward_meta.py of 2.4 at f83673da: the ForwardMeta fields the plugin reads."""
from dataclasses import dataclass

import paddle


@dataclass
class ForwardMeta:
    ids_remove_padding: paddle.Tensor
    step_use_cudagraph: bool = False
