// Element conversion and VEC-wide loads/stores used by the tfaa kernels. CUDA headers only.
// VEC * sizeof(T) is either 16 (one 16-byte access; the caller checked 16-byte alignment of the
// address) or sizeof(T) (VEC == 1, the scalar fallback).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace tfaa {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Read-only (non-coherent) load of VEC elements at p into fp32.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float (&out)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = to_f(e[i]);
  } else {
    static_assert(VEC == 1, "load_vec: VEC must be 1 or fill 16 bytes");
    out[0] = to_f(p[0]);
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&in)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    uint4 u;
    T* e = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int i = 0; i < VEC; ++i) e[i] = from_f<T>(in[i]);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
    static_assert(VEC == 1, "store_vec: VEC must be 1 or fill 16 bytes");
    p[0] = from_f<T>(in[0]);
  }
}

// Sum over an aligned group of `group` (a power of two <= 32) consecutive lanes of a warp. Every
// lane of the warp must call it with the same `group`.
__device__ __forceinline__ float group_sum(float x, int group) {
  for (int o = group >> 1; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

}  // namespace tfaa
