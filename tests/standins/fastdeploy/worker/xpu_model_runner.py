"""Stand-in XPUModelRunner of the releases whose XPU runner captures no graphs."""


class XPUModelRunner:
    def capture_model(self) -> None:
        pass  # "XPU not support cuda graph currently"
