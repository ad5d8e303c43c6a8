"""The per-release FastDeploy facts README's compatibility table needs, derived from patches/releases/*.json.

Every value comes from a fixture (real FastDeploy sources at a named upstream commit), never from our
reading: the README table test compares README against `compatibility_rows()`.
"""
from __future__ import annotations

import json
from pathlib import Path

from fastdeploy_cudagraph_ext.fd_facts import ModuleFacts, facts_from_json

RELEASES_DIR = Path(__file__).resolve().parent.parent / "patches" / "releases"
BACKEND = "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend"
GPU_RUNNER = "fastdeploy.worker.gpu_model_runner"
XPU_RUNNER = "fastdeploy.worker.xpu_model_runner"
CONFIG = "fastdeploy.config"
PLUGINS = "fastdeploy.plugins.utils"
ORDER = ["2.2.0", "2.2.x", "2.3", "2.4", "2.5", "2.6", "develop"]


def line_facts(line: str) -> dict[str, ModuleFacts]:
    """The module facts of one release line's fixture (e.g. "2.4")."""
    return facts_from_json(json.loads((RELEASES_DIR / f"fd-{line}.json").read_text())["modules"])


def load_fixtures() -> dict[str, dict]:
    """{release line: fixture}, oldest first."""
    raw = {p.stem.removeprefix("fd-"): json.loads(p.read_text()) for p in RELEASES_DIR.glob("fd-*.json")}
    return {line: raw[line] for line in sorted(raw, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))}


def _backend_shape(backend: ModuleFacts) -> str:
    cls = backend.classes["CudaGraphPiecewiseBackend"]
    init = ", ".join(p for p in cls.methods["__init__"].params if p != "self")
    marks = backend.markers
    keyed = {"token": "token-keyed", "shape_and_mode": "(shape, static-prefill)-keyed"}[
        marks["CudaGraphPiecewiseBackend.__call__.entry_key"]]
    extra = " + is_decode" if marks["CudaGraphPiecewiseBackend.__call__.passes_is_decode"] == "yes" else ""
    extra += " + order check" if "_validate_decode_capture_order" in cls.methods else ""
    return f"({init}), {keyed}{extra}"


def _mtp_loop(runner: ModuleFacts) -> str:
    marks = runner.markers
    batch = marks["GPUModelRunner.capture_model.mtp_batch"]
    if batch == "none":
        return "no MTP branch"
    return (f"{batch}, decode len {marks['GPUModelRunner.capture_model.mtp_decode_len']}, accept_all_drafts "
            f"{marks['GPUModelRunner.capture_model.mtp_accept_all_drafts']}, methods "
            f"{marks['GPUModelRunner.capture_model.mtp_methods']}")


def _init_scaling(config: ModuleFacts) -> str:
    marks = config.markers
    if marks["GraphOptimizationConfig.init_with_cudagrpah_size.scales_by_k_plus_1"] == "yes":
        return "every size x(k+1) in init_with_cudagrpah_size"
    if marks.get("GraphOptimizationConfig._set_cudagraph_sizes.scales_by_k_plus_1") == "yes":
        return "default ladder x(k+1) in _set_cudagraph_sizes"
    return "none"


def compatibility_rows() -> list[dict[str, str]]:
    """One row per release line: what README's compatibility table states about that FastDeploy."""
    rows = []
    for line, data in load_fixtures().items():
        facts = facts_from_json(data["modules"])
        xpu = facts[XPU_RUNNER].markers
        rows.append({
            "line": line,
            "version": data["fastdeploy_version"],
            "commit": data["source"]["commit"][:12],
            "date": data["source"]["date"][:10],
            "paddlepaddle_gpu": data["paddlepaddle_gpu"],
            "backend": _backend_shape(facts[BACKEND]),
            "mtp_loop": _mtp_loop(facts[GPU_RUNNER]),
            "init_scaling": _init_scaling(facts[CONFIG]),
            "xpu_captures": xpu["XPUModelRunner.capture_model.captures_graphs"],
            "fd_plugins_unset": facts[PLUGINS].markers["load_plugins_by_group.fd_plugins_unset"],
        })
    return rows
