/* Runtime-internal kernels (not slots): the step's prologue and the logits recorder. They make the
 * captured graph self-driving: nothing on the host changes between replays. */
#include "common.h"

/* Single thread: this step's position is the step counter; the input token is the teacher-forced
 * sequence's entry at that position (clamped to the sequence). */
extern "C" __global__ void rt_prologue(const int* tokens, int n_tokens, int* counter, int* pos, int* token) {
    EVALBOT_GRID_ENTER();
    const int c = *counter;
    *pos = c;
    *token = tokens[min(c, n_tokens - 1)];
    *counter = c + 1;
}

/* Copies this step's logits into row (*pos mod capacity) of the history ring. */
extern "C" __global__ void rt_record(const float* logits, float* history, const int* pos, int n_vocab, int capacity) {
    EVALBOT_GRID_ENTER();
    float* row = history + (size_t)(*pos % capacity) * n_vocab;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_vocab; i += gridDim.x * blockDim.x) row[i] = logits[i];
}

/* dst = src, nbytes a multiple of 4 (Gemma 4's V = K on layers without a V projection). */
extern "C" __global__ void rt_copy(float* dst, const float* src, long long nbytes) {
    EVALBOT_GRID_ENTER();
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < nbytes / 4; i += (long long)gridDim.x * blockDim.x)
        dst[i] = src[i];
}
