/* Winograd convolution F(m x m, 3 x 3), m = 2 or 4, for 3x3 stride-1 pad-1 convolutions
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * An output tile of m x m pixels needs an input tile of n x n, n = m + 2. With the transforms
 *   U = G g G^T (weights, n x n), V = B^T d B (input tile, n x n), Y = A^T (U .* V) A (m x m),
 * the n*n products U .* V summed over input channels become n*n independent GEMMs:
 *   M[a] (cout x P) = U[a] (cout x cin) x V[a] (cin x P),   P = tiles in the chunk.
 * F(4x4) does 36 multiplies per 16 outputs where direct convolution does 144; F(2x2) 16 per 4.
 *
 * The input is first copied into zero-padded planes, so that every tile reads its n x n patch
 * without bounds checks; the transforms run over blocks of WB tiles with the tile index
 * innermost, so the compiler vectorises them across tiles; the GEMMs run one per thread (OpenBLAS is single-threaded
 * inside an OpenMP region), so every output is computed in the same order at any thread count.
 *
 * Accuracy: F(2x2)'s transforms have coefficients 0, +-1 and +-1/2, so on weights that are
 * small powers of two and small-integer inputs (spikes) every value is exact, as in direct
 * convolution. F(4x4)'s weight transform has 1/6, 1/12, 1/24 and its output transform factors
 * up to 8: results differ from direct convolution by a few ulps of the partial sums. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "winograd.h"

#define WB 16 /* tiles per transform block (one AVX-512 vector of floats) */

/* G of F(2x2, 3x3) and F(4x4, 3x3), n x 3 (B^T and A^T are written out in bt* and at*). */
static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};



static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};


int qkf_wino_ok(int m, int k, int stride, int pad)
{
    return (m == 2 || m == 4) && k == 3 && stride == 1 && pad == 1;
}

int64_t qkf_wino_weight_floats(int m, int cout, int cin)
{
    return (int64_t)(m + 2) * (m + 2) * cout * cin;
}

/* U [(m+2)^2][uo][ui] of the uo x ui kernels g: those of w [cout][cin][3][3] (uo = cout,
 * ui = cin), or with transposed set, of w'[ci][co][ky][kx] = w[co][ci][2-ky][2-kx] (uo = cin,
 * ui = cout), read from w in place. */
static void weights(int m, float *U, const float *w, int cout, int cin, int transposed)
{
    const int n = m + 2, uo_n = transposed ? cin : cout, ui_n = transposed ? cout : cin;
    const double *G = m == 2 ? &G2[0][0] : &G4[0][0];
#pragma omp parallel for schedule(static)
    for (int uo = 0; uo < uo_n; uo++)
        for (int ui = 0; ui < ui_n; ui++) {
            double g[9], t[6][3], u;
            if (transposed) {
                const float *src = w + ((int64_t)ui * cin + uo) * 9;
                for (int k = 0; k < 9; k++)
                    g[k] = (double)src[8 - k];
            } else {
                const float *src = w + ((int64_t)uo * cin + ui) * 9;
                for (int k = 0; k < 9; k++)
                    g[k] = (double)src[k];
            }
            for (int i = 0; i < n; i++) /* t = G g */
                for (int j = 0; j < 3; j++)
                    t[i][j] = G[i * 3 + 0] * g[0 * 3 + j] + G[i * 3 + 1] * g[1 * 3 + j] +
                              G[i * 3 + 2] * g[2 * 3 + j];
            for (int i = 0; i < n; i++) /* U = t G^T, rounded once */
                for (int j = 0; j < n; j++) {
                    u = t[i][0] * G[j * 3 + 0] + t[i][1] * G[j * 3 + 1] + t[i][2] * G[j * 3 + 2];
                    U[((int64_t)(i * n + j) * uo_n + uo) * ui_n + ui] = (float)u;
                }
        }
}

void qkf_wino_weights(int m, float *U, const float *w, int cout, int cin)
{
    weights(m, U, w, cout, cin, 0);
}

void qkf_wino_weights_transposed(int m, float *U, const float *w, int cout, int cin)
{
    /* the data gradient of y = conv(x, w) is dx = conv(dy, w'): the weights of a cout -> cin
     * convolution, transformed without a copy of w' (this runs in every training step) */
    weights(m, U, w, cout, cin, 1);
}

static void tiles_of(int m, int h, int w, int *th, int *tw)
{
    *th = (h + m - 1) / m;
    *tw = (w + m - 1) / m;
}

/* floats of one zero-padded input plane: (th*m + 2) x (tw*m + 2) */
static int64_t padded_plane(int m, int th, int tw)
{
    return (int64_t)(th * m + 2) * (tw * m + 2);
}

int64_t qkf_wino_scratch_floats(int m, int cin, int cout, int h, int w)
{
    int th, tw;
    tiles_of(m, h, w, &th, &tw);
    int64_t P = (int64_t)th * tw;
    P = (P + WB - 1) / WB * WB;
    return (int64_t)(m + 2) * (m + 2) * (cin + cout) * P + (int64_t)cin * padded_plane(m, th, tw);
}

/* The 1-D transforms, over WB lanes: B^T x (n = m + 2 values in, n out) and A^T x (n in, m
 * out), written out so that no multiply by 0 or 1 is done. */
#define LANES for (int l = 0; l < WB; l++)
static void bt4(float (*restrict o)[WB], const float (*restrict x)[WB])
{
    LANES
    {
        float x0 = x[0][l], x1 = x[1][l], x2 = x[2][l], x3 = x[3][l], x4 = x[4][l], x5 = x[5][l];
        o[0][l] = 4.0f * x0 - 5.0f * x2 + x4;
        o[1][l] = -4.0f * x1 - 4.0f * x2 + x3 + x4;
        o[2][l] = 4.0f * x1 - 4.0f * x2 - x3 + x4;
        o[3][l] = -2.0f * x1 - x2 + 2.0f * x3 + x4;
        o[4][l] = 2.0f * x1 - x2 - 2.0f * x3 + x4;
        o[5][l] = 4.0f * x1 - 5.0f * x3 + x5;
    }
}
static void bt2(float (*restrict o)[WB], const float (*restrict x)[WB])
{
    LANES
    {
        float x0 = x[0][l], x1 = x[1][l], x2 = x[2][l], x3 = x[3][l];
        o[0][l] = x0 - x2;
        o[1][l] = x1 + x2;
        o[2][l] = x2 - x1;
        o[3][l] = x1 - x3;
    }
}
static void at4(float (*restrict o)[WB], const float (*restrict x)[WB])
{
    LANES
    {
        float x0 = x[0][l], x1 = x[1][l], x2 = x[2][l], x3 = x[3][l], x4 = x[4][l], x5 = x[5][l];
        float s12 = x1 + x2, d12 = x1 - x2, s34 = x3 + x4, d34 = x3 - x4;
        o[0][l] = x0 + s12 + s34;
        o[1][l] = d12 + 2.0f * d34;
        o[2][l] = s12 + 4.0f * s34;
        o[3][l] = d12 + 8.0f * d34 + x5;
    }
}
static void at2(float (*restrict o)[WB], const float (*restrict x)[WB])
{
    LANES
    {
        float x0 = x[0][l], x1 = x[1][l], x2 = x[2][l], x3 = x[3][l];
        o[0][l] = x0 + x1 + x2;
        o[1][l] = x1 - x2 - x3;
    }
}

/* 2-D: out = T^T in T for an n x n (input) or n x n -> m x m (output) block of lanes, with
 * f the 1-D transform (o rows of k_out from n rows). in, out: [rows * cols][WB]. */
static void transform2d(void (*f)(float (*)[WB], const float (*)[WB]), int n, int k_out,
                        float (*out)[WB], const float (*in)[WB])
{
    float col[6][WB], res[6][WB], t[36][WB];
    for (int j = 0; j < n; j++) { /* columns: t[.][j] = f(in[.][j]) */
        for (int i = 0; i < n; i++)
            memcpy(col[i], in[i * n + j], sizeof col[i]);
        f(res, (const float(*)[WB])col);
        for (int i = 0; i < k_out; i++)
            memcpy(t[i * n + j], res[i], sizeof res[i]);
    }
    for (int i = 0; i < k_out; i++) { /* rows: out[i][.] = f(t[i][.]) */
        f(res, (const float(*)[WB])(t + i * n));
        for (int j = 0; j < k_out; j++)
            memcpy(out[i * k_out + j], res[j], sizeof res[j]);
    }
}

/* V[a][c][p] for tiles q0 .. q0+nb-1 (nb <= WB) of channel c, from its zero-padded planes
 * pad [nf][hp][wp]: d = the n x n patch of each tile, V = B^T d B, lanes = tiles. */
static void input_block(int m, float *V, int64_t vstride, const float *pad, int hp, int wp,
                        int tw, int64_t per_frame, int64_t q0, int nb)
{
    const int n = m + 2;
    float d[36][WB], v[36][WB];
    for (int l = 0; l < nb; l++) {
        int64_t q = q0 + l;
        int64_t f = q / per_frame;
        int r = (int)(q % per_frame);
        const float *src = pad + f * hp * wp + (int64_t)(r / tw) * m * wp + (r % tw) * m;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                d[i * n + j][l] = src[i * wp + j];
    }
    for (int l = nb; l < WB; l++)
        for (int i = 0; i < n * n; i++)
            d[i][l] = 0.0f;
    transform2d(m == 2 ? bt2 : bt4, n, n, v, (const float(*)[WB])d);
    for (int a = 0; a < n * n; a++)
        memcpy(V + (int64_t)a * vstride, v[a], (size_t)nb * sizeof(float));
}

/* Y = A^T M A for tiles q0 .. q0+nb-1 of output channel co, written into out (clipped). */
static void output_block(int m, float *out, int F_out, int co, int f0, int h, int w, int tw,
                         const float *M, int64_t mstride, int64_t per_frame, int64_t q0, int nb,
                         int acc)
{
    const int n = m + 2;
    float mm[36][WB], y[16][WB];
    for (int a = 0; a < n * n; a++) {
        memcpy(mm[a], M + a * mstride, (size_t)nb * sizeof(float));
        for (int l = nb; l < WB; l++)
            mm[a][l] = 0.0f;
    }
    transform2d(m == 2 ? at2 : at4, n, m, y, (const float(*)[WB])mm);
    for (int l = 0; l < nb; l++) {
        int64_t q = q0 + l;
        int f = (int)(q / per_frame), r = (int)(q % per_frame);
        int y0 = (r / tw) * m, x0 = (r % tw) * m;
        float *dst = out + ((int64_t)co * F_out + f0 + f) * h * w;
        for (int i = 0; i < m && y0 + i < h; i++)
            for (int j = 0; j < m && x0 + j < w; j++) {
                float *o = dst + (y0 + i) * w + x0 + j;
                *o = acc ? *o + y[i * m + j][l] : y[i * m + j][l];
            }
    }
}

static void wino_conv(int m, float *out, const float *in, const float *U, int F, int cin, int h,
                      int w, int cout, float *scratch, int64_t scratch_cap, int acc)
{
    const int n = m + 2, A = n * n;
    int th, tw;
    tiles_of(m, h, w, &th, &tw);
    const int64_t per_frame = (int64_t)th * tw;
    const int hp = th * m + 2, wp = tw * m + 2;
    const int64_t plane = padded_plane(m, th, tw);
    /* frames per chunk: V [A][cin][P], M [A][cout][P] (P rounded up to WB) and the padded
     * input planes [cin][nf][hp][wp] fit in scratch */
    int chunk = 1;
    while (chunk < F) {
        int64_t P = ((int64_t)(chunk + 1) * per_frame + WB - 1) / WB * WB;
        if ((int64_t)A * (cin + cout) * P + (int64_t)cin * (chunk + 1) * plane > scratch_cap)
            break;
        chunk++;
    }
    for (int f0 = 0; f0 < F; f0 += chunk) {
        int nf = F - f0 < chunk ? F - f0 : chunk;
        int64_t P = (int64_t)nf * per_frame, Pp = (P + WB - 1) / WB * WB;
        float *V = scratch, *M = scratch + (int64_t)A * cin * Pp;
        float *pad = M + (int64_t)A * cout * Pp;
        int64_t nblk = Pp / WB;
#pragma omp parallel
        {
#pragma omp for collapse(2) schedule(static)
            for (int c = 0; c < cin; c++) /* zero-padded copies of the chunk's planes */
                for (int f = 0; f < nf; f++) {
                    float *dst = pad + ((int64_t)c * nf + f) * plane;
                    const float *src = in + ((int64_t)c * F + f0 + f) * h * w;
                    memset(dst, 0, (size_t)wp * sizeof(float));
                    for (int y = 0; y < h; y++) {
                        float *row = dst + (int64_t)(y + 1) * wp;
                        row[0] = 0.0f;
                        memcpy(row + 1, src + (int64_t)y * w, (size_t)w * sizeof(float));
                        memset(row + 1 + w, 0, (size_t)(wp - 1 - w) * sizeof(float));
                    }
                    memset(dst + (int64_t)(h + 1) * wp, 0, (size_t)(hp - 1 - h) * wp * sizeof(float));
                }
#pragma omp for collapse(2) schedule(static)
            for (int c = 0; c < cin; c++)
                for (int64_t bk = 0; bk < nblk; bk++) {
                    int64_t q0 = bk * WB;
                    int nb = (int)(P - q0 < WB ? P - q0 : WB);
                    input_block(m, V + (int64_t)c * Pp + q0, (int64_t)cin * Pp,
                                pad + (int64_t)c * nf * plane, hp, wp, tw, per_frame, q0, nb);
                }
#pragma omp for schedule(dynamic, 1)
            for (int a = 0; a < A; a++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)Pp, cin, 1.0f,
                            U + (int64_t)a * cout * cin, cin, V + (int64_t)a * cin * Pp, (int)Pp,
                            0.0f, M + (int64_t)a * cout * Pp, (int)Pp);
#pragma omp for collapse(2) schedule(static)
            for (int co = 0; co < cout; co++)
                for (int64_t bk = 0; bk < nblk; bk++) {
                    int64_t q0 = bk * WB;
                    int nb = (int)(P - q0 < WB ? P - q0 : WB);
                    output_block(m, out, F, co, f0, h, w, tw, M + (int64_t)co * Pp + q0,
                                 (int64_t)cout * Pp, per_frame, q0, nb, acc);
                }
        }
    }
}

void qkf_wino_conv_forward(int m, float *out, const float *in, const float *U, int F, int cin,
                           int h, int w, int cout, float *scratch, int64_t scratch_cap)
{
    wino_conv(m, out, in, U, F, cin, h, w, cout, scratch, scratch_cap, 0);
}

void qkf_wino_conv_accumulate(int m, float *out, const float *in, const float *U, int F, int cin,
                              int h, int w, int cout, float *scratch, int64_t scratch_cap)
{
    wino_conv(m, out, in, U, F, cin, h, w, cout, scratch, scratch_cap, 1);
}
