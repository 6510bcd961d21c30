/* Deliberately broken: spins until an input element equals a value it never holds (volatile, so
 * the compiler cannot prove the loop endless and drop it). */
#include "evalbot_slots.h"

extern "C" __global__ void rmsnorm_hang(EVALBOT_RMSNORM_ARGS) {
    const volatile float* v = x;
    while (v[0] != 1.0e30f) {
    }
    y[threadIdx.x] = w[threadIdx.x];
}
