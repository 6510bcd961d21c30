// y = silu(gate) * up, elementwise, vectorised by float4 (n_ff is a multiple of 4 in every basket model).
extern "C" __global__ void glu_swiglu(const float4* __restrict__ gate, const float4* __restrict__ up,
                                      float4* __restrict__ y, int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    const float4 g = gate[i], u = up[i];
    y[i] = make_float4(g.x / (1.0f + __expf(-g.x)) * u.x, g.y / (1.0f + __expf(-g.y)) * u.y,
                       g.z / (1.0f + __expf(-g.z)) * u.z, g.w / (1.0f + __expf(-g.w)) * u.w);
}
