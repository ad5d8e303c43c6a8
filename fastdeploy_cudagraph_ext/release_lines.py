"""FastDeploy release-line data (top-level `patches/*.json`): which patches apply and to which shapes.

The files ship inside the wheel as `fastdeploy_cudagraph_ext/_release_lines/`; in a source
checkout they are read from `patches/` directly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .resources import data_files


@dataclass(frozen=True)
class ShapeSpec:
    shape: str  # the name the patch's code uses to pick its variant
    methods: dict[str, list[str] | None]  # method -> parameter names ('*args'/'**kwargs' marked); None: any
    absent: tuple[str, ...] = ()  # methods this shape must NOT have (tells older shapes from newer)
    not_needed: str = ""  # non-empty: this shape needs no patch, and why


@dataclass(frozen=True)
class ReleaseLine:
    name: str  # "2.3", "develop", ...
    fastdeploy: str
    paddlepaddle_gpu: str
    patches: dict[str, ShapeSpec]


def _order(name: str) -> tuple[int, ...]:
    return (10**6,) if name == "develop" else tuple(int(p) for p in name.split("."))


def load_release_lines() -> list[ReleaseLine]:
    """Every release line, oldest first (develop last)."""
    lines = []
    for filename, text in sorted(data_files("patches").items()):
        raw = json.loads(text)
        try:
            patches = {
                name: ShapeSpec(
                    shape=spec.get("shape", ""),
                    methods=spec["methods"],
                    absent=tuple(spec.get("absent", ())),
                    not_needed=spec.get("not_needed", ""),
                )
                for name, spec in raw["patches"].items()
            }
            lines.append(ReleaseLine(raw["release_line"], raw["fastdeploy"], raw["paddlepaddle_gpu"], patches))
        except KeyError as missing:
            raise ValueError(f"release-line file {filename} lacks {missing}") from None
    if not lines:
        raise FileNotFoundError("no release-line data found (patches/*.json); the installation is incomplete")
    return sorted(lines, key=lambda line: _order(line.name))
