"""Deployment config files (configs/*.json): the FastDeploy server flags an operator launches with, plus
the model config values and environment that shape graph capture. Turned into plan inputs here."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import flags
from .capture_plan import PlanError, PlanInputs, warmup_token_budget
from .resources import data_files

DEFAULT_CONFIG = "ernie45-300b-a47b-ep8-mixed-mtp1.json"


@dataclass(frozen=True)
class Deployment:
    name: str
    description: str
    launch: dict
    model_config: dict
    environment: dict[str, str]
    nnodes: int = 1

    def launch_command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in self.environment.items())
        args = []
        for flag, value in self.launch.items():
            if value is True:
                args.append(f"--{flag}")
            elif isinstance(value, (dict, list)):
                args.append(f"--{flag} {shlex.quote(json.dumps(value, separators=(',', ':')))}")
            elif value is not False and value is not None:
                args.append(f"--{flag} {shlex.quote(str(value))}")
        return f"{env} python -m fastdeploy.entrypoints.openai.api_server " + " ".join(args)

    def plan_inputs(self) -> PlanInputs:
        spec = self.launch.get("speculative-config") or {}
        k = int(spec.get("num_speculative_tokens", 1)) if str(spec.get("method", "")).lower() == "mtp" else 0
        graph = self.launch.get("graph-optimization-config") or {}
        sizes = graph.get("cudagraph_capture_sizes")
        max_num_seqs = int(self.launch.get("max-num-seqs", 8))
        chunk = warmup_token_budget(self.launch.get("splitwise-role", "mixed"), max_num_seqs, k,
                                    int(self.launch.get("max-num-batched-tokens", 8192)))
        depth = self.environment.get("NVSHMEM_QP_DEPTH")
        return PlanInputs(
            max_num_seqs=max_num_seqs,
            num_speculative_tokens=k,
            capture_sizes=None if sizes is None else tuple(int(s) for s in sizes),
            max_chunk_tokens=chunk,
            expert_parallel=bool(self.launch.get("enable-expert-parallel", False)),
            max_dispatch_tokens_per_rank=int(self.model_config.get("num_max_dispatch_tokens_per_rank", 128)),
            internode=self.nnodes > 1,
            nvshmem_qp_depth=None if depth is None else int(depth),
            round_sizes=flags.read_bool(flags.ROUND_SIZES, self.environment),
            drop_oversize=flags.read_bool(flags.DROP_OVERSIZE, self.environment),
        )


def parse(name: str, text: str) -> Deployment:
    try:
        raw = json.loads(text)
        return Deployment(
            name=name,
            description=raw.get("description", ""),
            launch=raw["launch"],
            model_config=raw.get("model_config", {}),
            environment={k: str(v) for k, v in raw.get("environment", {}).items()},
            nnodes=int(raw.get("nnodes", 1)),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise PlanError([f"deployment config {name} is not valid: {error!r}; see configs/ for the format"]) from None


def load(path: str | None) -> Deployment:
    """A config file, or the embedded default when `path` is None."""
    if path is None:
        return parse(DEFAULT_CONFIG, data_files("configs")[DEFAULT_CONFIG])
    file = Path(path)
    if not file.is_file():
        raise PlanError([f"deployment config {path} does not exist"])
    return parse(file.name, file.read_text())


def bundled() -> dict[str, Deployment]:
    return {name: parse(name, text) for name, text in sorted(data_files("configs").items())}
