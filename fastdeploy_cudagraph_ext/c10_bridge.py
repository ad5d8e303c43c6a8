"""Drive c10's current CUDA stream through ctypes, with a calling convention proven at run time.

Torch-API C++ extensions (DeepEP) launch on c10's "current stream". Where c10 keeps its own
thread-local current stream (PyTorch; Paddle compat generations 3 and 4), the capture policy
must move it to the capture stream. PyTorch's libc10_cuda.so and Paddle's libphi_core.so export
the three functions below under the same mangled names, but their `CUDAStream` differs:

* "regs16": PyTorch's 16-byte trivially copyable object, returned in two registers and passed by
  value in two registers; a 16-byte ctypes Structure makes libffi do exactly that.
* "sret": Paddle compat's larger, non-trivially copyable object (48 bytes, with a std::string),
  returned through a hidden pointer passed as the first argument and passed by pointer.

A wrong guess can crash the process, so each candidate is tried in a child process
(`python -m fastdeploy_cudagraph_ext.c10_bridge --child ...`): a sentinel stream pointer passed to
getStreamFromExternal shows where the stream id lives, then set -> get -> restore must round-trip.
The parent only ever calls a convention that a child proved. Verdicts are cached per library build.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .stream_policy import C10Status

GET = "_ZN3c104cuda20getCurrentCUDAStreamEa"
SET = "_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE"
FROM_EXTERNAL = "_ZN3c104cuda21getStreamFromExternalEP11CUstream_sta"
SYMBOLS = (GET, SET, FROM_EXTERNAL)

REGS16 = "regs16"
SRET = "sret"
# The hidden-pointer-as-first-argument form of sret is the x86-64 SysV rule (AArch64 uses x8).
CONVENTIONS = (REGS16, SRET) if platform.machine() in ("x86_64", "AMD64") else (REGS16,)
_DESCRIBE = {
    REGS16: "regs16 (16-byte object in registers, PyTorch layout)",
    SRET: "sret (object returned through a hidden pointer, passed by pointer; Paddle compat layout)",
}

# Even (torch treats even ids as external stream pointers) and non-canonical, so a wrong
# convention that writes through one faults at once instead of corrupting memory; the low byte,
# read as an int8 device index by a wrong convention, is -64 (invalid).
SENTINELS = (0x5EED_C10B_0000_ABC0, 0x5EED_C10B_0000_DEC0)
SRET_BYTES = 256  # room for any plausible CUDAStream; the callee writes only its own object
FILLS = (0xA5, 0x5A)  # two fills tell bytes the callee wrote from bytes it left alone
PROBE_DEVICE = 0
CHILD_TIMEOUT_S = 300.0
PROBE_VERSION = 1  # part of the cache key: a changed probe re-probes every library
CACHE_ENV = "FD_CUDAGRAPH_EXT_CACHE_DIR"
_TAG = "C10_BRIDGE_REPORT "


@dataclass(frozen=True)
class C10Verdict:
    """What probing one c10 library found; JSON-serialisable (to_json / from_json)."""

    library: str
    symbols_found: tuple[str, ...]
    convention: str | None = None  # REGS16 or SRET once a child proved it
    offset: int | None = None  # byte offset of the stream id in the returned object
    object_size: int | None = None  # bytes of the returned object the callee writes
    problem: str = ""  # non-empty: c10 keeps its own stream but cannot be driven
    attempts: dict[str, str] = field(default_factory=dict)  # convention -> "proven" or why not

    @property
    def header_only(self) -> bool:
        return not self.symbols_found and not self.problem

    def describe(self) -> str:
        if self.problem:
            return self.problem
        if self.header_only:
            return f"header-only: c10 follows the framework's stream ({self.library} exports no c10 stream functions)"
        return (
            f"bridged: {self.library} keeps its own c10 current stream; convention {self.convention}, "
            f"stream id at byte {self.offset} of a {self.object_size}-byte object"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> C10Verdict:
        data = json.loads(text)
        data["symbols_found"] = tuple(data["symbols_found"])
        return cls(**data)


class _Regs16(ctypes.Structure):
    # Two 8-byte integer fields: the SysV class of {Device{int8,int8}, int64 id}, so libffi
    # returns it in RAX:RDX and passes it in two registers, like the real type.
    _fields_ = [("lo", ctypes.c_uint64), ("hi", ctypes.c_uint64)]


def _fn(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> ctypes._CFuncPtr:
    # A fresh foreign function per convention, so two conventions never share argtypes.
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))


class _Calls:
    """The three c10 functions bound to one calling convention; every object is a ctypes buffer we own."""

    def __init__(self, lib: ctypes.CDLL, convention: str) -> None:
        self.convention = convention
        if convention == REGS16:
            self._get = _fn(lib, GET, _Regs16, ctypes.c_int8)
            self._ext = _fn(lib, FROM_EXTERNAL, _Regs16, ctypes.c_void_p, ctypes.c_int8)
            self._set = _fn(lib, SET, None, _Regs16)
        else:
            self._get = _fn(lib, GET, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int8)
            self._ext = _fn(lib, FROM_EXTERNAL, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int8)
            self._set = _fn(lib, SET, None, ctypes.c_void_p)

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
        # sret: the object goes by invisible reference; we pass the very buffer the callee built
        # (a byte copy would leave its string pointing into the original).
        self._set(obj)

    @staticmethod
    def raw_bytes(obj: object) -> bytes:
        return ctypes.string_at(ctypes.addressof(obj), ctypes.sizeof(obj))


def _stream_id(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], sys.byteorder)


class C10Bridge:
    """`C10Streams` over a c10 library, using the convention and offset a child process proved."""

    def __init__(self, verdict: C10Verdict, preload: str | None = None) -> None:
        if verdict.convention is None or verdict.offset is None:
            raise ValueError(f"no proven convention for {verdict.library}: {verdict.describe()}")
        if preload:
            importlib.import_module(preload)  # the framework must own the library we drive
        self.verdict = verdict
        self._calls = _Calls(ctypes.CDLL(verdict.library), verdict.convention)
        self._offset = verdict.offset

    def current_raw(self, device_id: int) -> int:
        return _stream_id(self._calls.raw_bytes(self._calls.get(device_id)), self._offset)

    def save(self, device_id: int) -> object:
        # The object exactly as c10 returned it (kept alive), so restore puts back that stream.
        return self._calls.get(device_id)

    def restore(self, saved: object) -> None:
        self._calls.set(saved)

    def set_raw(self, device_id: int, raw: int) -> None:
        self._calls.set(self._calls.from_external(raw, device_id))


# ---------------------------------------------------------------- child side


def _report(**fields: object) -> None:
    print(_TAG + json.dumps(fields), flush=True)


def _child(convention: str, library: str, preload: str | None) -> None:
    """Prove one convention; reports go to stdout as tagged JSON lines, the stage first so a crash names it."""
    if preload:
        _report(stage=f"import {preload}")
        try:
            importlib.import_module(preload)
        except Exception as exc:  # noqa: BLE001 - any import failure is a load problem to report
            _report(load_error=f"import {preload} failed: {type(exc).__name__}: {exc}")
            return
    _report(stage="dlopen")
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        _report(load_error=f"dlopen failed: {exc}")
        return
    symbols = [name for name in SYMBOLS if hasattr(lib, name)]
    _report(symbols=symbols)
    if len(symbols) != len(SYMBOLS):
        return
    calls = _Calls(lib, convention)

    _report(stage="getStreamFromExternal(sentinel)")
    offsets: set[int] | None = None
    extent = ctypes.sizeof(_Regs16) if convention == REGS16 else 0  # sret: the last byte the callee wrote
    for fill in FILLS:
        for sentinel in SENTINELS:
            raw = calls.raw_bytes(calls.from_external(sentinel, PROBE_DEVICE, fill))
            found = {off for off in range(0, len(raw) - 7, 8) if _stream_id(raw, off) == sentinel}
            offsets = found if offsets is None else offsets & found
            if convention == SRET:
                written = [i for i, b in enumerate(raw) if b != fill]
                extent = max(extent, written[-1] + 1 if written else 0)
    if not offsets:
        _report(error="the sentinel stream pointer appeared at no 8-byte-aligned offset of the returned object")
        return
    if len(offsets) > 1:
        _report(error=f"the sentinel stream pointer appeared at several offsets {sorted(offsets)}")
        return
    offset = offsets.pop()
    _report(offset=offset, object_size=(extent + 7) // 8 * 8)

    _report(stage="getCurrentCUDAStream")
    saved = calls.get(PROBE_DEVICE)
    saved_id = _stream_id(calls.raw_bytes(saved), offset)
    for sentinel in SENTINELS:
        _report(stage="setCurrentCUDAStream(sentinel) then getCurrentCUDAStream")
        calls.set(calls.from_external(sentinel, PROBE_DEVICE))
        got = _stream_id(calls.raw_bytes(calls.get(PROBE_DEVICE)), offset)
        if got != sentinel:
            calls.set(saved)
            _report(error=f"after setCurrentCUDAStream(sentinel {sentinel:#x}) getCurrentCUDAStream read {got:#x}")
            return
    _report(stage="setCurrentCUDAStream(saved) then getCurrentCUDAStream")
    calls.set(saved)
    got = _stream_id(calls.raw_bytes(calls.get(PROBE_DEVICE)), offset)
    if got != saved_id:
        _report(error=f"restoring the saved stream {saved_id:#x} read back {got:#x}")
        return
    _report(proven=True, stage="done")


# ---------------------------------------------------------------- parent side


def cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fastdeploy_cudagraph_ext"
    return Path(root) / "c10_bridge.json"


def _build_key(library: str) -> str:
    real = os.path.realpath(library)
    st = os.stat(real)
    return f"v{PROBE_VERSION}|{platform.machine()}|{real}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, verdict: C10Verdict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = asdict(verdict)
        # Atomic replace: concurrent workers may race, the worst case is a lost entry (re-probed later).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".c10_bridge.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache only saves time; probing again is always correct


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


def _parse_reports(stdout: str) -> dict:
    merged: dict = {}
    for line in stdout.splitlines():
        if line.startswith(_TAG):
            try:
                merged.update(json.loads(line[len(_TAG) :]))
            except ValueError:
                continue
    return merged


def _run_children(library: str, preload: str | None) -> dict[str, dict]:
    """Run one child per convention, in parallel; returns each child's merged report plus its fate."""
    cmd = [sys.executable, "-m", "fastdeploy_cudagraph_ext.c10_bridge", library]
    if preload:
        cmd += ["--preload", preload]
    env = _child_env()
    procs = {
        conv: subprocess.Popen(
            cmd + ["--child", conv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for conv in CONVENTIONS
    }
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    results: dict[str, dict] = {}
    for conv, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            timed_out = True
        report = _parse_reports(out)
        report["returncode"] = proc.returncode
        report["timed_out"] = timed_out
        report["stderr_tail"] = err.strip()[-400:]
        results[conv] = report
    return results


def _failure(report: dict) -> str:
    """One line: why this child did not prove its convention."""
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
    tail = report.get("stderr_tail", "")
    return f"child exited with status {code} during {stage}" + (f": {tail.splitlines()[-1]}" if tail else "")


def _decide(library: str, reports: dict[str, dict]) -> tuple[C10Verdict, bool]:
    """The verdict from the children's reports, and whether it may be cached (not for transient failures)."""
    load_errors = [r["load_error"] for r in reports.values() if r.get("load_error")]
    symbol_lists = [r["symbols"] for r in reports.values() if "symbols" in r]
    if load_errors or not symbol_lists:
        why = load_errors[0] if load_errors else "; ".join(f"{c}: {_failure(r)}" for c, r in reports.items())
        problem = (
            f"could not inspect the c10 library {library}: {why}. Fix: make sure it loads in a fresh Python process "
            "of this environment (import the framework that ships it first), then retry."
        )
        return C10Verdict(library, (), problem=problem), False
    symbols = tuple(symbol_lists[0])
    if not symbols:
        return C10Verdict(library, ()), True
    if len(symbols) != len(SYMBOLS):
        missing = ", ".join(sorted(set(SYMBOLS) - set(symbols)))
        problem = (
            f"{library} exports some of c10's current-stream functions but not {missing}, so c10 keeps its own "
            "current stream and cannot be moved. Fix: use a Paddle/PyTorch build that exports all three "
            "(getCurrentCUDAStream, setCurrentCUDAStream, getStreamFromExternal) or a header-only compat layer."
        )
        return C10Verdict(library, symbols, problem=problem), True
    attempts = {c: ("proven" if r.get("proven") else _failure(r)) for c, r in reports.items()}
    proven = [c for c, r in reports.items() if r.get("proven")]
    if len(proven) == 1:
        r = reports[proven[0]]
        return C10Verdict(library, symbols, proven[0], r["offset"], r["object_size"], "", attempts), True
    tried = "; ".join(f"{_DESCRIBE[c]}: {why}" for c, why in attempts.items())
    what = "more than one calling convention passed, so none can be trusted" if proven else "no calling convention could be proven"
    problem = (
        f"{library} exports c10's current-stream functions, so c10 keeps its own current stream, but {what} "
        f"(each tried in a child process with a sentinel stream and a set/get/restore round trip: {tried}). "
        "Fix: use a Paddle/PyTorch build whose c10 CUDAStream has a known layout (PyTorch's 16-byte object or "
        "Paddle compat's 48-byte one) or a header-only compat layer; a changed library build is re-probed "
        f"automatically (cache: {cache_file()})."
    )
    return C10Verdict(library, symbols, problem=problem, attempts=attempts), not any(
        r.get("timed_out") for r in reports.values()
    )


def probe(library_path: str, preload: str | None = None) -> C10Verdict:
    """Find out, in child processes, whether and how c10's current stream in this library can be driven."""
    library = os.path.realpath(library_path)
    try:
        key = _build_key(library)
    except OSError as exc:
        problem = f"could not inspect the c10 library {library_path}: {exc.strerror or exc}. Fix: check the path."
        return C10Verdict(library, (), problem=problem)
    cached = _read_cache().get(key)
    if cached is not None:
        try:
            return C10Verdict.from_json(json.dumps(cached))
        except (TypeError, KeyError):
            pass  # an entry of another shape: probe again and overwrite it
    verdict, cacheable = _decide(library, _run_children(library, preload))
    if cacheable:
        _write_cache(key, verdict)
    return verdict


def c10_status(library_path: str, preload: str | None = None) -> C10Status:
    """The policy's view of this c10: follows the framework, bridged, or unbridgeable with the reason."""
    verdict = probe(library_path, preload)
    if verdict.problem:
        return C10Status(follows_framework=False, bridge=None, problem=verdict.problem)
    if verdict.header_only:
        return C10Status(follows_framework=True)
    try:
        bridge = C10Bridge(verdict, preload)
    except (ImportError, OSError) as exc:
        problem = (
            f"{verdict.library} was proven drivable in a child process but could not be loaded here: {exc}. "
            "Fix: import the framework that ships it before building the capture policy."
        )
        return C10Status(follows_framework=False, bridge=None, problem=problem)
    return C10Status(follows_framework=False, bridge=bridge)


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


def paddle_c10_status() -> C10Status:
    """C10Status for the Paddle device; without Paddle nothing is known, so nothing is claimed to follow."""
    library = paddle_library_path()
    if library is None:
        return C10Status(
            follows_framework=False,
            bridge=None,
            problem=(
                "Paddle not installed: no paddle/libs/libphi_core.so on sys.path, so Paddle's c10 could not be "
                "inspected. Fix: install the Paddle GPU build FastDeploy runs on in this Python environment."
            ),
        )
    return c10_status(library, preload="paddle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastdeploy_cudagraph_ext.c10_bridge",
        description="Probe a c10 library (default: Paddle's libphi_core.so) and print the verdict as JSON.",
    )
    parser.add_argument("library", nargs="?", help="path to libphi_core.so or libc10_cuda.so")
    parser.add_argument("--preload", help="module to import first so the library's dependencies resolve")
    parser.add_argument("--child", choices=CONVENTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.library, args.preload)
        return 0
    library, preload = args.library, args.preload
    if library is None:
        library, preload = paddle_library_path(), preload or "paddle"
        if library is None:
            print(paddle_c10_status().problem, file=sys.stderr)
            return 1
    verdict = probe(library, preload)
    print(json.dumps(asdict(verdict), indent=2, sort_keys=True))
    print(verdict.describe(), file=sys.stderr)
    return 1 if verdict.problem else 0


if __name__ == "__main__":
    sys.exit(main())
