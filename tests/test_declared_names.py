"""Every FastDeploy name the plugin touches is declared (issue 15): read the patch modules and fd_config with `ast`
and fail on any attribute, getattr name, keyword or **kwargs key that no contract declares.

A touched name passes when a contract declares it (Contract.wraps/wraps_if_present/adds/uses/names/tolerates,
fd_config.CONFIG_READS), or when the plugin defines it itself and FastDeploy does not (FastDeploy's vocabulary: every
class, method, parameter, attribute and function name in patches/releases/*.json), or when it is in OUR_NAMES below
(standard-library, Paddle-tensor and own names that FastDeploy happens to use too, each with its reason)."""
from __future__ import annotations

import ast
import functools
import importlib
import json
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext.fd_config import CONFIG_READS, INSTALL_NAMES, INSTALL_USES
from fastdeploy_cudagraph_ext.patch import ALL_PATCHES
from fastdeploy_cudagraph_ext.registry import Contract

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastdeploy_cudagraph_ext"
SCANNED = sorted((PACKAGE / "patch").glob("*.py")) + [PACKAGE / "fd_config.py"]  # the code that touches FastDeploy
_ACCESSORS = ("getattr", "hasattr", "setattr", "delattr")

# Names the scanned code touches that are not FastDeploy's, although FastDeploy's sources use them too, or that
# belong to the standard library or to objects we create. Each entry: why it is not a FastDeploy name here.
OUR_NAMES = {
    "shape": "Paddle's Tensor.shape (the token count of ids_remove_padding, a paddle.Tensor)",
    "device": "CaptureStreamPolicy.device (stream_policy.py), the plugin's own device interface",
    "info": "logging.Logger.info", "warning": "logging.Logger.warning",
    "f_back": "frame objects (sys._getframe)", "f_code": "frame objects", "co_name": "code objects",
    "__name__": "type(obj).__name__ in log lines",
    "intersection_update": "set method", "values": "dict method", "join": "str method", "startswith": "str method",
    "split": "str method", "lower": "str method", "replace": "str method", "removeprefix": "str method",
    "items": "dict method", "reverse": "sorted()'s keyword", "bind": "inspect.Signature.bind",
    "arguments": "inspect.BoundArguments.arguments",
    "engine": "deepep_agreement.exchange.engine, the plugin's own record of this rank's DeepEP engine values",
}


def _imported(tree: ast.Module) -> set[str]:
    return {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names}


def touched(source: str) -> set[str]:
    """Attributes (not of an imported module or name), getattr-family names, call keywords and dict-literal keys."""
    tree = ast.parse(source)
    imported = _imported(tree)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id in imported):
            out.add(node.attr)
        elif isinstance(node, ast.Call):
            callee = node.func.id if isinstance(node.func, ast.Name) else None
            if callee in _ACCESSORS and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                out.add(node.args[1].value)
            if callee is None or callee not in imported:  # keywords of our own functions and classes are ours
                out |= {k.arg for k in node.keywords if k.arg is not None}
        elif isinstance(node, ast.Dict):  # keyword dicts passed as **kwargs (module paths, "Class.method" are not)
            out |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
                    and k.value.isidentifier()}
    return out


def _parts(dotted: list[str]) -> set[str]:
    return {part for d in dotted for spelling in d.split("|") for part in spelling.split(".") if part}


def contract_names(contract: Contract) -> set[str]:
    c = contract
    return _parts([c.cls, *c.wraps, *c.wraps_if_present, *c.adds, *c.uses, *c.tolerates,
                   *(s for spellings in c.names.values() for s in spellings),
                   *(p for params in c.uses.values() for p in params)])


def declared() -> dict[str, set[str]]:
    """Per scanned file, what its own declarations name: a patch module's PATCH contract, fd_config's constants."""
    out = {}
    for path in SCANNED:
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        patch = getattr(module, "PATCH", None)
        out[str(path.relative_to(ROOT))] = contract_names(patch.contract) if patch is not None else set()
    out["fastdeploy_cudagraph_ext/fd_config.py"] = _parts([*CONFIG_READS, *INSTALL_NAMES, *INSTALL_USES,
                                                          *(p for ps in INSTALL_USES.values() for p in ps)])
    return out


def fastdeploy_vocabulary() -> set[str]:
    words = set()
    for fixture in (ROOT / "patches" / "releases").glob("fd-*.json"):
        for module in json.loads(fixture.read_text())["modules"].values():
            functions = [module["functions"], *(c["methods"] for c in module["classes"].values())]
            words |= set(module["classes"]) | {a for c in module["classes"].values() for a in c["attributes"]}
            words |= {n for f in functions for n in f} | {p.lstrip("*").rstrip("=") for f in functions
                                                          for m in f.values() for p in m["params"]}
    return words - {"", "self", "cls"}


def own_definitions() -> set[str]:
    """Names the package defines: functions, their parameters, classes, class fields, self.x, module globals."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
                names |= {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
            elif isinstance(node, ast.ClassDef):
                names.add(node.name)
                names |= {t.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                          for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                names |= {t.attr for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                          if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
        names |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                  for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    return names


@functools.lru_cache(maxsize=None)
def ours() -> frozenset[str]:
    """The package's own names that FastDeploy does not use, and the patches' variant names."""
    variants = {v for p in ALL_PATCHES for v in p.contract.names}
    return frozenset((own_definitions() - fastdeploy_vocabulary()) | variants)


def undeclared(sources: dict[str, str], declarations: dict[str, set[str]]) -> dict[str, set[str]]:
    out = {name: touched(source) - declarations[name] - ours() - set(OUR_NAMES) for name, source in sources.items()}
    return {name: names for name, names in out.items() if names}


def scanned_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in SCANNED}


def test_every_fastdeploy_name_the_patches_touch_is_declared():
    assert undeclared(scanned_sources(), declared()) == {}


def _touched_anywhere() -> set[str]:
    return set().union(*(touched(source) for source in scanned_sources().values()))


@pytest.mark.parametrize("path,name", sorted((path, name) for path, names in declared().items()
                                              for name in names & touched(scanned_sources()[path])))
def test_deleting_any_declaration_of_a_touched_name_turns_the_check_red(path, name):
    declarations = declared()
    declarations[path] = declarations[path] - {name}
    assert name in undeclared(scanned_sources(), declarations).get(path, set())


@pytest.mark.parametrize("path", [str(p.relative_to(ROOT)) for p in SCANNED])
@pytest.mark.parametrize("addition", [
    "runner.cudagraph_num_of_warmups",  # a FastDeploy attribute (GraphOptimizationConfig) no contract declares
    "getattr(backend, 'cudagraph_num_of_warmups', 2)",
    "runner._dummy_run(capture_prefill=True)",  # a FastDeploy keyword no contract declares
    "meta.some_field_fastdeploy_adds_later",  # a name in no fixture and not ours
])
def test_an_undeclared_fastdeploy_name_added_to_any_patch_turns_the_check_red(path, addition):
    sources = scanned_sources()
    sources[path] += f"\n\ndef _added(runner, backend, meta):\n    return {addition}\n"
    added = ast.parse(addition).body[0].value
    name = (added.args[1].value if isinstance(added, ast.Call) and added.args[1:] else
            added.keywords[0].arg if isinstance(added, ast.Call) else added.attr)
    assert name in undeclared(sources, declared()).get(path, set())


def test_every_justified_own_name_is_still_touched():
    assert set(OUR_NAMES) <= _touched_anywhere()
