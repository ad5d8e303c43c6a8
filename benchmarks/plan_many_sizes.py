"""How long `plan` takes for an accepted deployment with N capture sizes (default 256, the most FastDeploy 2.5
accepts: it asserts max_num_seqs <= 256), in this process, on this CPU.

Usage: PYTHONPATH=. python benchmarks/plan_many_sizes.py [N]. Prints seconds for config validation + plan + report,
best of 5, against planning the default bundled deployment in the same run (the ratio is the claim, not the seconds).
"""
from __future__ import annotations

import copy
import io
import json
import platform
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

from fastdeploy_cudagraph_ext import cli, deployment


def best_of(runs: int, argv: list[str]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            code = cli.main(argv)
        best = min(best, time.perf_counter() - start)
        if code != 0:  # time what an operator deploys, never a refusal's early exit
            sys.exit(f"plan {' '.join(argv)} exited {code}: not an accepted plan; use N <= 256")
    return best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    config = copy.deepcopy(json.loads(deployment.bundled_text(deployment.DEFAULT_CONFIG)))
    del config["launch"]["enable-expert-parallel"]
    config["launch"]["max-num-seqs"] = n
    config["launch"]["graph-optimization-config"]["cudagraph_capture_sizes"] = list(range(2, 2 * n + 1, 2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.json"
        path.write_text(json.dumps(config))
        many = best_of(5, ["plan", "--config", str(path), "--fd-line", "2.5", "--all"])
        default = best_of(5, ["plan", "--fd-line", "2.5"])
    print(f"CPU: {platform.processor() or platform.machine()}")
    print(f"plan with {n} sizes: {many:.3f} s; default deployment: {default:.3f} s; ratio {many / default:.1f}")


if __name__ == "__main__":
    main()
