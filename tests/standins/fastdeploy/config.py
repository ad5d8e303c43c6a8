"""Stand-in: MoEPhase (a validated phase holder) as in FastDeploy's config.py."""


class MoEPhase:
    def __init__(self, phase: str = "prefill") -> None:
        self.phase = phase

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        if value not in ("prefill", "decode"):
            raise ValueError(f"moe phase must be prefill or decode, got {value}")
        self._phase = value
