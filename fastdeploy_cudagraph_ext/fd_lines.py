"""What each FastDeploy release line does with decode capture sizes, read from that line's facts
(`patches/releases/fd-<line>.json`, written by tools/extract_fd_facts.py with `fd_facts` and shipped in the wheel):
what a written size means (tokens, or requests that FDConfig multiplies by k+1), FastDeploy's default ladder, the
largest size FDConfig keeps and its cap, the max_num_seqs it asserts, and how its own MTP loop warms a graph.

`plan --fd-line` lays a deployment config out as that line's FDConfig would (`fdconfig_sizes`); the worker reads
what FDConfig computed. Both then build the plan with `capture_plan.plan_deployment`."""
from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import dataclass

from .deepep_graphs import LineGraphs, line_graphs_of
from .fd_facts import live_module_facts
from .resources import data_files

CONFIG = "fastdeploy.config"
RUNNER = "fastdeploy.worker.gpu_model_runner"
EP = "fastdeploy.model_executor.layers.moe.ep"
LADDER = "GraphOptimizationConfig._set_cudagraph_sizes.ladder"


class LineError(ValueError):
    """No facts for the requested line (the message names the lines there are)."""


@dataclass(frozen=True)
class FDConfigSizes:
    """The decode sizes FDConfig holds after its __init__, in tokens, for one deployment."""

    sizes: tuple[int, ...] | None  # None: FastDeploy's default ladder (laid out by the plan, as in the worker)
    largest: int  # the largest decode size FDConfig keeps, tokens
    written: dict[int, int]  # each written size kept -> the token size FDConfig holds for it
    dropped: tuple[int, ...]  # written sizes FDConfig drops silently (above `largest`)


@dataclass(frozen=True)
class LineSizing:
    line: str
    version: str  # setup.py's version at the commit
    commit: str
    date: str
    sizes_are_requests: bool  # init_with_cudagrpah_size multiplies EVERY size by k+1 (2.6, develop)
    ladder_base: tuple[int, ...]  # _set_cudagraph_sizes' candidates at scale 1
    largest_times_k_plus_1: bool  # FDConfig's largest size is max_num_seqs*(k+1) tokens under MTP
    cap: int | None  # FDConfig caps its largest size at this (512)
    cap_without_speculative_only: bool  # ... only when no speculative decoding is configured (2.5)
    max_num_seqs_limit: int | None  # FDConfig.check asserts max_num_seqs <= this
    fastdeploy_mtp_loop: bool  # FastDeploy's own capture loop warms size/(k+1) requests (else the plugin's runs)
    mtp_decode_len: str  # its decode length marker ("2k+1", "(k+1)*2"); the plugin's loop uses (k+1)*2
    graphs: LineGraphs  # which of its graphs hold DeepEP normal-mode kernels (deepep_graphs)

    @classmethod
    def from_fixture(cls, raw: dict) -> LineSizing:
        """A line's sizing from its facts fixture; LineError when a marker is missing or one the plan cannot use."""
        try:
            config = raw["modules"][CONFIG]["markers"]
            runner = raw["modules"][RUNNER]["markers"]
            return cls._from_markers(raw, config, runner)
        except (KeyError, ValueError) as error:
            raise LineError(f"the facts of FastDeploy {raw.get('release_line', '?')} lack a sizing marker the plan "
                            f"needs ({type(error).__name__}: {error}). Fix: regenerate them with "
                            f"tools/extract_fd_facts.py") from None

    @classmethod
    def _from_markers(cls, raw: dict, config: dict[str, str], runner: dict[str, str]) -> LineSizing:
        cap = config["FDConfig.__init__.decode_capture_cap"]
        limit = config["FDConfig.check.max_num_seqs_limit"]
        return cls(
            line=raw["release_line"], version=raw["fastdeploy_version"], commit=raw["source"]["commit"],
            date=raw["source"]["date"][:10],
            sizes_are_requests=config["GraphOptimizationConfig.init_with_cudagrpah_size.scales_by_k_plus_1"] == "yes",
            ladder_base=tuple(int(s) for s in config[LADDER].split(",")),
            largest_times_k_plus_1=config["FDConfig.__init__.decode_capture_max"] == "max_num_seqs*(k+1)",
            cap=None if cap == "none" else int(cap.split("_")[0]),
            cap_without_speculative_only=cap.endswith("_without_speculative"),
            max_num_seqs_limit=None if limit == "none" else int(limit),
            fastdeploy_mtp_loop=runner["GPUModelRunner.capture_model.mtp_batch"] == "size_over_k_plus_1",
            mtp_decode_len=runner["GPUModelRunner.capture_model.mtp_decode_len"],
            graphs=line_graphs_of({**runner, **raw["modules"].get(EP, {}).get("markers", {})}),
        )

    def largest(self, max_num_seqs: int, k: int) -> int:
        """The largest decode size FDConfig keeps, in tokens (its `max_capture_shape`, scaled where it scales)."""
        step = k + 1
        if self.sizes_are_requests:  # capped in requests, then multiplied by k+1 with every size
            requests = min(self.cap, max_num_seqs) if self.cap is not None else max_num_seqs
            return requests * step
        largest = max_num_seqs * step if self.largest_times_k_plus_1 and k else max_num_seqs
        if self.cap is not None and not (self.cap_without_speculative_only and k):
            largest = min(self.cap, largest)
        return largest

    def fdconfig_sizes(self, max_num_seqs: int, k: int, written: tuple[int, ...] | None) -> FDConfigSizes:
        """What FDConfig makes of the sizes a user wrote (None: its default ladder); sizes FDConfig drops above its
        largest size never reach the worker."""
        largest = self.largest(max_num_seqs, k)
        if written is None:
            return FDConfigSizes(None, largest, {}, ())
        factor = k + 1 if self.sizes_are_requests else 1
        kept = {s: s * factor for s in written if s * factor <= largest}
        return FDConfigSizes(tuple(sorted(set(kept.values()))), largest, kept,
                             tuple(sorted({s for s in written if s not in kept})))

    def decode_len(self, k: int) -> int:
        """Steps each warmup request lives in the loop that captures on this line (FastDeploy's, or the plugin's)."""
        if not k:
            return 1
        if self.fastdeploy_mtp_loop and self.mtp_decode_len == "2k+1":
            return 2 * k + 1
        return (k + 1) * 2

    def meaning(self, k: int) -> str:
        """What a written cudagraph_capture_sizes entry means on this line, in one sentence."""
        cap = f"min({self.cap}, max-num-seqs)" if self.cap is not None else "max-num-seqs"
        if self.sizes_are_requests:
            scaled = f", each multiplied by k+1={k + 1} into tokens" if k else ""
            return (f"sizes are REQUESTS{scaled} (init_with_cudagrpah_size); FastDeploy keeps those up to {cap} "
                    f"requests")
        largest = "max-num-seqs*(k+1)" if self.largest_times_k_plus_1 and k else "max-num-seqs"
        if self.cap is not None and not (self.cap_without_speculative_only and k):
            largest = f"min({self.cap}, {largest})"
        return f"sizes are TOKENS; FastDeploy keeps those up to {largest} tokens"

    def label(self) -> str:
        return f"FastDeploy {self.line} (facts of {self.commit[:8]}, {self.date})"


def _order(line: LineSizing) -> tuple:
    """Release order: 2.2.0, 2.2.x, 2.3, ... and develop last."""
    return tuple(int(p) if p.isdigit() else (1 << 30 if p == "x" else -1) for p in line.line.split(".")) \
        if line.line != "develop" else (1 << 30,)


@functools.lru_cache(maxsize=None)
def lines() -> dict[str, LineSizing]:
    """Every line with facts, in release order (develop last)."""
    found = [LineSizing.from_fixture(json.loads(text)) for text in data_files("patches/releases").values()]
    return {line.line: line for line in sorted(found, key=_order)}


def newest() -> LineSizing:
    """The newest release line (what a new installation gets); develop only when asked for by name."""
    return [ln for ln in lines().values() if ln.line != "develop"][-1]


def line(name: str) -> LineSizing:
    known = lines()
    if name not in known:
        raise LineError(f"--fd-line {name}: no facts for that FastDeploy line. Fix: one of {', '.join(known)}")
    return known[name]


def line_of_version(version: str | None) -> LineSizing | None:
    """The line an installed FastDeploy version belongs to (None: unknown or unreadable version)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(.*)", version or "")
    if match is None:
        return None
    major_minor, patch, rest = f"{match[1]}.{match[2]}", int(match[3] or 0), match[4]
    by_dev_version = [ln for ln in lines().values() if ln.line == "develop" and ln.version == version]
    if "dev" in rest and by_dev_version:
        return by_dev_version[0]
    if major_minor == "2.2":
        return lines().get("2.2.0" if patch == 0 and not rest else "2.2.x")
    return lines().get(major_minor)


def installed_or_newest() -> tuple[LineSizing, str]:
    """The installed FastDeploy's line (read without importing it), else the newest line; and how it was chosen."""
    from .doctor import fastdeploy_version  # noqa: PLC0415 - doctor imports the deployment model, which imports us

    version = fastdeploy_version()
    found = line_of_version(version)
    if found is not None:
        return found, f"the installed FastDeploy {version}"
    if version is None:
        return newest(), "assumed: no FastDeploy installed here (--fd-line picks another)"
    return newest(), f"assumed: no facts for the installed FastDeploy {version} (--fd-line picks another)"


def live_ladder_base() -> tuple[int, ...] | None:
    """The worker's FastDeploy default ladder at scale 1, from its imported config module's source (None: not
    readable, then FastDeploy's usual ladder is assumed)."""
    module = sys.modules.get(CONFIG)
    facts = live_module_facts(module) if module is not None else None
    base = facts.markers.get(LADDER, "other") if facts is not None else "other"
    return None if base == "other" else tuple(int(s) for s in base.split(","))
