"""Stand-in ep.py (2.3 at 0df488c7, develop at e53f5184): DeepEPEngine (a @singleton), DeepEPBufferManager,
EP runners. Hooks are called at once. 2.3 has no two-stage low-latency calls; develop's dispatch also takes
quant_group_size and use_ue8m0."""
import deep_ep_sim
from fastdeploy import ERA


def singleton(cls):
    instances = {}

    def get_instance(*args, **kwargs):
        if cls not in instances:
            instances[cls] = cls(*args, **kwargs)
        return instances[cls]

    return get_instance


class DeepEPBufferManager:
    _engine = None

    @classmethod
    def set_engine(cls, engine):
        cls._engine = engine

    @classmethod
    def clear_buffer(cls):
        cls._engine = None

    @classmethod
    def recreate_buffer(cls):
        pass


@singleton
class DeepEPEngine:
    def __init__(self, num_max_dispatch_tokens_per_rank, hidden_size, num_experts, ep_size, ep_rank,
                 splitwise_role, moe_phase, async_finish=True, group=None, use_internode_ll_two_stage=False, top_k=8):
        self.num_max_dispatch_tokens_per_rank = num_max_dispatch_tokens_per_rank
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.buffer = deep_ep_sim.CURRENT["buffer"] or deep_ep_sim.SimBuffer()
        self.return_recv_hook = True  # tests flip this to model a misconfigured build
        DeepEPBufferManager.set_engine(self)

    def _dispatch(self, hidden_states, topk_idx, use_fp8):
        x, count, handle, _, hook = self.buffer.low_latency_dispatch(
            hidden_states, topk_idx, self.num_max_dispatch_tokens_per_rank, self.num_experts, use_fp8=use_fp8,
            async_finish=False, return_recv_hook=self.return_recv_hook)
        return x, count, handle, hook

    def low_latency_combine(self, hidden_states, topk_idx, topk_weights, handle):
        out, _, hook = self.buffer.low_latency_combine(hidden_states, topk_idx, topk_weights, handle,
                                                       async_finish=False, return_recv_hook=self.return_recv_hook)
        return out, hook

    if ERA == "2.3":

        def low_latency_dispatch(self, hidden_states, topk_idx, expertwise_scale, use_fp8=False):
            return self._dispatch(hidden_states, topk_idx, use_fp8)

    else:

        def low_latency_dispatch(self, hidden_states, topk_idx, expertwise_scale, use_fp8=False,
                                 quant_group_size=128, use_ue8m0=False):
            return self._dispatch(hidden_states, topk_idx, use_fp8)

        def low_latency_dispatch_two_stage(self, hidden_states, topk_idx, topk_weights, expertwise_scale,
                                           use_fp8=False, quant_group_size=128):
            return self._dispatch(hidden_states, topk_idx, use_fp8)

        def low_latency_combine_two_stage(self, hidden_states, topk_idx, topk_weights, dispatch_use_fp8,
                                          quant_group_size, handle):
            return self.low_latency_combine(hidden_states, topk_idx, topk_weights, handle)

    def clean_low_latency_buffer(self):
        self.buffer.clean_low_latency_buffer(self.num_max_dispatch_tokens_per_rank, self.hidden_size, self.num_experts)


class EPRunner:
    def __init__(self, top_k, hidden_size, num_experts, splitwise_role, moe_phase, num_max_dispatch_tokens_per_rank=1,
                 ep_size=1, ep_rank=0, redundant_experts_num=0, ep_group=None, use_internode_ll_two_stage=False):
        self.ep_engine = DeepEPEngine(num_max_dispatch_tokens_per_rank, hidden_size, num_experts, ep_size, ep_rank,
                                      splitwise_role, moe_phase)

    def clean_low_latency_buffer(self):
        self.ep_engine.clean_low_latency_buffer()


class EPPrefillRunner(EPRunner):
    def dispatch(self, x, topk_idx, topk_weights, *args, **kwargs):
        return self.ep_engine.buffer.dispatch(x)

    def combine(self, tmp_ffn_out, handle, recv_topk_weights):
        return self.ep_engine.buffer.combine(tmp_ffn_out)


class EPDecoderRunner(EPRunner):
    def dispatch(self, x, topk_idx, topk_weights, *args, **kwargs):
        recv, count, handle, hook = self.ep_engine.low_latency_dispatch(x, topk_idx, None)
        if hook is not None:
            hook()
        return recv, count, handle

    def combine(self, ffn_out, topk_idx, topk_weights, handle):
        combined, hook = self.ep_engine.low_latency_combine(ffn_out, topk_idx, topk_weights, handle)
        if hook is not None:
            hook()
        return combined
