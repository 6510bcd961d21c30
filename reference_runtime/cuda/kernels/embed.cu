/* Baseline slots embed_<type>: one block dequantises the token's row, 16 elements per thread. */
#include "common.h"

template <typename Q>
__device__ __forceinline__ void eb_embed(const void* table, const int* token, float* out, int n_embd,
                                         int n_vocab, float scale) {
    const int t = min(max(*token, 0), n_vocab - 1);
    const uint8_t* row = static_cast<const uint8_t*>(table) + (size_t)t * eb_row_bytes<Q>(n_embd);
    const int items = (n_embd / Q::BLOCK) * Q::PARTS;
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int b = it / Q::PARTS, p = it % Q::PARTS;
        float* yb = out + (size_t)b * Q::BLOCK;
        Q::dequant(row + (size_t)b * Q::BYTES, p, yb);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n_embd; i += blockDim.x) out[i] *= scale;
}

#define EB_EMBED(name, Q) \
    extern "C" __global__ void embed_##name(EVALBOT_EMBED_ARGS) { EVALBOT_GRID_ENTER(); eb_embed<Q>(table, token, out, n_embd, n_vocab, scale); }

EB_EMBED(q4_k, EbQ4K)
EB_EMBED(q6_k, EbQ6K)
EB_EMBED(q8_0, EbQ80)
EB_EMBED(q5_0, EbQ50)
EB_EMBED(f32, EbF32)
