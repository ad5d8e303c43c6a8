"""What is installed and what each patch would do here. Safe on any machine: it never calls a Paddle
stream/graph API (several crash a CPU build) and probes c10 only in a child process."""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
from dataclasses import asdict, dataclass, field

from . import flags
from .patch import ALL_PATCHES
from .compat import group_verdicts, installed_facts


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class DoctorReport:
    fastdeploy: str | None
    paddle: str | None
    paddle_cuda: bool | None
    deep_ep: list[str]
    torch: str | None
    c10: dict
    flags: dict[str, str]
    patches: list[dict] = field(default_factory=list)


def _fastdeploy_version() -> str | None:
    version = _version("fastdeploy-gpu", "fastdeploy-xpu", "fastdeploy")
    if version is None and _importable("fastdeploy"):
        return "unknown version"
    return version


def _deep_ep_flavours(paddle_present: bool) -> list[str]:
    found = []
    if paddle_present and _importable("paddle.distributed.communication.deep_ep"):
        found.append("Paddle in-tree port (paddle.distributed.communication.deep_ep; follows Paddle's stream)")
    if _importable("deep_ep"):
        found.append("torch-API DeepEP (deep_ep; launches on c10's current stream)")
    if _importable("paddlefleet"):
        found.append("torch-API DeepEP (paddlefleet.ops.deep_ep; launches on c10's current stream)")
    return found


def _c10_report() -> dict:
    from .c10_bridge import paddle_library_path, probe

    library = paddle_library_path()
    if library is None:
        return {"library": None, "verdict": "Paddle not installed: no c10 to bridge"}
    verdict = probe(library, preload="paddle")
    if not verdict.symbols_found:
        text = "no out-of-line c10 stream functions: c10 follows Paddle's stream (header-only compat), no bridge needed"
    elif verdict.convention is not None:
        text = (f"c10 stream functions found; bridged ({verdict.convention}, stream id at byte {verdict.offset}), "
                f"kept in step with the capture stream")
    else:
        text = f"c10 stream functions found but NOT bridgeable: {verdict.problem}"
    return {"verdict": text, **asdict(verdict)}


def _patch_verdicts() -> list[dict]:
    # The registry's own per-group verdicts on the installed FastDeploy's source (no import).
    return [{"patch": g.group, "symbols": [p for q in ALL_PATCHES if q.group == g.group for p in q.symbols],
             "verdict": f"{g.verdict}: {g.reason}"} for g in group_verdicts(installed_facts())]


def run_doctor() -> DoctorReport:
    paddle_version = _version("paddlepaddle-gpu", "paddlepaddle")
    paddle_cuda = None
    if paddle_version is not None:
        import paddle  # importing is safe on CPU builds; only stream/graph calls are not

        paddle_cuda = bool(paddle.is_compiled_with_cuda())
    fastdeploy = _fastdeploy_version()
    report = DoctorReport(
        fastdeploy=fastdeploy,
        paddle=paddle_version,
        paddle_cuda=paddle_cuda,
        deep_ep=_deep_ep_flavours(paddle_version is not None),
        torch=_version("torch"),
        c10=_c10_report(),
        flags={name: os.environ.get(name, "<unset>") for name in flags.ALL_FLAGS},
    )
    if fastdeploy is None:
        report.patches = [{"patch": p.name, "symbols": list(p.symbols), "verdict": "FastDeploy not found"}
                          for p in ALL_PATCHES]
    else:
        report.patches = _patch_verdicts()
    return report


def format_report(report: DoctorReport) -> str:
    lines = [
        f"FastDeploy : {report.fastdeploy or 'FastDeploy not found'}",
        f"Paddle     : {report.paddle or 'not installed'}"
        + ("" if report.paddle_cuda is None else (" (CUDA build)" if report.paddle_cuda else " (CPU build)")),
        f"DeepEP     : {'; '.join(report.deep_ep) or 'not found'}",
        f"PyTorch    : {report.torch or 'not installed'}",
        f"c10 stream : {report.c10.get('verdict') or report.c10.get('problem') or report.c10}",
        "Flags      : " + ", ".join(f"{k}={v}" for k, v in report.flags.items()),
        "Patches    :",
    ]
    for row in report.patches:
        lines.append(f"  {row['patch']:<28} {row['verdict']}")
    return "\n".join(lines)
