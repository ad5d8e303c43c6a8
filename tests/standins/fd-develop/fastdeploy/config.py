"""Stand-in config.py of develop at e53f5184 (2026-04-15): MoEPhase and GraphOptimizationConfig.

init_with_cudagrpah_size(max_capture_size, max_capture_shape_prefill, num_speculative_tokens) scales EVERY
size (the user's too) by k+1 on its first call (a flag stops later calls from scaling again) and builds
real_bsz_to_captured_size (running requests -> graph) only when called with k != 0. FDConfig calls it once,
with k, before any runner exists (#7215/#7301).
"""
from standin_common import GraphConfigBase, MoEPhase, new_group  # noqa: F401 - FastDeploy's names


class ParallelConfig:
    """Only what the plugin reads: FastDeploy builds the EP process group here (set_communicate_group)."""

    def __init__(self, expert_parallel_size=1):
        self.expert_parallel_size = expert_parallel_size
        self.ep_group = None

    def set_communicate_group(self):
        self.ep_group = new_group(range(self.expert_parallel_size))


class GraphOptimizationConfig(GraphConfigBase):
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


def init_like_fdconfig(graph, max_num_seqs, num_speculative_tokens):
    """What FDConfig.__init__ does with the graph config (a test helper, not a FastDeploy name)."""
    graph.init_with_cudagrpah_size(max_capture_size=min(512, max_num_seqs), num_speculative_tokens=num_speculative_tokens)
