// temporal_conv1d GEMMs as TMA + wgmma implicit-GEMM kernels on Hopper tensor cores (sm_90a):
// the channels_last forward (and the input gradient, which is a forward of the transposed conv) and
// the NCHW weight gradient. DESIGN.md §1b; the cuBLAS path (temporal_conv.cu) covers every other
// case. Nothing of x, y, dy is copied, padded or rearranged: TMA reads boxes of them in place.
//
// Forward, channels_last (ConvFwdTile): a frame is (HW x C) row-major, a clip's F frames adjacent:
//   y[b, r, o] = bias[o] + sum_{t, c} x[b, r + (t - K/2) * HW, c] * w[o, t, c]
// for clip b, row r < F*HW of the clip (frame r / HW), o < C_out, c < C_in; rows whose source
// frame lies outside the clip read zeros (the conv's zero padding). The reduction runs over
// (tap, 64-channel block) stages; a tile skips the taps none of its rows uses.
//   A: x seen by TMA as (clips, F*HW, C_in): a stage is the box of kBM rows at r0 + (t - K/2)*HW,
//      and TMA fills rows outside [0, F*HW) of the clip with zeros, which is exactly the padding.
//   B: the weight in OTR layout (C_out, K, C_in): a stage is the box (BN outputs, tap t, 64 chans).
// Weight gradient, NCHW (DweightNchwTile): frames are (C x HW) pixel-contiguous blocks, so dy and
// x frames are both K-major operands of a GEMM reducing over pixels; see the policy.
//
// Mainloop (wgmma_gemm_kernel): three warpgroups. Warpgroup 0 is the producer (one thread issues
// the TMA loads into a ring of kStages stages, each guarded by a "full" and an "empty" mbarrier);
// warpgroups 1 and 2 each own 128 rows (two m64 wgmma sub-tiles) of the kBM x BN tile and release a
// stage once the wgmma that read it has retired. Both operands land K-major with the 128-byte
// swizzle that the wgmma descriptors name. The policy's store() writes the fp32 accumulator.
#include <cstdint>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include "conv_internal.h"
#include "vec_io.cuh"
#include "wgmma_sm90.cuh"

namespace tfaa {
namespace {

constexpr int kConsumers = 2;                      // consumer warpgroups
constexpr int kThreads = 128 * (kConsumers + 1);   // + the producer warpgroup
constexpr int kMT = 2;                             // m64 sub-tiles per consumer warpgroup
constexpr int kBM = 64 * kMT * kConsumers;         // rows of a CTA tile (A's rows)
constexpr int kBK = 64;                            // channels of a stage: one 128-byte swizzled row
constexpr int kSmemLimit = 227 * 1024;
[[maybe_unused]] constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // setmaxnreg: 128*40 + 256*232 <= 64K

template <int BN>
struct TileCfg {
  static constexpr int kABytes = kBM * kBK * 2;
  static constexpr int kStageBytes = kABytes + BN * kBK * 2;
  static constexpr int kStages = (kSmemLimit - 1024 - 256) / kStageBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes + 16 * kStages + 1024;  // + mbarriers, alignment
  static_assert(kStages >= 2, "tile too large for the pipeline");
  static_assert(kBM * (BN + 8) * 2 <= kStages * kStageBytes, "epilogue staging must fit");
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

// TMA: the box of `map` at coordinates (c0, c1, c2) into shared memory at dst; completes on bar.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
      ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
}

// Descriptor of a K-major operand tile in shared memory with the 128-byte swizzle: rows of 128
// bytes, 8-row groups 1024 bytes apart (stride byte offset), tile base 1024-byte aligned.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <typename T>
__device__ __forceinline__ float bias_at(const void* bias, int o, int c_out) {
  return bias == nullptr || o >= c_out ? 0.f : to_f(static_cast<const T*>(bias)[o]);
}

// Where accumulator element i (of sub-tile s) of consumer thread ctid lies in the CTA tile: the
// wgmma fragment layout (wgmma_sm90.cuh) of consumer warpgroup cw's m64 sub-tile s. Elements i and
// i + 1 (i even) are adjacent columns of one row.
__device__ __forceinline__ int frag_row(int cw, int s, int ctid, int i) {
  return (cw * kMT + s) * 64 + ((ctid % 128) / 32) * 16 + (ctid % 32) / 4 + 8 * ((i / 2) % 2);
}
__device__ __forceinline__ int frag_col(int ctid, int i) { return (i / 4) * 8 + (ctid % 4) * 2; }

// ---------------------------------------------------------------- the two GEMMs (tile policies)
// A policy decodes its CTA's tile from blockIdx.x, says how many stages its reduction has (nk),
// issues the two TMA boxes of stage ks, and stores the fp32 accumulator tile.

// Forward, channels_last: A = x rows of a clip (map over (clips, F*HW, C_in)), B = OTR weight (map
// over (C_out, K, C_in)), out = y (clips, F*HW, C_out) in T, plus the bias.
struct ConvFwdTile {
  struct Args {
    const void* bias;  // (C_out,) or nullptr
    void* y;
    int clip_rows;     // F*HW
    int hw, num_frames, taps, c_in, c_out, tiles_per_clip;
  };
  static constexpr int kBN = 160;

  int n0, clip, r0, t_lo, cblocks, nk, pad;

  __device__ ConvFwdTile(const Args& a, int block) {
    const int n_tiles = (a.c_out + kBN - 1) / kBN;
    n0 = (block % n_tiles) * kBN;
    const int rest = block / n_tiles;
    clip = rest / a.tiles_per_clip;
    r0 = (rest % a.tiles_per_clip) * kBM;
    pad = a.taps / 2;
    // taps some row of the tile uses: frame f reads taps [max(0, pad - f), min(K, F + pad - f))
    const int f_first = r0 / a.hw;
    const int f_last = ((r0 + kBM < a.clip_rows ? r0 + kBM : a.clip_rows) - 1) / a.hw;
    t_lo = pad - f_last > 0 ? pad - f_last : 0;
    const int t_hi = a.num_frames + pad - f_first < a.taps ? a.num_frames + pad - f_first : a.taps;
    cblocks = (a.c_in + kBK - 1) / kBK;
    nk = t_hi > t_lo ? (t_hi - t_lo) * cblocks : 0;
  }

  __device__ void load(const Args& a, int ks, uint32_t sa, uint32_t sb, uint32_t bar,
                       const CUtensorMap* map_a, const CUtensorMap* map_b) const {
    const int t = t_lo + ks / cblocks, c = (ks % cblocks) * kBK;
    tma_load_3d(sa, map_a, c, r0 + (t - pad) * a.hw, clip, bar);  // rows outside the clip: zeros
    tma_load_3d(sb, map_b, c, t, n0, bar);
  }

  // Through shared memory (the pipeline's, free once every MMA retired): fragments + bias -> T,
  // then 16-byte row-contiguous stores.
  template <typename T>
  __device__ void store(const Args& a, float (&acc)[kMT][kBN / 2], unsigned char* smem, int cw, int ctid) const {
    constexpr int BN = kBN;
    constexpr int kLd = BN + 8;  // staging row stride (elements): conflict-free fragment writes
    asm volatile("bar.sync 1, %0;\n" ::"n"(128 * kConsumers) : "memory");
    T* stage = reinterpret_cast<T*>(smem);
#pragma unroll
    for (int i = 0; i < BN / 2; i += 2) {
      const int col = frag_col(ctid, i);
      const float b0 = bias_at<T>(a.bias, n0 + col, a.c_out);
      const float b1 = bias_at<T>(a.bias, n0 + col + 1, a.c_out);
#pragma unroll
      for (int s = 0; s < kMT; ++s) {
        const int row = frag_row(cw, s, ctid, i);
        *reinterpret_cast<uint32_t*>(stage + row * kLd + col) = pack2<T>(acc[s][i] + b0, acc[s][i + 1] + b1);
      }
    }
    asm volatile("bar.sync 1, %0;\n" ::"n"(128 * kConsumers) : "memory");
    T* __restrict__ y = static_cast<T*>(a.y) + static_cast<int64_t>(clip) * a.clip_rows * a.c_out;
    constexpr int kChunks = BN / 8;
    for (int idx = ctid; idx < kBM * kChunks; idx += 128 * kConsumers) {
      const int r = idx / kChunks, c = (idx % kChunks) * 8;
      if (r0 + r < a.clip_rows && n0 + c < a.c_out)
        *reinterpret_cast<uint4*>(y + static_cast<int64_t>(r0 + r) * a.c_out + n0 + c) =
            *reinterpret_cast<const uint4*>(stage + r * kLd + c);
    }
  }
};

// Weight gradient, NCHW: dW_t[co, ci] = sum over (clip, output frame f using tap t, pixel p) of
// dy[n, co, p] * x[n + t - K/2, ci, p], n = clip*F + f. A = dy frames (map over (N, C_out, HW)),
// B = x frames (map over (N, C_in, HW)): both pixel-contiguous, i.e. K-major, read in place. A CTA
// owns (tap, split, C_out tile, C_in tile) and reduces the split's share of the tap's (clip, frame)
// items, a stage being 64 pixels of one item; it stores fp32 partials ws[t][split] (C_out, C_in),
// which conv_dweight_reduce sums in a fixed order.
struct DweightNchwTile {
  struct Args {
    float* ws;  // (K, max_slots, C_out, C_in)
    int64_t max_slots;
    TfaaConvShape s;
    int splits;
  };
  static constexpr int kBN = 160;

  int m0, n0, tap, split, fa, nf, item0, pblocks, nk;

  __device__ DweightNchwTile(const Args& a, int block) {
    const int n_tiles = static_cast<int>((a.s.c_in + kBN - 1) / kBN);
    const int m_tiles = static_cast<int>((a.s.c_out + kBM - 1) / kBM);
    n0 = (block % n_tiles) * kBN;
    int rest = block / n_tiles;
    m0 = (rest % m_tiles) * kBM;
    rest /= m_tiles;
    tap = rest % static_cast<int>(a.s.taps);
    split = rest / static_cast<int>(a.s.taps);
    int64_t first, end;  // output frames [first, end) of a clip read tap `tap`
    tap_frames(a.s, tap, first, end);
    fa = static_cast<int>(first);
    nf = static_cast<int>(end - first);
    const int64_t items = a.s.batch_frames / a.s.num_frames * nf;  // (clip, frame) pairs
    item0 = static_cast<int>(items * split / a.splits);
    const int item1 = static_cast<int>(items * (split + 1) / a.splits);
    pblocks = static_cast<int>((a.s.hw + kBK - 1) / kBK);
    nk = (item1 - item0) * pblocks;
  }

  __device__ void load(const Args& a, int ks, uint32_t sa, uint32_t sb, uint32_t bar,
                       const CUtensorMap* map_a, const CUtensorMap* map_b) const {
    const int item = item0 + ks / pblocks, p = (ks % pblocks) * kBK;
    const int n = (item / nf) * static_cast<int>(a.s.num_frames) + fa + item % nf;
    tma_load_3d(sa, map_a, p, m0, n, bar);  // pixels past HW, channels past C: zeros
    tma_load_3d(sb, map_b, p, n0, n + tap - static_cast<int>(a.s.taps / 2), bar);
  }

  template <typename T>
  __device__ void store(const Args& a, float (&acc)[kMT][kBN / 2], unsigned char*, int cw, int ctid) const {
    const int64_t c_in = a.s.c_in, c_out = a.s.c_out;
    float* ws = a.ws + (static_cast<int64_t>(tap) * a.max_slots + split) * c_out * c_in;
#pragma unroll
    for (int i = 0; i < kBN / 2; i += 2) {
      const int ci = n0 + frag_col(ctid, i);
#pragma unroll
      for (int s = 0; s < kMT; ++s) {
        const int co = m0 + frag_row(cw, s, ctid, i);
        if (co < c_out && ci < c_in) {
          float* dst = ws + co * c_in + ci;
          if (ci + 1 < c_in && c_in % 2 == 0) {
            *reinterpret_cast<float2*>(dst) = make_float2(acc[s][i], acc[s][i + 1]);
          } else {
            dst[0] = acc[s][i];
            if (ci + 1 < c_in) dst[1] = acc[s][i + 1];
          }
        }
      }
    }
  }
};

// ---------------------------------------------------------------- the TMA + wgmma mainloop
template <typename T, class Tile>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_gemm_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                      const typename Tile::Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BN = Tile::kBN;
  using Cfg = TileCfg<BN>;
  constexpr int kStages = Cfg::kStages;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
  const uint32_t smem0 = smem_addr(smem);
  const uint32_t full0 = smem0 + kStages * Cfg::kStageBytes;  // kStages mbarriers, then the empty ones
  const uint32_t empty0 = full0 + 8 * kStages;
  const int tid = threadIdx.x, wg = tid / 128;
  const Tile tile(a, static_cast<int>(blockIdx.x));
  const int nk = tile.nk;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, kConsumers * 4);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {  // producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    if (tid == 0) {
      for (int ks = 0; ks < nk; ++ks) {
        const int slot = ks % kStages;
        if (ks >= kStages) mbar_wait(empty0 + 8 * slot, ((ks / kStages) - 1) & 1);
        const uint32_t full = full0 + 8 * slot;
        mbar_expect_tx(full, Cfg::kStageBytes);
        const uint32_t sa = smem0 + slot * Cfg::kStageBytes;
        tile.load(a, ks, sa, sa + Cfg::kABytes, full, &map_a, &map_b);
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int cw = wg - 1;  // consumer warpgroup: rows [cw * 64 * kMT, (cw + 1) * 64 * kMT)
  const int lane = tid % 32;
  float acc[kMT][BN / 2];
#pragma unroll
  for (int s = 0; s < kMT; ++s)
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[s][i] = 0.f;

  for (int ks = 0; ks < nk; ++ks) {
    const int slot = ks % kStages;
    mbar_wait(full0 + 8 * slot, (ks / kStages) & 1);
    const uint32_t sa = smem0 + slot * Cfg::kStageBytes;
    const uint32_t sb = sa + Cfg::kABytes;
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
#pragma unroll
      for (int s = 0; s < kMT; ++s)
        sm90::Wgmma<T, BN>::mma(acc[s], smem_desc(sa + (cw * kMT + s) * 64 * 128 + kk * 32),
                                smem_desc(sb + kk * 32), 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    // the previous stage's MMAs have retired: hand its slot back to the producer
    if (ks > 0 && lane == 0) mbar_arrive(empty0 + 8 * ((ks - 1) % kStages));
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  tile.template store<T>(a, acc, smem, cw, tid - 128);
#endif
}

__global__ void sm90a_probe_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}

// cuTensorMapEncodeTiled from the driver, looked up once through the runtime (no -lcuda).
PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess)
#else
    if (cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q) != cudaSuccess)
#endif
      p = nullptr;
    cudaGetLastError();
    return q == cudaDriverEntryPointSuccess ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p) : nullptr;
  }();
  return fn;
}

// A rank-3 tensor map over a 16-bit tensor of dims {d0 (contiguous), d1, d2} (elements), boxes of
// {b0, b1, b2} stored with the 128-byte swizzle, out-of-range elements read as zero.
bool make_map(CUtensorMap* map, int dtype, const void* base, uint64_t d0, uint64_t d1, uint64_t d2,
              uint32_t b0, uint32_t b1, uint32_t b2) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {d0, d1, d2};
  const cuuint64_t strides[2] = {d0 * 2, d0 * d1 * 2};  // bytes, of dims 1 and 2
  const cuuint32_t box[3] = {b0, b1, b2};
  const cuuint32_t elem[3] = {1, 1, 1};
  return encode(map, dtype == TFAA_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3,
                const_cast<void*>(base), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename T, class Tile>
cudaError_t launch(const CUtensorMap& map_a, const CUtensorMap& map_b, const typename Tile::Args& a,
                   int64_t ctas, cudaStream_t stream) {
  constexpr int BN = Tile::kBN;
  auto kernel = wgmma_gemm_kernel<T, Tile>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, TileCfg<BN>::kSmemBytes);
  if (e != cudaSuccess) return e;
  if (ctas > 0x7fffffff) return cudaErrorInvalidValue;
  if (ctas == 0) return cudaSuccess;
  kernel<<<static_cast<unsigned>(ctas), kThreads, TileCfg<BN>::kSmemBytes, stream>>>(map_a, map_b, a);
  return cudaGetLastError();
}

int num_sms() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    n = 132;
  cudaGetLastError();
  return n > 0 ? n : 132;
}

}  // namespace

// Whether the device runs this build's sm_90a code (the fatbinary may also carry plain sm_90 code,
// which has no wgmma): answered once per device by a probe kernel, never while `stream` is being
// captured (then false for this call).
bool conv_wgmma_device_ok(cudaStream_t stream) {
  constexpr int kMaxDevices = 64;
  static int known[kMaxDevices] = {};  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  if (known[dev] != 0) return known[dev] == 1;
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) return false;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return false;
  int answer = 2;
  if (prop.major == 9 && prop.minor == 0) {
    int* flag = nullptr;
    int host = 0;
    if (cudaMalloc(&flag, sizeof(int)) == cudaSuccess) {
      sm90a_probe_kernel<<<1, 1, 0, stream>>>(flag);
      if (cudaGetLastError() == cudaSuccess &&
          cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
          cudaStreamSynchronize(stream) == cudaSuccess && host == 1)
        answer = 1;
      cudaFree(flag);
    }
    cudaGetLastError();  // a failed probe means "no", not a sticky error for the next launch
  }
  known[dev] = answer;
  return answer == 1;
}

bool conv_wgmma_shape_ok(int dtype, const TfaaConvShape& s) {
  // TMA coordinates are int32: a clip's rows F*HW, shifted by up to K/2 frames, must fit
  const int64_t clip_rows = s.num_frames * s.hw;
  return s.channels_last && (dtype == TFAA_BF16 || dtype == TFAA_F16) && s.c_in % 8 == 0 &&
         s.c_out % 8 == 0 && s.c_in > 0 && s.c_in < (1 << 24) && s.c_out < (1 << 24) && s.hw > 0 &&
         s.num_frames >= 1 && s.taps < 256 && clip_rows + s.taps * s.hw < 0x7fffffff &&
         s.batch_frames / s.num_frames < 0x7fffffff;
}

bool conv_wgmma_pointers_ok(const void* x, const void* wk, const void* bias, const void* y) {
  auto aligned = [](const void* p, uintptr_t n) { return (reinterpret_cast<uintptr_t>(p) & (n - 1)) == 0; };
  return aligned(x, 16) && aligned(wk, 16) && aligned(y, 16) && (bias == nullptr || aligned(bias, 2));
}

cudaError_t conv_cl_wgmma_fwd(int dtype, const void* x, const void* wk, const void* bias, void* y,
                              const TfaaConvShape& s, cudaStream_t stream) {
  using Tile = ConvFwdTile;
  Tile::Args a;
  a.bias = bias;
  a.y = y;
  a.clip_rows = static_cast<int>(s.num_frames * s.hw);
  a.hw = static_cast<int>(s.hw);
  a.num_frames = static_cast<int>(s.num_frames);
  a.taps = static_cast<int>(s.taps);
  a.c_in = static_cast<int>(s.c_in);
  a.c_out = static_cast<int>(s.c_out);
  a.tiles_per_clip = (a.clip_rows + kBM - 1) / kBM;
  const int64_t clips = s.batch_frames / s.num_frames;
  if (clips == 0 || a.c_out == 0) return cudaSuccess;
  CUtensorMap map_x, map_w;
  if (!make_map(&map_x, dtype, x, a.c_in, a.clip_rows, clips, kBK, kBM, 1) ||
      !make_map(&map_w, dtype, wk, a.c_in, a.taps, a.c_out, kBK, 1, Tile::kBN))
    return cudaErrorInvalidValue;
  const int64_t ctas = clips * a.tiles_per_clip * ((a.c_out + Tile::kBN - 1) / Tile::kBN);
  return dtype == TFAA_BF16 ? launch<__nv_bfloat16, Tile>(map_x, map_w, a, ctas, stream)
                            : launch<__half, Tile>(map_x, map_w, a, ctas, stream);
}

bool conv_wgmma_dweight_shape_ok(int dtype, const TfaaConvShape& s) {
  // TMA: pixel rows 16-byte strided (HW % 8), int32 coordinates
  return !s.channels_last && (dtype == TFAA_BF16 || dtype == TFAA_F16) && s.hw % 8 == 0 && s.hw > 0 &&
         s.hw < (1 << 30) && s.c_in > 0 && s.c_out > 0 && s.c_in < (1 << 24) && s.c_out < (1 << 24) &&
         s.num_frames >= 1 && s.taps < 256 && s.batch_frames < 0x7fffffff;
}

int64_t conv_wgmma_dweight_splits(const TfaaConvShape& s, int64_t max_slots) {
  const int64_t ctas = ((s.c_out + kBM - 1) / kBM) * ((s.c_in + DweightNchwTile::kBN - 1) / DweightNchwTile::kBN) * s.taps;
  const int64_t clips = s.batch_frames / s.num_frames;
  int64_t splits = num_sms() / (ctas > 0 ? ctas : 1);  // fill one wave
  if (splits > clips * s.num_frames) splits = clips * s.num_frames;
  if (splits > max_slots) splits = max_slots;
  return splits < 1 ? 1 : splits;
}

cudaError_t conv_nchw_wgmma_dweight(int dtype, const void* dy, const void* x, float* ws, int64_t max_slots,
                                    int64_t splits, const TfaaConvShape& s, cudaStream_t stream) {
  using Tile = DweightNchwTile;
  Tile::Args a;
  a.ws = ws;
  a.max_slots = max_slots;
  a.s = s;
  a.splits = static_cast<int>(splits);
  CUtensorMap map_dy, map_x;
  if (!make_map(&map_dy, dtype, dy, s.hw, s.c_out, s.batch_frames, kBK, kBM, 1) ||
      !make_map(&map_x, dtype, x, s.hw, s.c_in, s.batch_frames, kBK, Tile::kBN, 1))
    return cudaErrorInvalidValue;
  const int64_t ctas = ((s.c_out + kBM - 1) / kBM) * ((s.c_in + Tile::kBN - 1) / Tile::kBN) * s.taps * splits;
  return dtype == TFAA_BF16 ? launch<__nv_bfloat16, Tile>(map_dy, map_x, a, ctas, stream)
                            : launch<__half, Tile>(map_dy, map_x, a, ctas, stream);
}

}  // namespace tfaa
