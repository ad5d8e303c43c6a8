"""Patch registry: what each patch changes in FastDeploy, on which shapes, and how to undo it.

A patch names the FastDeploy symbols it replaces (`module:Class.attr`) and carries its
Why / How / Related upstream PR / Removal plan. Which FastDeploy shapes it accepts is data
(`patches/*.json`, one file per release line): a shape is a set of method signatures the
installed class must have. Applying is all-or-nothing per patch and revert puts back the
exact original objects.
"""
from __future__ import annotations

import enum
import functools
import inspect
import logging
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, ContextManager

from . import import_hooks
from .release_lines import ReleaseLine, ShapeSpec, load_release_lines

log = logging.getLogger("fastdeploy_cudagraph_ext")

# Replacement attributes for a target class, given the class and the matched shape name.
BuildReplacements = Callable[[type, str], dict[str, object]]

PATCH_MARKER = "__fastdeploy_cudagraph_ext_patch__"


class PatchRefused(RuntimeError):
    """The installed FastDeploy does not have a shape this patch was checked against."""


@dataclass(frozen=True)
class Patch:
    name: str
    symbols: tuple[str, ...]  # "module:Class.attr", all on one class
    why: str
    how: str
    related_pr: str
    removal_plan: str
    build: BuildReplacements = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        missing = [f for f in ("why", "how", "related_pr", "removal_plan") if not getattr(self, f).strip()]
        if missing:
            raise ValueError(f"patch {self.name!r} lacks metadata: {', '.join(missing)}")
        if not self.symbols:
            raise ValueError(f"patch {self.name!r} names no FastDeploy symbol")
        owners = {s.rsplit(".", 1)[0] for s in self.symbols}
        if len(owners) != 1 or any(":" not in s for s in self.symbols):
            raise ValueError(f"patch {self.name!r}: symbols must be 'module:Class.attr' on one class, got {self.symbols}")

    @property
    def module(self) -> str:
        return self.symbols[0].split(":", 1)[0]

    @property
    def class_name(self) -> str:
        return self.symbols[0].split(":", 1)[1].split(".", 1)[0]

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(s.rsplit(".", 1)[1] for s in self.symbols)


class Verdict(str, enum.Enum):
    APPLIED = "applied"
    FORCED = "applied (forced)"
    NOT_NEEDED = "not needed"
    REFUSED = "refused"
    WAITING = "waiting for FastDeploy to import its module"
    ABSENT = "target not installed"


@dataclass
class PatchReport:
    patch: str
    verdict: Verdict
    detail: str

    def line(self) -> str:
        return f"fastdeploy-cudagraph-ext: patch {self.patch}: {self.verdict.value} ({self.detail})"


def within(original: Callable, context: Callable[[object], ContextManager]) -> Callable:
    """FastDeploy's own method, run inside `context(self)`: the preferred shape of a patch."""

    @functools.wraps(original)
    def method(self: object, *args: object, **kwargs: object) -> object:
        with context(self):
            return original(self, *args, **kwargs)

    return method


def signature_of(func: object) -> tuple[str, ...]:
    """Parameter names as written, with * and ** marking variadics: ('self', 'entry', '**kwargs')."""
    try:
        params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ("<no signature>",)
    prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return tuple(prefix.get(p.kind, "") + p.name for p in params)


def shape_differences(cls: type, spec: ShapeSpec) -> list[str]:
    """Empty when `cls` has every method of `spec` with exactly the expected parameters."""
    diffs = [f"{cls.__name__}.{method} exists (a newer shape)" for method in spec.absent if hasattr(cls, method)]
    for method, expected in spec.methods.items():
        found = getattr(cls, method, None)
        if found is None:
            diffs.append(f"{cls.__name__}.{method} is missing")
            continue
        if expected is None:  # decorated in FastDeploy without functools.wraps: presence is all we can check
            continue
        found_sig = signature_of(getattr(found, "__wrapped__", found))
        if found_sig != tuple(expected):
            diffs.append(f"{cls.__name__}.{method}({', '.join(found_sig)}) != expected ({', '.join(expected)})")
    return diffs


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


@dataclass
class _Applied:
    cls: type
    originals: dict[str, object]


_MISSING = object()


class Registry:
    """The patches known to the plugin and what happened to each in this process."""

    def __init__(self, patches: list[Patch], lines: list[ReleaseLine] | None = None) -> None:
        names = [p.name for p in patches]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate patch names: {names}")
        self.patches = {p.name: p for p in patches}
        self.lines = load_release_lines() if lines is None else lines
        self.reports: dict[str, PatchReport] = {}
        self._applied: dict[str, _Applied] = {}
        self._lock = threading.RLock()
        self._force = False
        self._on_refusal: Callable[[PatchReport], None] | None = None

    # -- shape matching -------------------------------------------------------------
    def match(self, patch: Patch, cls: type) -> tuple[str | None, str, list[str]]:
        """(shape name or None, verdict text, differences) of `cls` against every release line, newest first."""
        tried: list[str] = []
        found: ShapeSpec | None = None
        lines: list[str] = []
        for line in reversed(self.lines):  # newest first: older shapes are often subsets of newer ones
            spec = line.patches.get(patch.name)
            if spec is None:
                continue
            if found is not None:
                if spec == found:
                    lines.append(line.name)
                continue
            diffs = shape_differences(cls, spec)
            if diffs:
                tried.append(f"{line.name}: " + "; ".join(diffs))
            else:
                found, lines = spec, [line.name]
        if found is None:
            return None, "", tried
        where = "FastDeploy " + "/".join(reversed(lines))
        if found.not_needed:
            return None, f"{where} shape: {found.not_needed}", []
        return found.shape, f"{where} shape '{found.shape}'", []

    def closest_shape(self, patch: Patch) -> str | None:
        """The newest release line's applicable shape, used only under FD_CUDAGRAPH_EXT_FORCE."""
        for line in reversed(self.lines):
            spec = line.patches.get(patch.name)
            if spec is not None and not spec.not_needed:
                return spec.shape
        return None

    # -- apply / revert ---------------------------------------------------------------
    def apply_to_module(self, patch: Patch, module: ModuleType) -> PatchReport:
        with self._lock:
            if patch.name in self._applied:
                return self.reports[patch.name]
            cls = resolve_class(getattr(module, patch.class_name, None), patch.class_name)
            if cls is None:
                report = PatchReport(patch.name, Verdict.REFUSED,
                                     f"{patch.module} has no class {patch.class_name}; this FastDeploy is not one we checked")
                return self._record_refusal(report)
            shape, detail, diffs = self.match(patch, cls)
            if shape is None and not diffs:
                return self._record(PatchReport(patch.name, Verdict.NOT_NEEDED, detail))
            verdict = Verdict.APPLIED
            if shape is None:
                differences = " | ".join(diffs)
                if not self._force:
                    return self._record_refusal(PatchReport(
                        patch.name, Verdict.REFUSED,
                        f"{patch.module}:{patch.class_name} matches no checked FastDeploy shape [{differences}]. "
                        f"Use a FastDeploy release listed in README's compatibility table, or set "
                        f"FD_CUDAGRAPH_EXT_FORCE=1 to apply anyway at your own risk"))
                shape = self.closest_shape(patch)
                if shape is None:
                    return self._record_refusal(PatchReport(patch.name, Verdict.REFUSED, "no shape to force"))
                verdict = Verdict.FORCED
                detail = f"FORCED onto an unchecked shape as '{shape}' [{differences}]"
                log.warning("fastdeploy-cudagraph-ext: %s: %s", patch.name, detail)
            self._install(patch, cls, shape)
            return self._record(PatchReport(patch.name, verdict, detail))

    def _install(self, patch: Patch, cls: type, shape: str) -> None:
        replacements = patch.build(cls, shape)
        if set(replacements) != set(patch.attributes):
            raise ValueError(f"patch {patch.name} built {sorted(replacements)}, declared {sorted(patch.attributes)}")
        originals = {attr: cls.__dict__.get(attr, _MISSING) for attr in replacements}
        done: list[str] = []
        try:
            for attr, new in replacements.items():
                try:
                    setattr(new, PATCH_MARKER, patch.name)
                except AttributeError:
                    pass
                setattr(cls, attr, new)
                done.append(attr)
        except BaseException:
            self._restore(cls, {a: originals[a] for a in done})
            raise
        self._applied[patch.name] = _Applied(cls, originals)

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
            for name in list(self._applied):
                self.revert(name)
            self.reports.clear()

    def applied(self) -> list[str]:
        return sorted(self._applied)

    # -- bookkeeping -----------------------------------------------------------------
    def _record(self, report: PatchReport) -> PatchReport:
        self.reports[report.patch] = report
        (log.warning if report.verdict is Verdict.FORCED else log.info)(report.line())
        return report

    def _record_refusal(self, report: PatchReport) -> PatchReport:
        self._record(report)
        if self._on_refusal is not None:
            self._on_refusal(report)
        return report

    def arm(self, force: bool, on_refusal: Callable[[PatchReport], None] | None) -> None:
        self._force = force
        self._on_refusal = on_refusal

    def apply_when_imported(self, patch: Patch) -> PatchReport:
        """Apply now if FastDeploy already imported the target module, else as soon as it does."""
        ran_now = import_hooks.when_imported(patch.module, lambda module: self.apply_to_module(patch, module))
        if ran_now:
            return self.reports[patch.name]
        report = PatchReport(patch.name, Verdict.WAITING, f"{patch.module} not imported yet")
        self.reports.setdefault(patch.name, report)
        return report
