"""Stand-in config.py (2.3 at 0df488c7, develop at e53f5184): MoEPhase, GraphOptimizationConfig.

Facts modelled: 2.3's init_with_cudagrpah_size(max_capture_size) only filters and builds the padding
map; develop's init_with_cudagrpah_size(max_capture_size, max_capture_shape_prefill,
num_speculative_tokens) scales EVERY size (the user's too) by k+1 on its first call (a flag stops
later calls from scaling again) and builds real_bsz_to_captured_size (running requests -> graph) only
when called with k != 0. FDConfig calls it once with k (develop) before any runner exists.
"""
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
        self.flag_cudagraph_capture_sizes_initlized = False

    def _padding_map(self, max_capture_size):
        sizes = sorted({s for s in self.cudagraph_capture_sizes if s <= max_capture_size}, reverse=True)
        self.cudagraph_capture_sizes = sizes
        self.max_capture_size = sizes[0]
        ascending = sorted(sizes)
        self.real_shape_to_captured_size = {
            n: next(s for s in ascending if s >= n) for n in range(1, self.max_capture_size + 1)
        }

    if ERA == "2.3":

        def init_with_cudagrpah_size(self, max_capture_size: int = 0):
            self._padding_map(max_capture_size)

    else:

        def init_with_cudagrpah_size(self, max_capture_size: int = 0, max_capture_shape_prefill: int = 0,
                                     num_speculative_tokens: int = 0):
            step = num_speculative_tokens + 1
            if num_speculative_tokens:
                max_capture_size *= step
                if not self.flag_cudagraph_capture_sizes_initlized:
                    self.cudagraph_capture_sizes = [s * step for s in self.cudagraph_capture_sizes]
            self._padding_map(max_capture_size)
            if num_speculative_tokens:
                ascending = sorted(self.cudagraph_capture_sizes)
                self.real_bsz_to_captured_size = {
                    bsz: next(s for s in ascending if s // step >= bsz) for bsz in range(1, ascending[-1] // step + 1)
                }
            self.flag_cudagraph_capture_sizes_initlized = True


def init_like_fdconfig(graph: GraphOptimizationConfig, max_num_seqs: int, num_speculative_tokens: int) -> None:
    """What FDConfig.__init__ does with the graph config of each era (test helper, not a FastDeploy name)."""
    if ERA == "2.3":
        graph.init_with_cudagrpah_size(max_capture_size=min(512, max(graph.cudagraph_capture_sizes)))
    else:
        graph.init_with_cudagrpah_size(max_capture_size=min(512, max_num_seqs),
                                       num_speculative_tokens=num_speculative_tokens)
