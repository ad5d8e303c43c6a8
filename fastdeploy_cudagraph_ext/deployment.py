"""Deployment configs: the FastDeploy server flags an operator launches with (FastDeploy's own spellings), the
model config.json values and the environment that shape graph capture. Typed with pydantic; every mistake
becomes one paragraph naming the field, the bad value, what is expected and the fix (plan --schema or docs/deployment-config.md in the project)."""
from __future__ import annotations

import copy
import difflib
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import fastdeploy_cli, flags
from .capture_plan import DEEPEP_DEFAULT_QP_DEPTH, DeploymentSettings, Problem, warmup_token_budget
from .deepep_graphs import graph_settings_of_config
from .fd_lines import FDConfigSizes, LineSizing
from .resources import data_files

DEFAULT_CONFIG = "ernie45-300b-a47b-ep8-mixed-mtp1"
PLUGIN_NAME = "fastdeploy_cudagraph_ext"  # our entry-point name, as FD_PLUGINS lists it
FD_DEFAULT_DISPATCH_CAP = 128  # PRETRAINED_INIT_CONFIGURATION in FastDeploy's config.py (2.3 and 2.6)
FD_DEFAULT_BATCHED_TOKENS = 8192  # FDConfig with the V1 KV-cache scheduler and chunked prefill (2.6)
GPUS_PER_NODE = 8  # FDConfig.max_chips_per_node on GPUs (2.6): nnode must be ceil(tp*dp/8)
ENV_KEYS = (*flags.ALL_FLAGS, "FD_PLUGINS", "NVSHMEM_QP_DEPTH")
RENAMED = {"nnodes": "the node count comes from launch.ips (one IP per node), as in FastDeploy"}


@dataclass(frozen=True)
class Edit:
    """One change to a config file's JSON: set `path` to `value`, remove it, or rename its last key to `value`."""

    path: tuple[str | int, ...]  # keys as written in the file (FastDeploy's spellings), list indices as ints
    action: Literal["set", "remove", "rename"] = "set"
    value: Any = None


FixEdits = tuple[Edit, ...]  # one fix: every edit applied together


class ConfigError(ValueError):
    """A deployment config cannot be used; one paragraph per problem, each with the fixes (as edits) its text
    proposes: each was applied and re-validated before it was offered."""

    def __init__(self, source: str, problems: list[str], fixes: list[list[FixEdits]] | None = None) -> None:
        self.source = source
        self.problems = problems
        self.fixes = fixes if fixes is not None else [[] for _ in problems]
        super().__init__("\n".join(f"deployment config {source}: {p}" for p in problems))


def apply_edits(raw: Any, edits: FixEdits) -> Any:
    """A copy of a config's JSON with `edits` applied; a section written as a JSON string is edited as an object."""
    out = copy.deepcopy(raw)
    for edit in edits:
        node, key = [out], 0
        for depth, part in enumerate(edit.path):
            child = node[key]
            if isinstance(child, str):
                try:
                    child = node[key] = json.loads(child)
                except json.JSONDecodeError:
                    child = node[key] = {}
            if isinstance(part, str) and not isinstance(child, dict):
                child = node[key] = {}
            if isinstance(part, str) and part not in child and depth < len(edit.path) - 1:
                child[part] = {}
            node, key = child, part
        if edit.action == "remove":
            node.pop(key, None) if isinstance(node, dict) else node.pop(key)
        elif edit.action == "rename":
            node[edit.value] = node.pop(key)
        else:
            node[key] = edit.value
    return out


def _unknown(section: str, keys: list[str], known: frozenset[str] | tuple[str, ...]) -> PydanticCustomError:
    def nearest(key: str) -> str:
        folded = {k.upper(): k for k in known}  # environment names differ from a typo often only in case
        for guess in (key.upper(), key.replace("_", "-"), key.replace("-", "_")):
            if guess in folded and folded[guess] != key:
                return folded[guess]
        found = (difflib.get_close_matches(key.replace("_", "-"), known, 1, 0.6)
                 or difflib.get_close_matches(key.replace("-", "_"), known, 1, 0.6))
        return found[0] if found else ""

    found = [[key, nearest(key)] for key in keys]
    return PydanticCustomError("unknown_keys", "unknown keys", {"section": section, "keys": found})


def _reject_unknown(data: Any, section: str, known: frozenset[str] | tuple[str, ...]) -> None:
    """A section given as an object may hold only `known` keys; each other key is named with its nearest."""
    if isinstance(data, dict):
        unknown = [k for k in data if k not in known]
        if unknown:
            raise _unknown(section, unknown, known)


def _json_object(value: Any) -> Any:
    """FastDeploy's CLI takes these configs as JSON strings: accept that form as well as an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise PydanticCustomError("json_string", "not JSON", {"error": str(error)}) from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, protected_namespaces=())


class GraphOptimizationConfig(_Section):
    """FastDeploy's --graph-optimization-config; keys not listed here pass through to FastDeploy unchanged."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    use_cudagraph: bool = Field(True, description="capture CUDA graphs (FastDeploy's default on GPU: true)")
    cudagraph_capture_sizes: list[int] | None = Field(
        None, description="decode capture sizes in TOKENS; leave out for FastDeploy's default ladder")
    cudagraph_only_prefill: bool = Field(False, description="capture prefill graphs only; decode runs eagerly")
    graph_opt_level: Literal[0, 1, 2] = Field(0, description="0 dynamic graph, 1 static, 2 static + CINN")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        _reject_unknown(data, "launch.graph-optimization-config", fastdeploy_cli.GRAPH_OPT_KEYS)
        return data


class SpeculativeConfig(_Section):
    """FastDeploy's --speculative-config; keys not listed here pass through to FastDeploy unchanged."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    # 2.3 accepts mtp/ngram_match (hybrid_mtp_ngram named in its comments), 2.6 naive/mtp/ngram/suffix
    method: Literal["mtp", "ngram_match", "hybrid_mtp_ngram", "naive", "ngram", "suffix"] = Field(
        description='"mtp" for MTP (the only method whose graphs are sized as multiples of k+1)')
    num_speculative_tokens: int = Field(1, ge=1, le=5, description="k: draft tokens per step (FastDeploy: 1..5)")
    model: str | None = Field(None, description="the MTP draft model's path")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        _reject_unknown(data, "launch.speculative-config", fastdeploy_cli.SPECULATIVE_KEYS)
        return data


FlagValue = bool | int | float | str | list[str | int] | dict[str, Any]  # FastDeploy flags passed through


class Launch(_Section):
    """FastDeploy's server flags, spelled as on its command line without the leading `--`. Flags not modelled
    here are checked against FastDeploy's flag names and passed through."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True, populate_by_name=False)
    __pydantic_extra__: dict[str, FlagValue]
    model: str = Field(min_length=1, description="the model FastDeploy serves (--model)")
    max_num_seqs: int = Field(8, ge=1, alias="max-num-seqs", description="requests per engine (FastDeploy default 8)")
    max_num_batched_tokens: int | None = Field(None, ge=1, alias="max-num-batched-tokens")
    tensor_parallel_size: int = Field(1, ge=1, alias="tensor-parallel-size")
    data_parallel_size: int = Field(1, ge=1, alias="data-parallel-size")
    enable_expert_parallel: bool = Field(False, alias="enable-expert-parallel")
    use_internode_ll_two_stage: bool = Field(False, alias="use-internode-ll-two-stage")
    splitwise_role: Literal["mixed", "prefill", "decode"] = Field("mixed", alias="splitwise-role")
    ips: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="one IP per node, node 0 first (--ips a,b); omit on one node")
    graph_optimization_config: GraphOptimizationConfig = Field(
        default_factory=GraphOptimizationConfig, alias="graph-optimization-config")
    speculative_config: SpeculativeConfig | None = Field(None, alias="speculative-config")

    @model_validator(mode="before")
    @classmethod
    def _known_flags(cls, data: Any) -> Any:
        _reject_unknown(data, "launch", fastdeploy_cli.ALL_FLAGS)
        if isinstance(data, dict):
            for key, value in data.items():
                if key in fastdeploy_cli.SWITCH_FLAGS and not isinstance(value, bool):
                    raise PydanticCustomError("switch_flag", "switch", {"key": key, "value": value})
                modelled = key in {f.alias or name for name, f in cls.model_fields.items()}
                if not modelled and key not in fastdeploy_cli.SWITCH_FLAGS and isinstance(value, bool):
                    raise PydanticCustomError("value_flag", "value", {"key": key, "value": value})
        return data

    @field_validator("graph_optimization_config", "speculative_config", mode="before")
    @classmethod
    def _json_config(cls, value: Any) -> Any:
        return _json_object(value)

    @field_validator("ips", mode="before")
    @classmethod
    def _comma_ips(cls, value: Any) -> Any:
        return [ip.strip() for ip in value.split(",")] if isinstance(value, str) else value

    def passthrough(self) -> dict[str, Any]:
        """FastDeploy flags given but not modelled here."""
        return dict(self.__pydantic_extra__ or {})


class ModelConfigJson(_Section):
    """Values of the model's config.json that shape capture (FastDeploy reads them from there, not from flags)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        _reject_unknown(data, "model_config", tuple(cls.model_fields))
        return data

    num_max_dispatch_tokens_per_rank: int | None = Field(
        None, ge=1, description="DeepEP's low-latency token cap per rank (FastDeploy's default 128 when absent)")


class DeploymentConfig(_Section):
    description: str = ""
    launch: Launch
    model_json: ModelConfigJson = Field(default_factory=ModelConfigJson, alias="model_config")
    environment: dict[str, str | int] = Field(default_factory=dict, description="the server's environment")

    @model_validator(mode="before")
    @classmethod
    def _known_sections(cls, data: Any) -> Any:
        _reject_unknown(data, "", ("description", "launch", "model_config", "environment"))
        return data

    @field_validator("environment", mode="after")
    @classmethod
    def _environment(cls, env: dict[str, str | int]) -> dict[str, str | int]:
        for key, value in env.items():
            if key in flags.RETIRED:
                raise PydanticCustomError("retired_flag", "retired", {"key": key})
            near = [k for k in ENV_KEYS if k != key and (k == key.upper() or difflib.SequenceMatcher(None, k, key).ratio() > 0.85)]
            if (near or key.startswith("FD_CUDAGRAPH_EXT")) and key not in ENV_KEYS:
                raise _unknown("environment", [key], ENV_KEYS)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise PydanticCustomError("env_name", "env name", {"key": key})
            text = str(value)
            if key in flags.ALL_FLAGS:
                try:
                    flags.read_bool(key, {key: text})
                except flags.FlagError:
                    raise PydanticCustomError("flag_value", "flag", {"key": key, "value": value}) from None
            if key == "NVSHMEM_QP_DEPTH" and not (text.isdigit() and int(text) > 0):
                raise PydanticCustomError("qp_depth", "qp", {"key": key, "value": value})
        return env

    # --- derived views -------------------------------------------------------------------------------------
    def env(self, name: str) -> str | None:
        value = self.environment.get(name)
        return None if value is None else str(value)

    def plugin_enabled(self) -> bool:
        return flags.read_bool(flags.ENABLE, {k: str(v) for k, v in self.environment.items()})

    def speculative_tokens(self) -> int:
        spec = self.launch.speculative_config
        return spec.num_speculative_tokens if spec is not None and spec.method == "mtp" else 0

    def expert_parallel_degree(self) -> int:
        """FastDeploy's EP degree: tp*dp when --enable-expert-parallel is set, else 1 (ParallelConfig.__init__ in
        fastdeploy/config.py, the same on every line from 2.2.0 fa236927 to develop c1b7c083)."""
        launch = self.launch
        return launch.tensor_parallel_size * launch.data_parallel_size if launch.enable_expert_parallel else 1

    def uses_expert_parallel(self) -> bool:
        """FastDeploy's use_ep: the EP degree is above 1 (a flag on one rank has no effect)."""
        return self.expert_parallel_degree() > 1

    def nnodes(self) -> int:
        return len(self.launch.ips) if self.launch.ips else 1

    def dispatch_cap(self) -> int:
        cap = self.model_json.num_max_dispatch_tokens_per_rank
        return FD_DEFAULT_DISPATCH_CAP if cap is None else cap

    def fdconfig_sizes(self, line: LineSizing) -> FDConfigSizes:
        """The decode sizes that line's FDConfig makes of this config (what its worker reads)."""
        sizes = self.launch.graph_optimization_config.cudagraph_capture_sizes
        return line.fdconfig_sizes(self.launch.max_num_seqs, self.speculative_tokens(),
                                   None if sizes is None else tuple(sizes))

    def settings(self, line: LineSizing) -> DeploymentSettings:
        """What the worker on that FastDeploy line reads from its FDConfig (sizes as FDConfig computed them)."""
        launch, graph = self.launch, self.launch.graph_optimization_config
        env = {k: str(v) for k, v in self.environment.items()}
        k = self.speculative_tokens()
        depth = self.env("NVSHMEM_QP_DEPTH")
        fd = self.fdconfig_sizes(line)
        return DeploymentSettings(
            max_num_seqs=launch.max_num_seqs,
            num_speculative_tokens=k,
            # [] stays [] (refused as in FastDeploy); a list FDConfig emptied is what the worker meets
            capture_sizes=() if graph.cudagraph_capture_sizes == [] else fd.sizes,
            ladder_cap=fd.largest if fd.sizes is None else None,
            max_chunk_tokens=warmup_token_budget(launch.splitwise_role, launch.max_num_seqs, k,
                                                 launch.max_num_batched_tokens or FD_DEFAULT_BATCHED_TOKENS),
            use_cudagraph=graph.use_cudagraph,
            cudagraph_only_prefill=graph.cudagraph_only_prefill,
            expert_parallel=self.uses_expert_parallel(),
            splitwise_role=launch.splitwise_role,
            max_dispatch_tokens_per_rank=self.dispatch_cap(),
            internode=self.nnodes() > 1 or launch.use_internode_ll_two_stage,
            nvshmem_qp_depth=None if depth is None else int(depth),
            round_sizes=flags.read_bool(flags.ROUND_SIZES, env),
            deepep=graph_settings_of_config(launch.passthrough(), graph.model_extra or {}, graph.graph_opt_level, env,
                                            self.nnodes(), line.graphs),
            ladder_base=line.ladder_base,
        )

    def line_problems(self, line: LineSizing) -> list[Problem]:
        """What that line's FastDeploy itself refuses at start-up, before any plugin code runs."""
        limit, seqs = line.max_num_seqs_limit, self.launch.max_num_seqs
        if limit is None or seqs <= limit:
            return []
        return [Problem(f"max-num-seqs {seqs} is above {limit}, which {line.label()} asserts at start-up "
                        f"(FDConfig.check: max_num_seqs <= {limit}). Fix: lower --max-num-seqs to {limit} or less",
                        ({"max_num_seqs": limit},))]

    def assumed_defaults(self) -> list[str]:
        """FastDeploy defaults the plan relies on because the config leaves them out (shown in the plan)."""
        launch, graph = self.launch, self.launch.graph_optimization_config
        out = []
        if "max_num_seqs" not in launch.model_fields_set:
            out.append("max-num-seqs 8 (FastDeploy's default)")
        if launch.max_num_batched_tokens is None:
            out.append(f"max-num-batched-tokens {FD_DEFAULT_BATCHED_TOKENS} (FastDeploy's default with chunked prefill)")
        if "use_cudagraph" not in graph.model_fields_set:
            out.append("use_cudagraph true (FastDeploy's default on GPU)")
        if graph.cudagraph_capture_sizes is None and graph.use_cudagraph:
            out.append("cudagraph_capture_sizes: FastDeploy's default ladder")
        spec = launch.speculative_config
        if spec is not None and "num_speculative_tokens" not in spec.model_fields_set:
            out.append("num_speculative_tokens 1 (FastDeploy's default)")
        if self.uses_expert_parallel() and self.model_json.num_max_dispatch_tokens_per_rank is None:
            out.append(f"num_max_dispatch_tokens_per_rank {FD_DEFAULT_DISPATCH_CAP} (FastDeploy's default when the "
                       f"model's config.json lacks it: check your model's config.json and copy its value here)")
        return out

    def problems(self) -> list[Found]:
        """What FastDeploy or the plugin would refuse beyond field types (paragraphs, field path first)."""
        out = []
        sizes_at = ("launch", "graph-optimization-config", "cudagraph_capture_sizes")
        if self.launch.graph_optimization_config.cudagraph_capture_sizes == []:
            out.append(Found(sizes_at, "launch.graph-optimization-config.cudagraph_capture_sizes is []: FastDeploy "
                             "refuses an empty list (\"forbidden to set the capture sizes to an empty list\")",
                             "leave the key out to use FastDeploy's default ladder, list sizes, or set use_cudagraph "
                             "to false", [((Edit(sizes_at, "remove"),), "leave the key out to use FastDeploy's "
                                           "default ladder (or list sizes, or set use_cudagraph to false)")]))
        plugins = self.env("FD_PLUGINS")
        if self.plugin_enabled() and (plugins is None or PLUGIN_NAME not in [p.strip() for p in plugins.split(",")]):
            shown = "unset" if plugins is None else json.dumps(plugins)
            value = PLUGIN_NAME if not (plugins or "").strip() else f"{plugins},{PLUGIN_NAME}"
            out.append(Found(("environment", "FD_PLUGINS"),
                             f"environment.FD_PLUGINS is {shown}: expected a comma-separated list that names "
                             f"{PLUGIN_NAME}. FastDeploy 2.4 and later load no plugin when FD_PLUGINS is unset (#4909) "
                             f"and every FastDeploy loads only the plugins listed", "",
                             [((Edit(("environment", "FD_PLUGINS"), "set", value),),
                               f"\"FD_PLUGINS\": {json.dumps(value)}" + (" (add your other plugins, comma-separated)"
                                                                         if plugins is None else ""))]))
        ranks = self.launch.tensor_parallel_size * self.launch.data_parallel_size
        need = math.ceil(ranks / GPUS_PER_NODE)
        if ranks > GPUS_PER_NODE and self.nnodes() != need:
            # at most four placeholders: a mistyped parallel size may ask for billions of nodes
            nodes = [f'"<node{i} IP>"' for i in range(need)] if need <= 4 else \
                ['"<node0 IP>"', '"<node1 IP>"', f"... ({need} in all)", f'"<node{need - 1} IP>"']
            out.append(Found(("launch", "ips"),
                             f"launch.ips is {json.dumps(self.launch.ips)}: tensor-parallel-size*data-parallel-size = "
                             f"{ranks} ranks need {need} nodes of {GPUS_PER_NODE} GPUs, and FastDeploy asserts one IP "
                             f"per node", "\"ips\": [" + ", ".join(nodes) + "] (node 0 first)"))
        return out

    def launch_command(self) -> str:
        """The server command, from validated values; on several nodes the same line runs on every node."""
        env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in self.environment.items())
        args: list[str] = []
        raw = self.launch.model_dump(by_alias=True, exclude_unset=True)
        for flag, value in raw.items():
            if value is True:
                args.append(f"--{flag}")
            elif value is False or value is None:
                continue
            elif flag == "ips":
                args.append(f"--ips {shlex.quote(','.join(value))}")
            elif isinstance(value, dict):
                args.append(f"--{flag} {shlex.quote(json.dumps(value, separators=(',', ':')))}")
            elif isinstance(value, list):
                args.append(f"--{flag} " + " ".join(shlex.quote(str(v)) for v in value))
            else:
                args.append(f"--{flag} {shlex.quote(str(value))}")
        return f"{env} python -m fastdeploy.entrypoints.openai.api_server " + " ".join(args)


# ---- loading ----------------------------------------------------------------------------------------------------
@dataclass
class Found:
    """One problem before its fix is chosen: where it is in the file, what is wrong, and candidate fixes (edits and
    how the fix reads); the first candidate that the validator accepts is offered, else `fallback` (words only)."""

    loc: tuple[str | int, ...]
    text: str
    fallback: str
    candidates: list[tuple[FixEdits, str]] = field(default_factory=list)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _as_bool(value: Any) -> bool | None:
    """The operator's intent in a mistyped boolean ("false", 0, "off"), or None when there is none to keep."""
    text = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    return True if text in _TRUE else False if text in _FALSE else None


def _as_ints(value: Any) -> list[int]:
    """A mistyped whole number ("64", 64.0, " 8 ") as that number; a decimal as its two nearest whole numbers;
    nothing when the value holds no number (a boolean is an intent, not a number)."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return [int(text)]
        try:
            value = float(text)
        except ValueError:
            return []
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return []
    return sorted({math.floor(value), math.ceil(value)}, key=lambda n: (abs(n - value), n))


def _as_int_list(value: Any) -> list[int] | None:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[\s,\[\]]+", value) if p]
        numbers = [_as_ints(p) for p in parts]
        return [n[0] for n in numbers] if parts and all(numbers) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return None


def _set(loc: tuple, value: Any) -> tuple[FixEdits, str]:
    return (Edit(loc, "set", value),), f"write it as {json.dumps(value)}"


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND = {  # pydantic error type -> what is expected
    "int_type": "a whole number (a JSON integer, not a string, decimal or boolean)",
    "int_parsing": "a whole number (a JSON integer)",
    "int_from_float": "a whole number (a JSON integer, not a decimal)",
    "bool_type": "true or false (JSON booleans, unquoted)",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "the file"


def _candidates(kind: str, loc: tuple, value: Any) -> list[tuple[FixEdits, str]]:
    """Fixes computed from the value given, keeping the operator's intent; parse() keeps those that validate."""
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return [_set(loc, n) for n in _as_ints(value)]
    if kind == "bool_type":
        intent = _as_bool(value)
        return [] if intent is None else [_set(loc, intent)]
    if kind == "list_type":
        numbers = _as_int_list(value)
        return [] if numbers is None else [_set(loc, numbers)]
    if kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return [_set(loc, str(value))]
    return []


def _translate(error: dict) -> list[Found]:
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    # drop pydantic's validator and union-branch markers from the location: only the user's keys remain
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in (
        "str", "int", "bool", "float", "list[union[str,int]]", "dict[str,any]", "GraphOptimizationConfig",
        "SpeculativeConfig"))))
    path = _path(loc)
    modelled = {f.alias or name for name, f in Launch.model_fields.items()}
    if len(loc) >= 2 and loc[0] == "launch" and loc[1] not in modelled:
        return [Found(loc[:2], f"launch.{loc[1]} is {_shown(error['input'] if len(loc) == 2 else value)}: expected "
                      f"what FastDeploy's --{loc[1]} takes: a string, a number, a list of strings or whole numbers, or "
                      f"an object", "write the value as on FastDeploy's command line")]
    if kind == "unknown_keys":
        out = []
        section = tuple(ctx["section"].split(".")) if ctx["section"] else ()
        for key, nearest in ctx["keys"]:
            where = f"{ctx['section']}.{key}" if ctx["section"] else key
            hint = RENAMED.get(key) or (f"did you mean \"{nearest}\"?" if nearest else "no such key")
            see = "; see plan --schema or docs/deployment-config.md in the project"
            at = (*section, key)
            fix = ((Edit(at, "rename", nearest),), f"rename it to \"{nearest}\"{see}") \
                if nearest and key not in RENAMED else ((Edit(at, "remove"),), f"remove it{see}")
            out.append(Found(at, f"{where} is not a known key ({hint})", f"remove it{see}", [fix]))
        return out
    at = (*loc, ctx["key"]) if "key" in ctx else loc
    if kind == "switch_flag":
        intent = _as_bool(ctx["value"])
        return [Found(at, f"{path}.{ctx['key']} is {_shown(ctx['value'])}: expected true or false (--{ctx['key']} "
                      f"takes no value)", "write true or false, unquoted",
                      [] if intent is None else
                      [((Edit(at, "set", intent),), f"\"{ctx['key']}\": {json.dumps(intent)}")])]
    if kind == "value_flag":
        return [Found(at, f"{path}.{ctx['key']} is {_shown(ctx['value'])}: expected a value (--{ctx['key']} is not a "
                      f"switch)", f"write the value FastDeploy's --{ctx['key']} takes")]
    if kind == "json_string":
        return [Found(loc, f"{path} is a string that is not JSON ({ctx['error']}): expected an object, or a JSON "
                      f"string of one as FastDeploy's command line takes it", "write it as an object, e.g. "
                      "{\"use_cudagraph\": true}")]
    if kind == "flag_value":
        intent = _as_bool(ctx["value"])
        shown = "1" if intent in (None, True) else "0"
        return [Found(at, f"{path}.{ctx['key']} is {_shown(ctx['value'])}: expected 1/true/yes/on to enable, "
                      f"0/false/no/off to disable (the plugin refuses anything else at start-up)", "",
                      [((Edit(at, "set", shown),), f"\"{ctx['key']}\": \"{shown}\"")])]
    if kind == "retired_flag":
        return [Found(at, f"{path}.{ctx['key']} is no longer supported: {flags.RETIRED[ctx['key']]}", "",
                      [((Edit(at, "remove"),), "")])]
    if kind == "qp_depth":
        numbers = [n for n in _as_ints(ctx["value"]) if n > 0]
        depth = str(numbers[0] if numbers else DEEPEP_DEFAULT_QP_DEPTH)
        return [Found(at, f"{path}.NVSHMEM_QP_DEPTH is {_shown(ctx['value'])}: expected a positive whole number of "
                      f"queue entries", "",
                      [((Edit(at, "set", depth),), f"\"NVSHMEM_QP_DEPTH\": \"{depth}\" (at least "
                                                    f"2*(num_max_dispatch_tokens_per_rank+1))")])]
    if kind == "env_name":
        return [Found(at, f"{path}.{_shown(ctx['key'])} is not an environment variable name: expected letters, digits "
                      f"and underscores", "correct or remove it")]
    if kind == "missing":
        what = {"launch": "the FastDeploy server flags (an object)", "launch.model": "the model FastDeploy serves "
                "(its --model: a path or name)", "launch.speculative-config.method": "the speculative method, e.g. "
                "\"mtp\""}.get(path, "a value")
        return [Found(loc, f"{path} is missing: expected {what}", "add it (see plan --schema or "
                      "docs/deployment-config.md in the project)")]
    if kind in ("greater_than_equal", "less_than_equal", "too_short", "string_too_short"):
        bound = {"greater_than_equal": f"at least {ctx.get('ge')}", "less_than_equal": f"at most {ctx.get('le')}",
                 "too_short": "not empty", "string_too_short": "not empty"}[kind]
        if path.endswith("num_speculative_tokens"):
            bound = "1..5 (FastDeploy's range)"
        limit = ctx.get("ge", ctx.get("le"))
        return [Found(loc, f"{path} is {_shown(value)}: expected {bound}", "change the value",
                      [] if limit is None else [_set(loc, limit)])]
    if kind in ("literal_error", "enum"):
        folded = [c for c in re.findall(r"'([^']*)'", str(ctx.get("expected"))) if c.lower() == str(value).lower()]
        return [Found(loc, f"{path} is {_shown(value)}: expected one of {ctx.get('expected')}", "use one of those",
                      [_set(loc, folded[0])] if folded else [])]
    if path == "the file":
        return [Found(loc, f"the file holds {_shown(value)}: expected a JSON object with \"launch\"", "see the "
                      "bundled configs (plan --list) and plan --schema or docs/deployment-config.md in the project")]
    if path.startswith("environment."):
        text = None if isinstance(value, (dict, list)) or value is None else \
            ({True: "1", False: "0"}[value] if isinstance(value, bool) else str(value))
        return [Found(loc, f"{path} is {_shown(value)}: expected a string (environment values are text)",
                      "quote it",
                      [] if text is None else [((Edit(loc, "set", text),), f"quote it: {json.dumps(text)}")])]
    expected = _KIND.get(kind, error["msg"].lower())
    return [Found(loc, f"{path} is {_shown(value)}: expected {expected}", "change the value",
                  _candidates(kind, loc, value))]


def _found(raw: Any) -> list[Found]:
    """Every problem of a config's JSON, first per field (a union reports one error per branch)."""
    if not isinstance(raw, dict):
        return [Found((), f"the file holds {_shown(raw)}: expected a JSON object with \"launch\" (and optionally "
                      "\"model_config\", \"environment\", \"description\")", "see plan --schema or "
                      "docs/deployment-config.md in the project or a bundled config (plan --list)")]
    try:
        config = DeploymentConfig.model_validate(raw)
    except ValidationError as error:
        by_path: dict[str, Found] = {}
        for found in (f for e in error.errors(include_url=False) for f in _translate(e)):
            by_path.setdefault(found.text.split(" ", 1)[0], found)
        return list(by_path.values())
    return config.problems()


def _fixed(raw: Any, found: Found, retries: int = 1) -> tuple[str, list[FixEdits]]:
    """The problem's paragraph with the first candidate fix that the same validator accepts (its error gone). A
    candidate that is only out of range ("9" for 1..5) is replaced by the validator's own nearest value."""
    for edits, words in found.candidates:
        after = [f for f in _found(apply_edits(raw, edits)) if f.loc == found.loc]
        if not after:
            return f"{found.text}. Fix: {words or _edits_words(edits)}", [edits]
        if retries and after[0].candidates:
            text, fixes = _fixed(apply_edits(raw, edits), after[0], retries - 1)
            if fixes:
                return f"{found.text}. Fix: {text.rsplit('. Fix: ', 1)[1]}", fixes
    return f"{found.text}. Fix: {found.fallback}", []


def _edits_words(edits: FixEdits) -> str:
    return "; ".join(f"remove {_path(e.path)}" if e.action == "remove" else
                     f"rename {_path(e.path)} to {e.value}" if e.action == "rename" else
                     f"set {_path(e.path)} to {json.dumps(e.value)}" for e in edits)


def parse(source: str, data: bytes) -> DeploymentConfig:
    """A deployment config from a file's bytes (a leading UTF-8 BOM is accepted); raises ConfigError with every
    problem, each with a fix the validator accepts where one can be computed from the value given."""
    try:
        text = data.decode("utf-8-sig")  # Windows editors save UTF-8 with a byte-order mark
    except UnicodeDecodeError as error:
        raise ConfigError(source, [f"the file is not UTF-8 text (byte {error.start}): expected a JSON file. Fix: "
                                   f"save it as UTF-8"]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(source, [f"the file is not JSON ({error.msg} at line {error.lineno}, column "
                                   f"{error.colno}): expected a JSON object. Fix: correct the JSON there"]) from None
    found = _found(raw)
    if found:
        fixed = [_fixed(raw, f) for f in found]
        raise ConfigError(source, [text for text, _ in fixed], [fixes for _, fixes in fixed])
    return DeploymentConfig.model_validate(raw)


# Where each DeploymentSettings field that a plan's fix changes is written in a deployment config.
SETTING_PATHS: dict[str, tuple[str, ...]] = {
    "max_num_seqs": ("launch", "max-num-seqs"),
    "num_speculative_tokens": ("launch", "speculative-config", "num_speculative_tokens"),
    "capture_sizes": ("launch", "graph-optimization-config", "cudagraph_capture_sizes"),
    "use_cudagraph": ("launch", "graph-optimization-config", "use_cudagraph"),
    "max_dispatch_tokens_per_rank": ("model_config", "num_max_dispatch_tokens_per_rank"),
    "nvshmem_qp_depth": ("environment", "NVSHMEM_QP_DEPTH"),
}


def plan_fix_edits(fix: dict[str, Any]) -> FixEdits:
    """A capture plan's fix (DeploymentSettings fields) as edits of the config file."""
    edits = []
    for name, value in fix.items():
        path = SETTING_PATHS[name]
        if value is None:
            edits.append(Edit(path, "remove"))
        else:
            edits.append(Edit(path, "set", list(value) if isinstance(value, tuple) else
                              str(value) if name == "nvshmem_qp_depth" else value))
    return tuple(edits)


def bundled_names() -> list[str]:
    return sorted(name.removesuffix(".json") for name in data_files("configs"))


def bundled_text(name: str) -> str:
    return data_files("configs")[f"{name}.json"]


def load(ref: str | None) -> tuple[str, DeploymentConfig]:
    """(name, config) of a bundled config's name, a file path, or the default bundled config."""
    ref = DEFAULT_CONFIG if ref is None else ref
    path = Path(ref)
    if path.is_dir():
        raise ConfigError(ref, ["is a directory: expected a JSON file or a bundled config's name. Fix: give the "
                                "file inside it, or a name from plan --list"])
    if path.is_file():
        try:
            return path.name, parse(path.name, path.read_bytes())
        except OSError as error:
            raise ConfigError(ref, [f"cannot be read ({error.strerror}). Fix: check its permissions"]) from None
    name = ref.removesuffix(".json")
    if name in bundled_names():
        return name, parse(name, bundled_text(name).encode())
    raise ConfigError(ref, [f"does not exist: neither a file nor a bundled config. Fix: give a path to a JSON file, "
                            f"or one of: {', '.join(bundled_names())}"])


def json_schema() -> dict:
    return DeploymentConfig.model_json_schema(by_alias=True)
