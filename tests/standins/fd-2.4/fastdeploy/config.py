"""Stand-in config.py of 2.4 at f83673da (2026-04-08): MoEPhase and GraphOptimizationConfig.

init_with_cudagrpah_size(max_capture_size) only filters the sizes and builds the padding map: it never scales.
"""
from standin_common import GraphConfigBase, MoEPhase  # noqa: F401 - FastDeploy's names


class GraphOptimizationConfig(GraphConfigBase):
    def init_with_cudagrpah_size(self, max_capture_size: int = 0):
        self._padding_map(max_capture_size)


def init_like_fdconfig(graph, max_num_seqs, num_speculative_tokens):
    """What FDConfig.__init__ does with the graph config (a test helper, not a FastDeploy name)."""
    graph.init_with_cudagrpah_size(max_capture_size=min(512, max(graph.cudagraph_capture_sizes)))
