"""Environment flags, read ONCE per process at activation into a `Settings` passed down to the patches.

Read in every worker (FastDeploy calls our entry point there), never at import time, so a server
started with the flag gets it in every process it spawns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

ENABLE = "FD_CUDAGRAPH_EXT"
# Round user capture sizes that are not multiples of k+1 (with a warning) instead of failing.
ROUND_SIZES = "FD_CUDAGRAPH_EXT_ROUND_SIZES"
# Clean DeepEP's low-latency buffer eagerly before EVERY decode step, not only at prefill->decode.
CLEAN_EVERY_DECODE = "FD_CUDAGRAPH_EXT_CLEAN_EVERY_DECODE"
ALL_FLAGS = (ENABLE, ROUND_SIZES, CLEAN_EVERY_DECODE)

# Retired flags: setting one is an error that says why it went, never a flag silently ignored.
RETIRED = {
    "FD_CUDAGRAPH_EXT_FORCE": (
        "each patch now checks only the FastDeploy names it uses, and a feature group that does not fit stops a "
        "worker only when the deployment needs it. Unset FD_CUDAGRAPH_EXT_FORCE; if a worker still refuses, its "
        "log names the missing FastDeploy symbol"),
    "FD_CUDAGRAPH_EXT_DROP_OVERSIZE": (
        "dropping capture sizes over DeepEP's token cap cannot make a deployment safe: a decode batch over "
        "num_max_dispatch_tokens_per_rank hits DeepEP's assert with or without a graph, so the plan refuses any "
        "deployment whose max_num_seqs*(k+1) exceeds the cap. Unset FD_CUDAGRAPH_EXT_DROP_OVERSIZE and lower "
        "--max-num-seqs or raise the cap, as the refusal says"),
}

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")


class FlagError(ValueError):
    """An environment flag holds a value we cannot interpret."""


@dataclass(frozen=True)
class Settings:
    """Every flag, parsed once; patches get this object, never the environment."""

    enable: bool = False
    round_sizes: bool = False
    clean_every_decode: bool = False


def read_bool(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Parse a boolean flag; unset means False, anything unrecognised is an error."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise FlagError(
        f"{name}={raw!r} is not a valid value. Accepted: "
        f"{'/'.join(TRUE_VALUES)} to enable, {'/'.join(v for v in FALSE_VALUES if v)} or unset to disable "
        f"(case-insensitive). Fix the environment of the FastDeploy server and restart it."
    )


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every flag at once so a bad value anywhere fails startup, not a later step."""
    env = os.environ if environ is None else environ
    for name, why in RETIRED.items():
        if env.get(name) is not None:
            raise FlagError(f"{name} is no longer supported: {why}.")
    return Settings(enable=read_bool(ENABLE, env), round_sizes=read_bool(ROUND_SIZES, env),
                    clean_every_decode=read_bool(CLEAN_EVERY_DECODE, env))
