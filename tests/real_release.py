"""A FastDeploy release as a new user's worker would import it, for tests: the REAL module files the plugin
targets, read at test time from the FastDeploy mirror into a temporary tree (never stored in this repo),
with every other import they make stubbed. Nothing here runs FastDeploy's model code."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import subprocess
import types
from pathlib import Path

# A bare git mirror of the gongshaotian/FastDeploy fork (it carries upstream's release branches and the commits in
# tools/extract_fd_facts.py RELEASES): `git clone --mirror https://github.com/gongshaotian/FastDeploy DIR`.
MIRROR_ENV = "FD_CUDAGRAPH_EXT_FD_MIRROR"
MIRROR = Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else None
SKIP_REASON = (f"no FastDeploy mirror: set {MIRROR_ENV} to a bare git mirror of gongshaotian/FastDeploy "
               f"(git clone --mirror https://github.com/gongshaotian/FastDeploy DIR) to run the real-source tests")
if MIRROR is not None and not MIRROR.is_dir():
    SKIP_REASON = f"{MIRROR_ENV}={MIRROR} is not a directory; point it at a bare git mirror of gongshaotian/FastDeploy"
    MIRROR = None
# Third-party packages FastDeploy's modules import that this test machine lacks.
STUBBED_TOP_LEVEL = {"fastdeploy", "paddleformers", "zmq", "yaml", "triton", "deep_ep", "paddlefleet", "aistudio_sdk",
                     "xxhash", "msgpack", "redis", "fastsafetensors", "safetensors", "tqdm", "openai", "uvicorn"}


class _StubMeta(type):
    """Stub names are classes (usable as bases); calling one with a function/class decorates as the identity."""

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and (isinstance(args[0], type) or callable(args[0])):
            return args[0]
        return _Stub()

    def __getattr__(cls, name):
        return _stub_class(name)


class _Stub:
    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and (isinstance(args[0], type) or callable(args[0])):
            return args[0]
        return _Stub()

    def __getattr__(self, name):
        return _Stub()

    def __iter__(self):
        return iter(())

    def __bool__(self):
        return False


def _stub_class(name: str) -> type:
    return _StubMeta(name, (), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stub_class(name)
        setattr(self, name, value)
        return value


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # every stub may be a package
        return module

    def exec_module(self, module):
        pass


class StubFinder(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path: whatever the real tree and the environment lack becomes a stub."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in STUBBED_TOP_LEVEL:
            return None
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


def write_release_tree(commit: str, modules: list[str], root: Path) -> Path:
    """The real files of `modules` at `commit`, with empty package __init__ files along their paths."""
    for module in modules:
        parts = module.split(".")
        for depth in range(1, len(parts)):
            init = root.joinpath(*parts[:depth], "__init__.py")
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch()
        path = root.joinpath(*parts).with_suffix(".py")
        path.write_text(subprocess.run(["git", "--git-dir", str(MIRROR), "show", f"{commit}:{path.relative_to(root)}"],
                                       capture_output=True, text=True, check=True).stdout)
    return root
