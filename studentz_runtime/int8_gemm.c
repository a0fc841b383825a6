// int8 x int8 -> int32 GEMMs with AVX-512 VNNI (vpdpbusd) for the numpy engine (int8_gemm.py builds and loads this).
// vpdpbusd multiplies unsigned by signed bytes, so activations are stored as q + 128 (uint8) and every output column
// gets 128 * sum_k W[k, n] taken off again. Weights are packed once into panels of NR columns: per group of 4 k values,
// NR columns x 4 bytes, so one 64-byte load feeds 16 columns' dot products of 4.
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MR 6                 // rows of a register tile
#define NR 64                // columns of a panel: 4 zmm accumulators per row
#define MB 96                // rows quantized at once: their bytes stay in L2 while every panel passes over them

static long round4(long k) { return (k + 3) & ~3L; }

// W (K, N) int8 row-major -> packed panels (see above), zero-padded to NR columns and 4-aligned K; colsum[n] = sum_k W.
void pack_weights(const int8_t *w, long K, long N, int8_t *out, int32_t *colsum) {
  long kg = round4(K) / 4, panels = (N + NR - 1) / NR;
  memset(out, 0, (size_t)(panels * kg * NR * 4));
  for (long n = 0; n < N; n++) {
    int32_t s = 0;
    int8_t *p = out + (n / NR) * kg * NR * 4 + (n % NR) * 4;
    for (long k = 0; k < K; k++) { p[(k / 4) * NR * 4 + k % 4] = w[k * N + n]; s += w[k * N + n]; }
    colsum[n] = s;
  }
}

// acc[r][j] += A[r, 4g:4g+4] . B columns, over every k group of one panel; A is uint8 (q + 128), lda bytes a row.
static inline void tile(const uint8_t *a, long lda, const int8_t *b, long kg, __m512i acc[MR][4]) {
  for (int r = 0; r < MR; r++) for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_si512();
  for (long g = 0; g < kg; g++, b += NR * 4) {
    __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
    __m512i b2 = _mm512_loadu_si512(b + 128), b3 = _mm512_loadu_si512(b + 192);
    for (int r = 0; r < MR; r++) {
      __m512i x = _mm512_set1_epi32(*(const int32_t *)(a + r * lda + 4 * g));
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x, b0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x, b1);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], x, b2);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], x, b3);
    }
  }
}

static __mmask16 cols_mask(long left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

// The GEMM of `rows` quantized rows (a: lda bytes a row, lda a multiple of 4; rows up to the next multiple of MR are
// readable, their results dropped) against all packed panels. Epilogue: int32 out (ci, when given) or float out =
// acc * ascale[r] * wscale[n] + bias[n].
static void gemm_rows(const uint8_t *a, long rows, long lda, const int8_t *bp, const int32_t *colsum, long N,
                      int32_t *ci, float *cf, const float *ascale, const float *wscale, const float *bias, long ldc) {
  long kg = lda / 4, panels = (N + NR - 1) / NR;
  for (long p = 0; p < panels; p++) {
    const int8_t *b = bp + p * kg * NR * 4;
    for (long r0 = 0; r0 < rows; r0 += MR) {
      long mr = rows - r0 < MR ? rows - r0 : MR;
      const uint8_t *at = a + r0 * lda;
      for (long r = 0; r < mr; r++)  // the output's lines start coming in while the tile computes
        for (long n = p * NR; n < p * NR + NR && n < N; n += 16) {
          char *o = ci ? (char *)(ci + (r0 + r) * ldc + n) : (char *)(cf + (r0 + r) * ldc + n);
          _mm_prefetch(o, _MM_HINT_ET0);
        }
      __m512i acc[MR][4];
      tile(at, lda, b, kg, acc);
      for (int j = 0; j < 4; j++) {
        long n = p * NR + j * 16;
        if (n >= N) break;
        __mmask16 m = cols_mask(N - n);
        __m512i off = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m, colsum + n), 7);
        __m512 ws = wscale ? _mm512_maskz_loadu_ps(m, wscale + n) : _mm512_setzero_ps();
        __m512 bs = bias ? _mm512_maskz_loadu_ps(m, bias + n) : _mm512_setzero_ps();
        for (long r = 0; r < mr; r++) {
          __m512i v = _mm512_sub_epi32(acc[r][j], off);
          long at_out = (r0 + r) * ldc + n;
          if (ci) _mm512_mask_storeu_epi32(ci + at_out, m, v);
          else {
            __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(ascale[r0 + r]));
            _mm512_mask_storeu_ps(cf + at_out, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), s, bs));
          }
        }
      }
    }
  }
}

static float absmax(const float *x, long n) {
  __m512 m = _mm512_setzero_ps();
  for (long i = 0; i < n; i += 16)
    m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(cols_mask(n - i), x + i)));
  return _mm512_reduce_max_ps(m);
}

// dst[i] = round(x[i] * f) + 128 as bytes (|x * f| <= 127 by the caller's choice of f)
static void quant(const float *x, long n, float f, uint8_t *dst) {
  __m512 vf = _mm512_set1_ps(f);
  __m512i c = _mm512_set1_epi32(128);
  for (long i = 0; i < n; i += 16) {
    __mmask16 m = cols_mask(n - i);
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vf)), c);
    _mm512_mask_cvtepi32_storeu_epi8(dst + i, m, q);
  }
}

// room for `rows` quantized rows and the padding rows gemm_rows may read, all zeros (128) to start with
static uint8_t *scratch(long rows, long lda) {
  size_t bytes = (size_t)((((rows + MR - 1) / MR * MR) * lda + 63) & ~63L);
  uint8_t *u = aligned_alloc(64, bytes ? bytes : 64);
  if (u) memset(u, 128, bytes);
  return u;
}

// C (M, N) int32 = A (M, K) int8 @ W, W packed by pack_weights: the exact integer product, for tests. 0, or -1 when
// out of memory (likewise below).
int gemm_s8(const int8_t *a, long M, long K, const int8_t *bp, const int32_t *colsum, long N, int32_t *c) {
  long lda = round4(K);
  uint8_t *u = scratch(M, lda);
  if (!u) return -1;
  for (long r = 0; r < M; r++)
    for (long k = 0; k < K; k++) u[r * lda + k] = (uint8_t)(a[r * K + k] + 128);
  gemm_rows(u, M, lda, bp, colsum, N, c, 0, 0, 0, 0, N);
  free(u);
  return 0;
}

// out (M, N) float = x (M, K) float @ (W * wscale) + bias, x quantized per row (absmax / 127), MB rows at a time.
int linear_f32(const float *x, long M, long K, const int8_t *bp, const int32_t *colsum, const float *wscale,
               const float *bias, long N, float *out) {
  long lda = round4(K);
  uint8_t *u = scratch(MB, lda);
  if (!u) return -1;
  float s[MB];
  for (long r0 = 0; r0 < M; r0 += MB) {
    long rows = M - r0 < MB ? M - r0 : MB;
    for (long r = 0; r < rows; r++) {
      const float *xr = x + (r0 + r) * K;
      float am = absmax(xr, K);
      s[r] = am / 127.0f;
      quant(xr, K, am > 0 ? 127.0f / am : 0.0f, u + r * lda);  // the 4-alignment's pad bytes stay 128
    }
    gemm_rows(u, rows, lda, bp, colsum, N, 0, out + r0 * N, s, wscale, bias, N);
  }
  free(u);
  return 0;
}

// The dilated conv as one GEMM over its k shifted taps: x (B, L, C) float, mask (B, L) or null (inputs scaled by it;
// outside the sequence: zero). Row (b, t) of the taps reads x[b, t + j * dil - left] for j < k; it is quantized with
// one scale, the largest |value| of its k inputs / 127. out (B, L, N) = taps @ (W * wscale) + bias.
int conv_f32(const float *x, const float *mask, long B, long L, long C, long k, long dil, long left,
              const int8_t *bp, const int32_t *colsum, const float *wscale, const float *bias, long N, float *out) {
  long K = k * C, lda = round4(K), M = B * L;
  float *tok = malloc(sizeof(float) * (size_t)(M + 1));  // per position: |mask| * max |x|
  uint8_t *u = scratch(MB, lda);
  if (!tok || !u) { free(tok); free(u); return -1; }
  for (long i = 0; i < M; i++) tok[i] = (mask ? (mask[i] < 0 ? -mask[i] : mask[i]) : 1.0f) * absmax(x + i * C, C);
  float s[MB];
  for (long r0 = 0; r0 < M; r0 += MB) {
    long rows = M - r0 < MB ? M - r0 : MB;
    for (long r = 0; r < rows; r++) {
      long b = (r0 + r) / L, t = (r0 + r) % L;
      float am = 0;
      for (long j = 0; j < k; j++) {
        long p = t + j * dil - left;
        if (p >= 0 && p < L && tok[b * L + p] > am) am = tok[b * L + p];
      }
      s[r] = am / 127.0f;
      float f = am > 0 ? 127.0f / am : 0.0f;
      uint8_t *dst = u + r * lda;
      for (long j = 0; j < k; j++) {
        long p = t + j * dil - left;
        float fm = (p >= 0 && p < L) ? f * (mask ? mask[b * L + p] : 1.0f) : 0.0f;
        if (fm == 0.0f) memset(dst + j * C, 128, (size_t)C);
        else quant(x + (b * L + p) * C, C, fm, dst + j * C);
      }
    }
    gemm_rows(u, rows, lda, bp, colsum, N, 0, out + r0 * N, s, wscale, bias, N);
  }
  free(u);
  free(tok);
  return 0;
}
