"""Every EP rank must plan the same DeepEP work, or the first collective hangs every rank (DeepEP #208,
SGLang #26137). So, once, eagerly, before DeepEP's buffer is built (its first collective), the ranks exchange
what they will run through the EP process group FastDeploy built, and all stop with one message on a difference.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields
from typing import Callable


class RankDisagreement(RuntimeError):
    """EP ranks would run different DeepEP work: every rank raises the same message instead of hanging."""


@dataclass(frozen=True)
class RankPlan:
    """What one EP rank will run with DeepEP; every field must be equal on every rank."""

    capture_sizes: tuple[int, ...]  # decode capture sizes in capture order (largest first); () without graphs
    num_speculative_tokens: int  # k of MTP (0: off)
    num_max_dispatch_tokens_per_rank: int  # DeepEP's low-latency token cap
    hidden_size: int
    num_experts: int  # as FastDeploy's DeepEPEngine gets it (redundant experts included)
    nvshmem_qp_depth: str  # NVSHMEM_QP_DEPTH as set in the worker, or "unset"
    plugin_version: str
    fastdeploy_version: str


_FIXES = {
    "capture_sizes": "give every rank the same --graph-optimization-config (cudagraph_capture_sizes) and "
                     "--max-num-seqs",
    "num_speculative_tokens": "give every rank the same --speculative-config",
    "num_max_dispatch_tokens_per_rank": "give every rank the same model config.json (num_max_dispatch_tokens_per_rank)",
    "hidden_size": "serve the same model on every rank",
    "num_experts": "serve the same model with the same --eplb-config (redundant experts) on every rank",
    "nvshmem_qp_depth": "set the same NVSHMEM_QP_DEPTH in every node's environment",
    "plugin_version": "install the same fastdeploy-cudagraph-ext on every node",
    "fastdeploy_version": "install the same FastDeploy on every node",
}


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def disagreement(plans: list[dict]) -> str | None:
    """One message naming every field that differs, with each value and the ranks that hold it; None if all agree."""
    problems, fixes = [], []
    for field in fields(RankPlan):
        holders: dict[str, list[int]] = {}
        for rank, plan in enumerate(plans):
            value = plan.get(field.name)
            holders.setdefault(repr(list(value) if isinstance(value, tuple) else value), []).append(rank)
        if len(holders) > 1:
            problems.append(f"{field.name}: " + "; ".join(f"{_ranks(r)} {v}" for v, r in holders.items()))
            fixes.append(_FIXES[field.name])
    if not problems:
        return None
    return (f"fastdeploy-cudagraph-ext stops every EP rank before DeepEP's first collective: the {len(plans)} ranks "
            f"disagree, and DeepEP would hang all of them (DeepEP #208). " + " | ".join(problems)
            + ". Fix: " + "; ".join(fixes) + ".")


def agree(mine: RankPlan, all_gather: Callable[[dict], list[dict]]) -> None:
    """Exchange `mine` with every EP rank (all_gather: this rank's dict -> every rank's, in rank order)."""
    message = disagreement(all_gather(asdict(mine)))
    if message is not None:
        raise RankDisagreement(message)


def paddle_all_gather(group: object) -> Callable[[dict], list[dict]]:
    """Paddle's all_gather_object over FastDeploy's EP group (the collective FastDeploy itself uses per step)."""
    def gather(obj: dict) -> list[dict]:
        import paddle.distributed as dist

        gathered: list[dict] = []
        dist.all_gather_object(gathered, obj, group=group)
        return gathered

    return gather


class _Exchange:
    """Once per process: the runner gate records the deployment, FastDeploy's DeepEPEngine its DeepEP values;
    the exchange runs when both are known (normally: in the engine's __init__, before the buffer exists)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deployment: Callable[[], dict] | None = None  # -> RankPlan fields from the FastDeploy config
        self.engine: dict | None = None  # RankPlan fields from the engine's arguments
        self.all_gather: Callable[[dict], list[dict]] | None = None
        self.done = False

    def ready(self) -> None:
        with self.lock:
            if self.done or self.deployment is None or self.engine is None or self.all_gather is None:
                return
            self.done = True
            plan = RankPlan(**{**self.deployment(), **self.engine})
            gather = self.all_gather
        agree(plan, gather)


exchange = _Exchange()


def reset_exchange() -> None:
    global exchange
    exchange = _Exchange()
