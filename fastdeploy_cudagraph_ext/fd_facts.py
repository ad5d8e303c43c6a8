"""Facts about FastDeploy's modules read with `ast`, never by importing FastDeploy.

One reader serves three callers: the registry (the installed FastDeploy's source, at activation),
`doctor --fd-src DIR` (a checkout), and `tools/extract_fd_facts.py` (the per-release fixtures in
`patches/releases/`). Facts are names, signatures and behavioural markers; never FastDeploy's code.

Parameter notation (also used by the fixtures): "name" (no default), "name=" (has a default),
"*name" / "**name" (variadics), "*" (start of keyword-only parameters when there is no *args).
"""
from __future__ import annotations

import ast
import copy
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Mapping


@dataclass(frozen=True)
class MethodFacts:
    params: tuple[str, ...]
    decorators: tuple[str, ...] = ()  # as written, without arguments: "paddle.no_grad", "sot_warmup_guard"


@dataclass(frozen=True)
class ClassFacts:
    bases: tuple[str, ...]  # as written: "ModelRunnerBase", "nn.Layer"
    decorators: tuple[str, ...] = ()
    methods: dict[str, MethodFacts] = field(default_factory=dict)
    # names the class body or its methods assign (`x = ...`, `self.x = ...`, `cls.x = ...`), sorted
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModuleFacts:
    classes: dict[str, ClassFacts] = field(default_factory=dict)
    functions: dict[str, MethodFacts] = field(default_factory=dict)
    # Behavioural markers a patch tells variants apart by, keyed "Class.member.marker" (see markers()).
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


def _attributes(node: ast.ClassDef) -> tuple[str, ...]:
    targets = [t for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
    names = {t.attr for target in targets for t in ast.walk(target) if isinstance(t, ast.Attribute)
             and isinstance(t.value, ast.Name) and t.value.id in ("self", "cls")}
    names |= {t.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
              for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    return tuple(sorted(names))


def module_facts(source: str) -> ModuleFacts:
    """Classes (bases, decorators, methods), top-level functions and markers of one module's source."""
    tree = ast.parse(source)
    classes: dict[str, ClassFacts] = {}
    functions: dict[str, MethodFacts] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = {n.name: _function(n) for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            classes[node.name] = ClassFacts(tuple(_dotted(b) for b in node.bases),
                                            tuple(_dotted(d) for d in node.decorator_list), methods,
                                            _attributes(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = _function(node)
    return ModuleFacts(classes, functions, markers(tree))


# -- behavioural markers ---------------------------------------------------------------------------
# Each reader looks at one FastDeploy method and names the variant a patch tells apart. A reader
# says nothing when its class or method is absent. Keys: "Class.member.marker" (or "function.marker").

_K = "num_speculative_tokens"
_LOW_LATENCY_METHODS = ("low_latency_dispatch", "low_latency_combine",
                        "low_latency_dispatch_two_stage", "low_latency_combine_two_stage")


def _class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _method(tree: ast.Module, cls: str, name: str) -> ast.FunctionDef | None:
    node = _class(tree, cls)
    return None if node is None else next(
        (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _in_order(nodes: Iterable[ast.AST]) -> list:
    return sorted(nodes, key=lambda n: (n.lineno, n.col_offset))


def _calls(scope: ast.AST | list[ast.stmt], attr: str) -> list[ast.Call]:
    """Calls of `<anything>.attr(...)` under `scope`, in source order."""
    roots = scope if isinstance(scope, list) else [scope]
    return _in_order(n for root in roots for n in ast.walk(root) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Attribute) and n.func.attr == attr)


def _kwarg(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _mentions(node: ast.AST, name: str) -> bool:
    return any((isinstance(n, ast.Name) and n.id == name) or (isinstance(n, ast.Attribute) and n.attr == name)
               for n in ast.walk(node))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _assigned_before(func: ast.FunctionDef, name: str, line: int) -> ast.expr | None:
    """The value last assigned to local `name` above `line` in `func` (one level of indirection)."""
    found = [n for n in ast.walk(func) if isinstance(n, ast.Assign) and n.lineno < line
             and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]
    return max(found, key=lambda n: n.lineno).value if found else None


def _resolved(func: ast.FunctionDef, expr: ast.expr, line: int) -> ast.expr:
    if isinstance(expr, ast.Name):
        return _assigned_before(func, expr.id, line) or expr
    return expr


_SAFE_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
               ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.USub)


def _formula(expr: ast.expr, size_var: str | None) -> Callable[[int, int], float] | None:
    """`expr` as arithmetic of (size, k): the loop variable becomes size, any `...num_speculative_tokens` k.
    None when it is anything else (then the marker says "other")."""

    class _Substitute(ast.NodeTransformer):
        def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
            return ast.Name("k", ast.Load()) if node.attr == _K else self.generic_visit(node)

        def visit_Name(self, node: ast.Name) -> ast.AST:
            return ast.Name("size", ast.Load()) if node.id == size_var else ast.Name("k", ast.Load()) \
                if node.id == _K else node

    body = ast.Expression(_Substitute().visit(copy.deepcopy(expr)))
    for n in ast.walk(body):
        if not isinstance(n, _SAFE_NODES) or (isinstance(n, ast.Name) and n.id not in ("size", "k", "int")) \
                or (isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name) and n.func.id == "int")) \
                or (isinstance(n, ast.Constant) and not isinstance(n.value, int)):
            return None
    code = compile(ast.fix_missing_locations(body), "<fastdeploy marker>", "eval")
    return lambda size, k: eval(code, {"__builtins__": {}}, {"int": int, "size": size, "k": k})  # noqa: S307


def _classify(formula: Callable[[int, int], float] | None, shapes: dict[str, Callable[[int, int], float]],
              samples: list[tuple[int, int]]) -> str:
    if formula is None:
        return "other"
    try:
        values = [formula(s, k) for s, k in samples]
    except ArithmeticError:  # e.g. size / (k - 2): not a shape we know
        return "other"
    for name, shape in shapes.items():
        if values == [shape(s, k) for s, k in samples]:
            return name
    return "other"


# k >= 2 in every sample: at k = 1, size/2 and size/(k+1) are the same number.
_BATCH_SHAPES = {"size_over_2": lambda s, k: s / 2, "size_over_k_plus_1": lambda s, k: s // (k + 1),
                 "size": lambda s, k: s}
_BATCH_SAMPLES = [(12, 2), (24, 3), (30, 4)]
_DECODE_SHAPES = {"1": lambda s, k: 1, "3": lambda s, k: 3, "2k+1": lambda s, k: 2 * k + 1,
                  "(k+1)*2": lambda s, k: (k + 1) * 2, "k+1": lambda s, k: k + 1}
_DECODE_SAMPLES = [(0, 2), (0, 3), (0, 5)]


def _enclosing_loop_var(scope: list[ast.stmt], call: ast.Call) -> str | None:
    loops = [n for root in scope for n in ast.walk(root) if isinstance(n, ast.For)
             and isinstance(n.target, ast.Name) and any(c is call for c in ast.walk(n))]
    return max(loops, key=lambda n: n.lineno).target.id if loops else None


def _spec_methods(test: ast.expr) -> str:
    """Which speculative methods take the branch: "mtp" (== "mtp"), "mtp,suffix" (SpecMethod.X in [...]), "any"."""
    names = {n.value.lower() for n in ast.walk(test) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names |= {n.attr.lower() for n in ast.walk(test) if isinstance(n, ast.Attribute)
              and isinstance(n.value, ast.Name) and n.value.id == "SpecMethod"}
    return ",".join(sorted(names)) or "any"


def _capture_loop_markers(tree: ast.Module, cls: str) -> dict[str, str]:
    """A runner's capture_model: does it capture graphs, and how does its speculative-decoding branch size them."""
    func = _method(tree, cls, "capture_model")
    if func is None:
        return {}
    key = f"{cls}.capture_model."
    dummy_runs = _calls(func, "_dummy_run")
    capturing = [c for c in dummy_runs if isinstance(_kwarg(c, "in_capturing"), ast.Constant)
                 and _kwarg(c, "in_capturing").value is True]
    texts = {n.value for n in ast.walk(func) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    out = {
        key + "captures_graphs": _yes(bool(capturing)),
        # a capture_prefill=True branch (cudagraph_only_prefill) the patch must leave to FastDeploy
        key + "prefill_only_branch": _yes(any(_kwarg(c, "capture_prefill") is not None for c in dummy_runs)),
        # FastDeploy re-raises OOM / illegal-address errors with operator hints; a replaced loop would drop them
        key + "error_hints": ",".join(h for h, t in (("oom", "out of memory"), ("error700", "CUDA error(700)"))
                                      if any(t in s for s in texts)) or "none",
    }
    branch = next((n for n in _in_order(n for n in ast.walk(func) if isinstance(n, ast.If))
                   if _mentions(n.test, "speculative_decoding") or _mentions(n.test, "speculative_method")
                   or _mentions(n.test, "spec_method")), None)
    runs = _calls(branch.body, "_dummy_run") if branch is not None else []
    if not runs:
        return out | {key + "mtp_batch": "none", key + "mtp_decode_len": "none",
                      key + "mtp_accept_all_drafts": "none", key + "mtp_methods": "none"}
    first = runs[0]  # the target-model capture; 2.2.x/2.3 add draft-model passes after it
    batch = _kwarg(first, "batch_size")
    decode = _kwarg(first, "expected_decode_len")
    accept = _kwarg(first, "accept_all_drafts")
    size_var = _enclosing_loop_var(func.body, first)  # the loop may sit inside the branch or around it
    return out | {
        key + "mtp_batch": _classify(None if batch is None else _formula(batch, size_var), _BATCH_SHAPES,
                                     _BATCH_SAMPLES),
        # not passed: _dummy_run's own default, 1 on every line
        key + "mtp_decode_len": "1" if decode is None else _classify(
            _formula(_resolved(func, decode, first.lineno), size_var), _DECODE_SHAPES, _DECODE_SAMPLES),
        key + "mtp_accept_all_drafts": _yes(isinstance(accept, ast.Constant) and accept.value is True),
        key + "mtp_methods": _spec_methods(branch.test),
    }


def _runner_markers(tree: ast.Module) -> dict[str, str]:
    out = _capture_loop_markers(tree, "GPUModelRunner") | _capture_loop_markers(tree, "XPUModelRunner")
    step = _method(tree, "GPUModelRunner", "initialize_forward_meta")
    if step is not None:
        # where the agreed MoE phase is written (the transition clean reads it back from there)
        out |= _config_home(step, "GPUModelRunner.initialize_forward_meta.", ("moe_phase", "splitwise_role"))
    return out


def _config_home(func: ast.FunctionDef, key: str, attrs: tuple[str, ...]) -> dict[str, str]:
    """For each attr: the config object it is read from first, e.g. moe_phase -> "model_config"."""
    out = {}
    for attr in attrs:
        owners = [n.value.attr for n in _in_order(n for n in ast.walk(func) if isinstance(n, ast.Attribute))
                  if n.attr == attr and isinstance(n.value, ast.Attribute)]
        out[f"{key}{attr}_on"] = owners[0] if owners else "none"
    return out


def _config_markers(tree: ast.Module) -> dict[str, str]:
    """Who scales capture sizes by k+1, and where the running-requests map is built."""
    if _class(tree, "GraphOptimizationConfig") is None:
        return {}
    out: dict[str, str] = {}
    init = _method(tree, "GraphOptimizationConfig", "init_with_cudagrpah_size")
    if init is not None:
        scaling = [n for n in ast.walk(init) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult)
                   and _mentions(n, _K)]
        # 2.6/develop: EVERY size (user-given too) times k+1, once; a flag stops later calls re-scaling
        guards = {a.attr for n in ast.walk(init) if isinstance(n, ast.If) and any(s in list(ast.walk(n))
                  for s in scaling) for a in ast.walk(n.test) if isinstance(a, ast.Attribute)
                  and isinstance(a.value, ast.Name) and a.value.id == "self"}
        set_true = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                    and n.value.value is True for t in n.targets if isinstance(t, ast.Attribute)}
        out["GraphOptimizationConfig.init_with_cudagrpah_size.scales_by_k_plus_1"] = _yes(bool(scaling))
        out["GraphOptimizationConfig.init_with_cudagrpah_size.rescale_guard"] = \
            ",".join(sorted(guards & set_true)) or "none"
    if _method(tree, "GraphOptimizationConfig", "_set_cudagraph_sizes") is not None:
        # 2.4/2.5: only FastDeploy's default ladder is scaled, by a factor FDConfig passes in
        out["GraphOptimizationConfig._set_cudagraph_sizes.scales_by_k_plus_1"] = _yes(any(
            _mentions(_resolved(func, kw.value, call.lineno), _K)
            for func in ast.walk(tree) if isinstance(func, ast.FunctionDef)
            for call in _calls(func, "_set_cudagraph_sizes") for kw in call.keywords))
    # the speculative methods FDConfig counts k+1 tokens per request for (sizes, max shape, k passed on):
    # the methods named in a condition whose branch reads num_speculative_tokens, in the function that calls
    # init_with_cudagrpah_size; a plain `method is not None` (2.4/2.5's ladder) names none
    callers = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and _calls(f, "init_with_cudagrpah_size")
               and f.name != "init_with_cudagrpah_size"]
    methods = {m for f in callers for n in ast.walk(f) if isinstance(n, (ast.If, ast.IfExp))
               and _mentions(n.test, "method") and any(_mentions(b, _K) for b in
                                                       (n.body if isinstance(n.body, list) else [n.body]))
               for m in _spec_methods(n.test).split(",") if m != "any"}
    out["FDConfig.k_plus_1_methods"] = ",".join(sorted(methods)) or "none"
    # the methods SpeculativeConfig accepts (self.method_list = [...])
    accepted = [e.value.lower() for n in ast.walk(_class(tree, "SpeculativeConfig") or ast.Module([], []))
                if isinstance(n, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "method_list"
                                                     for t in n.targets) and isinstance(n.value, ast.List)
                for e in n.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    out["SpeculativeConfig.method_list"] = ",".join(sorted(accepted)) or "none"
    builders = [f"{cls.name}.{func.name}" for cls in tree.body if isinstance(cls, ast.ClassDef)
                for func in cls.body if isinstance(func, ast.FunctionDef)
                for n in ast.walk(func) if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Attribute) and t.attr == "real_bsz_to_captured_size" for t in n.targets)
                and not (isinstance(n.value, ast.Dict) and not n.value.keys)]
    out["GraphOptimizationConfig.real_bsz_to_captured_size.built_in"] = ",".join(dict.fromkeys(builders)) or "none"
    return out


def _backend_markers(tree: ast.Module) -> dict[str, str]:
    """CudaGraphPiecewiseBackend.__call__: how entries are keyed and what the static path is passed."""
    call = _method(tree, "CudaGraphPiecewiseBackend", "__call__")
    if call is None:
        return {}
    key = "CudaGraphPiecewiseBackend.__call__."
    lookups = [c.args[0] for c in _calls(call, "get") if c.args and isinstance(c.func.value, ast.Attribute)
               and c.func.value.attr == "concrete_size_entries"]
    attrs = {n.attr for n in ast.walk(call) if isinstance(n, ast.Attribute)}
    return {
        key + "passes_is_decode": _yes(any(_kwarg(c, "is_decode") is not None
                                           for c in _calls(call, "run_static_model"))),
        key + "entry_key": "other" if not lookups else
        "shape_and_mode" if isinstance(lookups[0], ast.Tuple) else "token",
        key + "reads_real_bsz_to_captured_size": _yes("real_bsz_to_captured_size" in attrs),
        key + "validates_decode_capture_order": _yes(bool(_calls(call, "_validate_decode_capture_order"))),
        key + "output": "output_buffers" if "output_buffers" in attrs else
        "output_buffer" if "output_buffer" in attrs else "other",
        # capture runs on the current stream bracketed by device synchronizes (every real line)
        key + "synchronizes_device": _yes(any(_dotted(c.func).endswith("device.synchronize")
                                              for c in _calls(call, "synchronize"))),
        # where the token count comes from: kwargs["ids_remove_padding"] (2.2.0) or kwargs["forward_meta"]
        key + "kwargs_read": ",".join(sorted({n.slice.value for n in ast.walk(call) if isinstance(n, ast.Subscript)
                                              and isinstance(n.value, ast.Name) and n.value.id == "kwargs"
                                              and isinstance(n.slice, ast.Constant)})) or "none",
    } | _conflict_markers(_class(tree, "CudaGraphPiecewiseBackend"))


def _conflict_markers(cls: ast.ClassDef) -> dict[str, str]:
    """The closed PR #7344's shape, which the capture_stream patch must never run together with: the backend
    makes its own stream (paddle.device.Stream, a stream guard), or synchronizes after a replay. The
    synchronize AROUND capture (every real line) is not a conflict. (Read in a stored copy of #7344's
    cudagraph_piecewise_backend.py: `self._capture_stream = paddle.device.Stream()` in __init__, replays inside
    `_DeepEPStreamGuard(self._capture_stream)` followed by `paddle.device.synchronize()`, in __call__ and, after
    the REPLAY state, in run_static_model.)"""
    key = "CudaGraphPiecewiseBackend."
    callees = [_dotted(n.func).rsplit(".", 1)[-1].lower() for n in ast.walk(cls) if isinstance(n, ast.Call)]
    after_replay = False
    for func in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        # a replay: graph.replay(), or the static path's CUDAGraphState.REPLAY; then a synchronize below it
        replays = [n.lineno for n in ast.walk(func) if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                                                        and n.func.attr == "replay")
                   or (isinstance(n, ast.Attribute) and n.attr == "REPLAY")]
        after_replay |= bool(replays) and any(c.lineno > min(replays) for c in _calls(func, "synchronize"))
    return {key + "own_capture_stream": _yes(any("stream" in c for c in callees)),
            key + "synchronizes_after_replay": _yes(after_replay)}


def _moe_markers(tree: ast.Module) -> dict[str, str]:
    """MoEMethodBase.apply: FastDeploy's in-forward low-latency clean, its condition and its callee."""
    apply = _method(tree, "MoEMethodBase", "apply")
    if apply is None:
        return {}
    key = "MoEMethodBase.apply."
    cleans = _calls(apply, "clean_low_latency_buffer")
    conditions = [_resolved(apply, name, n.lineno) for n in ast.walk(apply) if isinstance(n, ast.If)
                  and any(c in list(ast.walk(n)) for c in cleans) for name in ast.walk(n.test)
                  if isinstance(name, (ast.Name, ast.Attribute, ast.Compare))]
    condition = "none" if not cleans else \
        "moe_layer_start_index" if any(_mentions(c, "moe_layer_start_index") for c in conditions) else \
        "layer_idx_0" if any(_mentions(c, "layer_idx") for c in conditions) else "every_layer"
    via = sorted({_dotted(c.func).removeprefix("self.") for c in cleans})
    return {key + "inline_clean": condition, key + "inline_clean_via": ",".join(via) or "none"} | \
        _config_home(apply, key, ("moe_phase", "splitwise_role"))


def _ep_markers(tree: ast.Module) -> dict[str, str]:
    """ep.py: receive hooks returned last by the engine; what the runners' clean calls; the manager's engine slot."""
    out: dict[str, str] = {}
    for name in _LOW_LATENCY_METHODS:
        func = _method(tree, "DeepEPEngine", name)
        if func is not None:
            returns = [n.value for n in ast.walk(func) if isinstance(n, ast.Return) and n.value is not None]
            out[f"DeepEPEngine.{name}.returns_hook_last"] = _yes(bool(returns) and all(
                isinstance(r, ast.Tuple) and isinstance(r.elts[-1], ast.Name) and r.elts[-1].id.endswith("hook")
                for r in returns))
    clean = _method(tree, "EPRunner", "clean_low_latency_buffer")
    if clean is not None:
        out["EPRunner.clean_low_latency_buffer.calls"] = ",".join(
            _dotted(c.func).removeprefix("self.") for c in _calls(clean, "clean_low_latency_buffer")) or "none"
    set_engine = _method(tree, "DeepEPBufferManager", "set_engine")
    if set_engine is not None:
        out["DeepEPBufferManager.set_engine.stores"] = ",".join(
            t.attr for n in ast.walk(set_engine) if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "cls") or "none"
    return out


def _plugin_markers(tree: ast.Module) -> dict[str, str]:
    """fastdeploy/plugins: what an unset FD_PLUGINS loads (#4909 turned "all" into "none"), the entry-point group."""
    out: dict[str, str] = {}
    loader = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load_plugins_by_group"), None)
    if loader is not None:
        allow = next((t.id for n in ast.walk(loader) if isinstance(n, ast.Assign) and _mentions(n.value, "FD_PLUGINS")
                      for t in n.targets if isinstance(t, ast.Name)), None)
        unset = next((n for n in ast.walk(loader) if isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
                      and isinstance(n.test.ops[0], ast.Is) and _mentions(n.test.left, allow or "FD_PLUGINS")
                      and isinstance(n.test.comparators[0], ast.Constant) and n.test.comparators[0].value is None),
                     None)
        out["load_plugins_by_group.fd_plugins_unset"] = "other" if unset is None else \
            "none" if any(isinstance(s, ast.Return) for s in unset.body) else "all"
        by_name = any(isinstance(n, ast.Compare) and isinstance(n.ops[0], ast.In) and isinstance(n.left, ast.Attribute)
                      and n.left.attr == "name" and _mentions(n.comparators[0], allow or "FD_PLUGINS")
                      for n in ast.walk(loader))
        out["load_plugins_by_group.allowlist_matches"] = "entry_point_name" if by_name else "other"
    group = next((n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                  and any(isinstance(t, ast.Name) and t.id == "PLUGINS_GROUP" for t in n.targets)), None)
    if group is not None and any(isinstance(n, ast.FunctionDef) and n.name == "load_model_register_plugins"
                                 for n in tree.body):
        out["load_model_register_plugins.group"] = group
    return out


# -- DeepEP under graphs (deepep engineer; read by deepep_graphs.py and the deepep patches) ----------------------
def _deepep_graph_markers(tree: ast.Module) -> dict[str, str]:
    """Which captures hold prefill (normal-mode) MoE steps, whether normal dispatch gets a fixed worst-case token
    count, where the MTP draft model's MoE phase is written, and which process group FastDeploy builds for EP."""
    out: dict[str, str] = {}
    split = _method(tree, "GPUModelRunner", "capture_model_prefill_and_mixed")
    if split is not None:  # static split-graph mode (2.5+): prefill/mixed steps captured
        out["GPUModelRunner.capture_model_prefill_and_mixed.captures_graphs"] = _yes(any(
            isinstance(_kwarg(c, "in_capturing"), ast.Constant) and _kwarg(c, "in_capturing").value is True
            for c in _calls(split, "_dummy_run")))
    step = _method(tree, "GPUModelRunner", "initialize_forward_meta")
    if step is not None:  # the draft model's own config copy: is the agreed phase written where its MoE reads it?
        owners = [n.value.attr for n in _in_order(n for n in ast.walk(step) if isinstance(n, ast.Attribute))
                  if n.attr == "moe_phase" and isinstance(n.value, ast.Attribute) and _mentions(n.value, "proposer")]
        out["GPUModelRunner.initialize_forward_meta.proposer_moe_phase_on"] = owners[0] if owners else "none"
    dispatch = _method(tree, "EPPrefillRunner", "dispatch")
    if dispatch is not None:  # DeepEP normal dispatch is capturable only with num_worst_tokens (intranode)
        passes = [n for n in ast.walk(dispatch) if (isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant)
                  and n.slice.value == "num_worst_tokens" and isinstance(n.ctx, ast.Store))
                  or (isinstance(n, ast.keyword) and n.arg == "num_worst_tokens")]
        guards = {a.attr for n in ast.walk(dispatch) if isinstance(n, ast.If) and any(p in list(ast.walk(n))
                  for p in passes) for a in ast.walk(n.test) if isinstance(a, ast.Attribute) and a.attr.isupper()}
        out["EPPrefillRunner.dispatch.num_worst_tokens"] = "none" if not passes else \
            ",".join(sorted(guards)) or "always"
    parallel = _class(tree, "ParallelConfig")
    if parallel is not None:
        groups = [t.attr for n in ast.walk(parallel) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                  and _dotted(n.value.func).endswith("new_group") and _mentions(n.value, "expert_parallel_size")
                  for t in n.targets if isinstance(t, ast.Attribute)]
        out["ParallelConfig.expert_parallel_group.attribute"] = groups[0] if groups else "none"
    return out


def _ladder(func: ast.FunctionDef) -> str | None:
    """The candidate sizes `_set_cudagraph_sizes` builds in `draft_capture_sizes` before it appends the maximum, at
    scale 1 (list displays and comprehensions over range() of constants only; anything else: "other"; None when
    it builds no `draft_capture_sizes`)."""
    allowed = (ast.Expression, ast.List, ast.ListComp, ast.comprehension, ast.BinOp, ast.Constant, ast.Name,
               ast.Load, ast.Store, ast.Call, ast.Mult, ast.Add)
    values: list[int] = []
    for node in (n for n in func.body if isinstance(n, (ast.Assign, ast.AugAssign))):
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if not (isinstance(target, ast.Name) and target.id == "draft_capture_sizes"):
            continue
        expr = ast.Expression(node.value)
        if any(not isinstance(n, allowed) or (isinstance(n, ast.Call) and _dotted(n.func) != "range")
               or (isinstance(n, ast.Constant) and not isinstance(n.value, int)) for n in ast.walk(expr)):
            return "other"
        code = compile(ast.fix_missing_locations(expr), "<fastdeploy ladder>", "eval")
        # globals, not locals: a comprehension's own scope sees only globals
        found = eval(code, {"__builtins__": {}, "range": range, "dec_token_per_query_per_step": 1})  # noqa: S307
        values = (values if isinstance(node, ast.AugAssign) else []) + list(found)
    return ",".join(map(str, values)) or None


def _sizing_markers(tree: ast.Module) -> dict[str, str]:
    """How FDConfig sizes decode captures: its default ladder, the largest size it keeps (max_num_seqs, or times
    k+1 for MTP), the cap it puts on that, and the max_num_seqs it asserts. `plan --fd-line` reads these."""
    out: dict[str, str] = {}
    ladder = _method(tree, "GraphOptimizationConfig", "_set_cudagraph_sizes")
    base = None if ladder is None else _ladder(ladder)
    if base is not None:
        out["GraphOptimizationConfig._set_cudagraph_sizes.ladder"] = base
    init = _method(tree, "FDConfig", "__init__")
    if init is not None:
        shapes = [n.value for n in ast.walk(init) if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "max_capture_shape" for t in n.targets)]
        out["FDConfig.__init__.decode_capture_max"] = "max_num_seqs*(k+1)" if any(
            isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) and _mentions(n, _K) for v in shapes
            for n in ast.walk(v)) else "max_num_seqs"
        caps = [(v, c) for v in shapes for c in ast.walk(v) if isinstance(c, ast.Call) and _dotted(c.func) == "min"
                and any(isinstance(a, ast.Constant) and isinstance(a.value, int) for a in c.args)]
        cap = next((str(a.value) for _, c in caps for a in c.args if isinstance(a, ast.Constant)), "none")
        # 2.5: `max_capture_shape if self.speculative_config is not None else min(512, ...)`
        speculative_only = any(isinstance(v, ast.IfExp) and _mentions(v.test, "speculative_config") for v, _ in caps)
        out["FDConfig.__init__.decode_capture_cap"] = f"{cap}_without_speculative" if speculative_only else cap
    check = _method(tree, "FDConfig", "check")
    if check is not None:
        limits = [str(n.test.comparators[0].value) for n in ast.walk(check) if isinstance(n, ast.Assert)
                  and isinstance(n.test, ast.Compare) and isinstance(n.test.ops[0], ast.LtE)
                  and _mentions(n.test.left, "max_num_seqs") and isinstance(n.test.comparators[0], ast.Constant)]
        out["FDConfig.check.max_num_seqs_limit"] = limits[0] if limits else "none"
    return out


_MARKER_READERS: tuple[Callable[[ast.Module], dict[str, str]], ...] = (
    _runner_markers, _config_markers, _backend_markers, _moe_markers, _ep_markers, _plugin_markers,
    _deepep_graph_markers, _sizing_markers)


def markers(tree: ast.Module) -> dict[str, str]:
    """Behavioural markers of one module: every reader's findings (readers ignore modules without their class).

    A reader that cannot follow some unforeseen code says so under "unreadable.<reader>" instead of
    failing activation; its markers are then missing, which a contract that needs them reports."""
    out: dict[str, str] = {}
    for reader in _MARKER_READERS:
        try:
            out |= reader(tree)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
            out[f"unreadable.{reader.__name__.strip('_')}"] = f"{type(error).__name__}: {error}"
    return out


def k_plus_1_methods(config_markers: Mapping[str, str]) -> str | None:
    """The speculative methods a line counts k+1 tokens per request for, comma-separated, from its fastdeploy.config
    markers: those FDConfig scales sizes for; on a line whose FDConfig tells no method apart (2.2.0), every method
    SpeculativeConfig accepts. None when neither marker was read. The worker (registry) and `plan` both use it."""
    scaled = config_markers.get("FDConfig.k_plus_1_methods")
    if scaled not in (None, "none"):
        return scaled
    accepted = config_markers.get("SpeculativeConfig.method_list")
    return None if accepted in (None, "none") else accepted


def module_path(root: Path, module: str) -> Path:
    """Where `module` (dotted, e.g. fastdeploy.worker.gpu_model_runner) lives under a source tree's root:
    `<module>.py`, or `<module>/__init__.py` for a package."""
    base = root.joinpath(*module.split("."))
    plain = base.with_suffix(".py")
    return plain if plain.is_file() or not (base / "__init__.py").is_file() else base / "__init__.py"


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


# Every FastDeploy module a patch touches or a marker describes (the per-release fixtures hold these).
TARGET_MODULES: tuple[str, ...] = (
    "fastdeploy.config",
    "fastdeploy.model_executor.forward_meta",
    "fastdeploy.model_executor.graph_optimization.cudagraph_piecewise_backend",
    "fastdeploy.model_executor.graph_optimization.graph_optimization_backend",
    "fastdeploy.model_executor.layers.moe.ep",
    "fastdeploy.model_executor.layers.moe.fused_moe_backend_base",
    "fastdeploy.plugins.model_register",
    "fastdeploy.plugins.utils",
    "fastdeploy.spec_decode.mtp",
    "fastdeploy.worker.gpu_model_runner",
    "fastdeploy.worker.model_runner_base",
    "fastdeploy.worker.xpu_model_runner",
)


def _method_json(facts: MethodFacts) -> dict:
    return {"params": list(facts.params), "decorators": list(facts.decorators)}


def facts_to_json(facts: dict[str, ModuleFacts]) -> dict:
    """{module: facts} as plain JSON data (sorted keys, lists for tuples); facts_from_json inverts it."""
    return {module: {
        "classes": {name: {"bases": list(c.bases), "decorators": list(c.decorators),
                           "methods": {method: _method_json(f) for method, f in sorted(c.methods.items())},
                           "attributes": list(c.attributes)}
                    for name, c in sorted(mod.classes.items())},
        "functions": {name: _method_json(f) for name, f in sorted(mod.functions.items())},
        "markers": dict(sorted(mod.markers.items())),
    } for module, mod in sorted(facts.items())}


def _method_from_json(raw: dict) -> MethodFacts:
    return MethodFacts(tuple(raw["params"]), tuple(raw.get("decorators", ())))


def facts_from_json(data: dict) -> dict[str, ModuleFacts]:
    """The inverse of facts_to_json; a malformed entry raises ValueError naming the module and key."""
    out = {}
    for module, raw in data.items():
        try:
            classes = {name: ClassFacts(tuple(c["bases"]), tuple(c.get("decorators", ())),
                                        {m: _method_from_json(f) for m, f in c["methods"].items()},
                                        tuple(c.get("attributes", ())))
                       for name, c in raw["classes"].items()}
            functions = {name: _method_from_json(f) for name, f in raw["functions"].items()}
            out[module] = ModuleFacts(classes, functions, dict(raw["markers"]))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"FastDeploy facts for {module} are malformed ({type(error).__name__}: {error}); "
                             f"regenerate them with tools/extract_fd_facts.py") from None
    return out

