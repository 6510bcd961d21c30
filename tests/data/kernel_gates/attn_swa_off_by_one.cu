/* Deliberately wrong: the baseline sliding-window attention (hd 256) with its window one position
 * too long (n_swa + 1), the classic off-by-one. Only positions >= n_swa differ. Launch as the
 * baseline: attn_swa_off_by_one_partial, then the baseline's attn_decode_swa_hd256_combine. */
#include "kernels/attention.cu"

extern "C" __global__ void __launch_bounds__(EB_ATTN_THREADS, 1) attn_swa_off_by_one_partial(EVALBOT_ATTN_ARGS) {
    eb_attn_partial_for<256, 8>(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa + 1, scale);
}
