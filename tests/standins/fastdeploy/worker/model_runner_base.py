"""Stand-in model_runner_base.py: ModelRunnerBase, the base of both real runners (2.3 and develop),
plus a recording _dummy_run helper for the tests (not a FastDeploy name)."""

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


class ModelRunnerBase:
    def __init__(self, fd_config, device: str) -> None:
        self.fd_config = fd_config
        self.graph_opt_config = fd_config.graph_opt_config
        self.scheduler_config = fd_config.scheduler_config
        self.speculative_config = fd_config.speculative_config
        self.device = device
        self.speculative_method = fd_config.speculative_config.method
        self.speculative_decoding = self.speculative_method is not None
        self.use_cudagraph = self.graph_opt_config.use_cudagraph
        self.cudagraph_capture_sizes = list(reversed(self.graph_opt_config.cudagraph_capture_sizes))
        self.dummy_runs = []

    def _record(self, **call):
        self.dummy_runs.append({"accept_all_drafts": False, "expected_decode_len": 1, **call,
                                "sot_warmup": SOT_WARMUP["active"]})
