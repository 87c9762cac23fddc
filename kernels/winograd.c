/* Winograd convolution F(m x m, 3 x 3), m = 2 or 4, for 3x3 stride-1 pad-1 convolutions
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * An output tile of m x m pixels needs an input tile of n x n, n = m + 2. With the transforms
 *   U = G g G^T (weights, n x n), V = B^T d B (input tile, n x n), Y = A^T (U .* V) A (m x m),
 * the n*n products U .* V summed over input channels become n*n independent GEMMs:
 *   M[a] (cout x P) = U[a] (cout x cin) x V[a] (cin x P),   P = tiles in the chunk.
 * F(4x4) does 36 multiplies per 16 outputs where direct convolution does 144; F(2x2) 16 per 4.
 *
 * The transforms run over blocks of WB tiles with the tile index innermost, so the compiler
 * vectorises them across tiles; the GEMMs run one per thread (OpenBLAS is single-threaded
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

/* B^T, G and A^T of F(2x2, 3x3) and F(4x4, 3x3), stored n x n, n x 3 and m x n. */
static const float BT2[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const float AT2[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};

static const float BT4[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};
static const float AT4[4][6] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

int qkf_wino_ok(int m, int k, int stride, int pad)
{
    return (m == 2 || m == 4) && k == 3 && stride == 1 && pad == 1;
}

int64_t qkf_wino_weight_floats(int m, int cout, int cin)
{
    return (int64_t)(m + 2) * (m + 2) * cout * cin;
}

void qkf_wino_weights(int m, float *U, const float *w, int cout, int cin)
{
    const int n = m + 2;
    const double *G = m == 2 ? &G2[0][0] : &G4[0][0];
#pragma omp parallel for schedule(static)
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const float *g = w + ((int64_t)co * cin + ci) * 9;
            double t[6][3], u;
            for (int i = 0; i < n; i++) /* t = G g */
                for (int j = 0; j < 3; j++)
                    t[i][j] = G[i * 3 + 0] * (double)g[0 * 3 + j] + G[i * 3 + 1] * (double)g[1 * 3 + j] +
                              G[i * 3 + 2] * (double)g[2 * 3 + j];
            for (int i = 0; i < n; i++) /* U = t G^T, rounded once */
                for (int j = 0; j < n; j++) {
                    u = t[i][0] * G[j * 3 + 0] + t[i][1] * G[j * 3 + 1] + t[i][2] * G[j * 3 + 2];
                    U[((int64_t)(i * n + j) * cout + co) * cin + ci] = (float)u;
                }
        }
}

static void tiles_of(int m, int h, int w, int *th, int *tw)
{
    *th = (h + m - 1) / m;
    *tw = (w + m - 1) / m;
}

int64_t qkf_wino_scratch_floats(int m, int cin, int cout, int h, int w)
{
    int th, tw;
    tiles_of(m, h, w, &th, &tw);
    int64_t P = (int64_t)th * tw;
    P = (P + WB - 1) / WB * WB;
    return (int64_t)(m + 2) * (m + 2) * (cin + cout) * P;
}

/* V[a][c][p] for tiles p0 .. p0+nb-1 (nb <= WB) of channel c: d = the n x n input patch of
 * each tile (zero outside the image), V = B^T d B, lanes = tiles. */
static void input_block(int m, float *V, int64_t vstride, const float *in, int F_in, int c, int f0,
                        int h, int w, int th, int tw, int64_t q0, int nb)
{
    const int n = m + 2;
    const float *BT = m == 2 ? &BT2[0][0] : &BT4[0][0];
    float d[36][WB], t[36][WB];
    const int64_t per_frame = (int64_t)th * tw;
    for (int l = 0; l < nb; l++) {
        int64_t q = q0 + l;
        int f = (int)(q / per_frame), r = (int)(q % per_frame);
        int y0 = (r / tw) * m - 1, x0 = (r % tw) * m - 1;
        const float *src = in + ((int64_t)c * F_in + f0 + f) * h * w;
        for (int i = 0; i < n; i++) {
            int y = y0 + i;
            for (int j = 0; j < n; j++) {
                int x = x0 + j;
                d[i * n + j][l] = (y >= 0 && y < h && x >= 0 && x < w) ? src[y * w + x] : 0.0f;
            }
        }
    }
    for (int l = nb; l < WB; l++)
        for (int i = 0; i < n * n; i++)
            d[i][l] = 0.0f;
    /* t = B^T d */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float acc[WB] = {0};
            for (int k = 0; k < n; k++) {
                float b = BT[i * n + k];
                if (b != 0.0f)
                    for (int l = 0; l < WB; l++)
                        acc[l] += b * d[k * n + j][l];
            }
            memcpy(t[i * n + j], acc, sizeof acc);
        }
    /* V = t B */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float acc[WB] = {0};
            for (int k = 0; k < n; k++) {
                float b = BT[j * n + k];
                if (b != 0.0f)
                    for (int l = 0; l < WB; l++)
                        acc[l] += t[i * n + k][l] * b;
            }
            memcpy(V + (int64_t)(i * n + j) * vstride, acc, (size_t)nb * sizeof(float));
        }
}

/* Y = A^T M A for tiles p0 .. p0+nb-1 of output channel co, written into out (clipped). */
static void output_block(int m, float *out, int F_out, int co, int f0, int h, int w, int th,
                         int tw, const float *M, int64_t mstride, int64_t q0, int nb)
{
    const int n = m + 2;
    const float *AT = m == 2 ? &AT2[0][0] : &AT4[0][0];
    float mm[36][WB], t[24][WB], y[16][WB];
    for (int a = 0; a < n * n; a++) {
        memcpy(mm[a], M + a * mstride, (size_t)nb * sizeof(float));
        for (int l = nb; l < WB; l++)
            mm[a][l] = 0.0f;
    }
    for (int i = 0; i < m; i++) /* t = A^T M, m x n */
        for (int j = 0; j < n; j++) {
            float acc[WB] = {0};
            for (int k = 0; k < n; k++) {
                float c = AT[i * n + k];
                if (c != 0.0f)
                    for (int l = 0; l < WB; l++)
                        acc[l] += c * mm[k * n + j][l];
            }
            memcpy(t[i * n + j], acc, sizeof acc);
        }
    for (int i = 0; i < m; i++) /* y = t A, m x m */
        for (int j = 0; j < m; j++) {
            float acc[WB] = {0};
            for (int k = 0; k < n; k++) {
                float c = AT[j * n + k];
                if (c != 0.0f)
                    for (int l = 0; l < WB; l++)
                        acc[l] += t[i * n + k][l] * c;
            }
            memcpy(y[i * m + j], acc, sizeof acc);
        }
    const int64_t per_frame = (int64_t)th * tw;
    for (int l = 0; l < nb; l++) {
        int64_t q = q0 + l;
        int f = (int)(q / per_frame), r = (int)(q % per_frame);
        int y0 = (r / tw) * m, x0 = (r % tw) * m;
        float *dst = out + ((int64_t)co * F_out + f0 + f) * h * w;
        for (int i = 0; i < m && y0 + i < h; i++)
            for (int j = 0; j < m && x0 + j < w; j++)
                dst[(y0 + i) * w + x0 + j] = y[i * m + j][l];
    }
}

void qkf_wino_conv_forward(int m, float *out, const float *in, const float *U, int F, int cin,
                           int h, int w, int cout, float *scratch, int64_t scratch_cap)
{
    const int n = m + 2, A = n * n;
    int th, tw;
    tiles_of(m, h, w, &th, &tw);
    const int64_t per_frame = (int64_t)th * tw;
    /* frames per chunk: V [A][cin][P] and M [A][cout][P] fit in scratch (P rounded to WB) */
    int chunk = 1;
    while (chunk < F) {
        int64_t P = ((int64_t)(chunk + 1) * per_frame + WB - 1) / WB * WB;
        if ((int64_t)A * (cin + cout) * P > scratch_cap)
            break;
        chunk++;
    }
    for (int f0 = 0; f0 < F; f0 += chunk) {
        int nf = F - f0 < chunk ? F - f0 : chunk;
        int64_t P = (int64_t)nf * per_frame, Pp = (P + WB - 1) / WB * WB;
        float *V = scratch, *M = scratch + (int64_t)A * cin * Pp;
        int64_t nblk = Pp / WB;
#pragma omp parallel
        {
#pragma omp for collapse(2) schedule(static)
            for (int c = 0; c < cin; c++)
                for (int64_t bk = 0; bk < nblk; bk++) {
                    int64_t q0 = bk * WB;
                    int nb = (int)(P - q0 < WB ? P - q0 : WB);
                    input_block(m, V + (int64_t)c * Pp + q0, (int64_t)cin * Pp, in, F, c, f0, h,
                                w, th, tw, q0, nb);
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
                    output_block(m, out, F, co, f0, h, w, th, tw, M + (int64_t)co * Pp + q0,
                                 (int64_t)cout * Pp, q0, nb);
                }
        }
    }
}
