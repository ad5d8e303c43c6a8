"""Test stand-in for FastDeploy (used only when no real FastDeploy is importable).

Our own code, written from facts (names, signatures, behaviour) of the real sources, never copied.
The era comes from FD_STANDIN_ERA:
  "2.3"     models upstream 2.3 at commit 0df488c7bbfd831c3c0f716ba7e2a7774f6e9050 (2025-11-06, #4837)
  "develop" models upstream develop at commit e53f5184acbb766f88475c8ead86986b6ac3b480 (2026-04-15, #7412)
(both read from the gongshaotian/FastDeploy mirror). Device work goes through tests/standins/fake_cuda.py.
"""
import os

ERA = os.environ.get("FD_STANDIN_ERA", "develop")
if ERA not in ("2.3", "develop"):
    raise ValueError(f"FD_STANDIN_ERA={ERA!r}: the stand-ins model '2.3' and 'develop'")
__version__ = {"2.3": "2.3.0", "develop": "2.6.0.dev"}[ERA]
