"""fastdeploy-cudagraph-ext: CUDA graphs for FastDeploy with DeepEP expert parallelism (mixed mode) and MTP.

Nothing happens on import. A FastDeploy server started with FD_CUDAGRAPH_EXT=1 activates the
plugin in every worker through FastDeploy's plugin entry point; offline users call activate().
What the plugin changes in FastDeploy, and why: see `fastdeploy_cudagraph_ext.patch`.
"""
from __future__ import annotations

from .activation import activate, deactivate, is_active, register

__version__ = "0.1.0"
__all__ = ["activate", "deactivate", "is_active", "register", "__version__"]
