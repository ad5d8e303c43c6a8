"""Stand-in for FastDeploy 2.3, modelling upstream commit 0df488c7bbfd831c3c0f716ba7e2a7774f6e9050 (2025-11-06) as read from the
gongshaotian/FastDeploy mirror. Our own code, written from facts (names, signatures, behaviour); each
patched class has that release's real signatures in FastDeploy's own module file. Shared bodies live in
tests/standins/standin_common.py. Used only when no real FastDeploy is importable."""
ERA = "2.3"
__version__ = "2.3.0"
