/* Deliberately wrong: the baseline full attention (hd 128) that forgets the softmax scale for the
 * query heads of the last KV head (the block of KV head n_head_kv - 1 uses scale 1). Launch as the
 * baseline: attn_unscaled_head_partial, then the baseline's attn_decode_hd128_combine. */
#include "kernels/attention.cu"

extern "C" __global__ void __launch_bounds__(EB_ATTN_THREADS, 1) attn_unscaled_head_partial(EVALBOT_ATTN_ARGS) {
    const float s = blockIdx.x == gridDim.x - 1 ? 1.0f : scale;
    eb_attn_partial_for<128, 8>(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, s);
}
