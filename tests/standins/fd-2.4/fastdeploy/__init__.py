"""Stand-in for FastDeploy 2.4, modelling upstream commit f83673daac0a495afe239bc31d43a3f3398fb035 (2026-04-08,
#7225) as read from the gongshaotian/FastDeploy mirror. Our own code, written from facts (names, signatures,
behaviour); each patched class has that release's real signatures in FastDeploy's own module file. Shared
bodies live in tests/standins/standin_common.py. Used only when no real FastDeploy is importable."""
ERA = "2.4"
__version__ = "2.4.0"
