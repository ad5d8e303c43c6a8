"""Classify c10's current stream by behaviour, and drive it through ctypes where it must be bridged.

Torch-API C++ extensions (DeepEP) launch on c10's "current stream". What that is depends on the
build (shared/design/cuda-facts.md); symbol presence alone does not tell, behaviour does:

* header-only (Paddle 3.2.x / 3.3.x releases: no exported c10 stream functions): c10 follows
  Paddle's current stream. Nothing to bridge.
* follows (Paddle develop after #78652, "B"): getCurrentCUDAStream returns Paddle's stream and
  setCurrentCUDAStream moves Paddle's stream for every thread. Not bridged: Paddle's own stream
  switch carries the extension kernels, and a set would act on all threads.
* per-thread apart (PyTorch; Paddle develop #78584, "A"): a thread-local current stream that Paddle
  never moves. Bridged: moved to the capture stream and restored.
* per-thread, set moves the framework (Paddle PR #78902, "C"): thread-local, but a set also moves
  Paddle's stream, deleting a stream Paddle's context still owns (clear=true). Bridged, only after
  Paddle's stream was switched through Paddle's own API (which drops that ownership), and never
  restored through a set that would null Paddle's stream.

The exported `CUDAStream` differs between builds, so so does the calling convention:
* "regs16": PyTorch's 16-byte trivially copyable object, in two registers both ways;
* "sret": Paddle compat's 48-byte object holding a std::string (not trivially copyable): returned
  through a hidden pointer (first argument), passed by pointer;
* "memory": a trivially copyable object over 16 bytes (Paddle compat's 32- and 24-byte layouts):
  returned through a hidden pointer, but passed BY VALUE in memory (on the stack).

A wrong guess can crash, so each convention is tried in a child process (`-I`, neutral cwd): a
sentinel pointer through getStreamFromExternal shows where the stream id lives, then with real
streams made by the framework adapter (`paddle`, `torch`, or `fake` for our g++ test libraries)
set -> get -> restore must round-trip and the behaviour is classified. The parent calls only a
convention that exactly one child proved. Symbols (so header-only) are read in-process every
time; only child verdicts are cached (c10_cache.py), keyed by the library's content (ELF build id,
else a hash of the file), never trusted for a library path.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from .c10_cache import library_identity, locked_cache
from .stream_policy import C10Status

GET = "_ZN3c104cuda20getCurrentCUDAStreamEa"
SET = "_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE"
FROM_EXTERNAL = "_ZN3c104cuda21getStreamFromExternalEP11CUstream_sta"
SYMBOLS = (GET, SET, FROM_EXTERNAL)

REGS16 = "regs16"
SRET = "sret"
MEMORY = "memory"
# Hidden pointer as first argument and structs over 16 bytes on the stack: the x86-64 SysV rules.
CONVENTIONS = (REGS16, SRET, MEMORY) if platform.machine() in ("x86_64", "AMD64") else (REGS16,)
_DESCRIBE = {
    REGS16: "regs16 (16-byte object in registers, PyTorch layout)",
    SRET: "sret (returned through a hidden pointer, passed by pointer; Paddle compat 48-byte layout)",
    MEMORY: "memory (returned through a hidden pointer, passed by value on the stack; Paddle compat 24/32-byte layouts)",
}

HEADER_ONLY = "header-only"
FOLLOWS = "follows"  # B
APART = "per-thread apart"  # A
MOVES_FRAMEWORK = "per-thread, set moves the framework's stream"  # C
BRIDGED = (APART, MOVES_FRAMEWORK)

PADDLE, TORCH, FAKE = "paddle", "torch", "fake"
FRAMEWORKS = (PADDLE, TORCH, FAKE)

# Even (torch treats even ids as external stream pointers) and non-canonical, so a wrong
# convention that writes through one faults at once instead of corrupting memory; the low byte,
# read as an int8 device index by a wrong convention, is -64 (invalid). Only ever passed to
# getStreamFromExternal, never to a set (a set may move the framework's stream).
SENTINELS = (0x5EED_C10B_0000_ABC0, 0x5EED_C10B_0000_DEC0)
SRET_BYTES = 256  # room for any plausible CUDAStream; the callee writes only its own object
FILLS = (0xA5, 0x5A)
PROBE_DEVICE = 0
CHILD_TIMEOUT_S = 300.0
PROBE_VERSION = 2  # part of the cache key: a changed probe re-probes every library
_TAG = "C10_BRIDGE_REPORT "
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class C10Verdict:
    """What inspecting one c10 library found."""

    library: str
    symbols_found: tuple[str, ...]
    behaviour: str | None = None  # HEADER_ONLY, FOLLOWS, APART or MOVES_FRAMEWORK once known
    convention: str | None = None  # the one convention a child proved
    offset: int | None = None  # byte offset of the stream id in the object
    problem: str = ""  # non-empty: c10 cannot be classified or driven
    attempts: dict[str, str] = field(default_factory=dict)  # convention -> "proven" or why not

    @property
    def header_only(self) -> bool:
        return self.behaviour == HEADER_ONLY

    def describe(self) -> str:
        if self.problem:
            return self.problem
        if self.header_only:
            return f"header-only: c10 follows the framework's stream ({self.library} exports no c10 stream functions)"
        if self.behaviour == FOLLOWS:
            return (f"follows: {self.library}'s c10 returns the framework's stream and its set moves it for every "
                    "thread; not bridged (the framework's stream switch carries extension kernels)")
        return (f"bridged ({self.behaviour}): {self.library}, convention {self.convention}, "
                f"stream id at byte {self.offset}")


class _Regs16(ctypes.Structure):
    # Two 8-byte integer fields: the SysV class of {Device{int8,int8}, int64 id}, so libffi
    # returns it in RAX:RDX and passes it in two registers, like the real type.
    _fields_ = [("lo", ctypes.c_uint64), ("hi", ctypes.c_uint64)]


def _in_memory_struct(size: int) -> type[ctypes.Structure]:
    # Over 16 bytes the SysV class is MEMORY: libffi copies the whole struct onto the stack.
    return type(f"_InMemory{size}", (ctypes.Structure,), {"_fields_": [(f"w{i}", ctypes.c_uint64) for i in range(size // 8)]})


def _fn(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> ctypes._CFuncPtr:
    # A fresh foreign function per convention, so two conventions never share argtypes.
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))


class _Calls:
    """The three c10 functions bound to one calling convention; every object is a ctypes buffer we own."""

    def __init__(self, lib: ctypes.CDLL, convention: str, offset: int | None = None) -> None:
        self.convention = convention
        if convention == REGS16:
            self._get = _fn(lib, GET, _Regs16, ctypes.c_int8)
            self._ext = _fn(lib, FROM_EXTERNAL, _Regs16, ctypes.c_void_p, ctypes.c_int8)
            self._set = _fn(lib, SET, None, _Regs16)
            return
        self._get = _fn(lib, GET, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int8)
        self._ext = _fn(lib, FROM_EXTERNAL, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int8)
        if convention == SRET:
            self._set = _fn(lib, SET, None, ctypes.c_void_p)
        elif offset is not None:
            # The id is the last member of Stream, the only member of CUDAStream: the object ends after it.
            self._by_value = _in_memory_struct(offset + 8)
            self._set = _fn(lib, SET, None, self._by_value)

    @staticmethod
    def _sret_buffer(fill: int) -> ctypes.Array:
        # Objects built here by the callee are never destroyed: for CUDA the std::string member is
        # empty (inline storage), so nothing leaks, and the buffer never moves while it lives.
        buf = (ctypes.c_uint64 * (SRET_BYTES // 8))()
        ctypes.memset(buf, fill, SRET_BYTES)
        return buf

    def get(self, device: int, fill: int = 0) -> object:
        if self.convention == REGS16:
            return self._get(device)
        out = self._sret_buffer(fill)
        self._get(out, device)
        return out

    def from_external(self, raw: int, device: int, fill: int = 0) -> object:
        if self.convention == REGS16:
            return self._ext(raw, device)
        out = self._sret_buffer(fill)
        self._ext(out, raw, device)
        return out

    def set(self, obj: object) -> None:
        if self.convention == MEMORY:
            self._set(self._by_value.from_buffer_copy(obj))  # the object's leading bytes, by value
        else:
            # sret: by invisible reference to the very buffer the callee built (a byte copy
            # would leave its string pointing into the original).
            self._set(obj)

    @staticmethod
    def raw_bytes(obj: object) -> bytes:
        return ctypes.string_at(ctypes.addressof(obj), ctypes.sizeof(obj))


def _stream_id(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], sys.byteorder)


class C10Bridge:
    """`C10Streams` over a c10 library, using the convention and offset a child process proved."""

    def __init__(self, verdict: C10Verdict) -> None:
        if verdict.behaviour not in BRIDGED or verdict.convention is None or verdict.offset is None:
            raise ValueError(f"{verdict.library} is not to be bridged: {verdict.describe()}")
        self.verdict = verdict
        self._calls = _Calls(ctypes.CDLL(verdict.library), verdict.convention, verdict.offset)
        self._offset = verdict.offset

    def current_raw(self, device_id: int) -> int:
        return _stream_id(self._calls.raw_bytes(self._calls.get(device_id)), self._offset)

    def save(self, device_id: int) -> object:
        # The object exactly as c10 returned it (kept alive), so restore puts back that stream.
        return self._calls.get(device_id)

    def saved_raw(self, saved: object) -> int:
        return _stream_id(self._calls.raw_bytes(saved), self._offset)

    def restore(self, saved: object) -> None:
        self._calls.set(saved)

    def set_raw(self, device_id: int, raw: int) -> None:
        self._calls.set(self._calls.from_external(raw, device_id))


# ---------------------------------------------------------------- framework adapters (child side)


class FrameworkStreams(Protocol):
    """The framework's current stream, as the child sees and moves it, and real streams to probe with."""

    def current_stream(self, device_id: int) -> object: ...
    def set_current_stream(self, device_id: int, stream: object) -> None: ...
    def new_nonblocking_stream(self, device_id: int) -> object: ...
    def raw_handle(self, stream: object) -> int: ...
    def c10_current_raw(self, device_id: int) -> int | None: ...  # c10 read by other means, if any


class _PaddleStreams:
    """Paddle's GPUContext stream through paddle.device (refuses a CPU build before any stream call)."""

    def __init__(self) -> None:
        from .paddle_device import PaddleStreamDevice

        self._device = PaddleStreamDevice()
        self.current_stream = self._device.current_stream
        self.set_current_stream = self._device.set_current_stream
        self.new_nonblocking_stream = self._device.new_nonblocking_stream
        self.raw_handle = self._device.raw_handle

    def c10_current_raw(self, device_id: int) -> int | None:
        return None  # Paddle has no other reader of its compat c10


class _TorchStreams:
    """PyTorch with a framework stream kept apart from c10 (as tests/gpu model Paddle); real torch streams."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._current: dict[int, object] = {}

    def current_stream(self, device_id: int) -> object:
        if device_id not in self._current:  # the framework's own compute stream, like Paddle's GPUContext stream
            self._current[device_id] = self.new_nonblocking_stream(device_id)
        return self._current[device_id]

    def set_current_stream(self, device_id: int, stream: object) -> None:
        self._current[device_id] = stream

    def new_nonblocking_stream(self, device_id: int) -> object:
        return self._torch.cuda.Stream(device=device_id)

    def raw_handle(self, stream: object) -> int:
        return int(stream.cuda_stream)

    def c10_current_raw(self, device_id: int) -> int | None:
        return int(self._torch.cuda.current_stream(device_id).cuda_stream)


class _FakeStreams:
    """Our g++ fake libraries simulate the framework stream behind extern "C" side doors; streams are heap pointers."""

    def __init__(self, library: str) -> None:
        lib = ctypes.CDLL(library)
        self._get_fw = _fn(lib, "fake_framework_stream", ctypes.c_int64, ctypes.c_int8)
        self._set_fw = _fn(lib, "fake_set_framework_stream", None, ctypes.c_int8, ctypes.c_int64)
        self._c10 = _fn(lib, "fake_c10_current_id", ctypes.c_int64, ctypes.c_int8)
        self._streams: list[ctypes.Array] = []  # kept alive: their addresses are the stream handles

    def current_stream(self, device_id: int) -> int:
        return int(self._get_fw(device_id))

    def set_current_stream(self, device_id: int, stream: int) -> None:
        self._set_fw(device_id, stream)

    def new_nonblocking_stream(self, device_id: int) -> int:
        self._streams.append(ctypes.create_string_buffer(16))
        return ctypes.addressof(self._streams[-1])

    def raw_handle(self, stream: int) -> int:
        return stream

    def c10_current_raw(self, device_id: int) -> int | None:
        return int(self._c10(device_id))


def framework_streams(framework: str, library: str) -> FrameworkStreams:
    if framework == PADDLE:
        return _PaddleStreams()
    if framework == TORCH:
        return _TorchStreams()
    return _FakeStreams(library)


# ---------------------------------------------------------------- child side


def _report(**fields: object) -> None:
    print(_TAG + json.dumps(fields), flush=True)


def _calibrate(calls: _Calls) -> int | None:
    """The stream id's offset, from sentinels through getStreamFromExternal (which moves no stream)."""
    offsets: set[int] | None = None
    for fill in FILLS:
        for sentinel in SENTINELS:
            raw = calls.raw_bytes(calls.from_external(sentinel, PROBE_DEVICE, fill))
            found = {off for off in range(0, len(raw) - 7, 8) if _stream_id(raw, off) == sentinel}
            offsets = found if offsets is None else offsets & found
    if not offsets:
        _report(error="the sentinel stream pointer appeared at no 8-byte-aligned offset of the returned object")
        return None
    if len(offsets) > 1:
        _report(error=f"the sentinel stream pointer appeared at several offsets {sorted(offsets)}")
        return None
    return offsets.pop()


def _classify(calls: _Calls, offset: int, fw: FrameworkStreams) -> None:
    """set -> get -> restore with real streams, then how c10 relates to the framework and to other threads."""
    dev = PROBE_DEVICE

    def c10_raw() -> int:
        return _stream_id(calls.raw_bytes(calls.get(dev)), offset)

    def set_c10(raw: int) -> None:
        calls.set(calls.from_external(raw, dev))

    streams = [fw.new_nonblocking_stream(dev) for _ in range(4)]
    raws = [fw.raw_handle(s) for s in streams]
    original = fw.current_stream(dev)

    # The framework's own switch comes before any c10 set: under C it drops the framework's ownership of its
    # first stream, which C's set (clear=true) would delete (and the stream put back below would be dead).
    _report(stage="move the framework's stream, then getCurrentCUDAStream")
    fw.set_current_stream(dev, streams[0])
    follows_framework = c10_raw() == raws[0]
    fw.set_current_stream(dev, original)

    _report(stage="setCurrentCUDAStream(real stream) then getCurrentCUDAStream")
    set_c10(raws[1])
    got, other_view = c10_raw(), fw.c10_current_raw(dev)
    if got != raws[1] or other_view not in (None, raws[1]):
        _report(error=f"after setCurrentCUDAStream({raws[1]:#x}) getCurrentCUDAStream read {got:#x}"
                + ("" if other_view is None else f" and the framework's own reading of c10 was {other_view:#x}"))
        return
    set_moves_framework = fw.raw_handle(fw.current_stream(dev)) == raws[1]

    _report(stage="save, set another stream, restore the saved object")
    saved = calls.get(dev)
    set_c10(raws[2])
    moved = c10_raw()
    calls.set(saved)
    restored = c10_raw()
    if (moved, restored) != (raws[2], raws[1]):
        _report(error=f"set/restore read back {moved:#x}/{restored:#x}, expected {raws[2]:#x}/{raws[1]:#x}")
        return

    _report(stage="set on another thread, then getCurrentCUDAStream here")
    seen: dict[str, int] = {}

    def other_thread() -> None:
        set_c10(raws[3])
        seen["own"] = c10_raw()

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    per_thread = c10_raw() == raws[1] and seen.get("own") == raws[3]
    fw.set_current_stream(dev, original)
    if per_thread:
        behaviour = MOVES_FRAMEWORK if set_moves_framework else APART
    elif follows_framework:
        behaviour = FOLLOWS
    else:
        _report(error="c10 keeps one current stream for all threads, apart from the framework's: a set would act "
                "on every thread, so it cannot be bridged per thread")
        return
    _report(proven=True, behaviour=behaviour, stage="done")


def _child(convention: str, library: str, framework: str) -> None:
    """Prove one convention; reports go to stdout as tagged JSON lines, the stage first so a crash names it."""
    if framework in (PADDLE, TORCH):
        _report(stage=f"import {framework}")
        try:
            importlib.import_module(framework)  # the framework must own the library we drive
        except Exception as exc:  # noqa: BLE001 - any import failure is a load problem to report
            _report(load_error=f"import {framework} failed: {type(exc).__name__}: {exc}")
            return
    _report(stage="dlopen")
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        _report(load_error=f"dlopen failed: {exc}")
        return
    calls = _Calls(lib, convention)
    _report(stage="getStreamFromExternal(sentinel)")
    offset = _calibrate(calls)
    if offset is None:
        return
    _report(offset=offset, stage=f"{framework} streams")
    try:
        fw = framework_streams(framework, library)
    except Exception as exc:  # noqa: BLE001 - e.g. a CPU build of Paddle: reported, never called
        _report(load_error=f"{framework} streams unavailable: {type(exc).__name__}: {exc}")
        return
    _classify(_Calls(lib, convention, offset), offset, fw)


# ---------------------------------------------------------------- parent side


def _exported_symbols(library: str) -> tuple[str, ...]:
    """Which of c10's stream functions the library exports, looked up in-process (never cached)."""
    lib = ctypes.CDLL(library)
    return tuple(name for name in SYMBOLS if hasattr(lib, name))


def _build_key(library: str, framework: str) -> str:
    # The content, not the file's size and mtime: a rebuilt library copied over the old one with `cp -p`
    # (or a container layer) keeps both.
    return (f"v{PROBE_VERSION}|{platform.machine()}|{framework}|{library}|{os.stat(library).st_size}|"
            f"{library_identity(library)}")


def _child_command(library: str, framework: str, convention: str) -> list[str]:
    # -I: no PYTHONPATH, user site or cwd on sys.path (a `paddle/` folder in the worker's cwd must not
    # shadow Paddle); our package and the parent's absolute import roots are passed explicitly.
    cwd = os.path.realpath(os.getcwd())
    ours = str(Path(__file__).resolve().parent.parent)
    roots = list(dict.fromkeys([ours] + [p for p in sys.path if os.path.isabs(p) and os.path.realpath(p) != cwd]))
    boot = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
            "from fastdeploy_cudagraph_ext.c10_bridge import main; sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-I", "-c", boot, json.dumps(roots), library, "--framework", framework, "--child", convention]


def _parse_reports(stdout: bytes) -> dict:
    merged: dict = {}
    for line in stdout.decode("utf-8", "replace").splitlines():
        if line.startswith(_TAG):
            try:
                merged.update(json.loads(line[len(_TAG) :]))
            except ValueError:
                continue
    return merged


def _run_children(library: str, framework: str) -> dict[str, dict]:
    """One child per convention, in parallel, in an empty directory; each child's merged report plus its fate."""
    workdir = tempfile.mkdtemp(prefix="fdcg_c10_probe_")
    procs: dict[str, subprocess.Popen] = {}
    results: dict[str, dict] = {}
    try:
        for conv in CONVENTIONS:
            try:
                procs[conv] = subprocess.Popen(_child_command(library, framework, conv), cwd=workdir,
                                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            except OSError as exc:
                results[conv] = {"spawn_error": f"{type(exc).__name__}: {exc}"}
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        for conv, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                timed_out = True
            report = _parse_reports(out)
            report.update(returncode=proc.returncode, timed_out=timed_out,
                          stderr_tail=err.decode("utf-8", "replace").strip()[-400:])
            results[conv] = report
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _failure(report: dict) -> str:
    """One line: why this child did not prove its convention."""
    if report.get("spawn_error"):
        return f"could not start the child process: {report['spawn_error']}"
    stage = report.get("stage", "start")
    if report.get("timed_out"):
        return f"child timed out after {CHILD_TIMEOUT_S:.0f} s during {stage}"
    code = report.get("returncode", 0)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"child killed by {name} during {stage} (crash contained)"
    if report.get("error"):
        return report["error"]
    if report.get("load_error"):
        return report["load_error"]
    tail = report.get("stderr_tail")
    return f"child exited with status {code} during {stage}" + (f": {tail.splitlines()[-1]}" if tail else "")


def _decide(library: str, symbols: tuple[str, ...], reports: dict[str, dict]) -> tuple[C10Verdict, bool]:
    """The verdict from the children's reports, and whether it may be cached (not for transient failures)."""
    attempts = {c: ("proven" if r.get("proven") else _failure(r)) for c, r in reports.items()}
    proven = [c for c, r in reports.items() if r.get("proven")]
    if len(proven) == 1:
        r = reports[proven[0]]
        return C10Verdict(library, symbols, r["behaviour"], proven[0], r["offset"], "", attempts), True
    tried = "; ".join(f"{_DESCRIBE[c]}: {why}" for c, why in attempts.items())
    what = "more than one calling convention passed, so none can be trusted" if proven else "no calling convention could be proven"
    problem = (
        f"{library} exports c10's current-stream functions, but {what} (each tried in a child process: a sentinel "
        f"through getStreamFromExternal, then set/get/restore with real streams: {tried}). Fix: use a Paddle/PyTorch "
        "build whose c10 CUDAStream has a known layout (PyTorch's 16 bytes, Paddle compat's 24, 32 or 48) or a "
        "header-only compat layer (Paddle 3.2.x/3.3.x); a changed library build is re-probed automatically."
    )
    transient = any(r.get("timed_out") or r.get("spawn_error") or r.get("load_error") for r in reports.values())
    return C10Verdict(library, symbols, problem=problem, attempts=attempts), not transient


def _cache_entry(verdict: C10Verdict) -> dict[str, object]:
    return {"behaviour": verdict.behaviour, "convention": verdict.convention, "offset": verdict.offset,
            "problem": verdict.problem}


def _from_cache(entry: object, library: str, symbols: tuple[str, ...]) -> C10Verdict | None:
    """A cached child verdict for this library, if the entry has exactly the shape we write; else None (logged)."""
    ok = isinstance(entry, dict) and set(entry) == {"behaviour", "convention", "offset", "problem"}
    if ok and entry["problem"]:
        ok = isinstance(entry["problem"], str) and entry["behaviour"] is entry["convention"] is entry["offset"] is None
    elif ok:
        offset = entry["offset"]
        ok = (entry["behaviour"] in (FOLLOWS, *BRIDGED) and entry["convention"] in CONVENTIONS
              and type(offset) is int and 0 <= offset <= SRET_BYTES - 8 and offset % 8 == 0)
    if not ok:
        log.warning("ignoring a malformed cached c10 verdict for %s: %.200r; probing afresh", library, entry)
        return None
    return C10Verdict(library, symbols, entry["behaviour"], entry["convention"], entry["offset"], entry["problem"])


def probe(library_path: str, framework: str = PADDLE) -> C10Verdict:
    """Classify the c10 of this library: header-only in-process, everything else in child processes (cached)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, not {framework!r}")
    library = os.path.realpath(library_path)
    try:
        symbols = _exported_symbols(library)
        key = _build_key(library, framework)
    except OSError as exc:
        problem = (f"could not load the c10 library {library_path}: {exc}. Fix: check the path, and that it loads "
                   f"in this environment (import {framework} first).")
        return C10Verdict(library, (), problem=problem)
    if not symbols:
        return C10Verdict(library, (), HEADER_ONLY)
    if len(symbols) != len(SYMBOLS):
        missing = ", ".join(sorted(set(SYMBOLS) - set(symbols)))
        problem = (
            f"{library} exports some of c10's current-stream functions but not {missing}, so c10 keeps its own "
            "current stream and cannot be moved. Fix: use a Paddle/PyTorch build that exports all three "
            "(getCurrentCUDAStream, setCurrentCUDAStream, getStreamFromExternal) or a header-only compat layer."
        )
        return C10Verdict(library, symbols, problem=problem)
    with locked_cache() as cache:
        entries = cache.read() if cache is not None else {}
        if key in entries:
            cached = _from_cache(entries[key], library, symbols)
            if cached is not None:
                return cached
        verdict, cacheable = _decide(library, symbols, _run_children(library, framework))
        if cacheable and cache is not None:
            cache.write(key, _cache_entry(verdict))
    return verdict


def c10_status(library_path: str, framework: str = PADDLE) -> C10Status:
    """The policy's view of this c10: follows the framework, bridged (and how), or unbridgeable with the reason."""
    verdict = probe(library_path, framework)
    if verdict.problem:
        return C10Status(follows_framework=False, problem=verdict.problem)
    if verdict.behaviour in (HEADER_ONLY, FOLLOWS):
        return C10Status(follows_framework=True)
    try:
        bridge = C10Bridge(verdict)
    except OSError as exc:
        problem = (
            f"{verdict.library} was proven drivable in a child process but could not be loaded here: {exc}. "
            f"Fix: import {framework} before building the capture policy."
        )
        return C10Status(follows_framework=False, problem=problem)
    return C10Status(follows_framework=False, bridge=bridge, set_moves_framework=verdict.behaviour == MOVES_FRAMEWORK)


def paddle_library_path() -> str | None:
    """Paddle's libphi_core.so (where its compat c10 lives), found without importing Paddle."""
    try:
        spec = importlib.util.find_spec("paddle")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "libs" / "libphi_core.so"
        if candidate.is_file():
            return str(candidate)
    return None


PADDLE_MISSING = (
    "Paddle not installed: no paddle/libs/libphi_core.so on sys.path, so Paddle's c10 could not be inspected. "
    "Fix: install the Paddle GPU build FastDeploy runs on in this Python environment."
)


def paddle_c10_status() -> C10Status:
    """C10Status for the Paddle device; without Paddle nothing is known, so nothing is claimed to follow."""
    library = paddle_library_path()
    if library is None:
        return C10Status(follows_framework=False, problem=PADDLE_MISSING)
    return c10_status(library, PADDLE)


_WHAT_THE_PLUGIN_DOES = {
    HEADER_ONLY: "c10's current stream IS Paddle's (header-only compat, as in the 3.2.x and 3.3.x releases): "
    "the plugin's capture stream, made Paddle's current stream, carries torch-API DeepEP kernels into the graph; "
    "nothing is bridged.",
    FOLLOWS: "c10 follows Paddle's stream and its setCurrentCUDAStream moves Paddle's stream for every thread "
    "(develop after Paddle PR #78652): the plugin never calls it; switching Paddle's stream to the capture stream "
    "carries torch-API DeepEP kernels into the graph.",
    APART: "c10 keeps a per-thread current stream apart from Paddle's (develop, Paddle PR #78584): the plugin moves "
    "it to the capture stream for warmup and capture, reads it back, and restores it afterwards.",
    MOVES_FRAMEWORK: "c10 keeps a per-thread current stream whose set also moves Paddle's stream (Paddle PR #78902): "
    "the plugin switches Paddle's stream through Paddle's own API before every c10 set (that set would delete the "
    "stream Paddle's context still owns), moves c10 to the capture stream, then restores c10 and Paddle's stream, "
    "never setting c10 to the thread's default stream (that would null Paddle's stream).",
}


def paddle_c10_report() -> tuple[bool, str]:
    """For the doctor: (ok, one paragraph: which c10 class the installed Paddle is in and what the plugin does there,
    or the problem and its fix). Never raises."""
    try:
        library = paddle_library_path()
        if library is None:
            return False, PADDLE_MISSING
        version = next((v for v in map(_dist_version, ("paddlepaddle-gpu", "paddlepaddle")) if v), "unknown version")
        verdict = probe(library, PADDLE)
        if verdict.problem:
            return False, f"Paddle {version}: {verdict.problem}"
        how = "" if verdict.behaviour in (HEADER_ONLY, FOLLOWS) else (
            f" (convention {verdict.convention}, stream id at byte {verdict.offset})")
        return True, f"Paddle {version} ({library}): {verdict.behaviour}{how}. {_WHAT_THE_PLUGIN_DOES[verdict.behaviour]}"
    except Exception as exc:  # noqa: BLE001 - a broken Paddle is a finding for the doctor, not a crash
        return False, (f"Paddle's c10 could not be inspected: {type(exc).__name__}: {exc}. Fix: reinstall the Paddle "
                       "GPU build FastDeploy runs on, then run the doctor again.")


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastdeploy_cudagraph_ext.c10_bridge",
        description="Classify a c10 library (default: Paddle's libphi_core.so) and print the verdict as JSON.",
    )
    parser.add_argument("library", nargs="?", help="path to libphi_core.so or libc10_cuda.so")
    parser.add_argument("--framework", choices=FRAMEWORKS, default=PADDLE, help="whose streams the library belongs to")
    parser.add_argument("--child", choices=CONVENTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.library, args.framework)
        return 0
    library = args.library or paddle_library_path()
    if library is None:
        print(PADDLE_MISSING, file=sys.stderr)
        return 1
    verdict = probe(library, args.framework)
    print(json.dumps(asdict(verdict), indent=2, sort_keys=True))
    print(verdict.describe(), file=sys.stderr)
    return 1 if verdict.problem else 0


if __name__ == "__main__":
    sys.exit(main())
