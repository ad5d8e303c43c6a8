"""Names of FastDeploy's server flags and config keys: facts read with `ast` from FastDeploy's sources (never its
code), the union of release 2.3 (upstream e53396f38b11, 2025-11-06) and 2.6 (41677b9a677c, 2026-06-02):
fastdeploy/engine/args_utils.py and fastdeploy/entrypoints/openai/utils.py for flags, fastdeploy/config.py for the
keys of GraphOptimizationConfig and SpeculativeConfig. Used to reject misspelled keys with the nearest real one."""
from __future__ import annotations

# `--flag` that takes no value (store_true / BooleanOptionalAction): true or false in a deployment config.
SWITCH_FLAGS = frozenset({
    "disable-chunked-mm-input", "disable-custom-all-reduce", "disable-sequence-parallel-moe", "dynamic-load-weight",
    "enable-chunked-moe", "enable-chunked-prefill", "enable-early-stop", "enable-entropy", "enable-eplb",
    "enable-expert-parallel", "enable-flashinfer-allreduce-fusion", "enable-keep-sampling-mask", "enable-logprob",
    "enable-mm-output", "enable-moe-scores-elementwise-fuse", "enable-output-caching", "enable-overlap-schedule",
    "enable-prefix-caching", "ep-prefill-use-worst-num-tokens", "lm_head-fp32", "moe-gate-fp32",
    "shutdown-comm-group-if-worker-idle", "use-internode-ll-two-stage",
})
# `--flag a b c` (nargs)
LIST_FLAGS = frozenset({
    "logits-processors",
})
VALUE_FLAGS = frozenset({
    "api-key", "benchmark-metrics-config", "block-size", "cache-queue-port", "cache-transfer-protocol",
    "chat-template", "chunked-moe-size", "controller-port", "convert", "data-parallel-size", "deploy-modality",
    "early-stop-config", "enable-mm", "engine-worker-queue-port", "eplb-config", "gpu-memory-utilization",
    "graph-optimization-config", "guided-decoding-backend", "guided-decoding-disable-any-whitespace", "host",
    "innode-prefill-ports", "ips", "kv-cache-ratio", "kvcache-storage-backend", "limit-mm-per-prompt",
    "load-choices", "load-strategy", "local-data-parallel-id", "logprobs-mode", "long-prefill-token-threshold",
    "max-concurrency", "max-encoder-cache", "max-logprobs", "max-long-partial-prefills", "max-model-len",
    "max-num-batched-tokens", "max-num-partial-prefills", "max-num-seqs", "max-processor-cache", "max-waiting-time",
    "metrics-port", "mm-processor-kwargs", "model", "model-config-name", "model-impl", "num-gpu-blocks-override",
    "override-pooler-config", "pd-comm-port", "plas-attention-config", "port",
    "prealloc-dec-block-slot-num-threshold", "quantization", "rdma-comm-ports", "reasoning-parser", "revision",
    "router", "routing-replay-config", "rsync-config", "runner", "scheduler-db", "scheduler-expire-period",
    "scheduler-host", "scheduler-load-shards-num", "scheduler-max-size", "scheduler-min-load-score",
    "scheduler-name", "scheduler-password", "scheduler-port", "scheduler-reader-batch-size",
    "scheduler-reader-parallel", "scheduler-release-load-expire-period", "scheduler-sync-period", "scheduler-topic",
    "scheduler-ttl", "scheduler-writer-batch-size", "scheduler-writer-parallel", "seed", "served-model-name",
    "speculative-config", "splitwise-role", "static-decode-blocks", "swap-space", "task", "tensor-parallel-size",
    "timeout", "timeout-graceful-shutdown", "tokenizer", "tokenizer-base-url", "tool-call-parser",
    "tool-parser-plugin", "use-warmup", "workers", "write-policy",
})
ALL_FLAGS = SWITCH_FLAGS | LIST_FLAGS | VALUE_FLAGS

# GraphOptimizationConfig keys a user may pass (FastDeploy's internal maps left out).
GRAPH_OPT_KEYS = frozenset({
    "cudagraph_capture_sizes", "cudagraph_capture_sizes_prefill", "cudagraph_copy_inputs", "cudagraph_num_of_warmups",
    "cudagraph_only_prefill", "cudagraph_splitting_ops", "draft_model_use_cudagraph", "full_cuda_graph",
    "graph_opt_level", "max_capture_shape_prefill", "max_capture_size", "max_capture_size_prefill", "sot_warmup_sizes",
    "use_cudagraph", "use_unique_memory_pool",
})
# SpeculativeConfig keys (its _DEFAULTS and attributes on 2.3 and 2.6).
SPECULATIVE_KEYS = frozenset({
    "accept_policy", "benchmark_mode", "enable_draft_logprob", "enf_gen_phase_tag", "max_candidate_len",
    "max_ngram_size", "method", "min_ngram_size", "model", "model_type", "mtp_strategy", "num_gpu_block_expand_ratio",
    "num_model_steps", "num_speculative_tokens", "quantization", "sharing_model", "suffix_decoding_max_cached_requests",
    "suffix_decoding_max_spec_factor", "suffix_decoding_max_tree_depth", "suffix_decoding_min_token_prob",
    "verify_strategy", "verify_window",
})
