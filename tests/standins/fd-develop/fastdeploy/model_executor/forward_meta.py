"""Stand-in forward_meta.py of develop at e53f5184: the ForwardMeta fields the capture backend reads."""
from dataclasses import dataclass

import paddle


@dataclass
class ForwardMeta:
    ids_remove_padding: paddle.Tensor
    exist_prefill: bool = False
    real_bsz: int = 0  # running requests, set on the host by the runner (0: counted on the device)
