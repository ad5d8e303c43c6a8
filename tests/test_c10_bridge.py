"""The c10 bridge against our g++ fake c10 libraries (tests/c10fakes/): classification by behaviour
(A, B, C, header-only), every layout (48, 32, 24 and PyTorch's 16 bytes), the policy per class,
crashes and child failures, and a verdict cache that cannot be poisoned."""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import re
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext import c10_bridge, c10_cache
from fastdeploy_cudagraph_ext.c10_bridge import (
    APART,
    FAKE,
    FOLLOWS,
    HEADER_ONLY,
    MEMORY,
    MOVES_FRAMEWORK,
    REGS16,
    SRET,
    SYMBOLS,
    c10_status,
    paddle_c10_report,
    paddle_c10_status,
    paddle_library_path,
    probe,
)
from fastdeploy_cudagraph_ext.stream_policy import CaptureStreamPolicy

FAKES = Path(__file__).resolve().parent / "c10fakes"
SEMANTICS = {"A": APART, "B": FOLLOWS, "C": MOVES_FRAMEWORK}
LAYOUTS = {48: (SRET, 40), 32: (MEMORY, 24), 24: (MEMORY, 16), 16: (REGS16, 8)}
VARIANTS = {f"{sem}{size}": [f"-DLAYOUT={size}", f"-DSEM_{sem}"] for sem in SEMANTICS for size in (48, 32, 24)}
VARIANTS.update({
    "A16": ["-DLAYOUT=16", "-DSEM_A"],  # PyTorch
    "xor16": ["-DLAYOUT=16", "-DSEM_A", "-DXOR_ID"],
    "crash_on_bad_device16": ["-DLAYOUT=16", "-DSEM_A", "-DCHECK_DEVICE"],
    "always_crash16": ["-DLAYOUT=16", "-DSEM_A", "-DALWAYS_CRASH"],
    "set_ignored32": ["-DLAYOUT=32", "-DSEM_A", "-DSET_IGNORED"],
    "get_wrong_device48": ["-DLAYOUT=48", "-DSEM_A", "-DGET_WRONG_DEVICE"],
    # PR #78902's revision whose get falls back to the framework stream on a thread that never set c10
    "C_unset_follows48": ["-DLAYOUT=48", "-DSEM_C", "-DUNSET_FOLLOWS"],
    "C_unset_follows32": ["-DLAYOUT=32", "-DSEM_C", "-DUNSET_FOLLOWS"],
    # linked without an ELF build id: the verdict cache keys them by a hash of the file
    "A32_no_build_id": ["-DLAYOUT=32", "-DSEM_A", "-Wl,--build-id=none"],
    "C32_no_build_id": ["-DLAYOUT=32", "-DSEM_C", "-Wl,--build-id=none"],
})
FRAMEWORK_START = 0x5000  # the fake framework stream of device 0 before anything moves it


@pytest.fixture(scope="session")
def fake_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot build the fake c10 libraries these tests probe")
    root = tmp_path_factory.mktemp("fake_c10")
    jobs = [(name, "fake_c10.cpp", flags) for name, flags in VARIANTS.items()]
    jobs += [("no_symbols", "no_symbols.cpp", []), ("planted", "planted.cpp", [])]
    libs = {}
    for name, src, flags in jobs:
        out = root / f"lib{name}.so"
        subprocess.run([gxx, "-shared", "-fPIC", "-O1", "-std=c++17", *flags, "-o", str(out), str(FAKES / src)], check=True)
        libs[name] = str(out)
    return libs


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(c10_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


class SideDoors:
    """What the fake library knows, read around the bridge: the framework stream and c10 per thread."""

    def __init__(self, library: str) -> None:
        lib = ctypes.CDLL(library)
        self.c10 = lib.fake_c10_current_id
        self.c10.restype, self.c10.argtypes = ctypes.c_int64, [ctypes.c_int8]
        self.framework = lib.fake_framework_stream
        self.framework.restype, self.framework.argtypes = ctypes.c_int64, [ctypes.c_int8]
        self.nulled = lib.fake_framework_was_nulled
        self.set_framework = lib.fake_set_framework_stream  # Paddle's own switch (clear=false)
        self.set_framework.argtypes = [ctypes.c_int8, ctypes.c_int64]
        self.owns = lib.fake_framework_owns_its_stream
        self.owns.argtypes = [ctypes.c_int8]
        self.destroyed_count = lib.fake_destroyed_count
        self.destroyed = lib.fake_destroyed
        self.destroyed.restype, self.destroyed.argtypes = ctypes.c_int64, [ctypes.c_int]
        self.destroyed_uses = lib.fake_destroyed_uses
        self.launch_extension = lib.fake_launch_extension  # a DeepEP kernel on c10's current stream
        self.launch_extension.argtypes = [ctypes.c_int8]
        self.launch_framework = lib.fake_launch_framework  # a Paddle kernel on the framework's stream
        self.launch_framework.argtypes = [ctypes.c_int8]
        self.reset = lib.fake_reset  # the framework as a fresh process has it: it owns its first stream

    def destroyed_streams(self) -> list[int]:
        return [self.destroyed(i) for i in range(self.destroyed_count())]


class LibDevice(c10_bridge._FakeStreams):
    """StreamDevice whose current stream is the fake library's framework stream (Paddle's GPUContext stream)."""

    def __init__(self, library: str) -> None:
        super().__init__(library)
        self.log: list[tuple] = []
        # Every test starts from a fresh process's framework: on its own first stream, which it owns.
        ctypes.CDLL(library).fake_reset()

    def current_device(self) -> int:
        return 0

    def set_current_stream(self, device_id: int, stream: int) -> None:
        self.log.append(("set_stream", stream))
        super().set_current_stream(device_id, stream)

    def wait_stream(self, waiter: int, waitee: int) -> None:
        self.log.append(("wait", waiter, waitee))

    def is_capturing(self) -> bool:
        return False

    def is_stream_capturing(self, stream: int) -> bool:
        return False

    def end_and_discard_capture(self, stream: int) -> None:
        raise AssertionError("nothing captures here")


def in_fresh_thread(body) -> None:
    """c10 state is per thread: run a scenario on a thread whose c10 was never set."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------- classification and layouts


@pytest.mark.parametrize("size", [48, 32, 24])
@pytest.mark.parametrize("sem", ["A", "B", "C"])
def test_each_semantics_and_layout_is_classified_by_behaviour(fake_libs, sem: str, size: int) -> None:
    verdict = probe(fake_libs[f"{sem}{size}"], FAKE)
    assert verdict.problem == "", verdict.problem
    assert verdict.symbols_found == SYMBOLS
    assert verdict.behaviour == SEMANTICS[sem]
    assert (verdict.convention, verdict.offset) == LAYOUTS[size]
    assert [c for c, why in verdict.attempts.items() if why == "proven"] == [LAYOUTS[size][0]]


def test_pytorch_layout_is_per_thread_apart_in_registers_at_offset_8(fake_libs) -> None:
    verdict = probe(fake_libs["A16"], FAKE)
    assert (verdict.behaviour, verdict.convention, verdict.offset, verdict.problem) == (APART, REGS16, 8, "")


def test_the_48_byte_layout_contains_the_wrong_guess_crash(fake_libs) -> None:
    verdict = probe(fake_libs["A48"], FAKE)
    # The register guess writes the result through the (non-canonical) sentinel: it must die in the child.
    assert "SIGSEGV" in verdict.attempts[REGS16]
    assert verdict.attempts[SRET] == "proven"


def test_classes_map_to_policy_status(fake_libs) -> None:
    follows = c10_status(fake_libs["B32"], FAKE)
    assert follows.follows_framework and follows.bridge is None and follows.problem == ""
    apart = c10_status(fake_libs["A32"], FAKE)
    assert apart.follows_framework is False and apart.bridge is not None and apart.set_moves_framework is False
    moves = c10_status(fake_libs["C32"], FAKE)
    assert moves.follows_framework is False and moves.bridge is not None and moves.set_moves_framework is True
    assert c10_status(fake_libs["no_symbols"], FAKE) == c10_bridge.C10Status(follows_framework=True)


def test_library_without_the_symbols_is_header_only(fake_libs) -> None:
    verdict = probe(fake_libs["no_symbols"], FAKE)
    assert verdict.header_only and verdict.behaviour == HEADER_ONLY and verdict.symbols_found == ()
    assert "header-only: c10 follows the framework's stream" in verdict.describe()


# ---------------------------------------------------------------- the bridge: round trips, threads


@pytest.mark.parametrize("name", ["A16", "A48", "A32", "A24", "C48", "C32", "C24"])
def test_bridge_set_get_restore_round_trip(fake_libs, name: str) -> None:
    bridge = c10_status(fake_libs[name], FAKE).bridge
    side = SideDoors(fake_libs[name])

    def scenario() -> None:
        side.set_framework(0, FRAMEWORK_START)
        assert bridge.current_raw(0) == 0 and side.c10(0) == 0
        bridge.set_raw(0, 0x7F00_0000_0100)  # a first stream of this thread's own, saved below
        saved = bridge.save(0)
        assert bridge.saved_raw(saved) == 0x7F00_0000_0100
        bridge.set_raw(0, 0x7F00_1234_5670)
        assert bridge.current_raw(0) == side.c10(0) == 0x7F00_1234_5670
        bridge.set_raw(1, 0x7F00_0000_0200)  # another device keeps its own current stream
        assert bridge.current_raw(0) == 0x7F00_1234_5670 and bridge.current_raw(1) == 0x7F00_0000_0200
        bridge.restore(saved)
        assert bridge.current_raw(0) == side.c10(0) == 0x7F00_0000_0100
        if name.startswith("C"):  # semantics C: every set moved the framework's stream too
            assert side.framework(0) == 0x7F00_0000_0100
        else:
            assert side.framework(0) == FRAMEWORK_START

    in_fresh_thread(scenario)


@pytest.mark.parametrize("name", ["A16", "A48", "C32", "C24"])
def test_bridge_acts_on_the_calling_thread_only(fake_libs, name: str) -> None:
    bridge = c10_status(fake_libs[name], FAKE).bridge
    seen: dict[str, int] = {}

    def scenario() -> None:
        bridge.set_raw(0, 0xAAAA_0000)

        def other_thread() -> None:
            seen["before"] = bridge.current_raw(0)
            bridge.set_raw(0, 0xBBBB_0000)
            seen["own"] = bridge.current_raw(0)

        in_fresh_thread(other_thread)
        seen["here"] = bridge.current_raw(0)

    in_fresh_thread(scenario)
    assert seen == {"before": 0, "own": 0xBBBB_0000, "here": 0xAAAA_0000}


# ---------------------------------------------------------------- the policy per class, on the fakes


def policy_over(fake_libs, name: str) -> tuple[CaptureStreamPolicy, LibDevice, SideDoors]:
    device = LibDevice(fake_libs[name])
    policy = CaptureStreamPolicy(device, c10_status(fake_libs[name], FAKE), extensions_may_launch=lambda: True)
    return policy, device, SideDoors(fake_libs[name])


@pytest.mark.parametrize("name", ["C48", "C32", "C24"])
def test_semantics_c_scopes_never_null_the_framework_stream(fake_libs, name: str) -> None:
    policy, device, side = policy_over(fake_libs, name)

    def scenario() -> None:
        assert side.c10(0) == 0  # this thread's c10 is unset: the default stream
        with policy.capture_scope() as capture:
            assert side.framework(0) == capture and side.c10(0) == capture
            with policy.capture_scope():
                pass
            assert side.framework(0) == capture
        assert side.framework(0) == FRAMEWORK_START  # Paddle's stream restored, not NULL
        assert side.c10(0) == FRAMEWORK_START  # c10 on Paddle's stream rather than the null default
        with policy.eager_extension_scope():
            assert side.c10(0) == FRAMEWORK_START
        with pytest.raises(KeyError):
            with policy.capture_scope():
                raise KeyError("the model failed")
        assert side.framework(0) == FRAMEWORK_START
        assert side.nulled() == 0, "a c10 set nulled the framework's stream at some point"

    in_fresh_thread(scenario)


def test_semantics_c_restores_c10_before_the_framework_stream(fake_libs) -> None:
    policy, device, side = policy_over(fake_libs, "C32")
    order: list[tuple[str, int]] = []
    bridge = policy.c10.bridge
    real_set_raw = bridge.set_raw
    bridge.set_raw = lambda dev, raw: (order.append(("c10", raw)), real_set_raw(dev, raw))
    real_set_stream = device.set_current_stream
    device.set_current_stream = lambda dev, stream: (order.append(("framework", stream)), real_set_stream(dev, stream))

    def scenario() -> None:
        with policy.capture_scope() as capture:
            pass
        assert order == [("framework", capture), ("c10", capture), ("c10", FRAMEWORK_START),
                         ("framework", FRAMEWORK_START)]

    in_fresh_thread(scenario)


def test_semantics_c_restores_a_thread_s_own_c10_stream_exactly(fake_libs) -> None:
    policy, device, side = policy_over(fake_libs, "C48")

    def scenario() -> None:
        policy.c10.bridge.set_raw(0, 0x7000)  # the thread had set its own c10 stream
        device.set_current_stream(0, FRAMEWORK_START)
        with policy.capture_scope():
            pass
        assert side.c10(0) == 0x7000 and side.framework(0) == FRAMEWORK_START

    in_fresh_thread(scenario)


# ---- semantics C and Paddle's stream ownership (issue 17): a c10 set passes clear=true to
# GPUContext::SetCUDAStream, which deletes the stream the context still owns.


@pytest.mark.parametrize("name", ["C48", "C32"])
def test_the_fake_models_paddle_s_stream_ownership(fake_libs, name: str) -> None:
    """The fake is faithful where the policy's safety rests: a c10 set under C on a fresh context destroys the
    framework's own stream (and then runs on it); after Paddle's own switch (clear=false) nothing is destroyed."""
    side = SideDoors(fake_libs[name])
    bridge = c10_status(fake_libs[name], FAKE).bridge

    def scenario() -> None:
        side.reset()
        assert side.owns(0) == 1
        bridge.set_raw(0, FRAMEWORK_START)  # what the eager scope did before Paddle's stream was ever switched
        assert side.destroyed_streams() == [FRAMEWORK_START] and side.owns(0) == 0
        assert side.destroyed_uses() == 1  # Paddle's stream is now the destroyed handle
        side.launch_framework(0)
        side.launch_extension(0)
        assert side.destroyed_uses() == 3
        side.reset()
        side.set_framework(0, FRAMEWORK_START)  # paddle.device.set_stream: clear=false drops the ownership
        bridge.set_raw(0, 0x7100)
        bridge.set_raw(0, FRAMEWORK_START)
        assert side.destroyed_streams() == [] and side.destroyed_uses() == 0 and side.owns(0) == 0

    in_fresh_thread(scenario)


@pytest.mark.parametrize("name", ["B48", "B32"])
def test_the_fake_s_semantics_b_set_never_destroys(fake_libs, name: str) -> None:
    """B's c10 set passes clear=false (compat CUDAStream.cpp at 1322ea65): it only drops the ownership."""
    side = SideDoors(fake_libs[name])
    calls = c10_bridge._Calls(ctypes.CDLL(fake_libs[name]), *LAYOUTS[int(name[1:])])
    side.reset()
    calls.set(calls.from_external(0x7200, 0))
    assert side.framework(0) == 0x7200 and side.owns(0) == 0 and side.destroyed_streams() == []
    side.reset()


def run_scopes(policy: CaptureStreamPolicy, side: SideDoors, order: str) -> None:
    """One serving thread's scopes in the given order, launching extension and framework kernels inside each."""

    def launch() -> None:
        side.launch_extension(0)
        side.launch_framework(0)

    def eager() -> None:
        with policy.eager_extension_scope():
            assert side.c10(0) == side.framework(0)  # the extension runs on the framework's stream
            launch()

    def capture() -> None:
        with policy.capture_scope() as stream:
            assert side.c10(0) == side.framework(0) == stream
            launch()

    def nested() -> None:
        with policy.capture_scope() as outer:
            eager()  # an eager extension call during warmup runs on the capture stream
            with policy.capture_scope():
                eager()
            assert side.framework(0) == outer
            launch()
        with policy.eager_extension_scope():
            capture()  # a capture started from inside an eager extension scope
            launch()

    steps = {"eager-first": [eager, capture, eager, nested],
             "capture-first": [capture, eager, nested, eager],
             "nested-first": [nested, eager, capture]}[order]
    for step in steps:
        step()
        assert side.framework(0) == FRAMEWORK_START, f"{step.__name__} left the framework on another stream"
        launch()  # the next step's kernels, outside every scope


@pytest.mark.parametrize("order", ["eager-first", "capture-first", "nested-first"])
@pytest.mark.parametrize("name", ["C48", "C32", "C_unset_follows48", "C_unset_follows32"])
def test_semantics_c_scopes_never_destroy_or_reuse_a_stream_in_any_order(fake_libs, name: str, order: str) -> None:
    """Issue 17: before Paddle's stream was ever switched, the context owns it and a c10 set (clear=true) would
    delete it; every scope must first switch Paddle's stream through Paddle's own API (clear=false)."""
    policy, device, side = policy_over(fake_libs, name)
    assert policy.c10.set_moves_framework and side.owns(0) == 1

    def scenario() -> None:
        run_scopes(policy, side, order)
        # (streams destroyed, uses of a destroyed stream: sets, restores and launches on it)
        assert (side.destroyed_streams(), side.destroyed_uses()) == ([], 0)
        assert side.nulled() == 0 and side.framework(0) == FRAMEWORK_START

    in_fresh_thread(scenario)


@pytest.mark.parametrize("order", ["eager-first", "capture-first", "nested-first"])
@pytest.mark.parametrize("name", ["A48", "A32", "B48", "B32"])
def test_semantics_a_and_b_scopes_never_destroy_a_stream_either(fake_libs, name: str, order: str) -> None:
    policy, device, side = policy_over(fake_libs, name)

    def scenario() -> None:
        run_scopes(policy, side, order)
        assert side.destroyed_streams() == [] and side.destroyed_uses() == 0

    in_fresh_thread(scenario)


@pytest.mark.parametrize("name", ["A48", "A32", "A24"])
def test_semantics_a_is_bridged_and_leaves_the_framework_stream_alone(fake_libs, name: str) -> None:
    policy, device, side = policy_over(fake_libs, name)

    def scenario() -> None:
        with policy.capture_scope() as capture:
            assert side.c10(0) == capture and side.framework(0) == capture
            seen = {}
            in_fresh_thread(lambda: seen.setdefault("other", side.c10(0)))
            assert seen["other"] == 0  # other threads untouched
        assert side.c10(0) == 0 and side.framework(0) == FRAMEWORK_START

    in_fresh_thread(scenario)


@pytest.mark.parametrize("name", ["B48", "B32", "B24"])
def test_semantics_b_follows_and_is_never_set(fake_libs, name: str) -> None:
    policy, device, side = policy_over(fake_libs, name)
    assert policy.c10.bridge is None
    with policy.capture_scope() as capture:
        assert side.c10(0) == capture  # c10 follows the framework's stream switch by itself
    assert side.c10(0) == side.framework(0) == FRAMEWORK_START
    assert [entry for entry in device.log if entry[0] == "set_stream"] == [("set_stream", capture),
                                                                            ("set_stream", FRAMEWORK_START)]


# ---------------------------------------------------------------- failures, contained and explained


def test_a_set_that_does_not_take_is_not_proven(fake_libs) -> None:
    """Calibration alone would pass (getStreamFromExternal is right): only the set -> get proof catches it."""
    verdict = probe(fake_libs["set_ignored32"], FAKE)
    assert verdict.convention is None and "no calling convention could be proven" in verdict.problem
    assert "setCurrentCUDAStream" in verdict.attempts[MEMORY]


def test_a_saved_object_that_does_not_restore_is_not_proven(fake_libs) -> None:
    """set -> get works, but the object getCurrentCUDAStream returns names another device: restore would miss."""
    verdict = probe(fake_libs["get_wrong_device48"], FAKE)
    assert verdict.convention is None and "set/restore read back" in verdict.attempts[SRET]


def test_more_than_one_proven_convention_is_refused(fake_libs) -> None:
    proven = {"proven": True, "behaviour": APART, "offset": 8}
    verdict, cacheable = c10_bridge._decide("/lib.so", SYMBOLS, {REGS16: proven, SRET: dict(proven, offset=40)})
    assert verdict.convention is None and verdict.behaviour is None
    assert "more than one calling convention passed" in verdict.problem and "Fix:" in verdict.problem
    assert cacheable  # a deterministic outcome of this build, not a transient failure


def test_incompatible_layout_is_unbridgeable_with_a_clear_problem(fake_libs) -> None:
    status = c10_status(fake_libs["xor16"], FAKE)
    assert not status.follows_framework and status.bridge is None
    assert fake_libs["xor16"] in status.problem
    assert "regs16" in status.problem and "sret" in status.problem and "memory" in status.problem
    assert "sentinel" in status.problem and "Fix:" in status.problem


def test_crash_under_one_convention_is_contained_and_the_other_wins(fake_libs) -> None:
    verdict = probe(fake_libs["crash_on_bad_device16"], FAKE)
    assert verdict.problem == ""
    assert (verdict.convention, verdict.offset) == (REGS16, 8)
    assert "SIGSEGV" in verdict.attempts[SRET] and "getStreamFromExternal" in verdict.attempts[SRET]


def test_crash_under_every_convention_is_reported(fake_libs) -> None:
    status = c10_status(fake_libs["always_crash16"], FAKE)
    assert not status.follows_framework and status.bridge is None
    assert fake_libs["always_crash16"] in status.problem
    assert status.problem.count("SIGSEGV") == len(c10_bridge.CONVENTIONS) and "Fix:" in status.problem


@pytest.mark.parametrize(
    "child, expected",
    [
        ("import time; time.sleep(60)", "timed out after 1 s"),
        ("import os, sys; sys.stdout.buffer.write(b'\\xff\\xfe C10_BRIDGE_REPORT {bad\\n'); "
         "sys.stderr.buffer.write(b'\\xff oops'); os._exit(3)", "exited with status 3"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", "killed by SIGABRT"),
    ],
)
def test_child_failures_become_verdicts(fake_libs, monkeypatch, child: str, expected: str) -> None:
    monkeypatch.setattr(c10_bridge, "CHILD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(c10_bridge, "_child_command", lambda *_: [sys.executable, "-c", child])
    verdict = probe(fake_libs["A16"], FAKE)
    assert verdict.convention is None and expected in verdict.problem and "Fix:" in verdict.problem


def test_a_child_that_cannot_start_is_a_verdict_and_not_cached(fake_libs, monkeypatch) -> None:
    python = sys.executable
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    verdict = probe(fake_libs["A16"], FAKE)
    assert "could not start the child process" in verdict.problem and "Fix:" in verdict.problem
    monkeypatch.setattr(sys, "executable", python)
    assert probe(fake_libs["A16"], FAKE).convention == REGS16  # not cached: the next probe succeeds


def test_children_run_isolated_from_the_worker_s_cwd(fake_libs, tmp_path, monkeypatch) -> None:
    """A module in the worker's cwd (think of a `paddle/` folder) must not shadow anything in the child."""
    cwd = tmp_path / "worker_cwd"
    cwd.mkdir()
    (cwd / "argparse.py").write_text("import os; os._exit(42)\n")  # imported by the child after its path is set
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))  # as `python -m` or `python -c` in that folder would
    assert probe(fake_libs["A16"], FAKE).convention == REGS16


def test_children_run_in_a_neutral_directory(fake_libs, tmp_path, monkeypatch) -> None:
    """Whatever a probed library or a crash writes relative to the cwd stays out of the worker's directory."""
    cwd = tmp_path / "worker_cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FAKE_C10_CWD_MARKER", "written_by_the_child")
    assert probe(fake_libs["A16"], FAKE).convention == REGS16
    assert list(cwd.iterdir()) == []


def test_children_ignore_python_environment_variables(fake_libs, tmp_path, monkeypatch) -> None:
    """-I: a PYTHONPATH set around the worker (not its own import roots) does not reach the child."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "json.py").write_text("import os; os._exit(43)\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    assert probe(fake_libs["A16"], FAKE).convention == REGS16


def test_missing_library_names_the_path_and_is_not_cached(tmp_path) -> None:
    missing = str(tmp_path / "libgone.so")
    status = c10_status(missing, FAKE)
    assert status.follows_framework is False and status.bridge is None
    assert missing in status.problem and "Fix:" in status.problem
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- the cache


def cache_file(cache_dir: Path) -> Path:
    return cache_dir / c10_cache.FILE_NAME


def count_children(monkeypatch) -> list[str]:
    runs: list[str] = []
    real = c10_bridge._run_children

    def counted(library: str, framework: str) -> dict:
        runs.append(library)
        return real(library, framework)

    monkeypatch.setattr(c10_bridge, "_run_children", counted)
    return runs


def test_second_probe_is_a_cache_hit_and_a_new_build_is_probed_again(fake_libs, tmp_path, cache_dir, monkeypatch) -> None:
    lib = tmp_path / "libcopy.so"
    shutil.copy(fake_libs["A48"], lib)
    first = probe(str(lib), FAKE)
    assert cache_file(cache_dir).is_file()
    runs = count_children(monkeypatch)
    again = probe(str(lib), FAKE)
    assert again == dataclasses.replace(first, attempts={})  # the same verdict, for this library, from the cache
    assert runs == [] and (first.library, first.behaviour, first.convention) == (str(lib), APART, SRET)
    shutil.copy(fake_libs["A16"], tmp_path / "libnew.so")
    os.replace(tmp_path / "libnew.so", lib)  # another build at the same path (installed by replacing the file)
    assert probe(str(lib), FAKE).convention == REGS16 and len(runs) == 1


@pytest.mark.parametrize("pair", [("A32", "C32"), ("A32_no_build_id", "C32_no_build_id")])
def test_a_library_replaced_in_place_with_the_same_size_and_mtime_is_probed_afresh(
        fake_libs, tmp_path, monkeypatch, pair) -> None:
    """`cp -p` of a rebuilt library (or a container layer) keeps the path, inode, size and mtime: only the
    content (ELF build id, else a hash of the file) tells the builds apart."""
    old, new = (Path(fake_libs[name]).read_bytes() for name in pair)
    size = max(len(old), len(new))  # zero padding after the ELF contents leaves a library loadable
    lib = tmp_path / "libphi_core.so"
    lib.write_bytes(old.ljust(size, b"\0"))
    # The parent never maps this file (rewriting a mapped library in place would corrupt this process);
    # the children that probe it are fresh processes.
    monkeypatch.setattr(c10_bridge, "_exported_symbols", lambda library: SYMBOLS)
    assert probe(str(lib), FAKE).behaviour == APART
    before = lib.stat()
    with open(lib, "r+b") as fh:  # in place: same inode
        fh.write(new.ljust(size, b"\0"))
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = lib.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    runs = count_children(monkeypatch)
    assert probe(str(lib), FAKE).behaviour == MOVES_FRAMEWORK and len(runs) == 1
    assert probe(str(lib), FAKE).behaviour == MOVES_FRAMEWORK and len(runs) == 1  # the new build's verdict is cached


def test_a_library_s_identity_is_its_build_id_else_its_hash_read_once_per_process(fake_libs, monkeypatch) -> None:
    reads: list[str] = []
    real = c10_cache._content_identity
    monkeypatch.setattr(c10_cache, "_content_identity", lambda path: reads.append(path) or real(path))
    monkeypatch.setattr(c10_cache, "_identities", {})
    plain, lib = (os.path.realpath(fake_libs[name]) for name in ("A32_no_build_id", "A32"))
    assert c10_cache.library_identity(plain) == "sha256:" + hashlib.sha256(Path(plain).read_bytes()).hexdigest()
    with_id = c10_cache.library_identity(lib)
    assert re.fullmatch(r"build-id:[0-9a-f]{40}", with_id)
    readelf = shutil.which("readelf")
    if readelf:
        notes = subprocess.run([readelf, "-n", lib], capture_output=True, text=True, check=True).stdout
        assert with_id == "build-id:" + re.search(r"Build ID: ([0-9a-f]+)", notes).group(1)
    assert c10_cache.library_identity(lib) == with_id
    probe(lib, FAKE)
    probe(lib, FAKE)
    assert reads == [plain, lib]  # once per process and file


@pytest.mark.parametrize("content", [b"", b"\x7fELF", b"not a library at all", b"\x7fELF\x01\x01" + bytes(58)])
def test_files_that_are_not_64_bit_elf_are_hashed(tmp_path, content: bytes) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(content)
    assert c10_cache.library_identity(str(path)) == "sha256:" + hashlib.sha256(content).hexdigest()


def test_the_cache_never_holds_a_library_path_or_a_header_only_verdict(fake_libs, cache_dir) -> None:
    probe(fake_libs["C24"], FAKE)
    probe(fake_libs["no_symbols"], FAKE)
    entries = json.loads(cache_file(cache_dir).read_text())
    assert len(entries) == 1
    (entry,) = entries.values()
    assert entry == {"behaviour": MOVES_FRAMEWORK, "convention": MEMORY, "offset": 16, "problem": ""}


def plant(cache_dir: Path, entry: object) -> None:
    (key,) = json.loads(cache_file(cache_dir).read_text())
    cache_file(cache_dir).write_text(json.dumps({key: entry}))


@pytest.mark.parametrize(
    "planted",
    [
        {"behaviour": APART, "convention": REGS16, "offset": 8, "problem": "", "library": "PLANTED"},
        {"behaviour": HEADER_ONLY, "convention": None, "offset": None, "problem": ""},
        {"behaviour": APART, "convention": "sret; rm -rf", "offset": 8, "problem": ""},
        {"behaviour": APART, "convention": REGS16, "offset": 12, "problem": ""},
        "not an entry",
    ],
)
def test_a_planted_entry_is_refused_with_a_log_line_and_a_fresh_probe(
    fake_libs, cache_dir, tmp_path, monkeypatch, caplog, planted
) -> None:
    marker = tmp_path / "planted_library_ran"
    monkeypatch.setenv("FAKE_PLANTED_MARKER", str(marker))
    probe(fake_libs["A32"], FAKE)
    if isinstance(planted, dict) and planted.get("library") == "PLANTED":
        planted = dict(planted, library=fake_libs["planted"])
    plant(cache_dir, planted)
    runs = count_children(monkeypatch)
    with caplog.at_level(logging.WARNING):
        status = c10_status(fake_libs["A32"], FAKE)
    verdict = status.bridge.verdict
    assert runs == [os.path.realpath(fake_libs["A32"])]
    assert (verdict.library, verdict.behaviour, verdict.convention, verdict.offset) == (
        os.path.realpath(fake_libs["A32"]), APART, MEMORY, 24)
    assert "ignoring a malformed cached c10 verdict" in caplog.text
    assert not marker.exists(), "the library named by the cache entry was loaded"


def test_a_header_only_library_never_consults_the_cache(fake_libs, monkeypatch) -> None:
    def no_cache():
        raise AssertionError("header-only is decided in-process, before any cache")

    monkeypatch.setattr(c10_bridge, "locked_cache", no_cache)
    assert probe(fake_libs["no_symbols"], FAKE).header_only


@pytest.mark.parametrize("target", ["file", "dir"])
def test_a_group_or_world_writable_cache_is_refused(fake_libs, cache_dir, monkeypatch, caplog, target: str) -> None:
    probe(fake_libs["A24"], FAKE)
    (cache_file(cache_dir) if target == "file" else cache_dir).chmod(0o666 if target == "file" else 0o777)
    runs = count_children(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert probe(fake_libs["A24"], FAKE).convention == MEMORY
    assert len(runs) == 1 and "world-writable" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the cache file to another user")
def test_a_cache_file_owned_by_another_user_is_refused(fake_libs, cache_dir, monkeypatch, caplog) -> None:
    probe(fake_libs["A24"], FAKE)
    os.chown(cache_file(cache_dir), 65534, 65534)
    runs = count_children(monkeypatch)
    with caplog.at_level(logging.WARNING):
        probe(fake_libs["A24"], FAKE)
    assert len(runs) == 1 and "owned by uid 65534" in caplog.text


def test_a_symlinked_cache_file_is_refused(fake_libs, cache_dir, tmp_path, monkeypatch, caplog) -> None:
    probe(fake_libs["A24"], FAKE)
    elsewhere = tmp_path / "elsewhere.json"
    cache_file(cache_dir).rename(elsewhere)
    cache_file(cache_dir).symlink_to(elsewhere)
    runs = count_children(monkeypatch)
    with caplog.at_level(logging.WARNING):
        probe(fake_libs["A24"], FAKE)
    assert len(runs) == 1 and "ignoring the c10 verdict cache" in caplog.text


def test_no_home_and_no_passwd_entry_falls_back_to_a_private_temp_folder(fake_libs, tmp_path, monkeypatch, caplog) -> None:
    import pwd

    monkeypatch.delenv(c10_cache.CACHE_ENV)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    monkeypatch.setattr(c10_cache.tempfile, "gettempdir", lambda: str(tmp_path))
    c10_cache._log_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert probe(fake_libs["A24"], FAKE).convention == MEMORY
        probe(fake_libs["A24"], FAKE)
    assert caplog.text.count("no home directory") == 1  # one log line, not one per probe
    folder = tmp_path / f"fastdeploy_cudagraph_ext-{os.getuid()}"
    assert (folder / c10_cache.FILE_NAME).is_file() and oct(folder.stat().st_mode & 0o777) == "0o700"
    folder.chmod(0o777)  # a fallback folder someone else could write: no cache at all
    caplog.clear()
    runs = count_children(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert probe(fake_libs["A24"], FAKE).convention == MEMORY
    assert len(runs) == 1 and "probing without a cache" in caplog.text


def test_one_prober_per_machine_the_others_wait_for_its_verdict(fake_libs, monkeypatch) -> None:
    runs: list[str] = []
    real = c10_bridge._run_children

    def slow(library: str, framework: str) -> dict:
        runs.append(library)
        time.sleep(0.5)  # long enough for every other worker to reach the lock
        return real(library, framework)

    monkeypatch.setattr(c10_bridge, "_run_children", slow)
    verdicts = []
    workers = [threading.Thread(target=lambda: verdicts.append(probe(fake_libs["C48"], FAKE))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(runs) == 1 and len(verdicts) == 4
    assert {(v.behaviour, v.convention, v.offset) for v in verdicts} == {(MOVES_FRAMEWORK, SRET, 40)}


# ---------------------------------------------------------------- Paddle


def test_paddle_missing_is_a_problem_not_follows_framework(monkeypatch) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: None)
    status = paddle_c10_status()
    assert not status.follows_framework and status.bridge is None
    assert "Paddle not installed" in status.problem and "Fix:" in status.problem
    ok, text = paddle_c10_report()
    assert not ok and "Paddle not installed" in text and "Fix:" in text


def test_paddle_report_survives_a_broken_paddle(monkeypatch) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: "/somewhere/libphi_core.so")
    monkeypatch.setattr(c10_bridge, "probe", lambda *_: (_ for _ in ()).throw(ImportError("libcudnn.so.9 missing")))
    ok, text = paddle_c10_report()
    assert not ok and "ImportError: libcudnn.so.9 missing" in text and "Fix:" in text


@pytest.mark.parametrize("name, fragments", [
    ("no_symbols", ("header-only", "nothing is bridged")),
    ("B32", ("follows", "never calls it")),
    ("A48", ("per-thread apart", "convention sret", "restores it")),
    ("C24", ("set moves the framework", "convention memory", "through Paddle's own API before every c10 set",
             "never setting c10 to the thread's default stream")),
])
def test_paddle_report_names_the_class_and_what_the_plugin_does(fake_libs, monkeypatch, name, fragments) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: fake_libs[name])
    real_probe, frameworks = c10_bridge.probe, set()
    monkeypatch.setattr(c10_bridge, "probe", lambda library, framework: frameworks.add(framework) or real_probe(library, FAKE))
    ok, text = paddle_c10_report()
    assert ok and fake_libs[name] in text
    for fragment in fragments:
        assert fragment in text


def test_installed_paddle_is_inspected_without_importing_it() -> None:
    before = "paddle" in sys.modules
    library = paddle_library_path()
    assert ("paddle" in sys.modules) == before
    if library is None:
        pytest.skip("paddle is not installed in this environment")
    verdict = probe(library, "paddle")
    assert verdict.problem == "", verdict.problem
    if verdict.header_only:  # the PyPI CPU wheel 3.3.1: c10 is header-only and follows Paddle's stream
        assert paddle_c10_status().follows_framework
        ok, text = paddle_c10_report()
        assert ok and "header-only" in text and "3.2.x and 3.3.x" in text


def test_module_imports_without_paddle_or_torch() -> None:
    code = (
        "import sys, fastdeploy_cudagraph_ext.c10_bridge as b; "
        "assert 'paddle' not in sys.modules and 'torch' not in sys.modules; "
        "assert b.paddle_library_path() is None or 'paddle' not in sys.modules"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(c10_bridge.__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---------------------------------------------------------------- the child's side, run in-process
# Each convention below is the one its library really uses, so calling it here cannot crash; a wrong guess is only
# ever tried in a child (the tests above). In-process, mutation testing sees and mutates the child's code too.

PROBE_STAGES = [
    {"stage": "dlopen"},
    {"stage": "getStreamFromExternal(sentinel)"},
]
CLASSIFY_STAGES = [
    {"stage": "move the framework's stream, then getCurrentCUDAStream"},
    {"stage": "setCurrentCUDAStream(real stream) then getCurrentCUDAStream"},
    {"stage": "save, set another stream, restore the saved object"},
    {"stage": "set on another thread, then getCurrentCUDAStream here"},
]


def child_reports(capsys, convention: str, library: str, framework: str = FAKE) -> list[dict]:
    capsys.readouterr()
    in_fresh_thread(lambda: c10_bridge._child(convention, library, framework))
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("C10_BRIDGE_REPORT ") for line in lines), lines
    return [json.loads(line[len("C10_BRIDGE_REPORT "):]) for line in lines]


@pytest.mark.parametrize("name, convention, offset, behaviour", [
    ("A16", REGS16, 8, APART), ("A32", MEMORY, 24, APART), ("B24", MEMORY, 16, FOLLOWS),
    ("C48", SRET, 40, MOVES_FRAMEWORK), ("C24", MEMORY, 16, MOVES_FRAMEWORK),
])
def test_the_child_proves_the_right_convention_stage_by_stage(fake_libs, capsys, name, convention, offset, behaviour):
    side = SideDoors(fake_libs[name])
    side.reset()  # a fresh process's framework, which owns its first stream
    reports = child_reports(capsys, convention, fake_libs[name])
    assert reports == [*PROBE_STAGES, {"offset": offset, "stage": "fake streams"}, *CLASSIFY_STAGES,
                       {"proven": True, "behaviour": behaviour, "stage": "done"}]
    assert side.framework(0) == FRAMEWORK_START  # the child puts the framework's stream back
    # It moves the framework's stream through the framework (clear=false) before any c10 set: under C nothing
    # is destroyed, and the stream it puts back is alive.
    assert (side.destroyed_streams(), side.destroyed_uses()) == ([], 0)


def test_the_child_reports_a_set_that_does_not_take(fake_libs, capsys):
    *stages, last = child_reports(capsys, MEMORY, fake_libs["set_ignored32"])
    assert stages == [*PROBE_STAGES, {"offset": 24, "stage": "fake streams"}, *CLASSIFY_STAGES[:2]]
    assert re.fullmatch(r"after setCurrentCUDAStream\(0x[0-9a-f]+\) getCurrentCUDAStream read 0x0 and the "
                        r"framework's own reading of c10 was 0x0", last["error"]), last


def test_the_child_reports_a_restore_that_misses(fake_libs, capsys):
    *stages, last = child_reports(capsys, SRET, fake_libs["get_wrong_device48"])
    assert stages == [*PROBE_STAGES, {"offset": 40, "stage": "fake streams"}, *CLASSIFY_STAGES[:3]]
    found = re.fullmatch(r"set/restore read back (0x[0-9a-f]+)/(0x[0-9a-f]+), expected (0x[0-9a-f]+)/(0x[0-9a-f]+)",
                         last["error"])
    assert found, last
    moved, restored, second, first = found.groups()
    assert moved == restored == second != first  # the restore left c10 on the second stream


def test_the_child_reports_a_sentinel_it_cannot_find(fake_libs, capsys):
    assert child_reports(capsys, REGS16, fake_libs["xor16"]) == [*PROBE_STAGES, {
        "error": "the sentinel stream pointer appeared at no 8-byte-aligned offset of the returned object"}]


def test_the_child_reports_a_library_it_cannot_load(capsys, tmp_path):
    missing = str(tmp_path / "libmissing.so")
    assert child_reports(capsys, MEMORY, missing) == [PROBE_STAGES[0], {
        "load_error": f"dlopen failed: {missing}: cannot open shared object file: No such file or directory"}]


def test_the_child_reports_a_framework_it_cannot_import_or_drive(fake_libs, capsys):
    reports = child_reports(capsys, MEMORY, fake_libs["A32"], "torch")
    assert reports == [{"stage": "import torch"},
                       {"load_error": "import torch failed: ModuleNotFoundError: No module named 'torch'"}]
    paddle = pytest.importorskip("paddle")
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle is a CUDA build: its streams are real")
    *stages, last = child_reports(capsys, MEMORY, fake_libs["A32"], "paddle")
    assert stages == [{"stage": "import paddle"}, *PROBE_STAGES, {"offset": 24, "stage": "paddle streams"}]
    assert last["load_error"].startswith("paddle streams unavailable: RuntimeError: ") and "CUDA build" in last["load_error"]


def test_several_sentinel_offsets_are_refused(capsys):
    class Echo:  # an object that holds the stream id twice
        @staticmethod
        def raw_bytes(obj):
            return obj

        @staticmethod
        def from_external(raw, device, fill):
            return raw.to_bytes(8, sys.byteorder) * 2 + bytes([fill]) * 8

    assert c10_bridge._calibrate(Echo()) is None
    assert capsys.readouterr().out == ('C10_BRIDGE_REPORT {"error": "the sentinel stream pointer appeared at several '
                                       'offsets [0, 8]"}\n')


# ---------------------------------------------------------------- the parent's verdicts, word for word


def test_each_verdict_describes_itself_exactly() -> None:
    V = c10_bridge.C10Verdict
    assert V("/l.so", (), problem="broken").describe() == "broken"
    assert V("/l.so", (), HEADER_ONLY).describe() == (
        "header-only: c10 follows the framework's stream (/l.so exports no c10 stream functions)")
    assert V("/l.so", SYMBOLS, FOLLOWS).describe() == (
        "follows: /l.so's c10 returns the framework's stream and its set moves it for every thread; not bridged "
        "(the framework's stream switch carries extension kernels)")
    assert V("/l.so", SYMBOLS, APART, MEMORY, 24).describe() == (
        "bridged (per-thread apart): /l.so, convention memory, stream id at byte 24")
    assert V("/l.so", (), HEADER_ONLY).header_only and not V("/l.so", SYMBOLS, FOLLOWS).header_only


@pytest.mark.parametrize("report, expected", [
    ({"spawn_error": "OSError: no python"}, "could not start the child process: OSError: no python"),
    ({"timed_out": True, "stage": "dlopen", "returncode": -9}, "child timed out after 300 s during dlopen"),
    ({"returncode": -11, "stage": "dlopen"}, "child killed by SIGSEGV during dlopen (crash contained)"),
    ({"returncode": -200}, "child killed by signal 200 during start (crash contained)"),
    ({"returncode": 0, "error": "no sentinel", "load_error": "no lib"}, "no sentinel"),
    ({"returncode": 0, "load_error": "no lib"}, "no lib"),
    ({"returncode": 2, "stage": "dlopen", "stderr_tail": "Traceback\nKeyError: 1"},
     "child exited with status 2 during dlopen: KeyError: 1"),
    ({"returncode": 0, "stderr_tail": ""}, "child exited with status 0 during start"),
    ({}, "child exited with status 0 during start"),
])
def test_each_child_failure_is_one_exact_line(report: dict, expected: str) -> None:
    assert c10_bridge._failure(report) == expected


def test_a_single_proof_is_the_verdict_and_may_be_cached() -> None:
    reports = {REGS16: {"returncode": -11, "stage": "dlopen"}, SRET: {"proven": True, "behaviour": APART, "offset": 40}}
    verdict, cacheable = c10_bridge._decide("/l.so", SYMBOLS, reports)
    assert verdict == c10_bridge.C10Verdict("/l.so", SYMBOLS, APART, SRET, 40, "", {
        REGS16: "child killed by SIGSEGV during dlopen (crash contained)", SRET: "proven"})
    assert cacheable


@pytest.mark.parametrize("transient, cacheable", [
    ({}, True), ({"timed_out": True}, False), ({"spawn_error": "x"}, False), ({"load_error": "x"}, False)])
def test_no_proof_names_every_attempt_and_transient_failures_are_not_cached(transient: dict, cacheable: bool) -> None:
    reports = {REGS16: {"returncode": 0, "error": "no sentinel"}, SRET: dict({"returncode": 0, "error": "bad"}, **transient)}
    verdict, may_cache = c10_bridge._decide("/l.so", SYMBOLS, reports)
    assert may_cache is cacheable and verdict.behaviour is verdict.convention is verdict.offset is None
    if not transient:
        assert verdict.problem == (
            "/l.so exports c10's current-stream functions, but no calling convention could be proven (each tried in a "
            "child process: a sentinel through getStreamFromExternal, then set/get/restore with real streams: regs16 "
            "(16-byte object in registers, PyTorch layout): no sentinel; sret (returned through a hidden pointer, passed "
            "by pointer; Paddle compat 48-byte layout): bad). Fix: use a Paddle/PyTorch build whose c10 CUDAStream has "
            "a known layout (PyTorch's 16 bytes, Paddle compat's 24, 32 or 48) or a header-only compat layer (Paddle "
            "3.2.x/3.3.x); a changed library build is re-probed automatically.")


GOOD_ENTRY = {"behaviour": APART, "convention": MEMORY, "offset": 24, "problem": ""}


@pytest.mark.parametrize("entry", [
    GOOD_ENTRY, dict(GOOD_ENTRY, behaviour=FOLLOWS), dict(GOOD_ENTRY, behaviour=MOVES_FRAMEWORK, convention=SRET),
    dict(GOOD_ENTRY, offset=0), dict(GOOD_ENTRY, offset=c10_bridge.SRET_BYTES - 8),
    {"behaviour": None, "convention": None, "offset": None, "problem": "no convention"},
])
def test_a_cached_entry_of_the_shape_we_write_is_used(entry: dict) -> None:
    assert c10_bridge._from_cache(entry, "/l.so", SYMBOLS) == c10_bridge.C10Verdict(
        "/l.so", SYMBOLS, entry["behaviour"], entry["convention"], entry["offset"], entry["problem"])


@pytest.mark.parametrize("entry", [
    None, [], dict(GOOD_ENTRY, extra=1), {k: v for k, v in GOOD_ENTRY.items() if k != "problem"},
    dict(GOOD_ENTRY, behaviour=HEADER_ONLY), dict(GOOD_ENTRY, convention="stack"), dict(GOOD_ENTRY, offset=True),
    dict(GOOD_ENTRY, offset=24.0), dict(GOOD_ENTRY, offset=-8), dict(GOOD_ENTRY, offset=c10_bridge.SRET_BYTES),
    dict(GOOD_ENTRY, offset=12), {"behaviour": None, "convention": None, "offset": None, "problem": 7},
    {"behaviour": APART, "convention": None, "offset": None, "problem": "p"},
    {"behaviour": None, "convention": SRET, "offset": None, "problem": "p"},
    {"behaviour": None, "convention": None, "offset": 8, "problem": "p"},
])
def test_a_cached_entry_of_any_other_shape_is_ignored_with_a_warning(entry, caplog) -> None:
    with caplog.at_level("WARNING", logger=c10_bridge.log.name):
        assert c10_bridge._from_cache(entry, "/l.so", SYMBOLS) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"ignoring a malformed cached c10 verdict for /l.so: {entry!r:.200}; probing afresh"]


def test_an_unknown_framework_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as error:
        probe("/l.so", "jax")
    assert str(error.value) == "framework must be one of paddle, torch, fake, not 'jax'"


def test_a_library_that_cannot_load_is_a_problem_with_the_fix(tmp_path) -> None:
    missing = tmp_path / "libgone.so"
    verdict = probe(str(missing), FAKE)
    assert verdict == c10_bridge.C10Verdict(str(missing), (), problem=(
        f"could not load the c10 library {missing}: {missing}: cannot open shared object file: No such file or "
        "directory. Fix: check the path, and that it loads in this environment (import fake first)."))


def test_a_library_with_some_of_the_symbols_names_the_missing_ones(fake_libs, monkeypatch) -> None:
    monkeypatch.setattr(c10_bridge, "_exported_symbols", lambda library: (c10_bridge.GET,))
    verdict = probe(fake_libs["A32"], FAKE)
    assert verdict.symbols_found == (c10_bridge.GET,) and verdict.behaviour is None
    assert verdict.problem == (
        f"{fake_libs['A32']} exports some of c10's current-stream functions but not {c10_bridge.SET}, "
        f"{c10_bridge.FROM_EXTERNAL}, so c10 keeps its own current stream and cannot be moved. Fix: use a Paddle/PyTorch build "
        "that exports all three (getCurrentCUDAStream, setCurrentCUDAStream, getStreamFromExternal) or a header-only "
        "compat layer.")


def test_the_bridge_refuses_a_verdict_it_cannot_drive() -> None:
    for verdict in (c10_bridge.C10Verdict("/l.so", SYMBOLS, FOLLOWS),
                    c10_bridge.C10Verdict("/l.so", SYMBOLS, APART, None, 8),
                    c10_bridge.C10Verdict("/l.so", SYMBOLS, APART, REGS16, None)):
        with pytest.raises(ValueError) as error:
            c10_bridge.C10Bridge(verdict)
        assert str(error.value) == f"/l.so is not to be bridged: {verdict.describe()}"


def test_main_prints_the_verdict_as_json_and_its_description(fake_libs, capsys) -> None:
    assert c10_bridge.main([fake_libs["B32"], "--framework", FAKE]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"library": fake_libs["B32"], "symbols_found": list(SYMBOLS), "behaviour": FOLLOWS,
                               "convention": MEMORY, "offset": 24, "problem": "", "attempts": json.loads(out)["attempts"]}
    assert err == c10_bridge.C10Verdict(fake_libs["B32"], SYMBOLS, FOLLOWS).describe() + "\n"
    assert c10_bridge.main([fake_libs["xor16"], "--framework", FAKE]) == 1


def test_main_without_paddle_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: None)
    assert c10_bridge.main([]) == 1
    assert capsys.readouterr().err == c10_bridge.PADDLE_MISSING + "\n"


# ---------------------------------------------------------------- the framework adapters the child drives


def test_the_torch_adapter_keeps_a_framework_stream_apart_from_c10(monkeypatch) -> None:
    import types

    class Stream:
        def __init__(self, device):
            self.device, self.cuda_stream = device, 0x1000 * (len(made) + 1)
            made.append(self)

    made: list = []
    c10_views = {0: Stream(0), 1: Stream(1)}
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(Stream=Stream, current_stream=c10_views.get))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    fw = c10_bridge.framework_streams(c10_bridge.TORCH, "/unused.so")
    assert isinstance(fw, c10_bridge._TorchStreams)
    first = fw.current_stream(1)
    assert first.device == 1 and fw.current_stream(1) is first and fw.current_stream(0) is not first  # one per device
    other = fw.new_nonblocking_stream(1)
    fw.set_current_stream(1, other)
    assert fw.current_stream(1) is other and fw.raw_handle(other) == other.cuda_stream
    assert (fw.c10_current_raw(0), fw.c10_current_raw(1)) == (0x1000, 0x2000)  # torch's own reading, per device


def test_the_paddle_adapter_forwards_to_the_paddle_stream_device(monkeypatch) -> None:
    from fastdeploy_cudagraph_ext import paddle_device

    class Device:
        def current_stream(self, device_id):
            return ("current", device_id)

        def set_current_stream(self, device_id, stream):
            return ("set", device_id, stream)

        def new_nonblocking_stream(self, device_id):
            return ("new", device_id)

        def raw_handle(self, stream):
            return 42

    monkeypatch.setattr(paddle_device, "PaddleStreamDevice", Device)
    fw = c10_bridge.framework_streams(c10_bridge.PADDLE, "/unused.so")
    assert (fw.current_stream(3), fw.set_current_stream(3, "s"), fw.new_nonblocking_stream(2), fw.raw_handle("s"),
            fw.c10_current_raw(0)) == (("current", 3), ("set", 3, "s"), ("new", 2), 42, None)
    assert isinstance(fw, c10_bridge._PaddleStreams)


# ---------------------------------------------------------------- what the doctor reads, word for word


def test_paddle_library_is_found_in_the_package_s_libs_folder(tmp_path, monkeypatch) -> None:
    import importlib.util
    import types

    (tmp_path / "b" / "libs").mkdir(parents=True)
    (tmp_path / "b" / "libs" / "libphi_core.so").write_bytes(b"")
    (tmp_path / "a" / "libs" / "libphi_core.so").mkdir(parents=True)  # not a file
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path / "a"), str(tmp_path / "b")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "paddle" else None)
    assert paddle_library_path() == str(tmp_path / "b" / "libs" / "libphi_core.so")
    spec.submodule_search_locations = None
    assert paddle_library_path() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert paddle_library_path() is None
    for error in (ImportError, ValueError):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, error=error: (_ for _ in ()).throw(error("x")))
        assert paddle_library_path() is None


def test_paddle_report_is_exact_for_a_bridged_c10_and_names_the_version(fake_libs, monkeypatch) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: fake_libs["A48"])
    real_probe, frameworks = c10_bridge.probe, set()
    monkeypatch.setattr(c10_bridge, "probe", lambda library, framework: frameworks.add(framework) or real_probe(library, FAKE))
    versions = {"paddlepaddle-gpu": None, "paddlepaddle": "3.4.0"}
    monkeypatch.setattr(c10_bridge, "_dist_version", versions.get)
    assert paddle_c10_report() == (True, (
        f"Paddle 3.4.0 ({fake_libs['A48']}): per-thread apart (convention sret, stream id at byte 40). "
        + c10_bridge._WHAT_THE_PLUGIN_DOES[APART]))
    versions["paddlepaddle-gpu"] = "3.4.0.post1"
    assert paddle_c10_report()[1].startswith("Paddle 3.4.0.post1 (")
    versions.clear()
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: fake_libs["B32"])
    assert paddle_c10_report() == (True, (
        f"Paddle unknown version ({fake_libs['B32']}): follows. " + c10_bridge._WHAT_THE_PLUGIN_DOES[FOLLOWS]))
    assert frameworks == {"paddle"}  # Paddle's library is driven with Paddle's streams


def test_paddle_report_of_a_problem_and_of_a_broken_paddle_is_exact(fake_libs, monkeypatch) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: "/p/libphi_core.so")
    monkeypatch.setattr(c10_bridge, "_dist_version", lambda dist: "3.4.0" if dist == "paddlepaddle-gpu" else None)
    monkeypatch.setattr(c10_bridge, "probe", lambda library, framework: c10_bridge.C10Verdict(library, (), problem="bad"))
    assert paddle_c10_report() == (False, "Paddle 3.4.0: bad")
    monkeypatch.setattr(c10_bridge, "probe", lambda *_: (_ for _ in ()).throw(ImportError("libcudnn.so.9 missing")))
    assert paddle_c10_report() == (False, (
        "Paddle's c10 could not be inspected: ImportError: libcudnn.so.9 missing. Fix: reinstall the Paddle GPU build "
        "FastDeploy runs on, then run the doctor again."))


def test_dist_version_is_none_for_a_distribution_that_is_not_installed() -> None:
    assert c10_bridge._dist_version("fastdeploy-cudagraph-ext-no-such-dist") is None
    assert c10_bridge._dist_version("pytest") == pytest.__version__


def test_a_proven_library_that_will_not_load_here_is_a_problem_with_the_fix(fake_libs, monkeypatch) -> None:
    def refuse(verdict):
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(c10_bridge, "C10Bridge", refuse)
    status = c10_status(fake_libs["A32"], FAKE)
    assert status == c10_bridge.C10Status(follows_framework=False, bridge=None, problem=(
        f"{fake_libs['A32']} was proven drivable in a child process but could not be loaded here: libcuda.so.1: cannot "
        "open shared object file. Fix: import fake before building the capture policy."))


def test_paddle_status_probes_paddle_s_library_as_paddle(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: "/p/libphi_core.so")
    monkeypatch.setattr(c10_bridge, "c10_status", lambda library, framework: seen.append((library, framework)) or "s")
    assert paddle_c10_status() == "s" and seen == [("/p/libphi_core.so", "paddle")]


def test_paddle_missing_is_exactly_the_unbridged_status(monkeypatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert paddle_c10_status() == c10_bridge.C10Status(False, None, c10_bridge.PADDLE_MISSING)


def test_classify_makes_four_streams_on_the_probe_device_and_names_the_one_it_set(fake_libs, capsys) -> None:
    library = fake_libs["set_ignored32"]

    class Recorded(c10_bridge._FakeStreams):  # Paddle-like: no other reader of c10
        made: list[tuple[int, int]] = []

        def new_nonblocking_stream(self, device_id: int) -> int:
            raw = super().new_nonblocking_stream(device_id)
            self.made.append((device_id, raw))
            return raw

        def c10_current_raw(self, device_id: int) -> None:
            return None

    fw = Recorded(library)
    calls = c10_bridge._Calls(ctypes.CDLL(library), MEMORY, 24)
    capsys.readouterr()
    in_fresh_thread(lambda: c10_bridge._classify(calls, 24, fw))
    *stages, last = [json.loads(line[len("C10_BRIDGE_REPORT "):]) for line in capsys.readouterr().out.splitlines()]
    assert [device for device, _ in fw.made] == [c10_bridge.PROBE_DEVICE] * 4
    assert stages == CLASSIFY_STAGES[:2]
    assert last == {"error": f"after setCurrentCUDAStream({fw.made[1][1]:#x}) getCurrentCUDAStream read 0x0"}


def test_main_s_command_line_is_exact(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        c10_bridge.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m fastdeploy_cudagraph_ext.c10_bridge [-h] [--framework {paddle,torch,fake}] "
                           "[library]\n\nClassify a c10 library (default: Paddle's libphi_core.so) and print the verdict "
                           "as JSON.\n")
    assert "  library               path to libphi_core.so or libc10_cuda.so\n" in text
    assert "  --framework {paddle,torch,fake}\n                        whose streams the library belongs to\n" in text
    assert "--child" not in text


def test_main_probes_the_given_or_paddle_s_library_as_paddle_by_default(monkeypatch, capsys) -> None:
    probed = []
    verdict = c10_bridge.C10Verdict("/p/libphi_core.so", (), HEADER_ONLY)

    def recorded(library, framework):
        probed.append((library, framework))
        return verdict

    monkeypatch.setattr(c10_bridge, "probe", recorded)
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: "/p/libphi_core.so")
    assert c10_bridge.main([]) == 0 and c10_bridge.main(["/other.so", "--framework", "torch"]) == 0
    assert probed == [("/p/libphi_core.so", "paddle"), ("/other.so", "torch")]
    out, err = capsys.readouterr()
    one = json.dumps(dataclasses.asdict(verdict), indent=2, sort_keys=True) + "\n"
    assert out == one + one and err == (verdict.describe() + "\n") * 2


def test_main_runs_one_child_when_asked(fake_libs, capsys) -> None:
    capsys.readouterr()
    codes = []
    in_fresh_thread(lambda: codes.append(c10_bridge.main([fake_libs["A32"], "--framework", FAKE, "--child", MEMORY])))
    assert codes == [0]
    reports = capsys.readouterr().out.splitlines()
    assert '{"offset": 24, "stage": "fake streams"}' in [line[len("C10_BRIDGE_REPORT "):] for line in reports]
    assert reports[-1] == 'C10_BRIDGE_REPORT {"proven": true, "behaviour": "per-thread apart", "stage": "done"}'


def test_main_refuses_an_unknown_child_convention(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        c10_bridge.main(["/lib.so", "--child", "regs8"])
    assert done.value.code == 2 and "--child: invalid choice: 'regs8'" in capsys.readouterr().err


def test_a_c10_with_one_stream_for_all_threads_apart_from_the_framework_is_not_bridged(capsys) -> None:
    class GlobalC10:  # c10 whose set acts on every thread, and which never follows the framework's stream
        current = 0

        def get(self, device):
            return self.current.to_bytes(8, sys.byteorder)

        def from_external(self, raw, device, fill=0):
            return raw.to_bytes(8, sys.byteorder)

        def set(self, obj):
            GlobalC10.current = int.from_bytes(obj, sys.byteorder)

        @staticmethod
        def raw_bytes(obj):
            return obj

    class Framework:
        def __init__(self):
            self.current, self.made = 0x5000, 0x9000

        def new_nonblocking_stream(self, device_id):
            self.made += 0x100
            return self.made

        def current_stream(self, device_id):
            return self.current

        def set_current_stream(self, device_id, stream):
            self.current = stream

        def raw_handle(self, stream):
            return stream

        def c10_current_raw(self, device_id):
            return None

    fw = Framework()
    capsys.readouterr()
    c10_bridge._classify(GlobalC10(), 0, fw)
    reports = [json.loads(line[len("C10_BRIDGE_REPORT "):]) for line in capsys.readouterr().out.splitlines()]
    assert reports == [*CLASSIFY_STAGES, {"error": "c10 keeps one current stream for all threads, apart from the "
                                                   "framework's: a set would act on every thread, so it cannot be "
                                                   "bridged per thread"}]
    assert fw.current == 0x5000  # the framework's stream is put back


class Placed:
    """A stand-in `_Calls` whose getStreamFromExternal object holds the id where `place(raw, fill)` says."""

    def __init__(self, place) -> None:
        self.place = place

    @staticmethod
    def raw_bytes(obj):
        return obj

    def from_external(self, raw, device, fill):
        at = self.place(raw, fill)
        return bytes([fill]) * at + raw.to_bytes(8, sys.byteorder) + bytes([fill]) * (24 - at)


NO_OFFSET = ('C10_BRIDGE_REPORT {"error": "the sentinel stream pointer appeared at no 8-byte-aligned offset of the '
             'returned object"}\n')


def test_the_offset_must_hold_for_every_fill_and_sentinel(capsys) -> None:
    assert c10_bridge._calibrate(Placed(lambda raw, fill: 16)) == 16
    assert capsys.readouterr().out == ""
    assert c10_bridge._calibrate(Placed(lambda raw, fill: 0 if fill == c10_bridge.FILLS[0] else 8)) is None
    assert capsys.readouterr().out == NO_OFFSET
    assert c10_bridge._calibrate(Placed(lambda raw, fill: 0 if raw == c10_bridge.SENTINELS[0] else 8)) is None
    assert capsys.readouterr().out == NO_OFFSET


def test_only_8_byte_aligned_offsets_count(capsys) -> None:
    assert c10_bridge._calibrate(Placed(lambda raw, fill: 4)) is None
    assert capsys.readouterr().out == NO_OFFSET


def test_each_report_is_flushed_at_once_so_a_crash_right_after_keeps_it(monkeypatch) -> None:
    events = []

    class Out:
        def write(self, text):
            events.append(("write", text))

        def flush(self):
            events.append(("flush",))

    monkeypatch.setattr(sys, "stdout", Out())
    c10_bridge._report(stage="dlopen")
    assert events[-1] == ("flush",) and "".join(e[1] for e in events if e[0] == "write") == (
        'C10_BRIDGE_REPORT {"stage": "dlopen"}\n')


# ---------------------------------------------------------------- the parent's side of a child


def test_child_command_passes_our_package_first_then_the_parent_s_absolute_roots_once(tmp_path, monkeypatch) -> None:
    ours = str(Path(c10_bridge.__file__).resolve().parent.parent)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "relative/dir", str(tmp_path), "/abs/one", ours, "/abs/one", "/abs/two"])
    command = c10_bridge._child_command("/lib.so", FAKE, MEMORY)
    assert command[:3] == [sys.executable, "-I", "-c"]  # -I: no PYTHONPATH, user site or cwd
    assert json.loads(command[4]) == [ours, "/abs/one", "/abs/two"]  # not the cwd, nothing relative, no repeats
    assert command[5:] == ["/lib.so", "--framework", FAKE, "--child", MEMORY]


def test_reports_survive_a_garbled_line_before_them() -> None:
    out = b'noise\nC10_BRIDGE_REPORT {bad\nC10_BRIDGE_REPORT {"a": 1}\n\xff\xfe\nC10_BRIDGE_REPORT {"b": 2}\n'
    assert c10_bridge._parse_reports(out) == {"a": 1, "b": 2}


def test_children_share_one_fresh_named_directory_that_is_removed_after(monkeypatch) -> None:
    """An operator who finds a leftover probe directory (a killed worker) can tell what wrote it."""
    results = run_children_of(monkeypatch, "print('C10_BRIDGE_REPORT ' + json.dumps({'cwd': os.getcwd()}))")
    dirs = {result["cwd"] for result in results.values()}
    assert set(results) == set(c10_bridge.CONVENTIONS) and len(dirs) == 1
    (workdir,) = dirs
    assert Path(workdir).name.startswith("fdcg_c10_probe_") and not Path(workdir).exists()
    assert Path(workdir).parent == Path(os.path.realpath(tempfile.gettempdir()))


def test_a_verdict_is_cached_per_framework(fake_libs, monkeypatch) -> None:
    """The same library driven with another framework's streams is probed again, not answered from the cache."""
    assert probe(fake_libs["A16"], FAKE).convention == REGS16
    runs = []
    monkeypatch.setattr(c10_bridge, "_run_children", lambda library, framework: runs.append(framework) or {
        conv: {"load_error": "import torch failed", "returncode": 0} for conv in c10_bridge.CONVENTIONS})
    assert "import torch failed" in probe(fake_libs["A16"], "torch").problem and runs == ["torch"]


def test_verdicts_without_children_are_exact(fake_libs, monkeypatch) -> None:
    library = os.path.realpath(fake_libs["no_symbols"])
    assert probe(fake_libs["no_symbols"], FAKE) == c10_bridge.C10Verdict(library, (), HEADER_ONLY)
    monkeypatch.setattr(c10_bridge, "_exported_symbols", lambda library: SYMBOLS[:2])
    partial = probe(fake_libs["A16"], FAKE)
    assert (partial.library, partial.symbols_found) == (os.path.realpath(fake_libs["A16"]), SYMBOLS[:2])
    assert partial.problem.startswith(f"{partial.library} exports some of c10's current-stream functions but not ")


def test_two_proven_conventions_are_an_exact_untrusted_verdict() -> None:
    proven = {"proven": True, "behaviour": APART, "offset": 8}
    verdict, cacheable = c10_bridge._decide("/l/libc10.so", SYMBOLS, {REGS16: proven, SRET: proven, MEMORY: {}})
    assert cacheable and (verdict.library, verdict.symbols_found, verdict.convention) == ("/l/libc10.so", SYMBOLS, None)
    assert verdict.problem.startswith("/l/libc10.so exports c10's current-stream functions, but more than one "
                                      "calling convention passed, so none can be trusted (each tried in a child")


def test_a_child_s_exit_without_stderr_names_status_and_stage_only() -> None:
    assert c10_bridge._failure({"returncode": 1, "stage": "dlopen"}) == "child exited with status 1 during dlopen"


def run_children_of(monkeypatch, child: str) -> dict[str, dict]:
    monkeypatch.setattr(c10_bridge, "_child_command", lambda library, framework, conv: [
        sys.executable, "-c", "import json, os, sys, time; conv = " + repr(conv) + "; " + child])
    return c10_bridge._run_children("/lib.so", FAKE)


def test_children_never_read_the_worker_s_stdin(monkeypatch) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"the worker's input")
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        results = run_children_of(monkeypatch, "print('C10_BRIDGE_REPORT ' + json.dumps({'stdin': sys.stdin.read()}))")
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_end)
    assert [r["stdin"] for r in results.values()] == [""] * len(c10_bridge.CONVENTIONS)


def test_children_s_fates_are_reported_exactly(monkeypatch) -> None:
    """Each child gets the whole timeout (they run in parallel), and its stderr's last 400 characters are kept."""
    monkeypatch.setattr(c10_bridge, "CHILD_TIMEOUT_S", 6.0)
    results = run_children_of(monkeypatch, "time.sleep(1.5); sys.stderr.write('x' * 100 + 'y' * 400 + '\\n  '); sys.exit(3)")
    assert results == {conv: {"returncode": 3, "timed_out": False, "stderr_tail": "y" * 400}
                       for conv in c10_bridge.CONVENTIONS}


def test_a_child_that_cannot_be_spawned_is_named_by_its_error(fake_libs, monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    results = c10_bridge._run_children(fake_libs["A16"], FAKE)
    assert all(r["spawn_error"].startswith("FileNotFoundError: ") for r in results.values()) and len(results) == 3


def test_children_still_running_when_the_parent_fails_are_killed(monkeypatch) -> None:
    started: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    def parse_fails(stdout: bytes) -> dict:
        raise RuntimeError("parent failed")

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(c10_bridge, "_parse_reports", parse_fails)
    with pytest.raises(RuntimeError, match="parent failed"):
        run_children_of(monkeypatch, f"time.sleep(0 if conv == {REGS16!r} else 60)")
    assert len(started) == 3 and all(proc.returncode is not None for proc in started)


def test_a_child_that_removes_its_directory_does_not_fail_the_probe(monkeypatch) -> None:
    results = run_children_of(monkeypatch, "os.rmdir(os.getcwd()) if conv == " + repr(REGS16) + " else None")
    assert {conv: r["returncode"] for conv, r in results.items()} == dict.fromkeys(c10_bridge.CONVENTIONS, 0)
