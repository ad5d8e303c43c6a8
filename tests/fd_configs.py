"""Building FastDeploy configs for tests from the stand-in (or real) config classes, as FDConfig would."""
from types import SimpleNamespace


def make_fd_config(k=1, max_num_seqs=8, sizes=(2, 4, 8, 16), ep=False, cap=128, role="mixed"):
    """`sizes` are what the user (or FastDeploy's ladder) gave; develop's FDConfig scales them by k+1 here."""
    from fastdeploy.config import GraphOptimizationConfig, MoEPhase, init_like_fdconfig

    graph = GraphOptimizationConfig(sizes)
    init_like_fdconfig(graph, max_num_seqs, k)
    fd_config = SimpleNamespace(
        graph_opt_config=graph,
        scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs, max_num_batched_tokens=2048, splitwise_role=role),
        speculative_config=SimpleNamespace(method="mtp" if k else None, num_speculative_tokens=k),
        parallel_config=SimpleNamespace(use_ep=ep, expert_parallel_size=8 if ep else 1,
                                        ep_group=SimpleNamespace(ranks=list(range(8))) if ep else None),
        model_config=SimpleNamespace(num_max_dispatch_tokens_per_rank=cap, moe_layer_start_index=0, hidden_size=8,
                                     moe_phase=MoEPhase("prefill")),
    )
    fd_config.get_max_chunk_tokens = lambda: 2048
    return fd_config
