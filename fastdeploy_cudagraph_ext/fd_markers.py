"""Behavioural markers the patches pick their variant by, read from a module's source with `ast`.

Bridge until `fd_facts.markers` (the facts reader) provides them: the keys are the shared interface,
and a marker fd_facts already gives wins over ours (`complete`).
  "<Runner>.capture_model.captures_graphs": "yes" | "no"   (capture_model calls _dummy_run at all)
  "<Runner>.capture_model.mtp_batch": "size_over_2" | "size_over_k_plus_1" | "none"
      how the capture loop turns a capture size into the warmup's batch (2.2/2.3 halve it, k=1 only;
      2.4+ divide by k+1; the XPU loop of #6152 uses the size itself: no MTP branch)
"""
from __future__ import annotations

import ast
import dataclasses
import re

from .fd_facts import ModuleFacts

RUNNERS = ("GPUModelRunner", "XPUModelRunner")


def _batch_expressions(method: ast.FunctionDef) -> list[str] | None:
    calls = [node for node in ast.walk(method)
             if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("_dummy_run")]
    if not calls:
        return None
    return [ast.unparse(kw.value) for call in calls for kw in call.keywords if kw.arg == "batch_size"]


def read_markers(source: str) -> dict[str, str]:
    markers: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.ClassDef) and node.name in RUNNERS):
            continue
        capture = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "capture_model"), None)
        if capture is None:
            continue
        batches = _batch_expressions(capture)
        markers[f"{node.name}.capture_model.captures_graphs"] = "no" if batches is None else "yes"
        batches = batches or []
        if any(re.search(r"/\s*2\b", b) for b in batches):
            mtp = "size_over_2"
        elif any(re.search(r"/\s*\(.*\+\s*1\s*\)", b) for b in batches):
            mtp = "size_over_k_plus_1"
        else:
            mtp = "none"
        markers[f"{node.name}.capture_model.mtp_batch"] = mtp
    return markers


def complete(facts: ModuleFacts, source: str) -> ModuleFacts:
    """`facts` with our markers added where the facts reader gave none."""
    return dataclasses.replace(facts, markers={**read_markers(source), **facts.markers})
