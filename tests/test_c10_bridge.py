"""The c10 bridge against fake c10 libraries built with g++: both layouts, broken ones, crashes, caching."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fastdeploy_cudagraph_ext import c10_bridge
from fastdeploy_cudagraph_ext.c10_bridge import (
    REGS16,
    SRET,
    SYMBOLS,
    C10Verdict,
    c10_status,
    paddle_c10_status,
    paddle_library_path,
    probe,
)

# One source, several libraries: the exact mangled names of c10's current-stream functions over a
# thread-local current stream per device, in PyTorch's or Paddle compat's object layout.
FAKE_C10 = r"""
#include <csignal>
#include <cstdint>
#include <string>
#include <type_traits>
struct CUstream_st;
namespace c10 {
#ifdef LAYOUT48
struct Device { int8_t type; int8_t index; std::string custom_device_type; };
#else
struct Device { int8_t type; int8_t index; };
#endif
struct Stream { Device device; int64_t id; };
namespace cuda {
struct CUDAStream { Stream stream; };
#ifdef LAYOUT48
static_assert(sizeof(CUDAStream) == 48 && !std::is_trivially_copyable<CUDAStream>::value, "Paddle compat layout");
#else
static_assert(sizeof(CUDAStream) == 16 && std::is_trivially_copyable<CUDAStream>::value, "PyTorch layout");
#endif
#ifdef XOR_ID
static const int64_t kEncode = 0x0F0F0F0F0F0F0F0FLL;  // the id is kept encoded: no sentinel shows
#else
static const int64_t kEncode = 0;
#endif
static thread_local CUDAStream current[8];  // zero-initialised: the legacy stream (id 0)
static int slot(signed char device) { return device < 0 || device >= 8 ? 0 : device; }

CUDAStream getStreamFromExternal(CUstream_st* ext, signed char device) {
#ifdef ALWAYS_CRASH
  std::raise(SIGSEGV);
#endif
#ifdef CHECK_DEVICE
  if (device < -1 || device >= 8) std::raise(SIGSEGV);  // like indexing a per-device array unchecked
#endif
  CUDAStream s{};
  s.stream.device.type = 1;
  s.stream.device.index = device;
  s.stream.id = reinterpret_cast<int64_t>(ext) ^ kEncode;
  return s;
}
CUDAStream getCurrentCUDAStream(signed char device) {
  CUDAStream s = current[slot(device)];
  s.stream.device.type = 1;
  s.stream.device.index = static_cast<int8_t>(slot(device));
  return s;
}
void setCurrentCUDAStream(CUDAStream s) { current[slot(s.stream.device.index)] = s; }
}  // namespace cuda
}  // namespace c10
// A side door for the tests: the thread's current id, read without the bridge.
extern "C" int64_t fake_current_id(signed char device) {
  return c10::cuda::current[c10::cuda::slot(device)].stream.id ^ c10::cuda::kEncode;
}
"""
NO_SYMBOLS = 'extern "C" int unrelated_function() { return 42; }\n'

VARIANTS = {
    "torch16": ["-DLAYOUT16"],
    "paddle48": ["-DLAYOUT48"],
    "xor16": ["-DLAYOUT16", "-DXOR_ID"],
    "crash_on_bad_device16": ["-DLAYOUT16", "-DCHECK_DEVICE"],
    "always_crash16": ["-DLAYOUT16", "-DALWAYS_CRASH"],
}


@pytest.fixture(scope="session")
def fake_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot build the fake c10 libraries these tests probe")
    root = tmp_path_factory.mktemp("fake_c10")
    (root / "fake_c10.cpp").write_text(FAKE_C10)
    (root / "no_symbols.cpp").write_text(NO_SYMBOLS)
    libs = {}
    jobs = [(name, "fake_c10.cpp", flags) for name, flags in VARIANTS.items()] + [("no_symbols", "no_symbols.cpp", [])]
    for name, src, flags in jobs:
        out = root / f"lib{name}.so"
        subprocess.run([gxx, "-shared", "-fPIC", "-O1", "-std=c++17", *flags, "-o", str(out), src], cwd=root, check=True)
        libs[name] = str(out)
    return libs


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(c10_bridge.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_torch_layout_calibrates_to_offset_8(fake_libs: dict[str, str]) -> None:
    verdict = probe(fake_libs["torch16"])
    assert verdict.problem == ""
    assert verdict.symbols_found == SYMBOLS
    assert (verdict.convention, verdict.offset, verdict.object_size) == (REGS16, 8, 16)


def test_paddle_layout_calibrates_to_offset_40_and_contains_the_wrong_guess_crash(fake_libs: dict[str, str]) -> None:
    verdict = probe(fake_libs["paddle48"])
    assert verdict.problem == ""
    assert (verdict.convention, verdict.offset, verdict.object_size) == (SRET, 40, 48)
    # The register guess writes the result through the (non-canonical) sentinel: it must die in the child.
    assert "SIGSEGV" in verdict.attempts[REGS16]
    assert verdict.attempts[SRET] == "proven"


@pytest.mark.parametrize("name", ["torch16", "paddle48"])
def test_bridge_set_get_restore_round_trip(fake_libs: dict[str, str], name: str) -> None:
    status = c10_status(fake_libs[name])
    assert not status.follows_framework and status.problem == ""
    bridge = status.bridge
    side_door = ctypes.CDLL(fake_libs[name]).fake_current_id
    side_door.restype, side_door.argtypes = ctypes.c_int64, [ctypes.c_int8]

    assert bridge.current_raw(0) == 0
    saved = bridge.save(0)
    bridge.set_raw(0, 0x7F00_1234_5670)
    assert bridge.current_raw(0) == 0x7F00_1234_5670
    assert side_door(0) == 0x7F00_1234_5670
    bridge.set_raw(1, 0x7F00_0000_0100)  # another device keeps its own current stream
    assert bridge.current_raw(0) == 0x7F00_1234_5670
    assert bridge.current_raw(1) == 0x7F00_0000_0100
    bridge.restore(saved)
    assert bridge.current_raw(0) == 0 and side_door(0) == 0
    bridge.restore(bridge.save(1))  # restoring what is already current changes nothing
    assert bridge.current_raw(1) == 0x7F00_0000_0100


@pytest.mark.parametrize("name", ["torch16", "paddle48"])
def test_bridge_acts_on_the_calling_thread_only(fake_libs: dict[str, str], name: str) -> None:
    bridge = c10_status(fake_libs[name]).bridge
    saved = bridge.save(0)
    bridge.set_raw(0, 0xAAAA_0000)
    seen: dict[str, int] = {}

    def other_thread() -> None:
        seen["before"] = bridge.current_raw(0)
        own = bridge.save(0)
        bridge.set_raw(0, 0xBBBB_0000)
        seen["own"] = bridge.current_raw(0)
        bridge.restore(own)
        seen["restored"] = bridge.current_raw(0)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    try:
        assert seen == {"before": 0, "own": 0xBBBB_0000, "restored": 0}
        assert bridge.current_raw(0) == 0xAAAA_0000
    finally:
        bridge.restore(saved)


def test_incompatible_layout_is_unbridgeable_with_a_clear_problem(fake_libs: dict[str, str]) -> None:
    status = c10_status(fake_libs["xor16"])
    assert not status.follows_framework and status.bridge is None
    problem = status.problem
    assert fake_libs["xor16"] in problem
    assert "keeps its own current stream" in problem
    assert "regs16" in problem and "sret" in problem
    assert "sentinel" in problem and "Fix:" in problem


def test_crash_under_one_convention_is_contained_and_the_other_wins(fake_libs: dict[str, str]) -> None:
    verdict = probe(fake_libs["crash_on_bad_device16"])
    assert verdict.problem == ""
    assert (verdict.convention, verdict.offset) == (REGS16, 8)
    assert "SIGSEGV" in verdict.attempts[SRET] and "getStreamFromExternal" in verdict.attempts[SRET]


def test_crash_under_every_convention_is_reported(fake_libs: dict[str, str]) -> None:
    status = c10_status(fake_libs["always_crash16"])
    assert not status.follows_framework and status.bridge is None
    assert fake_libs["always_crash16"] in status.problem
    assert status.problem.count("SIGSEGV") == 2 and "Fix:" in status.problem


def test_library_without_the_symbols_is_header_only(fake_libs: dict[str, str]) -> None:
    verdict = probe(fake_libs["no_symbols"])
    assert verdict.header_only and verdict.symbols_found == ()
    assert "header-only: c10 follows the framework's stream" in verdict.describe()
    assert c10_status(fake_libs["no_symbols"]) == c10_bridge.C10Status(follows_framework=True)


def test_second_probe_is_a_cache_hit_and_a_new_build_is_probed_again(
    fake_libs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "libcopy.so"
    shutil.copy(fake_libs["paddle48"], lib)
    first = probe(str(lib))
    assert c10_bridge.cache_file().is_file()

    def no_children(*_args: object) -> dict:
        raise AssertionError("a cached verdict must not spawn a child process")

    with monkeypatch.context() as patched:
        patched.setattr(c10_bridge, "_run_children", no_children)
        assert probe(str(lib)) == first

    shutil.copy(fake_libs["torch16"], lib)  # another build at the same path: new size and mtime
    assert probe(str(lib)).convention == REGS16


def test_missing_library_names_the_path_and_is_not_cached(tmp_path: Path) -> None:
    missing = str(tmp_path / "libgone.so")
    status = c10_status(missing)
    assert not status.follows_framework and missing in status.problem and "Fix:" in status.problem
    assert not c10_bridge.cache_file().exists()


def test_verdict_round_trips_through_json(fake_libs: dict[str, str]) -> None:
    verdict = probe(fake_libs["paddle48"])
    assert C10Verdict.from_json(verdict.to_json()) == verdict
    assert json.loads(verdict.to_json())["offset"] == 40


def test_paddle_missing_is_a_problem_not_follows_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c10_bridge, "paddle_library_path", lambda: None)
    status = paddle_c10_status()
    assert not status.follows_framework and status.bridge is None
    assert "Paddle not installed" in status.problem and "Fix:" in status.problem


def test_installed_paddle_is_inspected_without_importing_it() -> None:
    before = "paddle" in sys.modules
    library = paddle_library_path()
    assert ("paddle" in sys.modules) == before
    if library is None:
        pytest.skip("paddle is not installed in this environment")
    verdict = probe(library, preload="paddle")
    assert verdict.problem == "", verdict.problem
    if verdict.header_only:  # the PyPI CPU wheel: c10 is header-only and follows Paddle's stream
        assert paddle_c10_status().follows_framework


def test_module_imports_without_paddle_or_torch() -> None:
    code = (
        "import sys, fastdeploy_cudagraph_ext.c10_bridge as b; "
        "assert 'paddle' not in sys.modules and 'torch' not in sys.modules; "
        "assert b.paddle_library_path() is None or 'paddle' not in sys.modules"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(c10_bridge.__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
