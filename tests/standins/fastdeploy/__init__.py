"""Test stand-in for FastDeploy (used only when no real FastDeploy is importable).

Our own code, written from the facts in ../shared/design/fastdeploy-surface.md: the modules the
plugin patches, at FastDeploy's import paths, with each era's real signatures. The era comes from
FD_STANDIN_ERA ("2.3" or "develop"). Device work goes through tests/standins/fake_cuda.py.
"""
import os

ERA = os.environ.get("FD_STANDIN_ERA", "develop")
__version__ = {"2.3": "2.3.0", "develop": "2.6.0.dev"}[ERA]
