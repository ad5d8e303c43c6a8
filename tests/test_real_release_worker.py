"""issue 8, done-when: a worker on each release line starts with FD_CUDAGRAPH_EXT=1, tried as a new user would,
on the REAL module files of that release (tests/real_release.py): every group applies or is not needed."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from real_release import MIRROR

ROOT = Path(__file__).resolve().parent.parent
# The upstream commit each per-release fixture names (patches/releases/).
LINES = {p.stem.removeprefix("fd-"): json.loads(p.read_text())["source"]["commit"]
         for p in sorted((ROOT / "patches" / "releases").glob("fd-*.json"))}

WORKER = textwrap.dedent('''
    import importlib, sys
    from pathlib import Path
    from types import SimpleNamespace
    import real_release
    from fastdeploy_cudagraph_ext.compat import TARGET_MODULES

    tree = real_release.write_release_tree(sys.argv[1], TARGET_MODULES, Path(sys.argv[2]))
    sys.path.insert(0, str(tree))
    sys.meta_path.append(real_release.StubFinder())
    import fastdeploy_cudagraph_ext
    fastdeploy_cudagraph_ext.register()  # what FastDeploy's plugin loader calls, with FD_CUDAGRAPH_EXT=1
    for name in TARGET_MODULES:
        importlib.import_module(name)  # as the worker imports them
    from fastdeploy_cudagraph_ext import activation
    registry = activation.registry()
    fd_config = SimpleNamespace(
        graph_opt_config=SimpleNamespace(use_cudagraph=True, cudagraph_capture_sizes=[2, 4, 8]),
        speculative_config=SimpleNamespace(method="mtp", num_speculative_tokens=1),
        scheduler_config=SimpleNamespace(splitwise_role="mixed", max_num_seqs=4),
        parallel_config=SimpleNamespace(use_ep=True, ep_group=SimpleNamespace(ranks=[0])))  # FastDeploy builds it
    registry.runner_built("GPUModelRunner", fd_config)  # the gate's decision, without FastDeploy's __init__ body
    for name, report in registry.reports.items():
        print(f"{name}: {report.verdict.value}: {report.detail}")
    print("refused groups:", sorted(registry.refused))
''')


@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"the FastDeploy mirror {MIRROR} is not on this machine")
@pytest.mark.parametrize("line", LINES)
def test_a_worker_starts_with_the_plugin_on_the_real_modules(line, tmp_path):
    env = {**os.environ, "FD_CUDAGRAPH_EXT": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-c", WORKER, LINES[line], str(tmp_path / "fd")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused groups: []" in out.stdout, out.stdout
    assert "capture_stream: applied" in out.stdout and "deepep_capture_checks: applied" in out.stdout
    if line in ("2.6", "develop"):
        assert "sizes: not needed (FastDeploy already scales every size by k+1" in out.stdout
