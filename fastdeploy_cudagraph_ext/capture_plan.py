"""Decode capture sizes for MTP speculative decoding and expert parallelism, computed once per worker.

Capture sizes are TOKEN counts. With MTP and k speculative tokens each decoding request
contributes k+1 tokens, so a size must be a multiple of k+1 and its warmup uses
size/(k+1) fake requests that live long enough to reach decode ((k+1)*2 steps). Under
expert parallelism the tokens a rank dispatches must fit DeepEP's low-latency cap.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field

from .deepep_graphs import DeepEPGraphSettings, normal_mode_graph_problems

log = logging.getLogger("fastdeploy_cudagraph_ext")

MAX_SPECULATIVE_TOKENS = 5  # FastDeploy's SpeculativeConfig accepts k in 1..5
INTERNODE_LOW_LATENCY_CAP = 1024  # DeepEP internode low-latency kernels
DEEPEP_DEFAULT_QP_DEPTH = 1024  # DeepEP sets NVSHMEM_QP_DEPTH to this when unset


# A fix as data: the DeploymentSettings fields to change and their new values. Each problem carries the fixes
# its text proposes (alternatives), so a caller can apply one and re-validate (tests do, for every problem).
Fix = dict[str, object]


class PlanError(ValueError):
    """The requested capture sizes cannot be captured correctly; the message says how to fix them."""

    def __init__(self, problems: list[str], fixes: list[list[Fix]] | None = None) -> None:
        self.problems = problems
        self.fixes = fixes if fixes is not None else [[] for _ in problems]
        super().__init__("invalid CUDA graph capture plan:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Problem:
    text: str
    fixes: tuple[Fix, ...] = ()  # alternatives; each one applied removes this problem


# FastDeploy's usual ladder (1, 2, 4, step 8 to 128, 16 to 256, 32 to 1024); 2.2.0's lacks 288..512. A line's own
# comes from its facts (fd_lines), in the worker from the imported config module.
USUAL_LADDER = (1, 2, 4, *range(8, 129, 8), *range(144, 257, 16), *range(288, 1025, 32))


def default_ladder(max_capture_size: int, tokens_per_request: int = 1,
                   base: tuple[int, ...] | None = None) -> list[int]:
    """FastDeploy's default size ladder (`base`, else USUAL_LADDER) scaled, capped, ascending, with the maximum."""
    sizes = {s * tokens_per_request for s in (base or USUAL_LADDER) if s * tokens_per_request <= max_capture_size}
    sizes.add(max_capture_size)
    return sorted(sizes)


@dataclass(frozen=True)
class PlanInputs:
    max_num_seqs: int
    num_speculative_tokens: int = 0  # k; 0 = no MTP
    capture_sizes: tuple[int, ...] | None = None  # None: FastDeploy's default ladder
    capture_limit: int | None = None  # a cap FastDeploy put on its own ladder (2.2/2.3: 512 tokens)
    max_chunk_tokens: int = 8192  # token budget of each warmup's dummy prefill
    expert_parallel: bool = False
    max_dispatch_tokens_per_rank: int = 128  # DeepEP's num_max_dispatch_tokens_per_rank
    internode: bool = False
    nvshmem_qp_depth: int | None = None  # None: DeepEP's default
    round_sizes: bool = False  # opt-in: round sizes that are not multiples of k+1
    ladder_base: tuple[int, ...] | None = None  # FastDeploy's ladder at scale 1; None: USUAL_LADDER


@dataclass(frozen=True)
class PlannedCapture:
    capture_size: int  # tokens in the graph
    batch_size: int  # fake requests in the warmup
    expected_decode_len: int
    num_tokens: int  # dummy-run token budget


@dataclass
class CapturePlan:
    inputs: PlanInputs
    captures: list[PlannedCapture]  # descending capture size: smaller graphs reuse the pool
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_request(self) -> int:
        return self.inputs.num_speculative_tokens + 1

    @property
    def sizes(self) -> list[int]:
        return [c.capture_size for c in self.captures]

    def to_dict(self) -> dict:
        return {"inputs": asdict(self.inputs), "captures": [asdict(c) for c in self.captures], "warnings": self.warnings}


def expected_decode_len(num_speculative_tokens: int) -> int:
    """Steps a warmup request lives: (k+1)*2 under MTP so it reaches decode, else one decode step."""
    return (num_speculative_tokens + 1) * 2 if num_speculative_tokens else 1


def warmup_token_budget(splitwise_role: str, max_num_seqs: int, num_speculative_tokens: int,
                        max_num_batched_tokens: int) -> int:
    """The dummy run's token budget, as FastDeploy sizes it: a decode instance never prefills a full chunk."""
    if splitwise_role == "decode":
        return max_num_seqs * (num_speculative_tokens + 1)
    return max_num_batched_tokens


def _nearest_multiples(size: int, step: int, upper: int) -> list[int]:
    below = (size // step) * step
    above = below + step
    return [s for s in (below, above) if 0 < s <= upper]


def _check_deepep_limits(inputs: PlanInputs, problems: list[Problem]) -> None:
    cap = inputs.max_dispatch_tokens_per_rank
    if inputs.internode and cap > INTERNODE_LOW_LATENCY_CAP:
        problems.append(Problem(
            f"num_max_dispatch_tokens_per_rank={cap} exceeds {INTERNODE_LOW_LATENCY_CAP}, the most DeepEP's internode "
            f"low-latency kernels accept; lower it to {INTERNODE_LOW_LATENCY_CAP} or less (and max_num_seqs / capture "
            f"sizes with it)", ({"max_dispatch_tokens_per_rank": INTERNODE_LOW_LATENCY_CAP},)))
    depth = DEEPEP_DEFAULT_QP_DEPTH if inputs.nvshmem_qp_depth is None else inputs.nvshmem_qp_depth
    if depth < 2 * (cap + 1):
        problems.append(Problem(
            f"NVSHMEM_QP_DEPTH={depth} is below 2*(num_max_dispatch_tokens_per_rank+1)={2 * (cap + 1)}; DeepEP "
            f"low-latency kernels would hang. Set NVSHMEM_QP_DEPTH={2 * (cap + 1)} or more in the server environment",
            ({"nvshmem_qp_depth": 2 * (cap + 1)},)))


# What the worker does with one size; the CLI's status column and --json carry it.
CAPTURED = "captured"
ROUNDED = "rounded"  # opt-in FD_CUDAGRAPH_EXT_ROUND_SIZES: captured at the next multiple of k+1
OVER_CAP = "over_deepep_cap"  # more tokens per rank than DeepEP's low-latency cap: the plan is refused
NOT_MULTIPLE = "not_multiple_of_k_plus_1"
OVER_MAX = "over_max_decode_tokens"  # above max_num_seqs*(k+1): no decode step is that large
NOT_POSITIVE = "not_positive"


@dataclass(frozen=True)
class SizeVerdict:
    requested: int
    size: int | None  # what will be captured (after opt-in rounding); None: not captured
    problem: str = ""  # fatal
    note: str = ""  # warning (rounded)
    status: str = CAPTURED
    fixes: tuple[Fix, ...] = ()  # for a problem: settings changes that remove it


def _cap_problem(inputs: PlanInputs, upper: int) -> Problem:
    cap = inputs.max_dispatch_tokens_per_rank
    step = inputs.num_speculative_tokens + 1
    sizes = "your cudagraph_capture_sizes" if inputs.capture_sizes else "FastDeploy's default ladder (not your sizes)"
    fitting = cap // step  # the most requests whose decode tokens fit under the cap; 0: not even one
    depth = 2 * (max(cap, upper) + 1)
    raise_cap = (f"raise num_max_dispatch_tokens_per_rank to {upper} or more in the model's config.json (FastDeploy "
                 f"reads it from there and uses 128 when it is absent) and set NVSHMEM_QP_DEPTH to at least {depth}")
    # internode low-latency kernels take at most 1024 tokens per rank: a larger cap is no fix there
    can_raise = not (inputs.internode and upper > INTERNODE_LOW_LATENCY_CAP)
    fixes: list[Fix] = [{"max_num_seqs": fitting}] if fitting else []
    if can_raise:
        fixes.append({"max_dispatch_tokens_per_rank": upper, "nvshmem_qp_depth": depth})
    if fitting and can_raise:
        fix = f"Fix one of: lower --max-num-seqs to {fitting} or less; or {raise_cap}"
    elif fitting:
        fix = (f"Fix: lower --max-num-seqs to {fitting} or less (internode, the cap cannot exceed "
               f"{INTERNODE_LOW_LATENCY_CAP}, below the {upper} tokens this max_num_seqs needs)")
    elif can_raise:
        fix = f"Fix: {raise_cap} (no max_num_seqs fits: one request alone decodes k+1={step} tokens)"
    else:  # unreachable in practice (a cap below k+1 <= 6 tokens yet a step over 1024); said rather than hidden
        fix = f"Fix: no setting fits: one request decodes k+1={step} tokens, more than the cap allows"
    return Problem(
        f"a decode step can carry max_num_seqs*(k+1) = {inputs.max_num_seqs}*{step} = {upper} tokens per rank, over "
        f"DeepEP's low-latency cap num_max_dispatch_tokens_per_rank={cap}; DeepEP asserts on such a batch with or "
        f"without a CUDA graph, so {sizes} cannot be clamped or dropped to fit. {fix}", tuple(fixes))


def _replaced(sizes: tuple[int, ...] | None, old: int, new: int | None) -> Fix:
    """A fix that changes one entry of the user's sizes (None: removes it); the list never becomes empty."""
    kept = [s for s in (sizes or ()) if s != old]
    out = sorted(set(kept + ([] if new is None else [new])))
    return {"capture_sizes": tuple(out)} if out else {"use_cudagraph": False}


def judge_sizes(inputs: PlanInputs) -> tuple[list[SizeVerdict], list[Problem]]:
    """Every candidate size with its fate, plus deployment-wide problems (k, DeepEP limits)."""
    k = inputs.num_speculative_tokens
    if k < 0 or k > MAX_SPECULATIVE_TOKENS:
        return [], [Problem(f"num_speculative_tokens={k} is outside 1..{MAX_SPECULATIVE_TOKENS} (0 disables MTP)",
                            ({"num_speculative_tokens": min(max(k, 0), MAX_SPECULATIVE_TOKENS)},))]
    if inputs.max_num_seqs < 1:
        return [], [Problem(f"max_num_seqs={inputs.max_num_seqs} must be at least 1", ({"max_num_seqs": 1},))]
    if inputs.capture_sizes is not None and not inputs.capture_sizes:
        return [], [Problem(EMPTY_SIZES_PROBLEM, ({"capture_sizes": None}, {"use_cudagraph": False}))]
    step = k + 1
    decode_tokens = inputs.max_num_seqs * step  # the largest decode batch, graph or not
    upper = decode_tokens
    if inputs.capture_limit is not None:
        upper = min(upper, max(step, inputs.capture_limit // step * step))
    general: list[Problem] = []
    if inputs.expert_parallel:
        _check_deepep_limits(inputs, general)
        if decode_tokens > inputs.max_dispatch_tokens_per_rank:
            general.append(_cap_problem(inputs, decode_tokens))
    requested = (default_ladder(upper, step, inputs.ladder_base) if inputs.capture_sizes is None
                 else sorted(set(inputs.capture_sizes)))
    over_cap = inputs.expert_parallel and decode_tokens > inputs.max_dispatch_tokens_per_rank
    verdicts = []
    for size in requested:
        verdict = SizeVerdict(size, size)
        if size < 1:
            verdict = SizeVerdict(size, None, f"capture size {size} must be a positive token count",
                                  status=NOT_POSITIVE, fixes=(_replaced(inputs.capture_sizes, size, None),))
        elif size > upper:
            verdict = SizeVerdict(size, None, f"capture size {size} exceeds max_num_seqs*(k+1)={upper}; "
                                              f"remove it or raise max_num_seqs", status=OVER_MAX,
                                  fixes=(_replaced(inputs.capture_sizes, size, None),))
        elif size % step:
            nearest = _nearest_multiples(size, step, upper)
            if inputs.round_sizes and nearest:
                verdict = SizeVerdict(size, nearest[-1], note=f"capture size {size} rounded to {nearest[-1]}, "
                                                              f"a multiple of k+1={step}", status=ROUNDED)
            else:
                verdict = SizeVerdict(size, None, f"capture size {size} is not a multiple of k+1={step} (each "
                                                  f"request decodes {step} tokens); nearest valid sizes: "
                                                  f"{', '.join(map(str, nearest))}", status=NOT_MULTIPLE,
                                      fixes=tuple(_replaced(inputs.capture_sizes, size, n) for n in nearest))
        if over_cap and verdict.size is not None and verdict.size > inputs.max_dispatch_tokens_per_rank:
            verdict = SizeVerdict(size, None, status=OVER_CAP)  # the cap problem in `general` explains it
        verdicts.append(verdict)
    return verdicts, general


# FastDeploy's GraphOptimizationConfig asserts the list is non-empty (2.3 e53396f, 2.6 41677b9): `[]` is an error
# everywhere, never "no graphs" nor "the default ladder".
EMPTY_SIZES_PROBLEM = ("cudagraph_capture_sizes is an empty list, which FastDeploy itself refuses (\"forbidden to set "
                       "the capture sizes to an empty list\"); leave the key out to use FastDeploy's default ladder, "
                       "list the sizes, or set use_cudagraph to false")
MANY_GRAPHS = 128  # FastDeploy's own ladder up to 1024 tokens has 51 sizes; far more is likely a mistake


def build_plan(inputs: PlanInputs) -> CapturePlan:
    """Validate and lay out the decode captures; raises PlanError listing every problem at once."""
    verdicts, general = judge_sizes(inputs)
    problems = [Problem(v.problem, v.fixes) for v in verdicts if v.problem] + general
    sizes = sorted({v.size for v in verdicts if v.size is not None})
    if problems:
        raise PlanError([p.text for p in problems], [list(p.fixes) for p in problems])
    warnings = [v.note for v in verdicts if v.note]
    if len(sizes) > MANY_GRAPHS:
        warnings.append(f"{len(sizes)} decode graphs: each holds its own memory and warmup time; FastDeploy's "
                        f"default ladder has at most 51. Check cudagraph_capture_sizes")
    for warning in warnings:
        log.warning("fastdeploy-cudagraph-ext: %s", warning)
    step = inputs.num_speculative_tokens + 1
    captures = [
        PlannedCapture(
            capture_size=size,
            batch_size=size // step,
            expected_decode_len=expected_decode_len(inputs.num_speculative_tokens),
            num_tokens=inputs.max_chunk_tokens,
        )
        for size in reversed(sizes)
    ]
    return CapturePlan(inputs, captures, warnings)


@dataclass(frozen=True)
class CoverageRange:
    """Consecutive decode batch sizes (running requests) that one graph serves, or that run eagerly (graph None)."""

    first: int
    last: int
    graph: int | None  # the captured size (tokens) the batch is padded up to
    padding_min: float = 0.0  # share of the graph's tokens that are padding, over the range
    padding_max: float = 0.0
    padding_mean: float = 0.0


@dataclass(frozen=True)
class Coverage:
    batches: int  # decode batch sizes 1..max_num_seqs
    served: int  # of which a graph replays
    mean_padding: float  # mean padding share over the served batch sizes
    ranges: tuple[CoverageRange, ...]

    @property
    def served_share(self) -> float:
        return self.served / self.batches if self.batches else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "served_share": self.served_share}


def coverage(sizes: list[int], max_num_seqs: int, num_speculative_tokens: int) -> Coverage:
    """For every decode batch 1..max_num_seqs (k+1 tokens per request): the smallest graph that holds it, as
    FastDeploy pads a batch up to the next captured size, and the batches above the largest graph (eager).
    Computed per graph, in closed form: a plan may hold thousands of sizes."""
    step = num_speculative_tokens + 1
    ranges: list[CoverageRange] = []
    first, served, padding_sum = 1, 0, 0.0
    for size in sorted(sizes):
        last = min(size // step, max_num_seqs)
        if last < first:
            continue
        count = last - first + 1
        tokens_sum = step * (first + last) * count / 2
        ranges.append(CoverageRange(first, last, size, (size - last * step) / size, (size - first * step) / size,
                                    (count - tokens_sum / size) / count))
        served, padding_sum, first = served + count, padding_sum + count - tokens_sum / size, last + 1
    if first <= max_num_seqs:
        ranges.append(CoverageRange(first, max_num_seqs, None))
    return Coverage(max_num_seqs, served, padding_sum / served if served else 0.0, tuple(ranges))


@dataclass(frozen=True)
class DeploymentSettings:
    """Raw deployment facts, as FastDeploy holds them. The CLI fills it from a deployment config, the worker from
    FastDeploy's FDConfig; `plan_deployment` is the one place that turns it into a decode capture plan."""

    max_num_seqs: int
    num_speculative_tokens: int = 0  # k of MTP; 0 = no MTP
    capture_sizes: tuple[int, ...] | None = None  # as the user wrote them; None = FastDeploy's default ladder
    ladder_cap: int | None = None  # tokens FastDeploy stops its own default ladder at (2.2/2.3: 512), None = none
    max_chunk_tokens: int = 8192  # FastDeploy's get_max_chunk_tokens(): the warmup's dummy prefill budget
    use_cudagraph: bool = True
    cudagraph_only_prefill: bool = False
    expert_parallel: bool = False
    splitwise_role: str = "mixed"
    max_dispatch_tokens_per_rank: int = 128  # DeepEP's num_max_dispatch_tokens_per_rank (model config.json)
    internode: bool = False
    nvshmem_qp_depth: int | None = None  # None: DeepEP's default
    round_sizes: bool = False  # FD_CUDAGRAPH_EXT_ROUND_SIZES
    deepep: DeepEPGraphSettings | None = None  # which DeepEP kernels a graph would hold (deepep_graphs.py)
    ladder_base: tuple[int, ...] | None = None  # the line's default ladder at scale 1; None: USUAL_LADDER


def no_decode_graphs_reason(settings: DeploymentSettings) -> str | None:
    """Why this deployment captures no decode graph (so there is nothing to plan), or None."""
    if not settings.use_cudagraph:
        return ("CUDA graphs are off (use_cudagraph: false): FastDeploy runs every step eagerly and the plugin "
                "captures nothing; its patches stay installed but idle")
    if settings.cudagraph_only_prefill:
        return ("cudagraph_only_prefill is on: FastDeploy captures prefill graphs only (on the plugin's capture "
                "stream) and runs decode eagerly, so there are no decode sizes to plan")
    if settings.splitwise_role == "prefill":
        return "splitwise role prefill: this instance never decodes, so there are no decode sizes to plan"
    return None


def plan_inputs(settings: DeploymentSettings) -> PlanInputs:
    return PlanInputs(
        max_num_seqs=settings.max_num_seqs,
        num_speculative_tokens=settings.num_speculative_tokens,
        capture_sizes=settings.capture_sizes,
        capture_limit=None if settings.capture_sizes is not None else settings.ladder_cap,
        max_chunk_tokens=settings.max_chunk_tokens,
        expert_parallel=settings.expert_parallel,
        max_dispatch_tokens_per_rank=settings.max_dispatch_tokens_per_rank,
        internode=settings.internode,
        nvshmem_qp_depth=settings.nvshmem_qp_depth,
        round_sizes=settings.round_sizes,
        ladder_base=settings.ladder_base,
    )


def plan_deployment(settings: DeploymentSettings) -> CapturePlan | None:
    """The decode capture plan of a deployment; None when it captures no decode graph (see
    `no_decode_graphs_reason`). Raises PlanError listing every problem."""
    if refused := normal_mode_graph_problems(settings):  # DeepEP normal-mode kernels in a graph (deepep_graphs.py)
        raise PlanError(refused)
    if no_decode_graphs_reason(settings) is not None:
        return None
    return build_plan(plan_inputs(settings))


def env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        raise PlanError([f"{name}={raw!r} is not an integer"]) from None
