"""Pre-flight check: would a FastDeploy worker on this machine start with the plugin? Never crashes: Paddle is
imported only in a child process (an import error, exception or signal there becomes a finding), FastDeploy is
read from its files and never imported. One verdict line; exit 0 only when the worker would start."""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import deployment, fd_lines, flags
from .capture_plan import DEEPEP_DEFAULT_QP_DEPTH, PlanError, coverage, no_decode_graphs_reason, plan_deployment
from .fd_facts import installed_root

C10_REPORT = "fastdeploy_cudagraph_ext.c10_bridge:paddle_c10_report"  # (ok, paragraph), from the c10 helper
PROBE_TIMEOUT_S = 300
FD_DISTS = ("fastdeploy-gpu", "fastdeploy-xpu", "fastdeploy-iluvatar-gpu", "fastdeploy-dcu", "fastdeploy")

# Runs in a child: one JSON line per stage, so a crash in a later stage keeps the earlier results.
_PROBE = r"""
import importlib, importlib.util, json, sys
def emit(**kw): print(json.dumps(kw), flush=True)
try:
    import paddle
    cuda = bool(paddle.is_compiled_with_cuda())
except BaseException as e:
    emit(stage="paddle", error=f"{type(e).__name__}: {e}", missing=isinstance(e, ModuleNotFoundError) and e.name == "paddle")
    sys.exit(0)
try:
    intree = importlib.util.find_spec("paddle.distributed.communication.deep_ep") is not None
except BaseException:
    intree = False
emit(stage="paddle", version=str(getattr(paddle, "__version__", "unknown")), cuda=cuda, deep_ep_intree=intree)
if cuda:
    module, name = sys.argv[1].split(":")
    try:
        ok, text = getattr(importlib.import_module(module), name)()
        emit(stage="c10", ok=bool(ok), text=str(text))
    except BaseException as e:
        emit(stage="c10", error=f"{type(e).__name__}: {e}")
"""


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # "ok", "info", "warn" or "fail" (fail: the worker would not start with the plugin)
    text: str


class UsageError(ValueError):
    """The operator pointed doctor at something it cannot check (message says what and the fix)."""


@dataclass
class DoctorReport:
    subject: str  # "this worker" or "this FastDeploy checkout"
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, status: str, text: str) -> None:
        self.findings.append(Finding(check, status, text))

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def verdict(self) -> str:
        failures = self.failures()
        if not failures:
            return f"{self.subject} would start with the plugin"
        if len(failures) == 1:
            return f"{self.subject} would refuse: {failures[0].check}: {failures[0].text}"
        return (f"{self.subject} would refuse: {len(failures)} problems ("
                + ", ".join(dict.fromkeys(f.check for f in failures)) + "), each in a FAIL line above")

    def text(self) -> str:
        width = max((len(f.check) for f in self.findings), default=0)
        return "\n".join([f"{f.status.upper():<4}  {f.check:<{width}}  {f.text}" for f in self.findings]
                         + ["", self.verdict()])

    def to_dict(self) -> dict:
        return {"verdict": self.verdict(), "would_start": not self.failures(),
                "findings": [asdict(f) for f in self.findings]}


# ---- facts about the installation, read without importing FastDeploy or Paddle ---------------------------------
def fastdeploy_version() -> str | None:
    """The installed FastDeploy's version: its distribution's metadata, else its fastdeploy/version.txt."""
    for dist in FD_DISTS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if version.startswith("2."):  # PyPI's unrelated `fastdeploy` project has other numbers
            return version
    root = installed_root()
    version_file = root / "fastdeploy" / "version.txt" if root else None
    if version_file is not None and version_file.is_file():
        found = re.findall(r"fastdeploy version:\s*(\S+)", version_file.read_text(errors="replace"))
        return found[-1] if found else "unknown version"
    return "unknown version" if root is not None else None


def release_line(version: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else None


def probe_paddle(env: dict[str, str] | None = None) -> tuple[dict | None, dict | None, str]:
    """(paddle stage, c10 stage, how the child ended) from a child process."""
    child_env = dict(os.environ if env is None else env)
    package_root = str(Path(__file__).resolve().parent.parent)
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (child_env.get("PYTHONPATH"), package_root) if p)
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE, C10_REPORT], env=child_env, capture_output=True,
                                text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, None, f"timed out after {PROBE_TIMEOUT_S} s"
    stages = {}
    for line in result.stdout.splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue  # Paddle's own prints
        if isinstance(report, dict) and "stage" in report:
            stages[report["stage"]] = report
    if result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = "an unknown signal"
        ended = f"killed by {name} (signal {-result.returncode})"
    elif result.returncode:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        ended = f"exited with status {result.returncode} ({tail})"
    else:
        ended = "ok"
    return stages.get("paddle"), stages.get("c10"), ended


def _group_verdicts(root: Path | None) -> list:
    """The registry's per-group verdicts (the contracts module), for the installed FastDeploy or a checkout."""
    from . import compat  # noqa: PLC0415 - imports the patches, which doctor needs only here

    facts = compat.installed_facts() if root is None else compat.source_facts(root)
    return compat.group_verdicts(facts)


def _group_needed(group: str, config: deployment.DeploymentConfig | None) -> str | None:
    """Why this deployment needs a group (None: it does not); without a deployment every group may be needed."""
    if config is None:
        return "run doctor --config to decide for your deployment"
    graph, k = config.launch.graph_optimization_config, config.speculative_tokens()
    need = {"capture_stream": graph.use_cudagraph,
            "mtp_sizing": graph.use_cudagraph and k > 0 and not graph.cudagraph_only_prefill,
            "deepep_mixed": graph.use_cudagraph and config.uses_expert_parallel()
            and config.launch.splitwise_role == "mixed"}
    return "this deployment needs it" if need.get(group, True) else None


# ---- the checks ----------------------------------------------------------------------------------------------
def _check_flags(report: DoctorReport, env: dict[str, str]) -> None:
    for name in (*flags.ALL_FLAGS, *flags.RETIRED):
        try:
            flags.read_settings({name: env[name]} if name in env else {})
        except flags.FlagError as error:
            report.add(name, "fail", str(error))
    raw = env.get(flags.ENABLE)
    try:
        enabled = flags.read_bool(flags.ENABLE, env)
    except flags.FlagError:
        return
    if enabled:
        report.add(flags.ENABLE, "ok", f"{raw}: the plugin activates in every worker")
    else:
        report.add(flags.ENABLE, "fail", f"{'unset' if raw is None else repr(raw)}: the plugin stays off. Fix: "
                                         f"FD_CUDAGRAPH_EXT=1 in the server's environment")


def _check_plugins(report: DoctorReport, env: dict[str, str], version: str | None) -> None:
    raw = env.get("FD_PLUGINS")
    line = release_line(version)
    fix = f"Fix: FD_PLUGINS={deployment.PLUGIN_NAME} (add your other plugins, comma-separated)"
    if raw is not None:
        if deployment.PLUGIN_NAME in [p.strip() for p in raw.split(",")]:
            report.add("FD_PLUGINS", "ok", f"{raw!r} names {deployment.PLUGIN_NAME}")
        else:
            report.add("FD_PLUGINS", "fail", f"{raw!r} does not name {deployment.PLUGIN_NAME}, so FastDeploy does "
                                             f"not load it. {fix}")
    elif line is not None and line < (2, 4):
        report.add("FD_PLUGINS", "warn", f"unset: FastDeploy {version} loads every installed plugin, so it works "
                                         f"here; from 2.4 on unset loads none (#4909). {fix}")
    elif line is not None:
        report.add("FD_PLUGINS", "fail", f"unset: FastDeploy {version} loads no plugin when it is unset (#4909). {fix}")
    else:
        report.add("FD_PLUGINS", "fail", f"unset: FastDeploy 2.2/2.3 would load every plugin but 2.4 and later load "
                                         f"none (#4909), and this FastDeploy's version is unknown. {fix}")


def _check_paddle(report: DoctorReport, env: dict[str, str]) -> None:
    paddle, c10, ended = probe_paddle(env)
    if paddle is None:
        report.add("Paddle", "fail", f"importing Paddle in a child process failed: the child {ended}. The worker "
                                     f"imports Paddle the same way and would die too; reinstall paddlepaddle-gpu "
                                     f"matching your FastDeploy")
        return
    if "error" in paddle:
        text = ("not installed: FastDeploy needs paddlepaddle-gpu" if paddle.get("missing") else
                f"importing it raised {paddle['error']}; fix or reinstall paddlepaddle-gpu")
        report.add("Paddle", "fail", text)
        return
    if not paddle["cuda"]:
        report.add("Paddle", "fail", f"{paddle['version']} is a CPU-only build: no CUDA graphs can be captured and "
                                     f"the plugin refuses to start. Install paddlepaddle-gpu matching your FastDeploy")
        return
    report.add("Paddle", "ok", f"{paddle['version']} (CUDA build)")
    flavours = (["Paddle in-tree port"] if paddle.get("deep_ep_intree") else []) + [
        name for name in ("deep_ep", "paddlefleet") if importlib.util.find_spec(name) is not None]
    report.add("DeepEP", "info", ", ".join(flavours) or "none found (needed only with expert parallelism)")
    if c10 is None:
        report.add("c10 stream", "fail", f"the c10 check did not finish: the child {ended}")
    elif "error" in c10:
        report.add("c10 stream", "fail", f"the c10 check raised {c10['error']}")
    else:
        report.add("c10 stream", "ok" if c10["ok"] else "fail", c10["text"])


def _check_qp_depth(report: DoctorReport, env: dict[str, str], config: deployment.DeploymentConfig | None) -> None:
    raw = env.get("NVSHMEM_QP_DEPTH")
    cap = config.dispatch_cap() if config is not None else deployment.FD_DEFAULT_DISPATCH_CAP
    whose = "this deployment's" if config is not None else "FastDeploy's default"
    if config is not None and not config.uses_expert_parallel():
        return
    if raw is None:
        status = "ok" if DEEPEP_DEFAULT_QP_DEPTH >= 2 * (cap + 1) else "fail"
        report.add("NVSHMEM_QP_DEPTH", status, f"unset: DeepEP uses {DEEPEP_DEFAULT_QP_DEPTH}; {whose} DeepEP cap "
                                               f"{cap} needs at least {2 * (cap + 1)}")
    elif not raw.strip().isdigit():
        report.add("NVSHMEM_QP_DEPTH", "fail", f"{raw!r} is not a whole number. Fix: NVSHMEM_QP_DEPTH={2 * (cap + 1)} "
                                               f"or more")
    elif int(raw) < 2 * (cap + 1):
        report.add("NVSHMEM_QP_DEPTH", "fail", f"{raw} is below 2*(cap+1) = {2 * (cap + 1)} for {whose} DeepEP cap "
                                               f"{cap}: DeepEP low-latency kernels would hang. Fix: "
                                               f"NVSHMEM_QP_DEPTH={2 * (cap + 1)} or more")
    else:
        report.add("NVSHMEM_QP_DEPTH", "ok", f"{raw} >= {2 * (cap + 1)} for {whose} DeepEP cap {cap}")


def _add_group_verdicts(report: DoctorReport, root: Path | None, config: deployment.DeploymentConfig | None) -> None:
    try:
        verdicts = _group_verdicts(root)
    except Exception as error:  # noqa: BLE001 - an unreadable FastDeploy is a finding, not a crash
        report.add("feature groups", "fail", f"could not read FastDeploy's modules: {type(error).__name__}: {error}")
        return
    for v in verdicts:
        if v.verdict != "refused":
            report.add(f"group {v.group}", "ok", f"{v.verdict}: {v.reason}")
            continue
        need = _group_needed(v.group, config)
        if need is None:
            report.add(f"group {v.group}", "warn", f"refused ({v.reason}), but this deployment does not need it")
        else:
            report.add(f"group {v.group}", "fail", f"refused: {v.reason} ({need})")


def _check_deployment(report: DoctorReport, name: str, config: deployment.DeploymentConfig,
                      line: fd_lines.LineSizing) -> None:
    """The deployment's plan as this machine's FastDeploy line (`line`) lays its sizes out."""
    settings = config.settings(line)
    refused = [p.text for p in config.line_problems(line)]
    reason = no_decode_graphs_reason(settings)
    plan = None
    try:
        plan = plan_deployment(settings)  # refuses DeepEP normal-mode graphs even without decode graphs
    except PlanError as error:
        refused += error.problems
    for problem in refused:
        report.add(f"deployment {name}", "fail", problem)
    if not refused and plan is None:
        report.add(f"deployment {name}", "ok", reason)
    elif not refused:
        cover = coverage(plan.sizes, settings.max_num_seqs, settings.num_speculative_tokens)
        eager = f"; batch sizes {cover.ranges[-1].first}-{cover.batches} run eagerly" if cover.served < cover.batches \
            else ""
        report.add(f"deployment {name}", "ok", f"plan OK on {line.label()}: {len(plan.captures)} decode graphs "
                                               f"{plan.sizes}; a graph serves {cover.served} of {cover.batches} "
                                               f"decode batch sizes{eager}")


def run_doctor(deployed: tuple[str, deployment.DeploymentConfig] | None = None) -> DoctorReport:
    """Every check for this machine, with the deployment's environment laid over this shell's when given."""
    name, config = deployed if deployed is not None else (None, None)
    env = dict(os.environ)
    if config is not None:
        env.update({k: str(v) for k, v in config.environment.items()})
    report = DoctorReport("this worker")
    _check_flags(report, env)
    version = fastdeploy_version()
    if version is None:
        report.add("FastDeploy", "fail", "not installed in this Python (no fastdeploy-gpu/-xpu distribution, no "
                                          "fastdeploy package): there is no server to start")
    else:
        report.add("FastDeploy", "ok", version)
    _check_plugins(report, env, version)
    _check_paddle(report, env)
    _check_qp_depth(report, env, config)
    if version is not None:
        _add_group_verdicts(report, None, config)
    if config is not None:
        _check_deployment(report, name, config, fd_lines.line_of_version(version) or fd_lines.newest())
    return report


def check_source_tree(directory: str) -> DoctorReport:
    """Per-group verdicts for a FastDeploy checkout, read with ast (nothing imported)."""
    root = Path(directory)
    if not root.exists():
        raise UsageError(f"--fd-src {directory} does not exist. Fix: give the root of a FastDeploy checkout (the "
                         f"folder holding fastdeploy/)")
    if not root.is_dir():
        raise UsageError(f"--fd-src {directory} is a file, not a directory. Fix: give the root of a FastDeploy "
                         f"checkout (the folder holding fastdeploy/)")
    if not (root / "fastdeploy").is_dir():
        raise UsageError(f"--fd-src {directory} holds no fastdeploy/ package. Fix: give the root of a FastDeploy "
                         f"checkout (the folder holding fastdeploy/), not the package itself")
    report = DoctorReport(f"FastDeploy checkout {directory}")
    _add_group_verdicts(report, root, None)
    return report
