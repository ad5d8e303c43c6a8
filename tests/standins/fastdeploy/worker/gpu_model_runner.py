"""Stand-in GPUModelRunner: the capture_model MTP branches of 2.3 and develop, a recording _dummy_run."""
from fastdeploy import ERA

SOT_WARMUP = {"active": False}


def sot_warmup_guard(flag):
    def decorator(fn):
        def wrapper(*args, **kwargs):  # no functools.wraps, like a decorator we cannot inspect
            SOT_WARMUP["active"] = flag
            try:
                return fn(*args, **kwargs)
            finally:
                SOT_WARMUP["active"] = False
        return wrapper
    return decorator


class GPUModelRunner:
    def __init__(self, fd_config, device: str, device_id: int, rank: int, local_rank: int):
        self.fd_config = fd_config
        self.graph_opt_config = fd_config.graph_opt_config
        self.scheduler_config = fd_config.scheduler_config
        self.speculative_config = fd_config.speculative_config
        self.speculative_method = fd_config.speculative_config.method
        self.speculative_decoding = self.speculative_method is not None
        self.use_cudagraph = self.graph_opt_config.use_cudagraph
        self.cudagraph_capture_sizes = list(reversed(self.graph_opt_config.cudagraph_capture_sizes))
        self.dummy_runs = []
        self.only_decode = False  # what the ranks agreed for the next step (tests set it)

    def _dummy_run(self, num_tokens, batch_size, expected_decode_len: int = 1, in_capturing: bool = False,
                   capture_prefill: bool = False, accept_all_drafts: bool = False, reject_all_drafts: bool = False):
        self.dummy_runs.append(dict(num_tokens=num_tokens, batch_size=batch_size,
                                    expected_decode_len=expected_decode_len, in_capturing=in_capturing,
                                    accept_all_drafts=accept_all_drafts, sot_warmup=SOT_WARMUP["active"]))

    def initialize_forward_meta(self, is_dummy_or_profile_run=False):
        config = self.fd_config
        if config.parallel_config.use_ep and config.scheduler_config.splitwise_role == "mixed":
            config.model_config.moe_phase.phase = "decode" if self.only_decode else "prefill"

    if ERA == "2.3":

        @sot_warmup_guard(True)
        def capture_model(self) -> None:
            for size in sorted(self.cudagraph_capture_sizes, reverse=True):
                if self.speculative_decoding and self.speculative_method == "mtp":
                    if size == 1:
                        continue
                    assert size % 2 == 0
                    self._dummy_run(num_tokens=self.scheduler_config.max_num_batched_tokens,
                                    batch_size=int(size / 2), in_capturing=True, expected_decode_len=1)
                else:
                    self._dummy_run(num_tokens=self.scheduler_config.max_num_batched_tokens, batch_size=size,
                                    in_capturing=True, expected_decode_len=1)

    else:

        @sot_warmup_guard(True)
        def capture_model(self) -> None:
            k = self.speculative_config.num_speculative_tokens
            for size in sorted(self.cudagraph_capture_sizes, reverse=True):
                if self.speculative_decoding and self.speculative_method == "mtp":
                    self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(), batch_size=int(size / (k + 1)),
                                    in_capturing=True, expected_decode_len=(k + 1) * 2, accept_all_drafts=True)
                else:
                    self._dummy_run(num_tokens=self.fd_config.get_max_chunk_tokens(), batch_size=size,
                                    in_capturing=True, expected_decode_len=1)

        @sot_warmup_guard(True)
        def capture_model_prefill_and_mixed(self) -> None:
            pass
