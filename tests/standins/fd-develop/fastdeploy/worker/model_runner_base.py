"""Stand-in model_runner_base.py: ModelRunnerBase, the base of both real runners (GPU and XPU)."""
from standin_common import RunnerCommon, sot_warmup_guard  # noqa: F401 - the runners import the guard from here


class ModelRunnerBase(RunnerCommon):
    # set by RunnerCommon._setup, as FastDeploy's runner __init__ sets them
    fd_config: object
    graph_opt_config: object
    use_cudagraph: bool
    cudagraph_capture_sizes: list

    def __init__(self, fd_config, device: str) -> None:
        self._setup(fd_config, device)
