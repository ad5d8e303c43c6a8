"""Stand-in model_runner_base.py: ModelRunnerBase, the base of both real runners (GPU and XPU)."""
from standin_common import RunnerCommon, sot_warmup_guard  # noqa: F401 - the runners import the guard from here


class ModelRunnerBase(RunnerCommon):
    def __init__(self, fd_config, device: str) -> None:
        self._setup(fd_config, device)
