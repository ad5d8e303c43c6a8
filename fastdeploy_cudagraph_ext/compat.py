"""Per-group verdicts on a FastDeploy described by facts (a checkout, the installed package, a fixture).

Shared with `doctor` (`--fd-src DIR`) and the per-release fixture tests: the same `registry.judge`
the worker uses, without importing FastDeploy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from . import fd_facts
from .fd_facts import ModuleFacts
from .patch import ALL_PATCHES
from .registry import GroupVerdict, group_verdicts_of

# Every module a patch targets or reads facts from (fastdeploy.config: does FastDeploy scale sizes itself?).
TARGET_MODULES: list[str] = sorted({m for p in ALL_PATCHES for m in (p.module, *p.facts_from)})

__all__ = ["GroupVerdict", "TARGET_MODULES", "group_verdicts", "installed_facts", "source_facts"]


def group_verdicts(facts: Mapping[str, ModuleFacts]) -> list[GroupVerdict]:
    """Per feature group: "applies", "not needed" or "refused", with the reason."""
    return group_verdicts_of(ALL_PATCHES, facts)


def source_facts(root: Path) -> dict[str, ModuleFacts]:
    """Facts of the target modules under a FastDeploy source tree (the folder holding `fastdeploy/`)."""
    return fd_facts.tree_facts(Path(root), TARGET_MODULES)


def installed_facts() -> dict[str, ModuleFacts]:
    """Facts of the installed FastDeploy's target modules, read from source WITHOUT importing FastDeploy."""
    root = fd_facts.installed_root()
    return {} if root is None else source_facts(root)
