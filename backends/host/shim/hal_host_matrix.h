// hal_host_matrix.h: host definitions of the matrix-unit and copy helpers that hal's
// renderers call (names and signatures agreed in hal.kernel.mma; on a GPU their bodies are
// inline PTX / MFMA builtins inside `#ifndef HAL_HOST_SHIM`).
//
// Written from the ISA documents, NOT from hal's Python layout tables, so that the two are
// checks on each other:
//  * PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" and
//    "... mma.m16n8k32" (.e4m3/.e5m2); "warp-level matrix load instruction: ldmatrix";
//    cp.async / cp.async.commit_group / cp.async.wait_group;
//  * AMD CDNA3 ISA, "Matrix Arithmetic Instructions" (v_mfma_f32_32x32x8_{f16,bf16},
//    v_mfma_f32_16x16x16_{f16,bf16}: A/B four 16-bit values per lane, D 16 or 4 floats).
// Every helper is warp-collective and runs in lock-step: each lane deposits pointers to its
// fragments, the warp meets, each lane computes ITS OWN output elements from the others'
// fragments, and the warp meets again before anyone may overwrite a fragment.
// Products are exact and summed in double, then added to C and rounded once to f32.
#pragma once

namespace hal_host {

static inline float elem_f(const __half& h) { return f16_bits_to_f32(h.__x); }
static inline float elem_f(const __nv_bfloat16& h) { return bf16_bits_to_f32(h.__x); }
static inline float elem_f(const hip_bfloat16& h) { return bf16_bits_to_f32(h.data); }

// OCP fp8 decode (E4M3: bias 7, S.1111.111 NaN, no inf; E5M2: bias 15, IEEE specials)
static inline float fp8_to_f32(unsigned char v, int fmt) {
  const int mbits = fmt == __NV_E4M3 ? 3 : 2, ebits = 7 - mbits, bias = fmt == __NV_E4M3 ? 7 : 15;
  const int e = (v >> mbits) & ((1 << ebits) - 1), m = v & ((1 << mbits) - 1);
  const float s = (v & 0x80) ? -1.0f : 1.0f;
  if (fmt == __NV_E4M3 && e == 15 && m == 7) return __builtin_nanf("");
  if (fmt == __NV_E5M2 && e == 31) return m ? __builtin_nanf("") : s * __builtin_inff();
  if (e == 0) return s * (float)ldexp((double)m, 1 - bias - mbits);
  return s * (float)ldexp(1.0 + (double)m / (1 << mbits), e - bias);
}

// The warp's deposited pointers, after every lane of a FULL warp has arrived.
static inline const void* const* warp_gather(const void* mine, const char* what) {
  Runtime& r = g_rt;
  Warp& w = my_warp();
  const int lane = r.cur->linear % kWarp;
  w.slot[lane] = (uint64_t)(uintptr_t)mine;
  w.lane_gen[lane] = w.gen;
  unsigned g = warp_arrive(what);
  const int base = r.cur->linear - lane;
  for (int j = 0; j < kWarp; j++) {
    if (base + j >= r.nthreads || w.lane_gen[j] != g || r.fibers[base + j].done)
      fail("%s needs all %d lanes of the warp; lane %d did not take part", what, kWarp, j);
  }
  return reinterpret_cast<const void* const*>(w.slot);
}

static inline int lane_id() { return g_rt.cur->linear % kWarp; }

// ---------------------------------------------------------------- mma.sync (NVIDIA, 32 lanes)
struct MmaFrags {
  const void* a;
  const void* b;
};

// m16n8k16, 16-bit A (row) and B (col), f32 C/D. gid = lane/4, tig = lane%4:
//  a_i: row gid (+8 for i in {2,3,6,7}), col 2*tig + (i&1) (+8 for i >= 4)
//  b_i: row(k) 2*tig + (i&1) (+8 for i >= 2), col(n) gid
//  c_i: row gid (+8 for i >= 2), col 2*tig + (i&1)
template <typename T>
static inline void mma_m16n8k16(float* d, const T* a, const T* b, const float* c,
                                const char* what) {
  if (kWarp != 32) fail("%s: mma.sync is a 32-lane warp instruction, not %d", what, kWarp);
  MmaFrags mine{a, b};
  const void* const* all = warp_gather(&mine, what);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; l++) {
    const MmaFrags* f = static_cast<const MmaFrags*>(all[l]);
    const T* fa = static_cast<const T*>(f->a);
    const T* fb = static_cast<const T*>(f->b);
    int gid = l / 4, tig = l % 4;
    for (int i = 0; i < 8; i++) {
      int row = gid + ((i & 2) ? 8 : 0), col = 2 * tig + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = elem_f(fa[i]);
    }
    for (int i = 0; i < 4; i++) B[2 * tig + (i & 1) + (i >= 2 ? 8 : 0)][gid] = elem_f(fb[i]);
  }
  const int l = lane_id(), gid = l / 4, tig = l % 4;
  float out[4];
  for (int i = 0; i < 4; i++) {
    int row = gid + (i >= 2 ? 8 : 0), col = 2 * tig + (i & 1);
    double s = 0;
    for (int k = 0; k < 16; k++) s += (double)A[row][k] * (double)B[k][col];
    out[i] = (float)(s + (double)c[i]);
  }
  warp_arrive(what);  // everyone has read every fragment
  for (int i = 0; i < 4; i++) d[i] = out[i];
}

// m16n8k32, 8-bit A and B (four per register):
//  a_i: row gid (+8 for i in 4..7 and 12..15), col 4*tig + (i&3) (+16 for i >= 8)
//  b_i: row(k) 4*tig + (i&3) (+16 for i >= 4), col(n) gid;  C/D as m16n8k16
static inline void mma_m16n8k32_fp8(float* d, const unsigned char* a, const unsigned char* b,
                                    const float* c, int fmt, const char* what) {
  if (kWarp != 32) fail("%s: mma.sync is a 32-lane warp instruction, not %d", what, kWarp);
  MmaFrags mine{a, b};
  const void* const* all = warp_gather(&mine, what);
  float A[16][32], B[32][8];
  for (int l = 0; l < 32; l++) {
    const MmaFrags* f = static_cast<const MmaFrags*>(all[l]);
    const unsigned char* fa = static_cast<const unsigned char*>(f->a);
    const unsigned char* fb = static_cast<const unsigned char*>(f->b);
    int gid = l / 4, tig = l % 4;
    for (int i = 0; i < 16; i++) {
      int row = gid + ((i & 4) ? 8 : 0), col = 4 * tig + (i & 3) + (i >= 8 ? 16 : 0);
      A[row][col] = fp8_to_f32(fa[i], fmt);
    }
    for (int i = 0; i < 8; i++)
      B[4 * tig + (i & 3) + (i >= 4 ? 16 : 0)][gid] = fp8_to_f32(fb[i], fmt);
  }
  const int l = lane_id(), gid = l / 4, tig = l % 4;
  float out[4];
  for (int i = 0; i < 4; i++) {
    int row = gid + (i >= 2 ? 8 : 0), col = 2 * tig + (i & 1);
    double s = 0;
    for (int k = 0; k < 32; k++) s += (double)A[row][k] * (double)B[k][col];
    out[i] = (float)(s + (double)c[i]);
  }
  warp_arrive(what);
  for (int i = 0; i < 4; i++) d[i] = out[i];
}

// m16n8k8 .tf32 (f32 registers, cvt.rna.tf32.f32 first: 10 mantissa bits, ties away):
//  a_i: row gid (+8 for i in {1,3}), col tig (+4 for i >= 2)
//  b_i: row(k) tig (+4 for i = 1), col(n) gid;  C/D as m16n8k16
static inline float tf32_rna(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return x;  // inf, NaN
  u = (u + 0x1000u) & 0xFFFFE000u;
  memcpy(&x, &u, 4);
  return x;
}
static inline void mma_m16n8k8_tf32(float* d, const float* a, const float* b, const float* c,
                                    const char* what) {
  if (kWarp != 32) fail("%s: mma.sync is a 32-lane warp instruction, not %d", what, kWarp);
  MmaFrags mine{a, b};
  const void* const* all = warp_gather(&mine, what);
  float A[16][8], B[8][8];
  for (int l = 0; l < 32; l++) {
    const MmaFrags* f = static_cast<const MmaFrags*>(all[l]);
    const float* fa = static_cast<const float*>(f->a);
    const float* fb = static_cast<const float*>(f->b);
    int gid = l / 4, tig = l % 4;
    for (int i = 0; i < 4; i++) A[gid + 8 * (i & 1)][tig + 4 * (i >> 1)] = tf32_rna(fa[i]);
    for (int i = 0; i < 2; i++) B[tig + 4 * i][gid] = tf32_rna(fb[i]);
  }
  const int l = lane_id(), gid = l / 4, tig = l % 4;
  float out[4];
  for (int i = 0; i < 4; i++) {
    int row = gid + (i >= 2 ? 8 : 0), col = 2 * tig + (i & 1);
    double s = 0;
    for (int k = 0; k < 8; k++) s += (double)A[row][k] * (double)B[k][col];
    out[i] = (float)(s + (double)c[i]);
  }
  warp_arrive(what);
  for (int i = 0; i < 4; i++) d[i] = out[i];
}

// ldmatrix.m8n8.xN(.trans).b16: lane t gives the address of row t%8 of matrix t/8 (lanes
// 0..8N-1 used); lane t receives of matrix j the elements (t/4, 2*(t%4)+e), or with .trans
// (2*(t%4)+e, t/4), e = 0, 1, as its 16-bit elements 2j+e.
static inline void ldmatrix(void* dst, const void* row_addr, int count, bool trans,
                            const char* what) {
  if (kWarp != 32) fail("%s: ldmatrix is a 32-lane warp instruction, not %d", what, kWarp);
  const void* const* rows = warp_gather(row_addr, what);
  const int t = lane_id();
  uint16_t got[8];
  for (int j = 0; j < count; j++)
    for (int e = 0; e < 2; e++) {
      int row = trans ? 2 * (t % 4) + e : t / 4, col = trans ? t / 4 : 2 * (t % 4) + e;
      got[2 * j + e] = static_cast<const uint16_t*>(rows[8 * j + row])[col];
    }
  warp_arrive(what);
  memcpy(dst, got, 4 * count);
}

// ---------------------------------------------------------------- cp.async (per thread)
// Copies are queued and happen at cp.async.wait_group, as on the GPU (where the data is
// not visible before the wait): a kernel that reads the tile without waiting reads stale
// shared memory here too.
static inline CopyQueue& my_queue() {
  Fiber& f = *g_rt.cur;
  if (!f.copies) f.copies = new CopyQueue();  // kept for the process: fibers are reused
  return *f.copies;
}

static inline void complete(PendingCopy& p) {
  if (p.full) memcpy(p.dst, p.src, p.bytes);
  else memset(p.dst, 0, p.bytes);
}

static inline void cp_async(void* dst, const void* src, int bytes, bool full) {
  CopyQueue& q = my_queue();
  if (q.n == kMaxPending) fail("more than %d cp.async copies pending", kMaxPending);
  q.q[q.n++] = PendingCopy{dst, src, q.committed, bytes, full};
}

static inline void cp_async_commit() { my_queue().committed++; }

// wait_group N: every committed group but the newest N is complete.
static inline void cp_async_wait(int pending) {
  CopyQueue& q = my_queue();
  int keep = 0;
  for (int i = 0; i < q.n; i++) {
    if ((long)q.q[i].group < (long)q.committed - pending) complete(q.q[i]);
    else q.q[keep++] = q.q[i];
  }
  q.n = keep;
}

// ---------------------------------------------------------------- MFMA (CDNA, 64 lanes)
// v_mfma_f32_32x32x8 (A 32x8, B 8x32): lane l, element j: A[l%32][4*(l/32)+j],
//   B[4*(l/32)+j][l%32]; D element r: row 8*(r/4) + 4*(l/32) + r%4, col l%32.
// v_mfma_f32_16x16x16 (A 16x16, B 16x16): A[l%16][4*(l/16)+j], B[4*(l/16)+j][l%16];
//   D element r: row 4*(l/16) + r, col l%16.
template <typename T>
static inline void mfma(float* d, const T* a, const T* b, const float* c, int M, int K,
                        const char* what) {
  if (kWarp != 64) fail("%s: MFMA is a 64-lane wavefront instruction, not %d", what, kWarp);
  MmaFrags mine{a, b};
  const void* const* all = warp_gather(&mine, what);
  const int N = M, groups = 64 / M;  // lanes l%M index rows (A) / cols (B); l/M the K block
  float A[32][16], B[16][32];
  for (int l = 0; l < 64; l++) {
    const MmaFrags* f = static_cast<const MmaFrags*>(all[l]);
    for (int j = 0; j < 4; j++) {
      A[l % M][4 * (l / M) + j] = elem_f(static_cast<const T*>(f->a)[j]);
      B[4 * (l / M) + j][l % N] = elem_f(static_cast<const T*>(f->b)[j]);
    }
  }
  (void)groups;
  const int l = lane_id(), n_out = M * N / 64;
  float out[16];
  for (int r = 0; r < n_out; r++) {
    int row = M == 32 ? 8 * (r / 4) + 4 * (l / 32) + r % 4 : 4 * (l / 16) + r;
    int col = l % N;
    double s = 0;
    for (int k = 0; k < K; k++) s += (double)A[row][k] * (double)B[k][col];
    out[r] = (float)(s + (double)c[r]);
  }
  warp_arrive(what);
  for (int r = 0; r < n_out; r++) d[r] = out[r];
}

}  // namespace hal_host

#define HAL_HOST_MMA(name, T)                                                                  \
  static inline void name(float* d, const T* a, const T* b, const float* c) {                  \
    ::hal_host::mma_m16n8k16(d, a, b, c, #name);                                               \
  }
#if HAL_WARP_SIZE == 32
HAL_HOST_MMA(hal_mma_m16n8k16_bf16_f32, __nv_bfloat16)
HAL_HOST_MMA(hal_mma_m16n8k16_f16_f32, __half)
static inline void hal_mma_m16n8k8_tf32_f32(float* d, const float* a, const float* b,
                                            const float* c) {
  ::hal_host::mma_m16n8k8_tf32(d, a, b, c, "hal_mma_m16n8k8_tf32_f32");
}
static inline void hal_mma_m16n8k32_e4m3_f32(float* d, const __nv_fp8_storage_t* a,
                                             const __nv_fp8_storage_t* b, const float* c) {
  ::hal_host::mma_m16n8k32_fp8(d, a, b, c, __NV_E4M3, "hal_mma_m16n8k32_e4m3_f32");
}
static inline void hal_mma_m16n8k32_e5m2_f32(float* d, const __nv_fp8_storage_t* a,
                                             const __nv_fp8_storage_t* b, const float* c) {
  ::hal_host::mma_m16n8k32_fp8(d, a, b, c, __NV_E5M2, "hal_mma_m16n8k32_e5m2_f32");
}
#define HAL_HOST_LDM(count)                                                                    \
  static inline void hal_ldmatrix_x##count(void* dst, const void* smem) {                      \
    ::hal_host::ldmatrix(dst, smem, count, false, "hal_ldmatrix_x" #count);                    \
  }                                                                                            \
  static inline void hal_ldmatrix_x##count##_trans(void* dst, const void* smem) {              \
    ::hal_host::ldmatrix(dst, smem, count, true, "hal_ldmatrix_x" #count "_trans");            \
  }
HAL_HOST_LDM(1)
HAL_HOST_LDM(2)
HAL_HOST_LDM(4)
#undef HAL_HOST_LDM
#endif
#undef HAL_HOST_MMA

#if HAL_WARP_SIZE == 64
#define HAL_HOST_MFMA(name, T, M, K)                                                           \
  static inline void name(float* d, const T* a, const T* b, const float* c) {                  \
    ::hal_host::mfma(d, a, b, c, M, K, #name);                                                 \
  }
HAL_HOST_MFMA(hal_mfma_f32_32x32x8_bf16, hip_bfloat16, 32, 8)
HAL_HOST_MFMA(hal_mfma_f32_16x16x16_bf16, hip_bfloat16, 16, 16)
HAL_HOST_MFMA(hal_mfma_f32_32x32x8_f16, __half, 32, 8)
HAL_HOST_MFMA(hal_mfma_f32_16x16x16_f16, __half, 16, 16)
#undef HAL_HOST_MFMA
#endif

static inline void hal_cp_async_16(void* smem, const void* gmem, bool full) {
  ::hal_host::cp_async(smem, gmem, 16, full);
}
static inline void hal_cp_async_commit() { ::hal_host::cp_async_commit(); }
template <int N> static inline void hal_cp_async_wait() { ::hal_host::cp_async_wait(N); }

#define HAL_HOST_VEC(n)                                                                        \
  static inline void hal_vec_copy_##n(void* dst, const void* src, bool full) {                 \
    if (full) memcpy(dst, src, n);                                                             \
    else memset(dst, 0, n);                                                                    \
  }
HAL_HOST_VEC(16)
HAL_HOST_VEC(8)
HAL_HOST_VEC(4)
HAL_HOST_VEC(2)
#undef HAL_HOST_VEC
