/* Baseline slots gemv_<type> and lm_head_<type>: quantised matrix-vector products, dequantising
 * in registers. A 128-thread block computes 8 rows; each row's 16 threads stride over its
 * 16-element parts (so a 256-column Q4_K row keeps all 16 busy) and sum with shuffles. */
#include "common.h"

constexpr int EB_GEMV_THREADS = 128;
constexpr int EB_GEMV_ROWS = EB_GEMV_THREADS / 16;

template <typename Q>
__device__ __forceinline__ void eb_gemv(const void* w, const float* x, float* y, int n_rows, int n_cols,
                                        float softcap) {
    const int row = blockIdx.x * EB_GEMV_ROWS + (threadIdx.x >> 4);
    const int lane16 = threadIdx.x & 15;
    // Rows past the end still take part in the shuffles (all 32 lanes must), on a clamped row.
    const int r = row < n_rows ? row : n_rows - 1;
    const uint8_t* wr = static_cast<const uint8_t*>(w) + (size_t)r * eb_row_bytes<Q>(n_cols);
    float s = eb_half_warp_sum(eb_row_dot<Q>(wr, x, n_cols, lane16));
    if (lane16 == 0 && row < n_rows) {
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        y[row] = s;
    }
}

#define EB_GEMV(name, Q)                                                                             \
    extern "C" __global__ void __launch_bounds__(EB_GEMV_THREADS) gemv_##name(EVALBOT_GEMV_ARGS) { \
        EVALBOT_GRID_ENTER(); \
        eb_gemv<Q>(w, x, y, n_rows, n_cols, 0.0f);                                                   \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(EB_GEMV_THREADS) lm_head_##name(EVALBOT_LM_HEAD_ARGS) { \
        EVALBOT_GRID_ENTER(); \
        eb_gemv<Q>(w, x, logits, n_vocab, n_embd, softcap);                                          \
    }

EB_GEMV(q4_k, EbQ4K)
EB_GEMV(q6_k, EbQ6K)
EB_GEMV(q8_0, EbQ80)
EB_GEMV(q5_0, EbQ50)
EB_GEMV(f32, EbF32)
