"""Environment flags that switch the plugin on and widen what it accepts.

Read at activation time (in every worker), never at import time, so a server
started with the flag gets it in every process FastDeploy spawns.
"""
from __future__ import annotations

import os

ENABLE = "FD_CUDAGRAPH_EXT"
FORCE = "FD_CUDAGRAPH_EXT_FORCE"
# Keep going when a decode capture size exceeds DeepEP's token cap by dropping it (with a warning).
DROP_OVERSIZE = "FD_CUDAGRAPH_EXT_DROP_OVERSIZE"
# Round user capture sizes that are not multiples of k+1 (with a warning) instead of failing.
ROUND_SIZES = "FD_CUDAGRAPH_EXT_ROUND_SIZES"
# Clean DeepEP's low-latency buffer eagerly before EVERY decode step, not only at prefill->decode.
CLEAN_EVERY_DECODE = "FD_CUDAGRAPH_EXT_CLEAN_EVERY_DECODE"

ALL_FLAGS = (ENABLE, FORCE, DROP_OVERSIZE, ROUND_SIZES, CLEAN_EVERY_DECODE)

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")


class FlagError(ValueError):
    """An environment flag holds a value we cannot interpret."""


def read_bool(name: str, environ: dict[str, str] | None = None) -> bool:
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


def read_all(environ: dict[str, str] | None = None) -> dict[str, bool]:
    """Parse every flag at once so a bad value anywhere fails startup, not a later step."""
    return {name: read_bool(name, environ) for name in ALL_FLAGS}
