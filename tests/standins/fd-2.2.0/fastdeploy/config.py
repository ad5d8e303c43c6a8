"""Stand-in config.py of 2.2.0 at fa236927 (2025-09-08): MoEPhase, GraphOptimizationConfig, SpeculativeConfig.

init_with_cudagrpah_size(max_num_seqs) keeps the sizes <= max_num_seqs and builds the padding map; FDConfig passes
parallel_config.max_num_seqs and tells no speculative method apart (k is scaled nowhere).
"""
from standin_common import GraphConfigBase, MoEPhase, new_group  # noqa: F401 - FastDeploy's names


class ParallelConfig:
    """Only what the plugin reads: FastDeploy 2.2.0 builds the EP process group here (set_communicate_group)."""

    def __init__(self, expert_parallel_size=1):
        self.expert_parallel_size = expert_parallel_size
        self.ep_group = None

    def set_communicate_group(self):
        self.ep_group = new_group(range(self.expert_parallel_size))


class GraphOptimizationConfig(GraphConfigBase):
    cudagraph_capture_sizes: list  # set by GraphConfigBase.__init__, as FastDeploy's __init__ sets it

    def init_with_cudagrpah_size(self, max_num_seqs: int = 0) -> None:
        self._padding_map(max_num_seqs)


class SpeculativeConfig:
    def __init__(self):
        self.method_list = ["ngram_match", "mtp"]


def init_like_fdconfig(graph, max_num_seqs, num_speculative_tokens, method="mtp"):
    """What FDConfig.__init__ does with the graph config (a test helper, not a FastDeploy name)."""
    graph.init_with_cudagrpah_size(max_num_seqs=max(graph.cudagraph_capture_sizes))
