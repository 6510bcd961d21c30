/* Baseline MoE slots: moe_router_topk (one warp) and moe_ffn_{swiglu,geglu} (two launches: the
 * routed experts' gate/up rows with the activation into scratch, then the down rows summed over
 * the experts with their routing weights, in a fixed order so the result is deterministic). Expert
 * ids never leave the device. */
#include "common.h"

constexpr int EB_MAX_EXPERTS = 1024;

extern "C" __global__ void moe_router_topk(EVALBOT_MOE_ROUTER_ARGS) {
    EVALBOT_GRID_ENTER();
    __shared__ float z[EB_MAX_EXPERTS];
    __shared__ int chosen[64];
    __shared__ float chosen_z[64];
    const int lane = threadIdx.x;
    float mx = -INFINITY;
    for (int e = lane; e < n_expert; e += 32) {
        z[e] = logits[e];
        mx = fmaxf(mx, z[e]);
    }
    mx = eb_warp_max(mx);
    float denom = 0.0f;
    for (int e = lane; e < n_expert; e += 32) denom += expf(z[e] - mx);
    denom = eb_warp_sum(denom);
    __syncwarp();
    // Select on the logits (same order as the probabilities, without rounding ties into them).
    for (int k = 0; k < n_expert_used; ++k) {
        float best = -INFINITY;
        int arg = n_expert;
        for (int e = lane; e < n_expert; e += 32)
            if (z[e] > best) { best = z[e]; arg = e; }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(EB_FULL_MASK, best, o);
            const int oa = __shfl_xor_sync(EB_FULL_MASK, arg, o);
            if (ob > best || (ob == best && oa < arg)) { best = ob; arg = oa; }
        }
        if (lane == 0) {
            chosen[k] = arg;
            chosen_z[k] = best;
            z[arg] = -INFINITY;
        }
        __syncwarp();
    }
    if (lane == 0) {
        float p[64];
        float sum = 0.0f;
        for (int k = 0; k < n_expert_used; ++k) {
            p[k] = expf(chosen_z[k] - mx) / denom;
            sum += p[k];
        }
        sum = fmaxf(sum, 6.103515625e-5f);
        for (int k = 0; k < n_expert_used; ++k) {
            float w = p[k] / sum;
            if (weights_scale != 0.0f && weights_scale != 1.0f) w *= weights_scale;
            if (expert_scale) w *= expert_scale[chosen[k]];
            ids[k] = chosen[k];
            weights[k] = w;
        }
    }
}

constexpr int EB_MOE_THREADS = 128;
constexpr int EB_MOE_ROWS = EB_MOE_THREADS / 16;

/* Launch 1, grid (ceil(n_ff_exp / 8), n_expert_used): scratch[i][r] = act(gate_e[r] . x) * (up_e[r] . x). */
template <bool GELU>
__device__ void eb_moe_gate_up(EVALBOT_MOE_FFN_ARGS) {
    const int i = blockIdx.y;
    const int e = ids[i];
    const int row = blockIdx.x * EB_MOE_ROWS + (threadIdx.x >> 4), lane16 = threadIdx.x & 15;
    const int r = min(row, n_ff_exp - 1);
    const uint8_t* g = static_cast<const uint8_t*>(w_gate) + e * stride_gate + r * eb_row_bytes_any(type_gate, n_embd);
    const uint8_t* u = static_cast<const uint8_t*>(w_up) + e * stride_up + r * eb_row_bytes_any(type_up, n_embd);
    const float gs = eb_half_warp_sum(eb_row_dot_any(type_gate, g, x, n_embd, lane16));
    const float us = eb_half_warp_sum(eb_row_dot_any(type_up, u, x, n_embd, lane16));
    if (lane16 == 0 && row < n_ff_exp)
        static_cast<float*>(scratch)[(size_t)i * n_ff_exp + row] = (GELU ? eb_gelu_tanh(gs) : eb_silu(gs)) * us;
}

/* Launch 2, grid n_embd: out[r] = sum_i weights[i] * (down_e[r] . scratch[i]). The block's eight
 * 16-thread groups take experts i = g, g + 8, ... in parallel (the experts' rows are independent
 * loads); the groups' partials are then added in a fixed order, so the result is deterministic. */
__device__ void eb_moe_down(EVALBOT_MOE_FFN_ARGS) {
    __shared__ float part[EB_MOE_ROWS];
    const int row = blockIdx.x, grp = threadIdx.x >> 4, lane16 = threadIdx.x & 15;
    const size_t row_bytes = eb_row_bytes_any(type_down, n_ff_exp);
    const float* act = static_cast<const float*>(scratch);
    float total = 0.0f;
    for (int i0 = 0; i0 < n_expert_used; i0 += EB_MOE_ROWS) {
        const int i = i0 + grp;
        float v = 0.0f;
        if (i < n_expert_used) {
            const uint8_t* d = static_cast<const uint8_t*>(w_down) + ids[i] * stride_down + row * row_bytes;
            v = eb_row_dot_any(type_down, d, act + (size_t)i * n_ff_exp, n_ff_exp, lane16);
        }
        v = eb_half_warp_sum(v);  // every lane takes part, busy group or not
        if (i < n_expert_used) total += weights[i] * v;
    }
    if (lane16 == 0) part[grp] = total;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int g = 0; g < EB_MOE_ROWS; ++g) s += part[g];
        out[row] = s;
    }
}

extern "C" __global__ void __launch_bounds__(EB_MOE_THREADS) moe_ffn_swiglu_gate_up(EVALBOT_MOE_FFN_ARGS) {
    EVALBOT_GRID_ENTER();
    eb_moe_gate_up<false>(x, ids, weights, w_gate, w_up, w_down, stride_gate, stride_up, stride_down, type_gate,
                          type_up, type_down, out, scratch, n_embd, n_ff_exp, n_expert, n_expert_used);
}

extern "C" __global__ void __launch_bounds__(EB_MOE_THREADS) moe_ffn_geglu_gate_up(EVALBOT_MOE_FFN_ARGS) {
    EVALBOT_GRID_ENTER();
    eb_moe_gate_up<true>(x, ids, weights, w_gate, w_up, w_down, stride_gate, stride_up, stride_down, type_gate,
                         type_up, type_down, out, scratch, n_embd, n_ff_exp, n_expert, n_expert_used);
}

extern "C" __global__ void __launch_bounds__(EB_MOE_THREADS) moe_ffn_down(EVALBOT_MOE_FFN_ARGS) {
    EVALBOT_GRID_ENTER();
    eb_moe_down(x, ids, weights, w_gate, w_up, w_down, stride_gate, stride_up, stride_down, type_gate, type_up,
                type_down, out, scratch, n_embd, n_ff_exp, n_expert, n_expert_used);
}
