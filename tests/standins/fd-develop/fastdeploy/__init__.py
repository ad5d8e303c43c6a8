"""Stand-in for FastDeploy develop, modelling upstream commit e53f5184acbb766f88475c8ead86986b6ac3b480 (2026-04-15) as read from the
gongshaotian/FastDeploy mirror. Our own code, written from facts (names, signatures, behaviour); each
patched class has that release's real signatures in FastDeploy's own module file. Shared bodies live in
tests/standins/standin_common.py. Used only when no real FastDeploy is importable."""
ERA = "develop"
__version__ = "2.6.0.dev"
