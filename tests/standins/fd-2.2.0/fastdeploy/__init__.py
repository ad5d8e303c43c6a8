"""Stand-in for FastDeploy 2.2.0, modelling upstream commit fa2369271d553ab3f66d7f13cf8e50281d4940e4 (2025-09-08) as read from
the gongshaotian/FastDeploy mirror. Our own code, written from facts (names, signatures, behaviour); each patched
class has that release's real signatures in FastDeploy's own module file. What differs from later lines: the backend
reads the ids_remove_padding keyword and keeps one output_buffer; init_with_cudagrpah_size(max_num_seqs); no MTP
branch in capture_model; no DeepEPBufferManager; moe_phase and splitwise_role on parallel_config; the MoE forward
cleans in every MoE layer. Shared bodies live in tests/standins/standin_common.py."""
ERA = "2.2.0"
__version__ = "2.2.0"
