"""Data shipped beside the code: top-level `configs/` (inside the wheel as `_configs/`) and the per-line FastDeploy
facts `patches/releases/` (inside the wheel as `_releases/`: `plan --fd-line` reads them)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_PACKAGED = {"configs": "_configs", "patches/releases": "_releases"}


def data_files(folder: str, suffix: str = ".json") -> dict[str, str]:
    """{file name: text} of a top-level data folder, from the installed wheel or the source checkout."""
    root = resources.files("fastdeploy_cudagraph_ext") / _PACKAGED[folder]
    if root.is_dir():
        return {f.name: f.read_text() for f in root.iterdir() if f.name.endswith(suffix)}
    source = _SOURCE_ROOT / folder
    return {f.name: f.read_text() for f in source.glob(f"*{suffix}")}
