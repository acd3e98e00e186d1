"""C++ source of the CPU kernels and of their registration as PyTorch operators (shipped inside the package).

The kernels are plain C++17, vectorised with GCC/Clang vector extensions and parallelised with OpenMP (torch's own
``libgomp``, so the kernels share torch's thread pool and honour ``torch.set_num_threads``). The end of the file
registers them as operators of the ``kgdistill`` namespace with ``TORCH_LIBRARY`` (schemas) and
``TORCH_LIBRARY_IMPL(..., CPU, ...)`` (the CPU kernels); their autograd formulas and fake (meta) implementations are
registered from Python (:mod:`kgdistill.kernels._ops`). Only the light torch headers are included (no pybind11):
the library is loaded with ``torch.ops.load_library``. Bumping :data:`VERSION` forces a rebuild.
"""

VERSION = 3

SOURCE = r"""
// kgdistill CPU kernels: plain C++ loops, OpenMP from torch's runtime, GCC vector extensions; registered as the
// torch operators kgdistill::all_pairs, kgdistill::corruption_scores and kgdistill::corruption_scores_backward.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <algorithm>
#include <optional>
#include <tuple>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define W 16
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

static inline vf ld(const float* p) { vf v; memcpy(&v, p, sizeof(vf)); return v; }
static inline void st(float* p, vf v) { memcpy(p, &v, sizeof(vf)); }
static inline vf vabs(vf x) { return (vf)((vi)x & ((vi){} + 0x7fffffff)); }
static inline vf splat(float x) { return (vf){} + x; }
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define KG_HAS_SHUFFLE 1
#endif
#endif
#ifdef KG_HAS_SHUFFLE
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
static inline float hsum(vf v) {  // pairwise: 16 -> 8 -> 4 -> 1
  vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
#else
static inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}
#endif
static inline vf vsqrt(vf x) {
#if defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__) && defined(KG_HAS_SHUFFLE)
  vf r;
  __m256 lo = _mm256_sqrt_ps(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7));
  __m256 hi = _mm256_sqrt_ps(__builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15));
  memcpy(&r, &lo, 32); memcpy((char*)&r + 32, &hi, 32);
  return r;
#else
  vf r;
  for (int i = 0; i < W; ++i) r[i] = sqrtf(x[i]);
  return r;
#endif
}

enum { K_DOT = 0, K_L1 = 1, K_L2 = 2, K_CL1 = 3 };
#define KG_ROW_BUF 2048

// ---- all pairs: out[i, j] = -dist(q_i, e_j) for L1 and complex L1 ------------------------------------------------
template <int QB, int EB>
static inline void l1_tile(const float* q, int64_t ldq, const float* e, int64_t lde, int64_t D, float* out,
                           int64_t ldo) {
  vf acc[QB][EB];
  for (int a = 0; a < QB; ++a)
    for (int b = 0; b < EB; ++b) acc[a][b] = (vf){};
  int64_t d = 0;
  for (; d + W <= D; d += W) {
    vf qv[QB];
    for (int a = 0; a < QB; ++a) qv[a] = ld(q + a * ldq + d);
    for (int b = 0; b < EB; ++b) {
      vf ev = ld(e + b * lde + d);
      for (int a = 0; a < QB; ++a) acc[a][b] += vabs(qv[a] - ev);
    }
  }
  for (int a = 0; a < QB; ++a)
    for (int b = 0; b < EB; ++b) {
      float s = hsum(acc[a][b]);
      for (int64_t dd = d; dd < D; ++dd) s += fabsf(q[a * ldq + dd] - e[b * lde + dd]);
      out[a * ldo + b] = -s;
    }
}

template <int QB, int EB>
static inline void cl1_tile(const float* q, int64_t ldq, const float* e, int64_t lde, int64_t D, float* out,
                            int64_t ldo) {
  const int64_t H = D / 2;
  const vf tiny = splat(1e-12f);
  vf acc[QB][EB];
  for (int a = 0; a < QB; ++a)
    for (int b = 0; b < EB; ++b) acc[a][b] = (vf){};
  int64_t d = 0;
  for (; d + W <= H; d += W) {
    vf qr[QB], qi[QB];
    for (int a = 0; a < QB; ++a) { qr[a] = ld(q + a * ldq + d); qi[a] = ld(q + a * ldq + H + d); }
    for (int b = 0; b < EB; ++b) {
      vf er = ld(e + b * lde + d), ei = ld(e + b * lde + H + d);
      for (int a = 0; a < QB; ++a) {
        vf x = qr[a] - er, y = qi[a] - ei;
        acc[a][b] += vsqrt(x * x + y * y + tiny);
      }
    }
  }
  for (int a = 0; a < QB; ++a)
    for (int b = 0; b < EB; ++b) {
      float s = hsum(acc[a][b]);
      for (int64_t dd = d; dd < H; ++dd) {
        float x = q[a * ldq + dd] - e[b * lde + dd], y = q[a * ldq + H + dd] - e[b * lde + H + dd];
        s += sqrtf(x * x + y * y + 1e-12f);
      }
      out[a * ldo + b] = -s;
    }
}

template <int QB, int EB>
static void tile(int kind, const float* q, int64_t ldq, const float* e, int64_t lde, int64_t D, float* out,
                 int64_t ldo) {
  if (kind == K_L1) l1_tile<QB, EB>(q, ldq, e, lde, D, out, ldo);
  else cl1_tile<QB, EB>(q, ldq, e, lde, D, out, ldo);
}

// Small D (L1): with few dimensions the horizontal sum per output costs as much as the distance itself, so a block
// of TB = 3 W entities is transposed once (eT[d][j]) and W entities share one vector: no horizontal sums.
#define KG_L1_SMALL_D 128
#define TB (3 * W)
template <int QB>
static inline void l1_tile_t(const float* q, int64_t ldq, const float* eT, int64_t D, float* out, int64_t ldo,
                             int64_t valid) {
  vf acc[QB][3];
  for (int a = 0; a < QB; ++a) acc[a][0] = acc[a][1] = acc[a][2] = (vf){};
  for (int64_t d = 0; d < D; ++d) {
    const vf e0 = ld(eT + d * TB), e1 = ld(eT + d * TB + W), e2 = ld(eT + d * TB + 2 * W);
    for (int a = 0; a < QB; ++a) {
      const vf qa = splat(q[a * ldq + d]);
      acc[a][0] += vabs(qa - e0); acc[a][1] += vabs(qa - e1); acc[a][2] += vabs(qa - e2);
    }
  }
  for (int a = 0; a < QB; ++a) {
    float row[TB];
    st(row, -acc[a][0]); st(row + W, -acc[a][1]); st(row + 2 * W, -acc[a][2]);
    memcpy(out + a * ldo, row, valid * sizeof(float));
  }
}

static void l1_small_d(const float* q, int64_t n, int64_t ldq, const float* e, int64_t k, int64_t lde, int64_t D,
                       float* out, int nthreads) {
  const int64_t nblk = (k + TB - 1) / TB;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t j0 = blk * TB, valid = j0 + TB < k ? TB : k - j0;
    float eT[KG_L1_SMALL_D * TB];
    for (int64_t d = 0; d < D; ++d)
      for (int64_t jj = 0; jj < TB; ++jj) eT[d * TB + jj] = jj < valid ? e[(j0 + jj) * lde + d] : 0.f;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) l1_tile_t<4>(q + i * ldq, ldq, eT, D, out + i * k + j0, k, valid);
    for (; i < n; ++i) l1_tile_t<1>(q + i * ldq, ldq, eT, D, out + i * k + j0, k, valid);
  }
}

// q [n, D], e [k, D] (row strides ldq, lde), out [n, k] contiguous
static void kg_all_pairs(int kind, const float* q, int64_t n, int64_t ldq, const float* e, int64_t k,
                             int64_t lde, int64_t D, float* out, int nthreads) {
  if (kind == K_L1 && D <= KG_L1_SMALL_D) {
    l1_small_d(q, n, ldq, e, k, lde, D, out, nthreads);
    return;
  }
  const int QB = 4, EB = 6, EBLK = 48;
  const int64_t nblk = (k + EBLK - 1) / EBLK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t j0 = blk * EBLK, j1 = j0 + EBLK < k ? j0 + EBLK : k;
    int64_t i = 0;
    for (; i + QB <= n; i += QB) {
      int64_t j = j0;
      for (; j + EB <= j1; j += EB) tile<QB, EB>(kind, q + i * ldq, ldq, e + j * lde, lde, D, out + i * k + j, k);
      for (; j < j1; ++j) tile<QB, 1>(kind, q + i * ldq, ldq, e + j * lde, lde, D, out + i * k + j, k);
    }
    for (; i < n; ++i) {
      int64_t j = j0;
      for (; j + EB <= j1; j += EB) tile<1, EB>(kind, q + i * ldq, ldq, e + j * lde, lde, D, out + i * k + j, k);
      for (; j < j1; ++j) tile<1, 1>(kind, q + i * ldq, ldq, e + j * lde, lde, D, out + i * k + j, k);
    }
  }
}

// ---- per-row similarity and its gradient ----------------------------------------------------------------------
static inline float row_sim(int kind, const float* q, const float* e, int64_t D) {
  vf a0 = (vf){}, a1 = (vf){};
  float s = 0.f;
  if (kind == K_CL1) {
    const int64_t H = D / 2;
    const vf tiny = splat(1e-12f);
    int64_t d = 0;
    for (; d + W <= H; d += W) {
      vf x = ld(q + d) - ld(e + d), y = ld(q + H + d) - ld(e + H + d);
      a0 += vsqrt(x * x + y * y + tiny);
    }
    s = hsum(a0);
    for (; d < H; ++d) {
      float x = q[d] - e[d], y = q[H + d] - e[H + d];
      s += sqrtf(x * x + y * y + 1e-12f);
    }
    return -s;
  }
  int64_t d = 0;
  if (kind == K_DOT) {
    for (; d + 2 * W <= D; d += 2 * W) { a0 += ld(q + d) * ld(e + d); a1 += ld(q + d + W) * ld(e + d + W); }
    for (; d + W <= D; d += W) a0 += ld(q + d) * ld(e + d);
    s = hsum(a0 + a1);
    for (; d < D; ++d) s += q[d] * e[d];
    return s;
  }
  if (kind == K_L1) {
    for (; d + 2 * W <= D; d += 2 * W) {
      a0 += vabs(ld(q + d) - ld(e + d));
      a1 += vabs(ld(q + d + W) - ld(e + d + W));
    }
    for (; d + W <= D; d += W) a0 += vabs(ld(q + d) - ld(e + d));
    s = hsum(a0 + a1);
    for (; d < D; ++d) s += fabsf(q[d] - e[d]);
    return -s;
  }
  // K_L2
  for (; d + 2 * W <= D; d += 2 * W) {
    vf x = ld(q + d) - ld(e + d), y = ld(q + d + W) - ld(e + d + W);
    a0 += x * x;
    a1 += y * y;
  }
  for (; d + W <= D; d += W) { vf x = ld(q + d) - ld(e + d); a0 += x * x; }
  s = hsum(a0 + a1);
  for (; d < D; ++d) { float x = q[d] - e[d]; s += x * x; }
  return -sqrtf(s);
}

// gq += g * d sim / d q, ge += g * d sim / d e  (score = value of row_sim, needed by L2)
static inline void row_grad(int kind, const float* q, const float* e, int64_t D, float g, float score, float* gq,
                            float* ge) {
  int64_t d = 0;
  if (kind == K_DOT) {
    const vf gv = splat(g);
    for (; d + W <= D; d += W) {
      st(gq + d, ld(gq + d) + gv * ld(e + d));
      st(ge + d, ld(ge + d) + gv * ld(q + d));
    }
    for (; d < D; ++d) { gq[d] += g * e[d]; ge[d] += g * q[d]; }
    return;
  }
  if (kind == K_L1) {  // d/dq -|q - e| = -sign(q - e), sign(0) = 0 as torch.abs's gradient
    const vf gv = splat(g);
    for (; d + W <= D; d += W) {
      vf x = ld(q + d) - ld(e + d);
      vf sgn = __builtin_convertvector((x < 0) - (x > 0), vf);  // comparisons give -1 / 0
      vf t = gv * sgn;
      st(gq + d, ld(gq + d) - t);
      st(ge + d, ld(ge + d) + t);
    }
    for (; d < D; ++d) {
      float x = q[d] - e[d];
      float t = g * (float)((x > 0) - (x < 0));
      gq[d] -= t;
      ge[d] += t;
    }
    return;
  }
  if (kind == K_L2) {  // d/dq -||q - e|| = -(q - e) / ||q - e||, 0 at q = e
    const float dist = -score;
    if (!(dist != 0.f)) return;
    const float c = g / dist;
    const vf cv = splat(c);
    for (; d + W <= D; d += W) {
      vf t = cv * (ld(q + d) - ld(e + d));
      st(gq + d, ld(gq + d) - t);
      st(ge + d, ld(ge + d) + t);
    }
    for (; d < D; ++d) { float t = c * (q[d] - e[d]); gq[d] -= t; ge[d] += t; }
    return;
  }
  // K_CL1: d/dq_re -sqrt(x² + y² + 1e-12) = -x / sqrt(...)
  const int64_t H = D / 2;
  const vf gv = splat(g), tiny = splat(1e-12f);
  for (; d + W <= H; d += W) {
    vf x = ld(q + d) - ld(e + d), y = ld(q + H + d) - ld(e + H + d);
    vf c = gv / vsqrt(x * x + y * y + tiny);
    vf tx = c * x, ty = c * y;
    st(gq + d, ld(gq + d) - tx);
    st(gq + H + d, ld(gq + H + d) - ty);
    st(ge + d, ld(ge + d) + tx);
    st(ge + H + d, ld(ge + H + d) + ty);
  }
  for (; d < H; ++d) {
    float x = q[d] - e[d], y = q[H + d] - e[H + d];
    float c = g / sqrtf(x * x + y * y + 1e-12f);
    gq[d] -= c * x; gq[H + d] -= c * y; ge[d] += c * x; ge[H + d] += c * y;
  }
}

// ---- corruption scores: out[i] = sim(head(i) ? qh[b] : qt[b], Wt[ids[i]]), i = b * K + j -----------------------
// head(i) = mask[i] when mask != NULL, else j < nh. The pairs are visited entity by entity (kg_group_by_entity), so
// the table and its gradient stream in row order and each gradient row is written once (zero when untouched); the
// query rows (a few MB) are the randomly accessed side.
// counting sort of the pairs by entity id: pairs of entity x are order[offsets[x]:offsets[x + 1]] (ascending)
// Returns the first position holding an id outside [0, E) (n when all are valid; nothing is sorted then).
static int64_t kg_group_by_entity(const int64_t* ids, int64_t n, int64_t E, int64_t* offsets, int32_t* order) {
  memset(offsets, 0, sizeof(int64_t) * (size_t)(E + 1));
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= E) return i;
    offsets[ids[i] + 1]++;
  }
  for (int64_t x = 0; x < E; ++x) offsets[x + 1] += offsets[x];
  int64_t* cur = (int64_t*)malloc(sizeof(int64_t) * (size_t)(E > 0 ? E : 1));
  memcpy(cur, offsets, sizeof(int64_t) * (size_t)E);
  for (int64_t i = 0; i < n; ++i) order[cur[ids[i]]++] = (int32_t)i;
  free(cur);
  return n;
}

static void kg_corrupt_fwd(int kind, const float* qh, const float* qt, int64_t ldq, const float* Wt,
                                  int64_t ldw, int64_t D, const int64_t* offsets, const int32_t* order, int64_t E,
                                  int64_t K, int64_t nh, const uint8_t* mask, float* out, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t x = 0; x < E; ++x) {
    const int64_t p0 = offsets[x], p1 = offsets[x + 1];
    if (p0 == p1) continue;
    const float* e = Wt + x * ldw;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i = order[p], b = i / K, j = i - b * K;
      const bool head = mask ? mask[i] != 0 : j < nh;
      out[i] = row_sim(kind, (head ? qh : qt) + b * ldq, e, D);
    }
  }
}

static void kg_corrupt_bwd(int kind, const float* qh, const float* qt, int64_t ldq, const float* Wt,
                                  int64_t ldw, int64_t D, const int64_t* offsets, const int32_t* order, int64_t E,
                                  int64_t B, int64_t K, int64_t nh, const uint8_t* mask, const float* out,
                                  const float* gout, float* gW, float* gqh, float* gqt, float* scratch,
                                  int nthreads) {
#pragma omp parallel num_threads(nthreads)
  {
#ifdef _OPENMP
    const int T = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int T = 1, t = 0;
#endif
    const int64_t lo = E * t / T, hi = E * (t + 1) / T;
    float* mh = scratch + (int64_t)t * 2 * B * D;
    float* mt = mh + B * D;
    memset(mh, 0, sizeof(float) * (size_t)(2 * B * D));
    // Each gradient row is summed in a small buffer, then written once with non-temporal stores (no read of the
    // destination line, no eviction of the working set); plain stores where that is not possible.
#if defined(__AVX512F__)
    float buf[KG_ROW_BUF] __attribute__((aligned(64)));
    const bool stream = D <= KG_ROW_BUF && D % 16 == 0 && ((uintptr_t)gW % 64) == 0;
#else
    float buf[1];
    const bool stream = false;
#endif
    for (int64_t x = lo; x < hi; ++x) {
      float* gw = stream ? buf : gW + x * D;
      memset(gw, 0, sizeof(float) * (size_t)D);
      const int64_t p0 = offsets[x], p1 = offsets[x + 1];
      const float* e = Wt + x * ldw;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = order[p], b = i / K, j = i - b * K;
        const bool head = mask ? mask[i] != 0 : j < nh;
        row_grad(kind, (head ? qh : qt) + b * ldq, e, D, gout[i], out[i], (head ? mh : mt) + b * D, gw);
      }
#if defined(__AVX512F__)
      if (stream) {
        float* dst = gW + x * D;
        for (int64_t d = 0; d < D; d += 16) _mm512_stream_ps(dst + d, _mm512_load_ps(buf + d));
      }
#endif
    }
#if defined(__AVX512F__)
    _mm_sfence();
#endif
    (void)buf;
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t x = 0; x < B * D; ++x) {
      float sh = 0.f, stl = 0.f;
      for (int u = 0; u < T; ++u) {
        sh += scratch[(int64_t)u * 2 * B * D + x];
        stl += scratch[(int64_t)u * 2 * B * D + B * D + x];
      }
      gqh[x] = sh;
      gqt[x] = stl;
    }
  }
}

// ---- PyTorch operators --------------------------------------------------------------------------------------------
namespace {

int threads() { return std::max(1, at::get_num_threads()); }

void check_f32_cpu(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided,
              "kgdistill: ", what, " must be a dense float32 CPU tensor");
}

void check_kind(int64_t kind, int64_t D) {
  TORCH_CHECK(kind >= K_DOT && kind <= K_CL1, "kgdistill: unknown similarity kind ", kind);
  TORCH_CHECK(kind != K_CL1 || D % 2 == 0, "kgdistill: complex_l1 needs an even row width, got ", D);
}

// rows in memory order (column stride 1); the row stride is passed to the kernels
at::Tensor unit_columns(const at::Tensor& t) { return t.size(1) <= 1 || t.stride(1) == 1 ? t : t.contiguous(); }

at::Tensor all_pairs(const at::Tensor& q_in, const at::Tensor& e_in, int64_t kind) {
  TORCH_CHECK(q_in.dim() == 2 && e_in.dim() == 2 && q_in.size(1) == e_in.size(1),
              "kgdistill::all_pairs: q [n, D] and e [k, D] expected");
  TORCH_CHECK(kind == K_L1 || kind == K_CL1, "kgdistill::all_pairs: kind must be l1 (1) or complex_l1 (3)");
  check_f32_cpu(q_in, "q");
  check_f32_cpu(e_in, "e");
  const int64_t n = q_in.size(0), k = e_in.size(0), D = q_in.size(1);
  check_kind(kind, D);
  const at::Tensor q = unit_columns(q_in), e = unit_columns(e_in);
  at::Tensor out = at::empty({n, k}, q.options());
  if (n && k)
    kg_all_pairs((int)kind, q.data_ptr<float>(), n, q.stride(0), e.data_ptr<float>(), k, e.stride(0), D,
                 out.data_ptr<float>(), threads());
  return out;
}

const uint8_t* mask_ptr(const std::optional<at::Tensor>& mask) {
  return mask.has_value() ? reinterpret_cast<const uint8_t*>(mask->data_ptr<bool>()) : nullptr;
}

void check_corruption(const at::Tensor& qh, const at::Tensor& qt, const at::Tensor& table, int64_t B, int64_t K,
                      const std::optional<at::Tensor>& mask, int64_t kind) {
  TORCH_CHECK(qh.dim() == 2 && qt.sizes() == qh.sizes() && table.dim() == 2 && qh.size(0) == B &&
                  table.size(1) == qh.size(1),
              "kgdistill::corruption_scores: q_head, q_tail [B, D], table [E, D], ids [B, K] expected");
  check_f32_cpu(qh, "q_head");
  check_f32_cpu(qt, "q_tail");
  check_f32_cpu(table, "table");
  check_kind(kind, qh.size(1));
  TORCH_CHECK(B * K < ((int64_t)1 << 31), "kgdistill::corruption_scores: at most 2^31 - 1 pairs");
  if (mask.has_value())
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->device().is_cpu() && mask->dim() == 2 &&
                    mask->size(0) == B && mask->size(1) == K,
                "kgdistill::corruption_scores: corrupt_head must be a bool CPU tensor shaped like ids");
}

// (scores [B, K], offsets [E + 1] int64, order [B * K] int32): the pairs grouped by entity, reused by the backward
std::tuple<at::Tensor, at::Tensor, at::Tensor> corruption_scores(
    const at::Tensor& q_head, const at::Tensor& q_tail, const at::Tensor& table_in, const at::Tensor& ids_in,
    const std::optional<at::Tensor>& mask_in, int64_t kind, int64_t num_head) {
  TORCH_CHECK(ids_in.dim() == 2 && ids_in.scalar_type() == at::kLong && ids_in.device().is_cpu(),
              "kgdistill::corruption_scores: ids must be an int64 CPU tensor [B, K]");
  const int64_t B = ids_in.size(0), K = ids_in.size(1);
  check_corruption(q_head, q_tail, table_in, B, K, mask_in, kind);
  const at::Tensor qh = q_head.contiguous(), qt = q_tail.contiguous(), table = unit_columns(table_in);
  const at::Tensor ids = ids_in.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_in.has_value()) mask = mask_in->contiguous();
  const int64_t E = table.size(0), D = table.size(1);
  at::Tensor offsets = at::empty({E + 1}, ids.options());
  at::Tensor order = at::empty({B * K}, ids.options().dtype(at::kInt));
  at::Tensor out = at::empty({B, K}, qh.options());
  const int64_t bad = kg_group_by_entity(ids.data_ptr<int64_t>(), B * K, E, offsets.data_ptr<int64_t>(),
                                         order.data_ptr<int32_t>());
  TORCH_CHECK_INDEX(bad == B * K, "kgdistill::corruption_scores: entity id ", bad < B * K ? ids.data_ptr<int64_t>()[bad] : 0,
                    " out of range for a table of ", E, " rows");
  const int64_t nh = std::max<int64_t>(0, std::min<int64_t>(num_head, K));
  kg_corrupt_fwd((int)kind, qh.data_ptr<float>(), qt.data_ptr<float>(), D, table.data_ptr<float>(), table.stride(0),
                 D, offsets.data_ptr<int64_t>(), order.data_ptr<int32_t>(), E, K, nh, mask_ptr(mask),
                 out.data_ptr<float>(), threads());
  return {out, offsets, order};
}

// (grad q_head [B, D], grad q_tail [B, D], grad table [E, D] dense)
std::tuple<at::Tensor, at::Tensor, at::Tensor> corruption_scores_backward(
    const at::Tensor& grad_in, const at::Tensor& q_head, const at::Tensor& q_tail, const at::Tensor& table_in,
    const at::Tensor& offsets, const at::Tensor& order, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& scores_in, int64_t kind, int64_t num_head) {
  TORCH_CHECK(scores_in.dim() == 2 && grad_in.sizes() == scores_in.sizes(),
              "kgdistill::corruption_scores_backward: grad and scores [B, K] expected");
  const int64_t B = scores_in.size(0), K = scores_in.size(1);
  check_corruption(q_head, q_tail, table_in, B, K, mask_in, kind);
  const int64_t E = table_in.size(0), D = table_in.size(1);
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.numel() == E + 1 && offsets.is_contiguous() &&
                  order.scalar_type() == at::kInt && order.numel() == B * K && order.is_contiguous(),
              "kgdistill::corruption_scores_backward: offsets / order of the forward expected");
  const at::Tensor qh = q_head.contiguous(), qt = q_tail.contiguous(), table = unit_columns(table_in);
  const at::Tensor grad = grad_in.to(at::kFloat).contiguous(), scores = scores_in.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_in.has_value()) mask = mask_in->contiguous();
  const int T = threads();
  at::Tensor grad_table = at::empty({E, D}, qh.options());
  at::Tensor grad_head = at::empty({B, D}, qh.options());
  at::Tensor grad_tail = at::empty({B, D}, qh.options());
  at::Tensor scratch = at::empty({T, 2, B, D}, qh.options());
  const int64_t nh = std::max<int64_t>(0, std::min<int64_t>(num_head, K));
  kg_corrupt_bwd((int)kind, qh.data_ptr<float>(), qt.data_ptr<float>(), D, table.data_ptr<float>(), table.stride(0),
                 D, offsets.data_ptr<int64_t>(), order.data_ptr<int32_t>(), E, B, K, nh, mask_ptr(mask),
                 scores.data_ptr<float>(), grad.data_ptr<float>(), grad_table.data_ptr<float>(),
                 grad_head.data_ptr<float>(), grad_tail.data_ptr<float>(), scratch.data_ptr<float>(), T);
  return {grad_head, grad_tail, grad_table};
}

}  // namespace

TORCH_LIBRARY(kgdistill, m) {
  m.def("all_pairs(Tensor q, Tensor e, int kind) -> Tensor");
  m.def("corruption_scores(Tensor q_head, Tensor q_tail, Tensor table, Tensor ids, Tensor? corrupt_head, int kind, "
        "int num_head) -> (Tensor, Tensor, Tensor)");
  m.def("corruption_scores_backward(Tensor grad, Tensor q_head, Tensor q_tail, Tensor table, Tensor offsets, "
        "Tensor order, Tensor? corrupt_head, Tensor scores, int kind, int num_head) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kgdistill, CPU, m) {
  m.impl("all_pairs", &all_pairs);
  m.impl("corruption_scores", &corruption_scores);
  m.impl("corruption_scores_backward", &corruption_scores_backward);
}
"""
