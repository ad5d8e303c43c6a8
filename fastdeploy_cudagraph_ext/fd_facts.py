"""Facts about FastDeploy's modules read with `ast`, never by importing FastDeploy.

One reader serves three callers: the registry (the installed FastDeploy's source, at activation),
`doctor --fd-src DIR` (a checkout), and `tools/extract_fd_facts.py` (the per-release fixtures in
`patches/`). Facts are names, signatures and behavioural markers; never FastDeploy's code.

Parameter notation (also used by the fixtures): "name" (no default), "name=" (has a default),
"*name" / "**name" (variadics), "*" (start of keyword-only parameters when there is no *args).
"""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType


@dataclass(frozen=True)
class MethodFacts:
    params: tuple[str, ...]
    decorators: tuple[str, ...] = ()  # as written, without arguments: "paddle.no_grad", "sot_warmup_guard"


@dataclass(frozen=True)
class ClassFacts:
    bases: tuple[str, ...]  # as written: "ModelRunnerBase", "nn.Layer"
    decorators: tuple[str, ...] = ()
    methods: dict[str, MethodFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleFacts:
    classes: dict[str, ClassFacts] = field(default_factory=dict)
    functions: dict[str, MethodFacts] = field(default_factory=dict)
    # Behavioural markers a patch tells variants apart by, keyed "Class.method.marker" (see MARKERS).
    markers: dict[str, str] = field(default_factory=dict)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ast.unparse(node)


def params_of(args: ast.arguments) -> tuple[str, ...]:
    """The parameter notation above for one function's arguments."""
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    out = [a.arg + ("=" if i >= first_default else "") for i, a in enumerate(positional)]
    if args.vararg is not None:
        out.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        out.append("*")
    out += [a.arg + ("" if d is None else "=") for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg is not None:
        out.append("**" + args.kwarg.arg)
    return tuple(out)


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> MethodFacts:
    return MethodFacts(params_of(node.args), tuple(_dotted(d) for d in node.decorator_list))


def module_facts(source: str) -> ModuleFacts:
    """Classes (bases, decorators, methods), top-level functions and markers of one module's source."""
    tree = ast.parse(source)
    classes: dict[str, ClassFacts] = {}
    functions: dict[str, MethodFacts] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = {n.name: _function(n) for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            classes[node.name] = ClassFacts(tuple(_dotted(b) for b in node.bases),
                                            tuple(_dotted(d) for d in node.decorator_list), methods)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = _function(node)
    return ModuleFacts(classes, functions, markers(tree))


def markers(tree: ast.Module) -> dict[str, str]:
    """Behavioural markers of a module (filled in by the marker readers; empty until they exist)."""
    return {}


def module_path(root: Path, module: str) -> Path:
    """Where `module` (dotted, e.g. fastdeploy.worker.gpu_model_runner) lives under a source tree's root."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def tree_facts(root: Path, modules: list[str]) -> dict[str, ModuleFacts]:
    """Facts of those `modules` that exist under a FastDeploy checkout (the folder holding `fastdeploy/`)."""
    out = {}
    for module in modules:
        path = module_path(root, module)
        if path.is_file():
            out[module] = module_facts(path.read_text(encoding="utf-8"))
    return out


def installed_root() -> Path | None:
    """The folder holding the installed `fastdeploy/` package, found without executing it."""
    try:
        spec = importlib.util.find_spec("fastdeploy")  # top level: locates, does not import
    except (ImportError, ValueError):
        return None
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    return Path(locations[0]).parent if locations else None


def live_module_facts(module: ModuleType) -> ModuleFacts | None:
    """Facts of a module FastDeploy already imported, read from its source file (None without one)."""
    origin = getattr(module, "__file__", None)
    if not origin or not origin.endswith(".py"):
        return None
    try:
        return module_facts(Path(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
