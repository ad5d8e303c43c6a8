"""GPU-only fixtures: the E1-style extension (built once per machine) and the policy over torch's real c10.

Everything here imports torch lazily, so collecting tests/ on a CPU box without torch only skips.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_ROOT = REPO / ".torch_ext"  # ignored by git; survives between calls while the GPU machine stays warm

# Like DeepEP: read c10's current stream and launch on it with cudaLaunchKernelEx.
EXT_CUDA = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
__global__ void add_one_kernel(float* x, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.f;
}
void add_one_current(torch::Tensor x) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat && x.is_contiguous());
  int64_t n = x.numel();
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)((n + 255) / 256));
  cfg.blockDim = dim3(256);
  cfg.stream = at::cuda::getCurrentCUDAStream().stream();
  float* p = x.data_ptr<float>();
  cudaError_t err = cudaLaunchKernelEx(&cfg, add_one_kernel, p, n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it, or the next unrelated torch launch would report it
    TORCH_CHECK(false, "cudaLaunchKernelEx: ", cudaGetErrorString(err));
  }
}
int64_t current_stream_ptr() { return (int64_t)at::cuda::getCurrentCUDAStream().stream(); }
"""
EXT_CPP = "void add_one_current(torch::Tensor x); int64_t current_stream_ptr();"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and PyTorch (tests/gpu, run on the GPU machine)")


def _cuda():
    torch = pytest.importorskip("torch", reason="tests/gpu need PyTorch with CUDA: run them on the GPU machine with PYTHONPATH=.")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch


@pytest.fixture(scope="session")
def ext():
    """The extension module; xdist workers share one build directory (torch's file lock serialises the build)."""
    torch = _cuda()
    from torch.utils.cpp_extension import load_inline

    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")  # this card only: a shorter build
    build = BUILD_ROOT / "tls_ext"
    build.mkdir(parents=True, exist_ok=True)
    return load_inline(
        "fdcg_tls_ext",
        cpp_sources=EXT_CPP,
        cuda_sources=EXT_CUDA,
        functions=["add_one_current", "current_stream_ptr"],
        build_directory=str(build),
        verbose=False,
    )


@pytest.fixture(scope="session")
def c10_torch_status():
    """C10Status for torch's real libc10_cuda.so, through the bridge (probed in child processes)."""
    _cuda()
    from torch_device import libc10_cuda_path

    from fastdeploy_cudagraph_ext.c10_bridge import c10_status

    return c10_status(libc10_cuda_path(), "torch")


@pytest.fixture
def fw():
    """A fresh framework device whose current stream is its own compute stream, c10 left at the legacy stream."""
    torch = _cuda()
    from torch_device import TorchFrameworkDevice

    torch.cuda.set_stream(torch.cuda.default_stream())
    yield TorchFrameworkDevice()
    torch.cuda.synchronize()
    assert torch.cuda.current_stream() == torch.cuda.default_stream(), "a test left c10 off the legacy stream"


@pytest.fixture
def policy(fw, c10_torch_status):
    """The capture policy over the framework device, c10 bridged, a torch-API extension in use."""
    from fastdeploy_cudagraph_ext.stream_policy import CaptureStreamPolicy

    assert c10_torch_status.bridge is not None, c10_torch_status.problem
    return CaptureStreamPolicy(fw, c10_torch_status, extensions_may_launch=lambda: True)
