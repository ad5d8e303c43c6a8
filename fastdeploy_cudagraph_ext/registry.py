"""Patch registry: contracts, feature groups, apply/revert, and the one safe point where refusals surface.

A patch declares a CONTRACT: every FastDeploy name it touches. The methods it wraps (must exist), the
attributes it adds, the parameter names it passes or reads by name (must be in the signature), the attributes
it reads or writes on FastDeploy objects (must exist on the line, per variant), and the names it reads only
with a fallback (declared, never required), and the behaviour markers it relies on (with the values it works
with). Everything it only passes through is tolerated, so a parameter
FastDeploy adds never refuses it. Behavioural variants are picked from markers (facts of the source), never
from an unrelated method's presence. Where lines spell one name differently, the contract lists the spellings
("new|old"; "name|" = passed only where the line has it); `judge` picks this line's and hands it to the patch
in its `Variant`. tests/test_declared_names.py fails when patch code touches a name no contract declares.

Patches belong to feature GROUPS that apply all-or-nothing and are reverted alone. A refusal is only
recorded where it happens (often inside FastDeploy's own import); it surfaces when a model runner is
built, the first point at which the real FDConfig says whether this deployment needs the group.
"""
from __future__ import annotations

import enum
import functools
import importlib
import inspect
import logging
import threading
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Callable, ContextManager, Iterable, Mapping

from . import fd_facts, import_hooks
from .fd_facts import ModuleFacts
from .flags import Settings

log = logging.getLogger("fastdeploy_cudagraph_ext")
PATCH_MARKER = "__fastdeploy_cudagraph_ext_patch__"
GATE_MARKER = "runner_gate"  # the PATCH_MARKER value on a gated runner __init__


class PatchRefused(RuntimeError):
    """A feature group this deployment needs does not fit the installed FastDeploy."""


class ContractBroken(Exception):
    """Raised by a patch's variant chooser: the facts match no variant the patch knows."""


ANY_VARIANT = "*"  # Contract.names key: required by every variant


@dataclass(frozen=True)
class Contract:
    cls: str
    wraps: tuple[str, ...] = ()  # replaced; must exist
    wraps_if_present: tuple[str, ...] = ()  # replaced where this line has them (e.g. two-stage DeepEP calls)
    adds: tuple[str, ...] = ()  # added; a FastDeploy that defines them itself needs no patch
    # "method" (of cls) or "Class.method" (of a class in the patch's modules) -> parameter names passed or read
    # by name; "a|b": one of these spellings, "a|": passed only where the line has it
    uses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # variant (ANY_VARIANT: all) -> "Class.attribute" read or written on FastDeploy objects; "C.a|C.b" spellings
    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tolerates: tuple[str, ...] = ()  # "Class.attribute" read only with a fallback (getattr default): never required
    # behaviour marker (fd_facts.markers) -> the values the patch works with ("" = the marker may be absent)
    markers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    optional_class: str = ""  # why a line without the class needs no patch ("" = the class is required)


@dataclass(frozen=True)
class Choice:
    variant: str | None  # None: not needed on this FastDeploy
    reason: str
    line: Mapping[str, str] = field(default_factory=dict)  # facts of this line the patch's code needs (markers)


class Variant(str):
    """The variant a patch applies as, with what it needs to know of this line: for each declared spelling
    group, keyed by its first spelling, the one this line has ("" = absent), and the chooser's `line` facts."""

    line: Mapping[str, str]

    def __new__(cls, name: str, line: Mapping[str, str] | None = None) -> "Variant":
        variant = super().__new__(cls, name)
        variant.line = MappingProxyType(dict(line or {}))
        return variant


NO_FACTS = ModuleFacts()  # a module without readable source: no markers, so variant choosers refuse


def _one_variant(facts: Mapping[str, ModuleFacts]) -> Choice:
    return Choice("default", "contract holds")


# build(cls, variant, settings) -> {attribute: replacement}; variant is a Variant (a str)
BuildReplacements = Callable[[type, str, Settings], dict[str, object]]
# on_runner_init(fd_config, settings, variant) -> {attribute: value} set on the runner after FastDeploy's __init__
RunnerInitHook = Callable[[object, Settings, Variant], dict[str, object]]
# runtime() -> why this process needs no patch whatever FastDeploy's source says (e.g. no CUDA), or None
RuntimeCheck = Callable[[], "str | None"]


@dataclass(frozen=True)
class Patch:
    name: str
    group: str
    module: str
    contract: Contract
    why: str
    how: str
    related_pr: str
    removal_plan: str
    build: BuildReplacements = field(compare=False, repr=False)
    choose: Callable[[Mapping[str, ModuleFacts]], Choice] = field(default=_one_variant, compare=False, repr=False)
    facts_from: tuple[str, ...] = ()  # other modules whose facts `choose` or the declared names read
    on_runner_init: RunnerInitHook | None = field(default=None, compare=False, repr=False)
    # checked at the runner gate, where the worker's device is known: a reason makes the patch "not needed"
    runtime: RuntimeCheck | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        missing = [f for f in ("why", "how", "related_pr", "removal_plan") if not getattr(self, f).strip()]
        if missing:
            raise ValueError(f"patch {self.name!r} lacks metadata: {', '.join(missing)}")
        if not (self.contract.wraps or self.contract.adds or self.contract.wraps_if_present):
            raise ValueError(f"patch {self.name!r} changes no FastDeploy attribute")


@dataclass(frozen=True)
class Need:
    """Whether a deployment needs a group, decided from the real FDConfig: (needed, why)."""

    group: str
    needed: Callable[[object], tuple[bool, str]]


class Verdict(str, enum.Enum):
    APPLIED = "applied"
    NOT_NEEDED = "not needed"
    REFUSED = "refused"
    WAITING = "waiting for FastDeploy to import its module"


@dataclass
class PatchReport:
    patch: str
    verdict: Verdict
    detail: str
    variant: Variant | None = None
    attributes: tuple[str, ...] = ()

    def line(self) -> str:
        return f"fastdeploy-cudagraph-ext: patch {self.patch}: {self.verdict.value} ({self.detail})"


def within(original: Callable, context: Callable[[object], ContextManager]) -> Callable:
    """FastDeploy's own method, run inside `context(self)`: the preferred shape of a patch."""

    @functools.wraps(original)
    def method(self: object, *args: object, **kwargs: object) -> object:
        with context(self):
            return original(self, *args, **kwargs)

    return method


def resolve_class(obj: object, name: str) -> type | None:
    """The class behind `obj`: itself, or the class a decorator such as FastDeploy's @singleton closes over."""
    if isinstance(obj, type):
        return obj
    wrapped = getattr(obj, "__wrapped__", None)
    if isinstance(wrapped, type):
        return wrapped
    for cell in getattr(obj, "__closure__", None) or ():
        content = cell.cell_contents
        if isinstance(content, type) and content.__name__ == name:
            return content
    return None


# -- judging a contract (pure: the same code serves the worker, doctor and the per-release fixtures) --------
def _class_methods(facts: ModuleFacts, name: str, seen: frozenset[str] = frozenset()) -> dict[str, tuple[str, ...]] | None:
    """Methods of a class from the module's facts, including bases defined in the same module."""
    cls = facts.classes.get(name)
    if cls is None or name in seen:  # `class A(other.A)` names a base elsewhere, not itself
        return None
    methods: dict[str, tuple[str, ...]] = {}
    for base in reversed(cls.bases):
        methods.update(_class_methods(facts, base.rsplit(".", 1)[-1], seen | {name}) or {})
    methods.update({m: f.params for m, f in cls.methods.items()})
    return methods


def _live_methods(cls: type) -> dict[str, tuple[str, ...]]:
    """Methods of a live class with their parameters (inherited ones too, where the source has no facts)."""
    out = {}
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name, None)
        func = getattr(attr, "__func__", attr)
        if callable(func):
            try:
                sig = inspect.signature(inspect.unwrap(func))
            except (TypeError, ValueError):
                continue
            out[name] = tuple(p.name for p in sig.parameters.values())
    return out


def _names(params: tuple[str, ...]) -> set[str]:
    return {p.lstrip("*").rstrip("=") for p in params if p != "*"}


def _class_members(facts: Mapping[str, ModuleFacts], modules: tuple[str, ...], name: str) -> set[str] | None:
    """Methods and assigned attributes of class `name`, bases included (looked up in its own module first, then in
    the patch's other modules), from the first of `modules` that defines it."""
    for module in modules:
        found = facts.get(module)
        if found is None or name not in found.classes:
            continue
        members: set[str] = set()
        pending, seen = [(found, name)], set()
        while pending:  # bases by name, in this module first, then in the patch's other modules
            home, base = pending.pop()
            cls = home.classes.get(base) or next(
                (f.classes[base] for m in modules if (f := facts.get(m)) is not None and base in f.classes), None)
            if cls is None or id(cls) in seen:
                continue
            seen.add(id(cls))
            members |= set(cls.methods) | set(cls.attributes)
            pending += [(home, b.rsplit(".", 1)[-1]) for b in cls.bases]
        return members
    return None


def _spelling(options: str, present: Callable[[str], bool]) -> tuple[str, str | None]:
    """(the group's key, the first of its spellings `present` accepts, "" for an allowed absence, None if none)."""
    spellings = options.split("|")
    key = spellings[0].rsplit(".", 1)[-1]
    for spelling in spellings:
        if spelling == "" or present(spelling):
            return key, spelling.rsplit(".", 1)[-1]
    return key, None


def _declared_names(patch: Patch, variant: str, facts: Mapping[str, ModuleFacts],
                    methods: dict[str, tuple[str, ...]]) -> tuple[list[str], dict[str, str]]:
    """Problems with the names `patch` declares for `variant` on this line, and this line's spellings."""
    c = patch.contract
    modules = (patch.module, *patch.facts_from)
    problems: list[str] = []
    line: dict[str, str] = {}
    for method, used in c.uses.items():
        owner, _, name = method.rpartition(".")
        if owner:
            params = next((f.classes[owner].methods[name].params for m in modules if (f := facts.get(m)) is not None
                           and owner in f.classes and name in f.classes[owner].methods), None)
        else:
            owner, params = c.cls, methods.get(method)
        if params is None:
            problems.append(f"{owner}.{name} is missing")
            continue
        absent = []
        for options in used:
            key, spelled = _spelling(options, lambda p: p in _names(params))
            if spelled is None:
                absent.append(" or ".join(options.split("|")))
            elif "|" in options:
                line[key] = spelled
        if absent:
            problems.append(f"{owner}.{name}({', '.join(params)}) lacks {', '.join(absent)}")
    for options in (*c.names.get(ANY_VARIANT, ()), *c.names.get(variant, ())):
        members: dict[str, set[str] | None] = {}

        def present(dotted: str) -> bool:
            owner, _, attribute = dotted.partition(".")
            if owner not in members:  # the patched class: its live methods too
                members[owner] = (_class_members(facts, modules, owner) or set()) | (set(methods) if owner == c.cls
                                                                                    else set())
            return attribute in (members[owner] or ())

        key, spelled = _spelling(options, present)
        if spelled is None:
            problems.append(f"{' or '.join(options.split('|'))} is missing (read or written by the patch)")
        elif "|" in options:
            line[key] = spelled
    found = {k: v for m in reversed(modules) if (f := facts.get(m)) is not None for k, v in f.markers.items()}
    for marker, accepted in c.markers.items():
        value = found.get(marker, "")
        if value not in accepted:
            problems.append(f"marker {marker} is {value or 'absent'!r} on this line; the patch relies on "
                            f"{' or '.join(repr(a or 'absent') for a in accepted)}")
    return problems, line


def judge(patch: Patch, facts: Mapping[str, ModuleFacts], live_cls: type | None = None) -> PatchReport:
    """The verdict of `patch` on a FastDeploy described by `facts` (and, in a worker, the live class)."""
    c = patch.contract
    module = facts.get(patch.module)
    methods = _class_methods(module, c.cls) if module is not None else None
    if live_cls is not None:  # what exists is the live class; signatures from its source where it has them
        source = methods or {}
        methods = {name: source.get(name, params) for name, params in _live_methods(live_cls).items()}
    where = f"{patch.module}:{c.cls}"
    if methods is None:
        if c.optional_class:
            return PatchReport(patch.name, Verdict.NOT_NEEDED, f"no {where}: {c.optional_class}")
        return PatchReport(patch.name, Verdict.REFUSED, f"{where} not found in this FastDeploy")
    defined = [a for a in c.adds if a in methods]
    if defined:
        return PatchReport(patch.name, Verdict.NOT_NEEDED, f"FastDeploy defines {c.cls}.{', '.join(defined)} itself")
    missing = [f"{c.cls}.{m} is missing" for m in c.wraps if m not in methods]
    if missing:
        return PatchReport(patch.name, Verdict.REFUSED, "; ".join(missing))
    try:
        choice = patch.choose(facts)
    except ContractBroken as broken:
        return PatchReport(patch.name, Verdict.REFUSED, str(broken))
    if choice.variant is None:  # before the names it uses: a patch that is not needed calls nothing
        return PatchReport(patch.name, Verdict.NOT_NEEDED, choice.reason)
    problems, line = _declared_names(patch, choice.variant, facts, methods)
    if problems:
        return PatchReport(patch.name, Verdict.REFUSED, "; ".join(problems))
    attributes = (*c.wraps, *(m for m in c.wraps_if_present if m in methods), *c.adds)
    variant = Variant(choice.variant, {**line, **choice.line})
    return PatchReport(patch.name, Verdict.APPLIED, f"{choice.variant}: {choice.reason}", variant, attributes)


@dataclass(frozen=True)
class GroupVerdict:
    group: str
    verdict: str  # "applies" | "not needed" | "refused"
    reason: str


def group_verdict(group: str, reports: list[PatchReport]) -> GroupVerdict:
    details = "; ".join(f"{r.patch}: {r.detail}" for r in reports)
    if any(r.verdict is Verdict.REFUSED for r in reports):
        refused = "; ".join(f"{r.patch}: {r.detail}" for r in reports if r.verdict is Verdict.REFUSED)
        return GroupVerdict(group, "refused", refused)
    if reports and all(r.verdict is Verdict.NOT_NEEDED for r in reports):
        return GroupVerdict(group, "not needed", details)
    return GroupVerdict(group, "applies", details)


def _module_facts(name: str, module: ModuleType | None) -> ModuleFacts | None:
    """Facts of an imported module from its file; of one not imported yet, from the installed source (no import)."""
    if module is not None:
        return fd_facts.live_module_facts(module)
    root = fd_facts.installed_root()
    path = None if root is None else fd_facts.module_path(root, name)
    if path is None or not path.is_file():
        return None
    return fd_facts.module_facts(path.read_text(encoding="utf-8"))


# -- the registry of one process ------------------------------------------------------------------------------
_MISSING = object()


@dataclass
class _Applied:
    cls: type
    originals: dict[str, object]


class Registry:
    """The patches known to the plugin and what happened to each in this process."""

    def __init__(self, patches: list[Patch], needs: list[Need], runners: Mapping[str, str],
                 settings: Settings = Settings()) -> None:
        names = [p.name for p in patches]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate patch names: {names}")
        unknown = {p.group for p in patches} - {n.group for n in needs}
        if unknown:
            raise ValueError(f"groups without a need rule: {sorted(unknown)}")
        self.patches = {p.name: p for p in patches}
        self.needs = {n.group: n for n in needs}
        self.runners = MappingProxyType(dict(runners))  # runner module -> class whose __init__ is the safe point
        self.settings = settings
        self.reports: dict[str, PatchReport] = {}
        self.refused: dict[str, str] = {}  # group -> why
        self.stopped = False
        self._applied: dict[str, _Applied] = {}  # patch -> originals, in install order
        self._gates: dict[str, _Applied] = {}  # runner module -> original __init__
        self._lock = threading.RLock()

    def group_members(self, group: str) -> list[Patch]:
        return [p for p in self.patches.values() if p.group == group]

    # -- apply -----------------------------------------------------------------------------------------------
    def apply_to_module(self, patch: Patch, module: ModuleType) -> PatchReport:
        with self._lock:
            if patch.name in self._applied:
                return self.reports[patch.name]
            if patch.group in self.refused:
                return self._record(PatchReport(patch.name, Verdict.REFUSED, f"group {patch.group} refused"))
            cls = resolve_class(getattr(module, patch.contract.cls, None), patch.contract.cls)
            loaded = import_hooks.loaded_modules()
            loaded[patch.module] = module  # its body has just run (we may be called from its loader)
            try:
                facts = {name: f for name in (patch.module, *patch.facts_from)
                         if (f := _module_facts(name, loaded.get(name))) is not None}
                report = judge(patch, facts, cls)
            except Exception as error:  # noqa: BLE001 - we may be inside FastDeploy's import: record, never raise
                report = PatchReport(patch.name, Verdict.REFUSED, f"could not judge: {type(error).__name__}: {error}")
            if report.verdict is Verdict.APPLIED:
                if cls is None:  # source and live module disagree: trust the live one
                    report = PatchReport(patch.name, Verdict.REFUSED, f"{patch.module} has no class {patch.contract.cls}")
                else:
                    report = self._install(patch, cls, report)
            if report.verdict is Verdict.REFUSED:
                self._refuse_group(patch.group, report)
            return self._record(report)

    def _install(self, patch: Patch, cls: type, report: PatchReport) -> PatchReport:
        """Install the replacements, or turn any failure into a recorded refusal (we may be inside an import)."""
        try:
            replacements = patch.build(cls, report.variant or "", self.settings)
            if set(replacements) != set(report.attributes):
                raise ValueError(f"built {sorted(replacements)}, its contract names {sorted(report.attributes)}")
            self._applied[patch.name] = _Applied(cls, self._replace(cls, replacements, patch.name))
        except Exception as error:  # noqa: BLE001 - recorded; surfaces at the runner gate
            return PatchReport(patch.name, Verdict.REFUSED, f"could not apply: {type(error).__name__}: {error}")
        return report

    @classmethod
    def _replace(cls_, cls: type, replacements: dict[str, object], marker: str) -> dict[str, object]:
        originals = {attr: cls.__dict__.get(attr, _MISSING) for attr in replacements}
        done: list[str] = []
        try:
            for attr, new in replacements.items():
                try:
                    setattr(new, PATCH_MARKER, marker)
                except AttributeError:
                    pass
                setattr(cls, attr, new)
                done.append(attr)
        except BaseException:
            cls_._restore(cls, {a: originals[a] for a in done})
            raise
        return originals

    def _refuse_group(self, group: str, report: PatchReport) -> None:
        """All-or-nothing: a refused patch reverts the rest of its group (only its group)."""
        self.refused.setdefault(group, f"{report.patch}: {report.detail}")
        for member in reversed(self.group_members(group)):
            if self.revert(member.name):
                self._record(PatchReport(member.name, Verdict.REFUSED, f"reverted: group {group} refused"))

    def apply_when_imported(self, patch: Patch) -> PatchReport:
        """Apply now if FastDeploy already imported the target module, else as soon as it does."""
        if import_hooks.when_imported(patch.module, lambda module: self.apply_to_module(patch, module)):
            return self.reports[patch.name]
        report = PatchReport(patch.name, Verdict.WAITING, f"{patch.module} not imported yet")
        self.reports.setdefault(patch.name, report)
        return report

    def watch_runners(self) -> None:
        """Put the safe point (a gate on each runner's __init__) in place when FastDeploy imports the runner."""
        for module_name, cls_name in self.runners.items():
            import_hooks.when_imported(module_name, functools.partial(self._install_gate, cls_name))

    # -- the safe point ---------------------------------------------------------------------------------------
    def _install_gate(self, cls_name: str, module: ModuleType) -> None:
        with self._lock:
            cls = getattr(module, cls_name, None)
            if module.__name__ in self._gates or not isinstance(cls, type):
                return
            original = cls.__init__
            registry = self

            @functools.wraps(original)
            def __init__(runner: object, *args: object, **kwargs: object) -> None:
                fd_config = kwargs["fd_config"] if "fd_config" in kwargs else args[0]
                attributes = registry.runner_built(cls_name, fd_config)
                original(runner, *args, **kwargs)
                for name, value in attributes.items():
                    setattr(runner, name, value)

            self._gates[module.__name__] = _Applied(cls, self._replace(cls, {"__init__": __init__}, GATE_MARKER))

    def runner_built(self, runner_cls: str, fd_config: object) -> dict[str, object]:
        """Decide, from the real FDConfig, whether a refused group stops this worker; prepare applied patches."""
        self._resolve_pending(runner_cls)  # outside the lock: the imports' own callbacks take it
        with self._lock:
            not_here = self._not_needed_in_this_process()
            problems = []
            for group, why_refused in self.refused.items():
                needed, why = self.needs[group].needed(fd_config)
                if needed and group in not_here:
                    needed, why = False, not_here[group]
                if needed:
                    problems.append(f"group {group} is refused ({why_refused}) and this deployment needs it ({why})")
                else:
                    log.info("fastdeploy-cudagraph-ext: group %s: refused (%s); not needed for this deployment: %s",
                             group, why_refused, why)
            if problems:
                self.revert_all()
                self.stopped = True
                raise PatchRefused(
                    "fastdeploy-cudagraph-ext stops this worker: " + " | ".join(problems)
                    + ". Every patch was reverted. Use a FastDeploy release listed in README's compatibility table, "
                    "or unset FD_CUDAGRAPH_EXT to serve without the plugin.")
            attributes: dict[str, object] = {}
            for name in self._applied:
                patch = self.patches[name]
                if patch.on_runner_init is not None and patch.contract.cls == runner_cls:
                    attributes.update(patch.on_runner_init(fd_config, self.settings, self.reports[name].variant))
            return attributes

    def _not_needed_in_this_process(self) -> dict[str, str]:
        """Revert the applied patches whose runtime check gives a reason (e.g. no CUDA); {group: reason} of the
        groups whose every member has one (each distinct reason once)."""
        reasons = {p.name: why for p in self.patches.values() if p.runtime is not None and (why := p.runtime())}
        for name in [n for n in self._applied if n in reasons]:
            self.revert(name)
            self._record(PatchReport(name, Verdict.NOT_NEEDED, reasons[name]))
        groups = {p.group for p in self.patches.values()}
        return {g: "; ".join(dict.fromkeys(reasons[p.name] for p in self.group_members(g))) for g in groups
                if all(p.name in reasons for p in self.group_members(g))}

    def _resolve_pending(self, runner_cls: str) -> None:
        """Every target module is now imported or known not to be: the other platform's runner never is."""
        others = {m for m, c in self.runners.items() if c != runner_cls}
        for name in sorted({p.module for p in self.patches.values()} - others):
            if name not in import_hooks.loaded_modules():
                try:
                    importlib.import_module(name)  # FastDeploy's imports are complete: this only brings it forward
                except Exception as error:  # noqa: BLE001 - a module this platform cannot import has nothing to patch
                    log.info("fastdeploy-cudagraph-ext: %s is not importable in this worker (%s: %s); its patches "
                             "are not needed here", name, type(error).__name__, error)
        import_hooks.cancel_all()

    # -- revert -----------------------------------------------------------------------------------------------
    @staticmethod
    def _restore(cls: type, originals: dict[str, object]) -> None:
        for attr, original in originals.items():
            if original is _MISSING:
                delattr(cls, attr)
            else:
                setattr(cls, attr, original)

    def revert(self, name: str) -> bool:
        with self._lock:
            applied = self._applied.pop(name, None)
            if applied is None:
                return False
            self._restore(applied.cls, applied.originals)
            self.reports.pop(name, None)
            return True

    def revert_all(self) -> None:
        with self._lock:
            for name in reversed(list(self._applied)):
                self.revert(name)
            for module in reversed(list(self._gates)):
                gate = self._gates.pop(module)
                self._restore(gate.cls, gate.originals)
            self.reports.clear()

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def group_verdicts(self) -> list[GroupVerdict]:
        """Per group with a recorded report, its verdict in this process (a refused group's refusing patch keeps
        its refused report)."""
        return _verdicts_by_group((p.group, self.reports[p.name]) for p in self.patches.values()
                                  if p.name in self.reports)

    def _record(self, report: PatchReport) -> PatchReport:
        self.reports[report.patch] = report
        log.info(report.line())
        return report


def _verdicts_by_group(reports: Iterable[tuple[str, PatchReport]]) -> list[GroupVerdict]:
    """One verdict per group, from its members' (group, report) pairs, in the order groups first appear."""
    groups: dict[str, list[PatchReport]] = {}
    for group, report in reports:
        groups.setdefault(group, []).append(report)
    return [group_verdict(group, members) for group, members in groups.items()]


def group_verdicts_of(patches: list[Patch], facts: Mapping[str, ModuleFacts]) -> list[GroupVerdict]:
    """Per group, what the registry would do on the FastDeploy these facts describe (no import)."""
    return _verdicts_by_group((patch.group, judge(patch, facts)) for patch in patches)
