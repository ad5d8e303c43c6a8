"""Deployment configs: the FastDeploy server flags an operator launches with (FastDeploy's own spellings), the
model config.json values and the environment that shape graph capture. Typed with pydantic; every mistake
becomes one paragraph naming the field, the bad value, what is expected and the fix (plan --schema or docs/deployment-config.md in the project)."""
from __future__ import annotations

import difflib
import json
import math
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import fastdeploy_cli, flags
from .capture_plan import DeploymentSettings, warmup_token_budget
from .deepep_graphs import graph_settings_of_config
from .resources import data_files

DEFAULT_CONFIG = "ernie45-300b-a47b-ep8-mixed-mtp1"
PLUGIN_NAME = "fastdeploy_cudagraph_ext"  # our entry-point name, as FD_PLUGINS lists it
FD_DEFAULT_DISPATCH_CAP = 128  # PRETRAINED_INIT_CONFIGURATION in FastDeploy's config.py (2.3 and 2.6)
FD_DEFAULT_BATCHED_TOKENS = 8192  # FDConfig with the V1 KV-cache scheduler and chunked prefill (2.6)
GPUS_PER_NODE = 8  # FDConfig.max_chips_per_node on GPUs (2.6): nnode must be ceil(tp*dp/8)
ENV_KEYS = (*flags.ALL_FLAGS, "FD_PLUGINS", "NVSHMEM_QP_DEPTH")
RENAMED = {"nnodes": "the node count comes from launch.ips (one IP per node), as in FastDeploy"}


class ConfigError(ValueError):
    """A deployment config cannot be used; one paragraph per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"deployment config {source}: {p}" for p in problems))


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

    def nnodes(self) -> int:
        return len(self.launch.ips) if self.launch.ips else 1

    def dispatch_cap(self) -> int:
        cap = self.model_json.num_max_dispatch_tokens_per_rank
        return FD_DEFAULT_DISPATCH_CAP if cap is None else cap

    def settings(self) -> DeploymentSettings:
        launch, graph = self.launch, self.launch.graph_optimization_config
        env = {k: str(v) for k, v in self.environment.items()}
        k = self.speculative_tokens()
        depth = self.env("NVSHMEM_QP_DEPTH")
        return DeploymentSettings(
            max_num_seqs=launch.max_num_seqs,
            num_speculative_tokens=k,
            capture_sizes=None if graph.cudagraph_capture_sizes is None else tuple(graph.cudagraph_capture_sizes),
            max_chunk_tokens=warmup_token_budget(launch.splitwise_role, launch.max_num_seqs, k,
                                                 launch.max_num_batched_tokens or FD_DEFAULT_BATCHED_TOKENS),
            use_cudagraph=graph.use_cudagraph,
            cudagraph_only_prefill=graph.cudagraph_only_prefill,
            expert_parallel=launch.enable_expert_parallel,
            splitwise_role=launch.splitwise_role,
            max_dispatch_tokens_per_rank=self.dispatch_cap(),
            internode=self.nnodes() > 1 or launch.use_internode_ll_two_stage,
            nvshmem_qp_depth=None if depth is None else int(depth),
            round_sizes=flags.read_bool(flags.ROUND_SIZES, env),
            deepep=graph_settings_of_config(launch.passthrough(), graph.model_extra or {}, graph.graph_opt_level, env,
                                            self.nnodes()),
        )

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
        if launch.enable_expert_parallel and self.model_json.num_max_dispatch_tokens_per_rank is None:
            out.append(f"num_max_dispatch_tokens_per_rank {FD_DEFAULT_DISPATCH_CAP} (FastDeploy's default when the "
                       f"model's config.json lacks it: check your model's config.json and copy its value here)")
        return out

    def problems(self) -> list[str]:
        """What FastDeploy or the plugin would refuse beyond field types (paragraphs, field path first)."""
        out = []
        if self.launch.graph_optimization_config.cudagraph_capture_sizes == []:
            out.append("launch.graph-optimization-config.cudagraph_capture_sizes is []: FastDeploy refuses an empty "
                       "list (\"forbidden to set the capture sizes to an empty list\"). Fix: leave the key out to use "
                       "FastDeploy's default ladder, list sizes, or set use_cudagraph to false")
        plugins = self.env("FD_PLUGINS")
        if self.plugin_enabled() and (plugins is None or PLUGIN_NAME not in [p.strip() for p in plugins.split(",")]):
            shown = "unset" if plugins is None else json.dumps(plugins)
            out.append(f"environment.FD_PLUGINS is {shown}: expected a comma-separated list that names "
                       f"{PLUGIN_NAME}. FastDeploy 2.4 and later load no plugin when FD_PLUGINS is unset (#4909) and "
                       f"every FastDeploy loads only the plugins listed. Fix: \"FD_PLUGINS\": \"{PLUGIN_NAME}\" "
                       f"(add your other plugins, comma-separated)")
        ranks = self.launch.tensor_parallel_size * self.launch.data_parallel_size
        need = math.ceil(ranks / GPUS_PER_NODE)
        if ranks > GPUS_PER_NODE and self.nnodes() != need:
            out.append(f"launch.ips is {json.dumps(self.launch.ips)}: tensor-parallel-size*data-parallel-size = "
                       f"{ranks} ranks need {need} nodes of {GPUS_PER_NODE} GPUs, and FastDeploy asserts one IP per "
                       f"node. Fix: \"ips\": [{', '.join(f'{chr(34)}<node{i} IP>{chr(34)}' for i in range(need))}] "
                       f"(node 0 first)")
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
def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND = {  # pydantic error type -> (what is expected, how to write it)
    "int_type": ("a whole number (a JSON integer, not a string, decimal or boolean)", "64"),
    "int_parsing": ("a whole number (a JSON integer)", "64"),
    "int_from_float": ("a whole number (a JSON integer, not a decimal)", "64"),
    "bool_type": ("true or false (JSON booleans, unquoted)", "true"),
    "string_type": ("a string", '"text"'),
    "list_type": ("a list", "[4, 8, 16]"),
    "dict_type": ("an object", "{...}"),
    "model_type": ("an object", "{...}"),
    "model_attributes_type": ("an object", "{...}"),
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "the file"


def _translate(error: dict) -> list[str]:
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    # drop pydantic's validator and union-branch markers from the location: only the user's keys remain
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in (
        "str", "int", "bool", "float", "list[union[str,int]]", "dict[str,any]", "GraphOptimizationConfig",
        "SpeculativeConfig"))))
    path = _path(loc)
    modelled = {f.alias or name for name, f in Launch.model_fields.items()}
    if len(loc) >= 2 and loc[0] == "launch" and loc[1] not in modelled:
        return [f"launch.{loc[1]} is {_shown(error['input'] if len(loc) == 2 else value)}: expected what FastDeploy's "
                f"--{loc[1]} takes: a string, a number, a list of strings or whole numbers, or an object. Fix: write the "
                f"value as on FastDeploy's command line"]
    if kind == "unknown_keys":
        out = []
        for key, nearest in ctx["keys"]:
            where = f"{ctx['section']}.{key}" if ctx["section"] else key
            hint = RENAMED.get(key) or (f"did you mean \"{nearest}\"?" if nearest else "no such key")
            fix = f"rename it to \"{nearest}\"" if nearest and key not in RENAMED else "remove it"
            out.append(f"{where} is not a known key ({hint}). Fix: {fix}; see plan --schema or docs/deployment-config.md in the project")
        return out
    if kind == "switch_flag":
        return [f"{path}.{ctx['key']} is {_shown(ctx['value'])}: expected true or false (--{ctx['key']} takes no "
                f"value). Fix: \"{ctx['key']}\": true"]
    if kind == "value_flag":
        return [f"{path}.{ctx['key']} is {_shown(ctx['value'])}: expected a value (--{ctx['key']} is not a switch). "
                f"Fix: write the value FastDeploy's --{ctx['key']} takes"]
    if kind == "json_string":
        return [f"{path} is a string that is not JSON ({ctx['error']}): expected an object, or a JSON string of "
                f"one as FastDeploy's command line takes it. Fix: write it as an object, e.g. {{\"use_cudagraph\": true}}"]
    if kind == "flag_value":
        return [f"{path}.{ctx['key']} is {_shown(ctx['value'])}: expected 1/true/yes/on to enable, 0/false/no/off to "
                f"disable (the plugin refuses anything else at start-up). Fix: \"{ctx['key']}\": \"1\""]
    if kind == "retired_flag":
        return [f"{path}.{ctx['key']} is no longer supported: {flags.RETIRED[ctx['key']]}"]
    if kind == "qp_depth":
        return [f"{path}.NVSHMEM_QP_DEPTH is {_shown(ctx['value'])}: expected a positive whole number of queue "
                f"entries. Fix: \"NVSHMEM_QP_DEPTH\": \"1024\" (at least 2*(num_max_dispatch_tokens_per_rank+1))"]
    if kind == "env_name":
        return [f"{path}.{_shown(ctx['key'])} is not an environment variable name: expected letters, digits and "
                f"underscores. Fix: correct or remove it"]
    if kind == "missing":
        what = {"launch": "the FastDeploy server flags (an object)", "launch.model": "the model FastDeploy serves "
                "(its --model: a path or name)", "launch.speculative-config.method": "the speculative method, e.g. "
                "\"mtp\""}.get(path, "a value")
        return [f"{path} is missing: expected {what}. Fix: add it (see plan --schema or docs/deployment-config.md in the project)"]
    if kind in ("greater_than_equal", "less_than_equal", "too_short", "string_too_short"):
        bound = {"greater_than_equal": f"at least {ctx.get('ge')}", "less_than_equal": f"at most {ctx.get('le')}",
                 "too_short": "not empty", "string_too_short": "not empty"}[kind]
        if path.endswith("num_speculative_tokens"):
            bound = "1..5 (FastDeploy's range)"
        return [f"{path} is {_shown(value)}: expected {bound}. Fix: change the value"]
    if kind in ("literal_error", "enum"):
        return [f"{path} is {_shown(value)}: expected one of {ctx.get('expected')}. Fix: use one of those"]
    if path == "the file":
        return [f"the file holds {_shown(value)}: expected a JSON object with \"launch\". Fix: see the bundled "
                f"configs (plan --list) and plan --schema or docs/deployment-config.md in the project"]
    if path.startswith("environment."):
        return [f"{path} is {_shown(value)}: expected a string (environment values are text). Fix: quote it, "
                f"e.g. \"1\""]
    expected, example = _KIND.get(kind, (error["msg"].lower(), ""))
    fix = f"write it as {example}" if example else "change the value"
    return [f"{path} is {_shown(value)}: expected {expected}. Fix: {fix}"]


def parse(source: str, data: bytes) -> DeploymentConfig:
    """A deployment config from a file's bytes; raises ConfigError with every problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(source, [f"the file is not UTF-8 text (byte {error.start}): expected a JSON file. Fix: "
                                   f"save it as UTF-8"]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(source, [f"the file is not JSON ({error.msg} at line {error.lineno}, column "
                                   f"{error.colno}): expected a JSON object. Fix: correct the JSON there"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"the file holds {_shown(raw)}: expected a JSON object with \"launch\" (and "
                                   f"optionally \"model_config\", \"environment\", \"description\"). Fix: see "
                                   f"plan --schema or docs/deployment-config.md in the project or a bundled config (plan --list)"])
    try:
        config = DeploymentConfig.model_validate(raw)
    except ValidationError as error:
        by_path: dict[str, str] = {}  # a union reports one error per branch: keep the first per field
        for problem in (p for e in error.errors(include_url=False) for p in _translate(e)):
            by_path.setdefault(problem.split(" ", 1)[0], problem)
        raise ConfigError(source, list(by_path.values())) from None
    if config.problems():
        raise ConfigError(source, config.problems())
    return config


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
