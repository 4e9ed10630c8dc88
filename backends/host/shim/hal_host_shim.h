// hal_host_shim.h: the CUDA / HIP device API on an x86-64 CPU, so that the C++ text hal
// renders for a GPU compiles and runs unmodified on the host (hal.backends.host).
//
// Written for hal from the CUDA C++ Programming Guide, the PTX ISA (shfl.sync, cvt) and the
// HIP programming guide; no code from HIP-CPU, Ocelot or other emulators.
//
// Model: a launch runs its blocks one after another; each thread of a block is a fiber on
// its own stack (hal_host_runtime.h, a hand-written x86-64 context switch). A fiber runs
// until it reaches __syncthreads() or a warp shuffle, so:
//   * __syncthreads() is a real barrier: no thread passes until every live thread of the
//     block has arrived;
//   * shuffles are lock-step exchanges among the lanes of one warp/wavefront of
//     HAL_WARP_SIZE lanes (32 CUDA, 64 CDNA), with the width rules of PTX shfl.sync and
//     HIP's __shfl_*; reading a lane that did not take part is an error, not garbage;
//   * __shared__ variables are block-scope thread_locals (implicitly static: one copy,
//     shared by the block's fibers); dynamic shared memory is the array hal_smem;
//   * atomics are plain read-modify-writes (fibers never interleave inside one).
// Types: __half via _Float16 (RNE conversions), bf16 and fp8 by exact integer/float code.
#pragma once
#ifndef HAL_HOST_SHIM
#define HAL_HOST_SHIM 1
#endif
#ifndef HAL_WARP_SIZE
#error "hal host shim: define HAL_WARP_SIZE (the spec's warp / wavefront width)"
#endif

#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
// __shared__ is thread_local: a block-scope thread_local is implicitly static, so all
// fibers of a block (one OS thread) share one copy, and `extern __shared__ unsigned char
// hal_smem[]` (dynamic shared memory) is a valid redeclaration of the array defined below.
#define __shared__ thread_local
#define __constant__ static const

#include "hal_host_runtime.h"

// Dynamic shared memory: one array, larger than any spec's per-block limit (228 KB on H100).
// C linkage: the block-scope redeclaration sits inside an extern "C" kernel.
extern "C" {
alignas(16) thread_local unsigned char hal_smem[256 * 1024];
}

#define threadIdx (::hal_host::g_rt.cur->tid)
#define blockIdx (::hal_host::g_rt.block_idx)
#define blockDim (::hal_host::g_rt.block_dim)
#define gridDim (::hal_host::g_rt.grid_dim)
#define warpSize HAL_WARP_SIZE

static inline void __syncthreads() { ::hal_host::block_barrier(); }
static inline void __syncwarp(unsigned = 0xffffffffu) { ::hal_host::warp_sync(); }
static inline void __threadfence() {}
static inline void __threadfence_block() {}

// ------------------------------------------------------------------ bit casts
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
static inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }

// ------------------------------------------------------------------ math with CUDA/HIP names
// The CUDA / HIP math API that hal's sources use, declared here (no <cmath>: it would
// triple the compile time of every kernel). The C99 names resolve to the host libm; the
// GPU-only ones are defined. Accuracy: glibc's (see the host backend's DIFFERENCES).
#define HAL_LIBM1(name) extern "C" float name##f(float) noexcept; extern "C" double name(double) noexcept;
#define HAL_LIBM2(name) extern "C" float name##f(float, float) noexcept; \
  extern "C" double name(double, double) noexcept;
HAL_LIBM1(exp) HAL_LIBM1(exp2) HAL_LIBM1(exp10) HAL_LIBM1(expm1) HAL_LIBM1(log) HAL_LIBM1(log2)
HAL_LIBM1(log10) HAL_LIBM1(log1p) HAL_LIBM1(sqrt) HAL_LIBM1(cbrt) HAL_LIBM1(sin) HAL_LIBM1(cos)
HAL_LIBM1(tan) HAL_LIBM1(asin) HAL_LIBM1(acos) HAL_LIBM1(atan) HAL_LIBM1(sinh) HAL_LIBM1(cosh)
HAL_LIBM1(tanh) HAL_LIBM1(asinh) HAL_LIBM1(acosh) HAL_LIBM1(atanh) HAL_LIBM1(erf)
HAL_LIBM1(erfc) HAL_LIBM1(floor) HAL_LIBM1(ceil) HAL_LIBM1(trunc) HAL_LIBM1(round)
HAL_LIBM1(rint) HAL_LIBM1(nearbyint) HAL_LIBM1(fabs) HAL_LIBM1(lgamma) HAL_LIBM1(tgamma)
HAL_LIBM2(pow) HAL_LIBM2(fmod) HAL_LIBM2(remainder) HAL_LIBM2(atan2) HAL_LIBM2(fmin)
HAL_LIBM2(fmax) HAL_LIBM2(hypot) HAL_LIBM2(copysign)
#undef HAL_LIBM1
#undef HAL_LIBM2
extern "C" float fmaf(float, float, float) noexcept;
extern "C" double fma(double, double, double) noexcept;
extern "C" double frexp(double, int*) noexcept;
extern "C" double ldexp(double, int) noexcept;
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __expf(float x) { return expf(x); }
static inline float __logf(float x) { return logf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0 ? 0.0f : (x > 1 ? 1.0f : x)); }
static inline bool isnan(float x) { return __builtin_isnan(x); }
static inline bool isnan(double x) { return __builtin_isnan(x); }
static inline bool isinf(float x) { return __builtin_isinf(x); }
static inline bool isinf(double x) { return __builtin_isinf(x); }
static inline bool isfinite(float x) { return __builtin_isfinite(x); }
static inline bool isfinite(double x) { return __builtin_isfinite(x); }
static inline bool signbit(float x) { return __builtin_signbit(x); }
static inline bool signbit(double x) { return __builtin_signbit(x); }

// ------------------------------------------------------------------ half (f16)
namespace hal_host {
static inline unsigned short f32_to_f16_bits(float f) {
  _Float16 h = (_Float16)f;  // IEEE binary16, round to nearest even, overflow to inf
  unsigned short b; memcpy(&b, &h, 2); return b;
}
static inline float f16_bits_to_f32(unsigned short b) {
  _Float16 h; memcpy(&h, &b, 2); return (float)h;
}
// bf16: the upper half of an f32, rounded to nearest even; NaN stays a quiet NaN.
static inline unsigned short f32_to_bf16_bits(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
  uint32_t lsb = (u >> 16) & 1u;
  return (unsigned short)((u + 0x7fffu + lsb) >> 16);
}
static inline float bf16_bits_to_f32(unsigned short b) {
  uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f;
}
}  // namespace hal_host

struct __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(::hal_host::f32_to_f16_bits(f)) {}
  __half(double d) : __x(::hal_host::f32_to_f16_bits((float)d)) {}
  operator float() const { return ::hal_host::f16_bits_to_f32(__x); }
};
static inline float __half2float(__half h) { return ::hal_host::f16_bits_to_f32(h.__x); }
static inline __half __float2half_rn(float f) { __half h; h.__x = ::hal_host::f32_to_f16_bits(f); return h; }
static inline __half __float2half(float f) { return __float2half_rn(f); }  // RN, as CUDA and HIP
typedef __half half;

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(::hal_host::f32_to_bf16_bits(f)) {}
  operator float() const { return ::hal_host::bf16_bits_to_f32(__x); }
};
static inline float __bfloat162float(__nv_bfloat16 h) { return ::hal_host::bf16_bits_to_f32(h.__x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  __nv_bfloat16 h; h.__x = ::hal_host::f32_to_bf16_bits(f); return h;
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) {  // toward zero: drop the low half
  uint32_t u; memcpy(&u, &f, 4);
  __nv_bfloat16 h; h.__x = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)((u >> 16) | 0x40u)
                                                           : (unsigned short)(u >> 16);
  return h;
}

// HIP (ROCm 5.x hip_bfloat16.h): explicit conversions both ways, RNE from float.
struct hip_bfloat16 {
  enum truncate_t { truncate };
  uint16_t data;
  hip_bfloat16() = default;
  explicit hip_bfloat16(float f) : data(::hal_host::f32_to_bf16_bits(f)) {}
  hip_bfloat16(float f, truncate_t) : data(__float2bfloat16_rz(f).__x) {}
  explicit operator float() const { return ::hal_host::bf16_bits_to_f32(data); }
};

// ------------------------------------------------------------------ fp8 (cuda_fp8.h names)
typedef unsigned char __nv_fp8_storage_t;
enum __nv_saturation_t { __NV_NOSAT = 0, __NV_SATFINITE = 1 };
enum __nv_fp8_interpretation_t { __NV_E4M3 = 0, __NV_E5M2 = 1 };

namespace hal_host {
// OCP fp8: E4M3 (bias 7, no inf, max 448, NaN S.1111.111) and E5M2 (bias 15, IEEE-like,
// max 57344). Round to nearest even on the exact value, then saturate (PTX cvt.rn.satfinite).
static inline unsigned char f32_to_fp8(float x, int sat, int fmt) {
  const int mbits = fmt == __NV_E4M3 ? 3 : 2, bias = fmt == __NV_E4M3 ? 7 : 15;
  const double maxv = fmt == __NV_E4M3 ? 448.0 : 57344.0;
  const unsigned char sign = signbit(x) ? 0x80 : 0x00;
  if (isnan(x)) return (unsigned char)(sign | 0x7f);
  double a = fabs((double)x);
  double r;
  if (isinf(x)) {
    r = __builtin_huge_val();
  } else if (a == 0.0) {
    return sign;
  } else {
    int e;
    frexp(a, &e);                          // a = m * 2^e, m in [0.5, 1)
    int E = e - 1 < 1 - bias ? 1 - bias : e - 1;  // subnormals share the smallest exponent
    double q = ldexp(1.0, E - mbits);      // spacing of representable values near a
    r = nearbyint(a / q) * q;              // exact scaling; RNE in the default mode
  }
  if (r > maxv) {
    if (sat) r = maxv;
    else return fmt == __NV_E4M3 ? (unsigned char)(sign | 0x7f) : (unsigned char)(sign | 0x7c);
  }
  if (r == 0.0) return sign;
  int e;
  double m = frexp(r, &e);                 // r = m * 2^e
  int E = e - 1;
  if (E < 1 - bias)                              // subnormal: r / 2^(1-bias-mbits) steps
    return (unsigned char)(sign | (int)ldexp(r, mbits - (1 - bias)));
  int frac = (int)ldexp(m * 2.0 - 1.0, mbits);
  return (unsigned char)(sign | ((E + bias) << mbits) | frac);
}
}  // namespace hal_host

static inline __nv_fp8_storage_t __nv_cvt_float_to_fp8(float x, __nv_saturation_t sat,
                                                        __nv_fp8_interpretation_t fmt) {
  return ::hal_host::f32_to_fp8(x, sat, fmt);
}
static inline __nv_fp8_storage_t __nv_cvt_double_to_fp8(double x, __nv_saturation_t sat,
                                                         __nv_fp8_interpretation_t fmt) {
  return ::hal_host::f32_to_fp8((float)x, sat, fmt);
}

// ------------------------------------------------------------------ atomics
// Fibers switch only at barriers and shuffles, so a read-modify-write is never interleaved.
template <typename T> static inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <typename T> static inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <typename T> static inline T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }
template <typename T> static inline T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <typename T> static inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <typename T> static inline T atomicCAS(T* p, T cmp, T v) {
  T old = *p; if (old == cmp) *p = v; return old;
}

// ------------------------------------------------------------------ warp shuffles
// CUDA: mask, value, lane/offset, width (default 32). HIP: value, lane/offset, width
// (default warpSize). The mask is not checked: hal always passes the full warp.
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m, int w = 32) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_XOR, m, w, "__shfl_xor_sync");
}
template <typename T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int w = 32) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_DOWN, (int)d, w, "__shfl_down_sync");
}
template <typename T> static inline T __shfl_up_sync(unsigned, T v, unsigned d, int w = 32) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_UP, (int)d, w, "__shfl_up_sync");
}
template <typename T> static inline T __shfl_sync(unsigned, T v, int src, int w = 32) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_IDX, src, w, "__shfl_sync");
}
template <typename T> static inline T __shfl_xor(T v, int m, int w = HAL_WARP_SIZE) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_XOR, m, w, "__shfl_xor");
}
template <typename T> static inline T __shfl_down(T v, unsigned d, int w = HAL_WARP_SIZE) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_DOWN, (int)d, w, "__shfl_down");
}
template <typename T> static inline T __shfl_up(T v, unsigned d, int w = HAL_WARP_SIZE) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_UP, (int)d, w, "__shfl_up");
}
template <typename T> static inline T __shfl(T v, int src, int w = HAL_WARP_SIZE) {
  return ::hal_host::shuffle(v, ::hal_host::SHFL_IDX, src, w, "__shfl");
}

// ------------------------------------------------------------------ matrix units, cp.async
#include "hal_host_matrix.h"
