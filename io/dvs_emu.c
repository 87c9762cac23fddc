/* The DVS emulator (design in dvs_emu.h). Per step: render the moved image at every sensor
 * pixel, compare its log intensity with the pixel's reference level, collect the step's events
 * in pixel order, then sort them by (t, y, x, p) and append them. Two random streams are used
 * in a fixed order: the thresholds from the seed, then the noise per step and pixel from (seed,
 * recording), so results depend on nothing else. */
#include "dvs_emu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"

void qkf_dvs_emu_defaults(qkf_dvs_emu_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->scale = 1;
    c->saccades = 3;
    c->saccade_us = 100000;
    c->dt_us = 1000;
    c->threshold = 0.5f;
    c->sigma = 0.05f;
    c->eps = 0.1f;
    c->seed = 1;
}

int qkf_dvs_emu_validate(const qkf_dvs_emu_cfg *c, int h, int w)
{
    if (h < 1 || w < 1 || h > 4096 || w > 4096)
        return qkf_set_error("emulator: image size %dx%d out of range", w, h);
    if (c->scale < 1 || c->scale > 64)
        return qkf_set_error("emulator: scale %d is not in 1..64", c->scale);
    if (c->sensor < 0 || c->sensor > 4096)
        return qkf_set_error("emulator: sensor %d is not in 1..4096", c->sensor);
    if (c->saccades < 1 || c->saccades > 1000)
        return qkf_set_error("emulator: saccades %d is not in 1..1000", c->saccades);
    if (c->dt_us < 1 || c->saccade_us < c->dt_us || c->saccade_us > 100000000)
        return qkf_set_error("emulator: step %lld us and saccade %lld us (need 1 <= step <= "
                             "saccade <= 100 s)",
                             (long long)c->dt_us, (long long)c->saccade_us);
    if (!(c->threshold > 0.0f && c->threshold < 100.0f) || !(c->sigma >= 0.0f && c->sigma < 1.0f) ||
        !(c->eps > 0.0f && c->eps < 100.0f) || !(c->noise_hz >= 0.0f && c->noise_hz <= 1e5f) ||
        !(c->amplitude >= 0.0f && c->amplitude <= 4096.0f))
        return qkf_set_error("emulator: threshold %g (> 0), sigma %g ([0,1)), eps %g (> 0), "
                             "noise %g Hz (>= 0) or amplitude %g (>= 0) out of range",
                             (double)c->threshold, (double)c->sigma, (double)c->eps,
                             (double)c->noise_hz, (double)c->amplitude);
    return 0;
}

/* The triangle's corners in units of the amplitude; saccade k runs from corner k to k+1. */
static const double corner[3][2] = {{0.0, 1.0}, {0.5, 0.0}, {1.0, 1.0}};

static void offset_at(double A, int64_t t, int64_t saccade_us, int saccades, double *dx, double *dy)
{
    int64_t k = t / saccade_us;
    double u = (double)(t - k * saccade_us) / (double)saccade_us;
    if (k >= saccades) /* the end of the last saccade */
        k = saccades - 1, u = 1.0;
    const double *a = corner[k % 3], *b = corner[(k + 1) % 3];
    double s = 0.5 - 0.5 * cos(3.14159265358979323846 * u);
    *dx = A * (a[0] + s * (b[0] - a[0]));
    *dy = A * (a[1] + s * (b[1] - a[1]));
}

/* Log intensity of every sensor pixel with the image's top-left corner at (px, py). */
static void render(const float *gray, int h, int w, int scale, int S, double px, double py,
                   float eps, float *L)
{
    double inv = 1.0 / scale;
    for (int sy = 0; sy < S; sy++) {
        double v = ((double)sy + 0.5 - py) * inv - 0.5;
        double fy = floor(v);
        int y0 = (int)fy;
        double wy = v - fy;
        for (int sx = 0; sx < S; sx++) {
            double u = ((double)sx + 0.5 - px) * inv - 0.5;
            double fx = floor(u);
            int x0 = (int)fx;
            double wx = u - fx, I = 0.0;
            for (int k = 0; k < 4; k++) {
                int yy = y0 + (k >> 1), xx = x0 + (k & 1);
                if (yy < 0 || yy >= h || xx < 0 || xx >= w)
                    continue; /* the black background */
                double wk = ((k >> 1) ? wy : 1.0 - wy) * ((k & 1) ? wx : 1.0 - wx);
                I += wk * (double)gray[yy * w + xx];
            }
            L[sy * S + sx] = (float)log((double)eps + I);
        }
    }
}

static int cmp_event(const void *a, const void *b)
{
    const qkf_event *p = a, *q = b;
    if (p->t != q->t)
        return p->t < q->t ? -1 : 1;
    if (p->y != q->y)
        return p->y < q->y ? -1 : 1;
    if (p->x != q->x)
        return p->x < q->x ? -1 : 1;
    return (int)p->p - (int)q->p;
}

int qkf_dvs_emu_run(const qkf_dvs_emu_cfg *c, const uint8_t *img, int ch, int h, int w,
                    qkf_events *out)
{
    memset(out, 0, sizeof *out);
    if (qkf_dvs_emu_validate(c, h, w))
        return -1;
    if (ch < 1 || ch > 4)
        return qkf_set_error("emulator: %d channels (1 gray, 3 RGB)", ch);
    int side = (h > w ? h : w) * c->scale;
    int S = c->sensor ? c->sensor : side + 6;
    double A = c->amplitude > 0.0f ? (double)c->amplitude : (double)(S - side);
    if (A < 2.0 && c->amplitude <= 0.0f)
        A = 2.0 * c->scale;
    size_t np = (size_t)S * (size_t)S, hw = (size_t)h * (size_t)w;
    float *gray = qkf_malloc(hw * sizeof(float));
    for (size_t i = 0; i < hw; i++) {
        float v;
        if (ch == 3)
            v = 0.299f * img[i] + 0.587f * img[hw + i] + 0.114f * img[2 * hw + i];
        else if (ch == 1)
            v = img[i];
        else {
            v = 0.0f;
            for (int k = 0; k < ch; k++)
                v += img[(size_t)k * hw + i];
            v /= (float)ch;
        }
        gray[i] = v / 255.0f;
    }
    float *Lp = qkf_malloc(np * sizeof(float)), *L = qkf_malloc(np * sizeof(float));
    float *ref = qkf_malloc(np * sizeof(float)), *con = qkf_malloc(np * sizeof(float)),
          *coff = qkf_malloc(np * sizeof(float));
    qkf_rng r;
    qkf_rng_seed(&r, c->seed);
    for (size_t i = 0; i < np; i++) {
        float a = 1.0f + c->sigma * qkf_rng_normal(&r), b = 1.0f + c->sigma * qkf_rng_normal(&r);
        con[i] = c->threshold * (a > 0.1f ? a : 0.1f);
        coff[i] = c->threshold * (b > 0.1f ? b : 0.1f);
    }
    qkf_rng_seed(&r, c->seed ^ (0x9E3779B97F4A7C15ull * (c->recording + 1)));
    /* the image centred on the path's centre */
    double cx = ((double)S - (double)w * c->scale - A) / 2.0,
           cy = ((double)S - (double)h * c->scale - A) / 2.0, dx, dy;
    offset_at(A, 0, c->saccade_us, c->saccades, &dx, &dy);
    render(gray, h, w, c->scale, S, cx + dx, cy + dy, c->eps, Lp);
    memcpy(ref, Lp, np * sizeof(float));
    qkf_events_init(out, S, S, 4096);
    out->format = QKF_EVF_QEV;
    qkf_events sb; /* one step's events, sorted before they join out */
    qkf_events_init(&sb, S, S, 1024);
    int64_t total = (int64_t)c->saccades * c->saccade_us;
    double p_noise = (double)c->noise_hz * (double)c->dt_us * 1e-6;
    for (int64_t t0 = 0; t0 < total; t0 += c->dt_us) {
        int64_t t1 = t0 + c->dt_us < total ? t0 + c->dt_us : total;
        double span = (double)(t1 - t0);
        offset_at(A, t1, c->saccade_us, c->saccades, &dx, &dy);
        render(gray, h, w, c->scale, S, cx + dx, cy + dy, c->eps, L);
        sb.n = 0;
        for (size_t i = 0; i < np; i++) {
            double lp = Lp[i], lc = L[i], rf = ref[i], cn = con[i], cf = coff[i];
            int x = (int)(i % (size_t)S), y = (int)(i / (size_t)S);
            if (lc - rf >= cn) {
                while (lc - rf >= cn) {
                    rf += cn;
                    double f = (rf - lp) / (lc - lp);
                    f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
                    qkf_events_push(&sb, t0 + (int64_t)floor(f * span + 0.5), x, y, 1);
                }
            } else if (rf - lc >= cf) {
                while (rf - lc >= cf) {
                    rf -= cf;
                    double f = (lp - rf) / (lp - lc);
                    f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
                    qkf_events_push(&sb, t0 + (int64_t)floor(f * span + 0.5), x, y, 0);
                }
            }
            ref[i] = (float)rf;
            if (p_noise > 0.0) {
                uint64_t u = qkf_rng_u64(&r);
                if ((double)(u >> 11) * (1.0 / 9007199254740992.0) < p_noise) {
                    uint64_t v = qkf_rng_u64(&r);
                    qkf_events_push(&sb, t0 + (int64_t)(v % (uint64_t)(t1 - t0)), x, y,
                                    (int)(v >> 63));
                }
            }
        }
        if (sb.n > 1)
            qsort(sb.ev, (size_t)sb.n, sizeof *sb.ev, cmp_event);
        for (int64_t k = 0; k < sb.n; k++)
            qkf_events_push(out, sb.ev[k].t, sb.ev[k].x, sb.ev[k].y, sb.ev[k].p);
        float *tmp = Lp;
        Lp = L, L = tmp;
    }
    out->records = out->n;
    qkf_events_free(&sb);
    qkf_free(gray);
    qkf_free(Lp);
    qkf_free(L);
    qkf_free(ref);
    qkf_free(con);
    qkf_free(coff);
    return 0;
}
