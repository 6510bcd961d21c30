/* evalbot kernel-slot ABI, version 0.
 *
 * Every op of one decode step is a named slot. The runtime launches each slot with the argument
 * list below; a contributor's cubin overrides a slot by exporting an extern "C" __global__ kernel
 * (its name is given in the manifest) whose parameters are exactly the slot's EVALBOT_*_ARGS:
 *
 *     #include "evalbot_slots.h"
 *     extern "C" __global__ void my_rmsnorm(EVALBOT_RMSNORM_ARGS) { ... }
 *
 * Rules for every slot (reference_runtime/slots.py carries the same table for the manifest checker):
 *
 * - Launches. A slot may chain up to its max_launches kernels (split-K attention: partial then
 *   combine). EVERY launch of a slot receives the slot's full argument list, in order, on one
 *   stream: launch i+1 sees everything launch i wrote. Grid, block and dynamic shared memory come
 *   from the manifest's expressions of the slot's shape symbols, evaluated once at graph capture.
 * - CUDA-graph safety. One captured graph replays for every token, so a kernel never depends on
 *   host data that changes per token: the current position is *pos (device memory, 0-based; the
 *   sequence length is *pos + 1). No host synchronisation, no allocation, no printf in timed code.
 *   n_ctx is the KV capacity, not the length. Shape symbols are capture-time constants.
 * - Dtypes. Activations are f32. Weights are GGML blocks exactly as stored in the GGUF file
 *   (see EVALBOT_TYPE_*); a weight row is n_cols / block_elems consecutive blocks, rows are
 *   consecutive (row-major). The KV cache is fp16 (see KV CACHE below). Ids are int32.
 * - Alignment. Every pointer argument is 16-byte aligned (scratch: 256). Weight *blocks* are only
 *   aligned to their size's largest power-of-two divisor: Q4_K (144 B) blocks are 16-byte aligned,
 *   Q6_K (210 B), Q8_0 (34 B) and Q5_0 (22 B) blocks only 2-byte aligned.
 * - Vector widths. n_embd, n_ff, n_ff_exp, n_cols and head_dim are multiples of 4 (float4 loads are
 *   legal on every f32 activation vector); quantised n_cols are whole blocks.
 * - Aliasing. Pointers marked __restrict__ never alias any other argument; rmsnorm's x and y may
 *   be the same buffer.
 * - Scratch. Scratch pointers are SCRATCH_ALIGN-aligned device memory of the size the manifest
 *   declares; their contents are undefined (poisoned) on entry to the slot's first launch.
 * - Outputs are written in full: every element of every output, every call.
 * - Programmatic dependent launch (sm_90+). A launch declared `pdl = true` in the manifest (every
 *   baseline launch is) may be scheduled while the previous launch on the stream is still running.
 *   Such a kernel must execute EVALBOT_GRID_WAIT() before its first global-memory access other
 *   than reading weights (shape arguments and weight pointers may be used before it): it returns
 *   once every earlier launch has finished and its writes are visible. EVALBOT_GRID_LAUNCH_NEXT()
 *   lets the next launch be scheduled once every block of this one has executed it; call it after
 *   the wait. A launch not declared pdl starts after the previous one has finished, whatever its
 *   code does. Declaring pdl without waiting first races with the previous launch: the results are
 *   wrong or vary from run to run, and the gates REJECT them.
 *
 * KV CACHE. Per layer two fp16 arrays k_cache and v_cache of [n_head_kv][n_ctx][head_dim]
 * (head-major: one KV head's keys are contiguous, position p of head h at ((h * n_ctx) + p) *
 * head_dim). Position p is stored at index p on every layer, sliding-window layers included
 * (they simply read only the last n_swa positions). K is stored after its norm and RoPE, V after
 * its norm (Gemma 4); attention applies no further transform but the scale.
 */
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

#define EVALBOT_ABI_VERSION 0

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define EVALBOT_GRID_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define EVALBOT_GRID_LAUNCH_NEXT() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define EVALBOT_GRID_WAIT() ((void)0)
#define EVALBOT_GRID_LAUNCH_NEXT() ((void)0)
#endif
/* Both, in order: the first statement of every baseline kernel. */
#define EVALBOT_GRID_ENTER() \
    do {                      \
        EVALBOT_GRID_WAIT();  \
        EVALBOT_GRID_LAUNCH_NEXT(); \
    } while (0)

/* GGML type ids, passed to slots that take several weight types (moe_ffn_*). */
#define EVALBOT_TYPE_F32 0
#define EVALBOT_TYPE_Q5_0 6
#define EVALBOT_TYPE_Q8_0 8
#define EVALBOT_TYPE_Q4_K 12
#define EVALBOT_TYPE_Q6_K 14

/* @slots gemv_q4_k gemv_q5_0 gemv_q6_k gemv_q8_0 gemv_f32
 * y[n_rows] = W[n_rows, n_cols] . x[n_cols]. W is in the slot's weight type. Every dense projection
 * (attention q/k/v/o, dense FFN gate/up/down, the MoE router) is one call. */
#define EVALBOT_GEMV_ARGS \
    const void* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int n_rows, int n_cols

/* @slots embed_q4_k embed_q5_0 embed_q6_k embed_q8_0 embed_f32
 * out[n_embd] = dequant(table[*token]) * scale. table is [n_vocab, n_embd]; scale is sqrt(n_embd)
 * on Gemma, 1 elsewhere. *token is in [0, n_vocab) (the runtime checks tokens before upload). */
#define EVALBOT_EMBED_ARGS \
    const void* __restrict__ table, const int* __restrict__ token, float* __restrict__ out, int n_embd, \
    int n_vocab, float scale

/* @slots lm_head_q4_k lm_head_q5_0 lm_head_q6_k lm_head_q8_0 lm_head_f32
 * z = W[n_vocab, n_embd] . x; logits = softcap > 0 ? softcap * tanh(z / softcap) : z. */
#define EVALBOT_LM_HEAD_ARGS \
    const void* __restrict__ w, const float* __restrict__ x, float* __restrict__ logits, int n_vocab, \
    int n_embd, float softcap

/* @slots rmsnorm
 * y = x / sqrt(mean(x^2) + eps) * w over n_embd elements. y may alias x. Norms without a weight
 * (Gemma 4's router input) get a weight vector from the loader. */
#define EVALBOT_RMSNORM_ARGS \
    const float* x, const float* __restrict__ w, float* y, int n_embd, float eps

/* @slots rmsnorm_residual
 * h += x; y = rmsnorm(h) * w (the pre-norm residual add of Qwen, fused with the next norm). */
#define EVALBOT_RMSNORM_RESIDUAL_ARGS \
    float* __restrict__ h, const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, \
    int n_embd, float eps

/* @slots rmsnorm_post_add
 * h = (h + rmsnorm(x) * w) * out_scale (Gemma's post-attention / post-FFN norm; out_scale is
 * Gemma 4's layer_output_scale on a layer's last add, 1 elsewhere). x may be clobbered. */
#define EVALBOT_RMSNORM_POST_ADD_ARGS \
    float* __restrict__ h, float* __restrict__ x, const float* __restrict__ w, int n_embd, float eps, \
    float out_scale

/* @slots qk_norm_rope
 * In place, per head: q[n_head][head_dim] = rope(rmsnorm(q) * q_norm); k[n_head_kv][head_dim] =
 * rope(rmsnorm(k) * k_norm); and, when v is not NULL (Gemma 4), v[n_head_kv][head_dim] =
 * rmsnorm(v) without a weight, no RoPE. RoPE is NeoX-style on the first n_rot elements of a head:
 * element i < n_rot/2 pairs with i + n_rot/2, angle = *pos * freq_scale * freq_base^(-2i/n_rot)
 * / freq_factors[i] (freq_factors NULL: 1); elements >= n_rot pass through. */
#define EVALBOT_QK_NORM_ROPE_ARGS \
    float* __restrict__ q, float* __restrict__ k, float* __restrict__ v, const float* __restrict__ q_norm, \
    const float* __restrict__ k_norm, const float* __restrict__ freq_factors, const int* __restrict__ pos, \
    int n_head, int n_head_kv, int head_dim, int n_rot, float freq_base, float freq_scale, float eps

/* @slots kv_append
 * Store this position's k and v ([n_head_kv][head_dim] f32) at position *pos of the layer's fp16
 * caches (layout: KV CACHE above), round-to-nearest. Positions >= n_ctx are not written. */
#define EVALBOT_KV_APPEND_ARGS \
    const float* __restrict__ k, const float* __restrict__ v, __half* __restrict__ k_cache, \
    __half* __restrict__ v_cache, const int* __restrict__ pos, int n_head_kv, int head_dim, int n_ctx

/* @slots attn_decode_hd128 attn_decode_hd256 attn_decode_swa_hd256 attn_decode_hd512
 * out[h][:] = softmax_j(scale * q[h] . K[g][j]) . V[g][j] for query head h < n_head, KV head
 * g = h / (n_head / n_head_kv), over positions j in [lo, *pos] where lo = 0, or
 * max(0, *pos + 1 - n_swa) when n_swa > 0 (the swa slots; full-attention slots get n_swa = 0).
 * head_dim is the slot's. scratch: see the slot's scratch rule; a split-K partial launch may leave
 * per-split results there for the combine launch. */
#define EVALBOT_ATTN_ARGS \
    const float* __restrict__ q, const __half* __restrict__ k_cache, const __half* __restrict__ v_cache, \
    float* __restrict__ out, void* __restrict__ scratch, const int* __restrict__ pos, int n_head, \
    int n_head_kv, int n_ctx, int n_swa, float scale

/* @slots glu_swiglu glu_geglu
 * y = act(gate) * up over n_ff elements; act is silu (swiglu) or tanh-approximated gelu (geglu). */
#define EVALBOT_GLU_ARGS \
    const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ y, int n_ff

/* @slots moe_router_topk
 * p = softmax(logits[n_expert]); ids = the n_expert_used largest p (ties: lower id first; order of
 * ids otherwise free); weights[i] = p[ids[i]] / max(sum of chosen p, 2^-14), times weights_scale
 * unless it is 0 or 1, times expert_scale[ids[i]] when expert_scale is not NULL (Gemma 4's
 * per-expert output scale, folded into the routing weight). n_expert <= 1024. */
#define EVALBOT_MOE_ROUTER_ARGS \
    const float* __restrict__ logits, int* __restrict__ ids, float* __restrict__ weights, \
    const float* __restrict__ expert_scale, int n_expert, int n_expert_used, float weights_scale

/* @slots moe_ffn_swiglu moe_ffn_geglu
 * out[n_embd] = sum_i weights[i] * down_e(act(gate_e . x) * (up_e . x)), e = ids[i], i < n_expert_used.
 * Expert e's gate matrix [n_ff_exp, n_embd] starts at (const char*)w_gate + e * stride_gate bytes
 * (likewise up; down is [n_embd, n_ff_exp]); type_* are EVALBOT_TYPE_* ids. act as in glu_*. */
#define EVALBOT_MOE_FFN_ARGS \
    const float* __restrict__ x, const int* __restrict__ ids, const float* __restrict__ weights, \
    const void* __restrict__ w_gate, const void* __restrict__ w_up, const void* __restrict__ w_down, \
    long long stride_gate, long long stride_up, long long stride_down, int type_gate, int type_up, \
    int type_down, float* __restrict__ out, void* __restrict__ scratch, int n_embd, int n_ff_exp, \
    int n_expert, int n_expert_used
