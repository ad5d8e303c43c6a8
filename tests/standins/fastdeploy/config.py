"""Stand-in: MoEPhase and GraphOptimizationConfig as in FastDeploy's config.py."""
from fastdeploy import ERA


class MoEPhase:
    def __init__(self, phase: str = "prefill") -> None:
        self.phase = phase

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        if value not in ("prefill", "decode"):
            raise ValueError(f"moe phase must be prefill or decode, got {value}")
        self._phase = value


class GraphOptimizationConfig:
    """Stand-in: the capture-size fields and FastDeploy's (sic) init_with_cudagrpah_size of each era."""

    def __init__(self, cudagraph_capture_sizes, use_cudagraph=True):
        self.use_cudagraph = use_cudagraph
        self.cudagraph_capture_sizes = list(cudagraph_capture_sizes)
        self.cudagraph_capture_sizes_prefill = [1, 2, 4, 8]
        self.cudagraph_only_prefill = False
        self.cudagraph_num_of_warmups = 2
        self.graph_opt_level = 0
        self.full_cuda_graph = True
        self.draft_model_use_cudagraph = False
        self.real_bsz_to_captured_size = {}
        self._init(max(self.cudagraph_capture_sizes))

    def _init(self, max_capture_size):
        sizes = sorted({s for s in self.cudagraph_capture_sizes if s <= max_capture_size}, reverse=True)
        self.cudagraph_capture_sizes = sizes
        self.max_capture_size = sizes[0]
        ascending = sorted(sizes)
        self.real_shape_to_captured_size = {
            n: next(s for s in ascending if s >= n) for n in range(1, self.max_capture_size + 1)
        }

    if ERA == "2.3":

        def init_with_cudagrpah_size(self, max_capture_size: int = 0):
            self._init(max_capture_size)

    else:

        def init_with_cudagrpah_size(self, max_capture_size: int = 0, max_capture_shape_prefill: int = 0):
            self._init(max_capture_size)
