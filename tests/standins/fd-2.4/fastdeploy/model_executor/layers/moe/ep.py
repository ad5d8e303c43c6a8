"""Stand-in ep.py of 2.4 at f83673da (2026-04-08): DeepEPEngine (a @singleton) with low_latency_dispatch(hidden_states,
topk_idx, expertwise_scale, use_fp8, quant_group_size) and two-stage dispatch/combine; DeepEPBufferManager; EP runners. Hooks are called at once."""
from standin_common import EngineCommon, singleton


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
class DeepEPEngine(EngineCommon):
    def __init__(self, num_max_dispatch_tokens_per_rank, hidden_size, num_experts, ep_size, ep_rank,
                 splitwise_role, moe_phase, async_finish=True, group=None, use_internode_ll_two_stage=False, top_k=8):
        self._setup(num_max_dispatch_tokens_per_rank, hidden_size, num_experts)
        DeepEPBufferManager.set_engine(self)

    def low_latency_dispatch(self, hidden_states, topk_idx, expertwise_scale, use_fp8=False, quant_group_size=128):
        return self._dispatch(hidden_states, topk_idx, use_fp8)

    def low_latency_dispatch_two_stage(self, hidden_states, topk_idx, topk_weights, expertwise_scale, use_fp8=False):
        return self._dispatch(hidden_states, topk_idx, use_fp8)

    def low_latency_combine_two_stage(self, hidden_states, topk_idx, topk_weights, dispatch_use_fp8, handle):
        return self._combine(hidden_states, topk_idx, topk_weights, handle)

    def low_latency_combine(self, hidden_states, topk_idx, topk_weights, handle):
        return self._combine(hidden_states, topk_idx, topk_weights, handle)

    def clean_low_latency_buffer(self):
        self._clean()

    @property
    def deepep_engine(self):
        return self.buffer

    def clear_deep_ep_buffer(self):
        self._clear_buffer()

    def create_deep_ep_buffer(self):
        self._create_buffer()


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
