/* The quantiser: a float QKFormer checkpoint -> the integer model of a chip profile (quant.h).
 *
 * Every number is computed in a fixed order of IEEE operations (BatchNorm folded in float32 as
 * qkf_bn_fold does, everything after in double, rounding half away from zero), so the PyTorch
 * reference (tools/reference/qkformer_int.py) derives the same integers bit for bit. The
 * algorithm is written down in docs/hardware.md, "Quantisation"; in short, per conv layer and per
 * group of channels (one channel, or the whole layer when the profile is per layer):
 *
 *   wr = folded weight * (input scale) / 2,  br = folded bias / 2   (the LIF's 1/2 folded in)
 *   dmin = the smallest membrane unit that keeps the membrane, the current register, the
 *          threshold mantissa and the bias mantissa in range (headroom or calibration)
 *   e    = the largest weight exponent (>= 0) whose full-mantissa unit K / 2^e >= dmin,
 *          K = max|wr| / (2^current_shift * mant_max); d0 = K / 2^e (or dmin if none)
 *   theta = floor((vth / d0 - gt) / 2^threshold_shift) << threshold_shift, gt = 1 for a '>'
 *          comparator; delta = vth / (theta + gt): so "H >= vth / delta" holds exactly
 *   mant = round(wr / (delta * 2^(current_shift + e))), bias = round(br / delta) as mant << exp */
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "../kernels/kernels.h"

static double rnd(double x) { return x < 0 ? -floor(-x + 0.5) : floor(x + 0.5); }

int qkf_quant_check_arith(const qkf_hw_arith *a)
{
    if (a->is_float)
        return qkf_set_error("the profile is the float machine: nothing to quantise");
    if (a->leak == QKF_HW_LEAK_LINEAR)
        return qkf_set_error("arithmetic: leak is linear (a constant subtracted each step): "
                             "QKFormer's LIF halves its membrane each step; no integer form");
    if (a->leak != QKF_HW_LEAK_DECAY && a->leak != QKF_HW_LEAK_NONE)
        return qkf_set_error("arithmetic: leak kind %d unknown", a->leak);
    if (a->weight_codebook != 0)
        return qkf_set_error("arithmetic: weights come from a codebook of %d values per neuron "
                             "(the quantiser needs free weight mantissas)",
                             a->weight_codebook);
    const struct {
        const char *key;
        int v, lo, hi;
    } r[] = {
        {"weight_bits", a->weight_bits, 2, 16},
        {"weight_exp_min", a->weight_exp_min, -24, 24},
        {"weight_exp_max", a->weight_exp_max, 0, 24},
        {"current_bits", a->current_bits, 2, 64},
        {"current_shift", a->current_shift, 0, 24},
        {"membrane_bits", a->membrane_bits, 4, 32},
        {"decay_bits", a->decay_bits, a->leak == QKF_HW_LEAK_NONE ? 0 : 1, 24},
        {"threshold_bits", a->threshold_bits, 1, 31},
        {"threshold_shift", a->threshold_shift, 0, 24},
        {"bias_bits", a->bias_bits, 2, 32},
        {"bias_exp_max", a->bias_exp_max, 0, 24},
        {"input_bits", a->input_bits, 1, 16},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi) {
            if (strcmp(r[i].key, "decay_bits") == 0)
                return qkf_set_error("arithmetic: decay_bits is %d (QKFormer's LIF leaks by half "
                                     "each step, tau = 2: the profile needs a decay unit)",
                                     r[i].v);
            return qkf_set_error("arithmetic: %s is %d (the integer form supports %d..%d)",
                                 r[i].key, r[i].v, r[i].lo, r[i].hi);
        }
    if (a->weight_exp_min > a->weight_exp_max)
        return qkf_set_error("arithmetic: weight_exp_min %d > weight_exp_max %d",
                             a->weight_exp_min, a->weight_exp_max);
    return 0;
}

void qkf_qmodel_free(qkf_qmodel *q)
{
    if (q->ops)
        for (int i = 0; i < q->g.n_ops; i++) {
            qkf_qop *o = &q->ops[i];
            qkf_free(o->w);
            qkf_free(o->w_mant);
            qkf_free(o->w_exp);
            qkf_free(o->bias);
            qkf_free(o->bias_mant);
            qkf_free(o->bias_exp);
            qkf_free(o->theta);
            qkf_free(o->delta);
            qkf_free(o->head_w);
            qkf_free(o->head_mant);
            qkf_free(o->head_b);
        }
    qkf_free(q->ops);
    qkf_graph_free(&q->g);
    memset(q, 0, sizeof *q);
}

/* The input scale of static images: the largest |normalised pixel| over in_max steps. */
static void input_scale(const qkf_model *m, const qkf_hw_arith *a, const qkf_quant_opts *o,
                        qkf_qmodel *q)
{
    if (qkf_config_is_frames(&m->cfg)) {
        q->in_scale = 1.0, q->in_max = 0;
        return;
    }
    double xmax = 1.0;
    if (o && o->calib_in > 0)
        xmax = o->calib_in;
    else if (m->n_norm > 0) {
        xmax = 0.0;
        for (int c = 0; c < m->n_norm; c++) {
            double lo = fabs((0.0 - (double)m->input_mean[c]) / (double)m->input_std[c]);
            double hi = fabs((1.0 - (double)m->input_mean[c]) / (double)m->input_std[c]);
            xmax = lo > xmax ? lo : xmax;
            xmax = hi > xmax ? hi : xmax;
        }
    }
    q->in_max = (int32_t)((1 << a->input_bits) - 1);
    q->in_scale = xmax / (double)q->in_max;
    if (m->n_norm > 0) {
        /* Datasets hold 8-bit pixels: x = (p / 255 - mean) / std. A scale that is a whole
         * multiple of the pixel step 1 / (255 std) keeps the pixel grid (X = p - round(255 mean)
         * at one step: every pixel off by the same constant, not by a random half step). */
        double sd = 0.0;
        for (int c = 0; c < m->n_norm; c++)
            sd = (double)m->input_std[c] > sd ? (double)m->input_std[c] : sd;
        double grid = 1.0 / (255.0 * sd), k = ceil(q->in_scale / grid);
        q->in_scale = (k < 1.0 ? 1.0 : k) * grid;
    }
}

/* The encoding's rounding offset per input channel c: the mean over the 256 values p of 8-bit
 * data of X(p) - x(p) / in_scale, x(p) = p * (1 / (255 std)) + (-mean / std) in float32 as the
 * dataset reader computes it. With a scale on the pixel grid (input_scale) every pixel is off by
 * the same constant (X = p - round(255 mean)), which the encoding conv's bias cancels. */
static void input_offsets(const qkf_model *m, const qkf_qmodel *q, double *u)
{
    for (int c = 0; c < m->n_norm; c++) {
        float s = m->input_std[c];
        float a = 1.0f / (255.0f * s), b = -m->input_mean[c] / s;
        double acc = 0.0;
        for (int p = 0; p < 256; p++) {
            float xf = (float)p * a + b; /* -ffp-contract=off: two roundings, as the reader */
            double r = (double)xf / q->in_scale;
            double X = floor(r + 0.5);
            X = X > q->in_max ? q->in_max : X < -q->in_max ? -q->in_max : X;
            acc += X - r;
        }
        u[c] = acc / 256.0;
    }
}

static int bits_of(int64_t v)
{
    int b = 0;
    v = v < 0 ? -v : v;
    while (v) {
        b++;
        v >>= 1;
    }
    return b + 1; /* sign */
}

/* Parses o->bits_min ("M" or "M,LAYER=M,...") into out[n_ops] (per graph op of a conv). */
static int parse_bits_min(const char *spec, const qkf_graph *g, const qkf_hw_arith *a, int *out)
{
    const char *s = spec;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        const char *num = eq ? eq + 1 : s;
        size_t nlen = len - (size_t)(num - s);
        char buf[32];
        long v = -1;
        if (nlen > 0 && nlen < sizeof buf) {
            memcpy(buf, num, nlen);
            buf[nlen] = 0;
            char *e;
            v = strtol(buf, &e, 10);
            if (*e || e == buf)
                v = -1;
        }
        if (v != 0 && (v < 2 || v > a->weight_bits))
            return qkf_set_error("bits_min '%.*s': M must be 0 (off) or 2..%d (the weight bits)",
                                 (int)len, s, a->weight_bits);
        int found = 0;
        for (int i = 0; i < g->n_ops; i++) {
            const qkf_op *op = &g->ops[i];
            if (op->kind != QKF_OP_CONV)
                continue;
            if (eq &&
                (strlen(op->name) != (size_t)(eq - s) || memcmp(op->name, s, (size_t)(eq - s))))
                continue;
            out[i] = (int)v;
            found = 1;
        }
        if (!found)
            return qkf_set_error("bits_min '%.*s': no convolution of that name", (int)len, s);
        s += len;
        if (*s == ',')
            s++;
    }
    return 0;
}

/* Quantises conv op i and its LIF (op i + 1); bits_min: parse_bits_min's entry (0: none). */
static int quant_conv(const qkf_model *m, const qkf_hw_arith *a, const qkf_quant_opts *o,
                      qkf_qmodel *q, int i, int bits_min)
{
    const qkf_graph *g = &q->g;
    const qkf_op *op = &g->ops[i];
    const qkf_op *lop = &g->ops[i + 1];
    QKF_ASSERT(i + 1 < g->n_ops && lop->kind == QKF_OP_LIF && lop->in0 == op->out);
    const float *P = m->params.data;
    const qkf_param *pp = m->params.p;
    int cout = op->cout;
    int64_t per = (int64_t)op->cin * op->k * op->k;
    const float *W = P + pp[op->p_w].offset;
    const float *Bc = op->p_b >= 0 ? P + pp[op->p_b].offset : NULL;
    float *alpha = qkf_malloc((size_t)cout * sizeof(float));
    float *shift = qkf_malloc((size_t)cout * sizeof(float));
    qkf_bn_fold(cout, P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                P + pp[op->p_bn_mean].offset, P + pp[op->p_bn_var].offset, alpha, shift);
    int enc = op->in0 == g->input && q->in_max > 0;
    double sc = enc ? q->in_scale : 1.0;
    double u_in[4] = {0.0, 0.0, 0.0, 0.0}; /* the encoding's rounding offsets (input_offsets) */
    int use_u = enc && m->n_norm > 0 && m->n_norm == op->cin;
    if (use_u)
        input_offsets(m, q, u_in);
    double *wr = qkf_malloc((size_t)(cout * per) * sizeof(double));
    double *br = qkf_malloc((size_t)cout * sizeof(double));
    for (int c = 0; c < cout; c++) {
        for (int64_t j = 0; j < per; j++) {
            float wf = W[c * per + j] * alpha[c];
            wr[c * per + j] = ((double)wf * sc) * 0.5;
        }
        float bf = shift[c];
        if (Bc) {
            float t = Bc[c] * alpha[c];
            bf = t + shift[c];
        }
        br[c] = (double)bf * 0.5;
    }
    qkf_free(alpha);
    qkf_free(shift);

    qkf_qop *qo = &q->ops[i], *ql = &q->ops[i + 1];
    qo->w = qkf_malloc((size_t)(cout * per) * sizeof(int32_t));
    qo->w_mant = qkf_malloc((size_t)(cout * per) * sizeof(int16_t));
    qo->w_exp = qkf_malloc((size_t)cout);
    qo->bias = qkf_malloc((size_t)cout * sizeof(int32_t));
    qo->bias_mant = qkf_malloc((size_t)cout * sizeof(int32_t));
    qo->bias_exp = qkf_malloc((size_t)cout);
    ql->theta = qkf_malloc((size_t)cout * sizeof(int32_t));
    ql->delta = qkf_malloc((size_t)cout * sizeof(double));
    ql->conv = i;
    ql->in_weight = 0;

    const double vth = (double)lop->vth;
    const double head = o && o->headroom > 0 ? o->headroom : 16.0;
    const double mmax = ldexp(1.0, a->weight_bits - 1) - 1.0;
    const double bmax = ldexp(1.0, a->bias_bits - 1) - 1.0;
    const double mem_range = ldexp(1.0, a->membrane_bits - 1) - 1.0;
    const double cur_range =
        a->current_bits >= 64 ? (double)INFINITY
                              : (ldexp(1.0, a->current_bits - 1) - 1.0) * ldexp(1.0, a->current_shift);
    const double tmax = ldexp(1.0, a->threshold_bits) - 1.0;
    const int gt = !a->threshold_ge;
    const int e_lo = a->weight_exp_min > 0 ? a->weight_exp_min : 0;
    int e_hi = a->weight_exp_max; /* W = mant << e must stay an int32 */
    while (e_hi > e_lo && ldexp(ldexp(1.0, a->weight_bits - 1) - 1.0, e_hi) > 2147483647.0)
        e_hi--;
    const double *cx = o && o->calib_x && i + 1 < o->calib_n ? o->calib_x[i + 1] : NULL;
    const double *ch = o && o->calib_h && i + 1 < o->calib_n ? o->calib_h[i + 1] : NULL;
    int group = a->per_channel ? 1 : cout;
    int rc = 0;
    double err_max = 0.0, err2 = 0.0, w2 = 0.0, wmax_layer = 0.0;
    int64_t mant_max = 0;
    for (int c0 = 0; c0 < cout && !rc; c0 += group) {
        double maxw = 0.0, maxb = 0.0, rx = head * vth, rh = head * vth;
        if (cx)
            rx = 0.0;
        if (ch)
            rh = 2.0 * vth;
        for (int c = c0; c < c0 + group; c++) {
            for (int64_t j = 0; j < per; j++)
                maxw = fabs(wr[c * per + j]) > maxw ? fabs(wr[c * per + j]) : maxw;
            maxb = fabs(br[c]) > maxb ? fabs(br[c]) : maxb;
            if (cx && cx[c] * 0.5 * 1.25 > rx)
                rx = cx[c] * 0.5 * 1.25;
            if (ch && ch[c] * 1.25 > rh)
                rh = ch[c] * 1.25;
        }
        double dmin = rh / mem_range;
        if (rx / cur_range > dmin)
            dmin = rx / cur_range;
        if (vth / (tmax * ldexp(1.0, a->threshold_shift)) > dmin)
            dmin = vth / (tmax * ldexp(1.0, a->threshold_shift));
        double dbias = maxb / (bmax * ldexp(1.0, a->bias_exp_max));
        if (o && o->clip_bias)
            dbias = 0.0;
        else if (bits_min > 0) { /* the weights keep bits_min bits; larger biases saturate */
            double cap = maxw / (ldexp(1.0, a->current_shift) * (ldexp(1.0, bits_min - 1) - 1.0));
            dbias = dbias > cap ? cap : dbias;
        }
        if (dbias > dmin)
            dmin = dbias;
        double K = maxw / (ldexp(1.0, a->current_shift) * mmax);
        int e = e_lo;
        double d0 = dmin;
        for (int ee = e_hi; ee >= e_lo && maxw > 0; ee--)
            if (ldexp(K, -ee) >= dmin) {
                e = ee;
                d0 = ldexp(K, -ee);
                break;
            }
        double mf = floor((vth / d0 - gt) / ldexp(1.0, a->threshold_shift));
        if (mf > tmax)
            mf = tmax;
        if (mf < 1.0) {
            rc = qkf_set_error("%s: cannot be represented: weights up to %.4g (bias %.4g) need a "
                               "membrane unit of %.4g, coarser than the threshold %.4g allows "
                               "with %d-bit weight mantissas and exponents up to %d",
                               op->name, maxw * 2.0, maxb * 2.0, d0, vth, a->weight_bits,
                               a->weight_exp_max);
            break;
        }
        double theta = ldexp(mf, a->threshold_shift);
        if (theta > mem_range || theta > 2147483647.0) {
            rc = qkf_set_error("%s: cannot be represented: threshold %.0f beyond the %d-bit "
                               "membrane",
                               lop->name, theta, a->membrane_bits);
            break;
        }
        double delta = vth / (theta + gt);
        double wunit = delta * ldexp(1.0, a->current_shift + e);
        for (int c = c0; c < c0 + group; c++) {
            ql->theta[c] = (int32_t)theta;
            ql->delta[c] = delta;
            qo->w_exp[c] = (int8_t)e;
            for (int64_t j = 0; j < per; j++) {
                double x = wr[c * per + j];
                double mt = rnd(x / wunit);
                mt = mt > mmax ? mmax : mt < -mmax ? -mmax : mt;
                qo->w_mant[c * per + j] = (int16_t)mt;
                qo->w[c * per + j] = (int32_t)mt * (int32_t)(1 << e);
                double err = fabs(mt * wunit - x);
                err_max = err > err_max ? err : err_max;
                err2 += err * err;
                w2 += x * x;
                wmax_layer = fabs(x) > wmax_layer ? fabs(x) : wmax_layer;
                int64_t am = (int64_t)fabs(mt);
                mant_max = am > mant_max ? am : mant_max;
            }
            double b = br[c] / delta;
            if (use_u) { /* cancel the encoding's rounding offset: b -= sum_j W_j u_ci(j) */
                double unit = ldexp(1.0, a->current_shift + e), corr = 0.0;
                int64_t kk = per / op->cin;
                for (int64_t j = 0; j < per; j++)
                    corr += ((double)qo->w_mant[c * per + j] * unit) * u_in[j / kk];
                b = b - corr;
            }
            int be = -1;
            for (int ex = 0; ex <= a->bias_exp_max; ex++)
                if (fabs(rnd(ldexp(b, -ex))) <= bmax) {
                    be = ex;
                    break;
                }
            double bm = be >= 0 ? rnd(ldexp(b, -be)) : 0.0;
            if (be < 0 && ((o && o->clip_bias) || bits_min > 0)) {
                be = a->bias_exp_max;
                bm = b < 0 ? -bmax : bmax;
                qo->clipped++;
            }
            if (be < 0 || fabs(ldexp(bm, be)) > 2147483647.0) {
                rc = qkf_set_error("%s: cannot be represented: bias %.4g of channel %d needs more "
                                   "than %d bits with exponents up to %d",
                                   op->name, br[c] * 2.0, c, a->bias_bits, a->bias_exp_max);
                break;
            }
            qo->bias_mant[c] = (int32_t)bm;
            qo->bias_exp[c] = (int8_t)be;
            qo->bias[c] = (int32_t)ldexp(bm, be);
        }
    }
    qo->bits_used = bits_of(mant_max);
    qo->err_max = wmax_layer > 0 ? err_max / wmax_layer : 0.0;
    qo->err_rms = w2 > 0 ? sqrt(err2 / w2) : 0.0;
    qkf_free(wr);
    qkf_free(br);
    return rc;
}

/* Attention neurons: QKTA/QKCA's OR neuron and SSA's neuron on the integer q (k^T v). */
static int quant_attn_lif(const qkf_hw_arith *a, qkf_qmodel *q, int i, qkf_op_kind src)
{
    const qkf_graph *g = &q->g;
    const qkf_op *op = &g->ops[i];
    const qkf_tensor *t = &g->tensors[op->in0];
    qkf_qop *ql = &q->ops[i];
    int C = t->c;
    /* QK_SUM: h = v/2 + count/2, vth 0.5 -> unit 1/2 (before the current shift): fires iff
     * count >= 1. SSA: h = v/2 + P/16 (x = 0.125 P), vth 0.5 -> unit 1/16: H >= 8. */
    int64_t units = src == QKF_OP_SSA ? 8 : 1;
    int64_t theta = (units << a->current_shift) - (a->threshold_ge ? 0 : 1);
    double delta = (src == QKF_OP_SSA ? 1.0 / 16.0 : 0.5) / ldexp(1.0, a->current_shift);
    if ((double)theta > ldexp(1.0, a->membrane_bits - 1) - 1.0)
        return qkf_set_error("%s: cannot be represented: threshold %lld beyond the %d-bit "
                             "membrane",
                             op->name, (long long)theta, a->membrane_bits);
    ql->conv = -1;
    ql->in_weight = 1;
    ql->theta = qkf_malloc((size_t)C * sizeof(int32_t));
    ql->delta = qkf_malloc((size_t)C * sizeof(double));
    for (int c = 0; c < C; c++) {
        ql->theta[c] = (int32_t)theta;
        ql->delta[c] = delta;
    }
    return 0;
}

static int quant_head(const qkf_model *m, const qkf_hw_arith *a, qkf_qmodel *q, int i)
{
    const qkf_graph *g = &q->g;
    const qkf_op *op = &g->ops[i];
    const qkf_tensor *x = &g->tensors[op->in0];
    const float *P = m->params.data;
    const qkf_param *pp = m->params.p;
    int K = g->cfg.num_classes, C = x->c;
    int64_t TN = (int64_t)g->cfg.T * x->h * x->w;
    const float *W = P + pp[op->p_head_w].offset, *b = P + pp[op->p_head_b].offset;
    qkf_qop *qo = &q->ops[i];
    double mmax = ldexp(1.0, a->weight_bits - 1) - 1.0, maxw = 0.0;
    for (int64_t j = 0; j < (int64_t)K * C; j++)
        maxw = fabs((double)W[j]) > maxw ? fabs((double)W[j]) : maxw;
    double sh = maxw > 0 ? maxw / mmax : 1.0;
    qo->head_w = qkf_malloc((size_t)K * C * sizeof(int32_t));
    qo->head_mant = qkf_malloc((size_t)K * C * sizeof(int16_t));
    qo->head_b = qkf_malloc((size_t)K * sizeof(int64_t));
    qo->head_exp = 0;
    double err_max = 0.0, err2 = 0.0, w2 = 0.0;
    int64_t mant_max = 0;
    for (int64_t j = 0; j < (int64_t)K * C; j++) {
        double mt = rnd((double)W[j] / sh);
        mt = mt > mmax ? mmax : mt < -mmax ? -mmax : mt;
        qo->head_mant[j] = (int16_t)mt;
        qo->head_w[j] = (int32_t)mt;
        double err = fabs(mt * sh - (double)W[j]);
        err_max = err > err_max ? err : err_max;
        err2 += err * err;
        w2 += (double)W[j] * (double)W[j];
        mant_max = (int64_t)fabs(mt) > mant_max ? (int64_t)fabs(mt) : mant_max;
    }
    for (int k = 0; k < K; k++) {
        double v = rnd(((double)b[k] * (double)TN) / sh);
        if (fabs(v) > 4.0e18)
            return qkf_set_error("head.bias: cannot be represented: %g at class %d", (double)b[k],
                                 k);
        qo->head_b[k] = (int64_t)v;
    }
    qo->head_scale = sh / (double)TN;
    qo->bits_used = bits_of(mant_max);
    qo->err_max = maxw > 0 ? err_max / maxw : 0.0;
    qo->err_rms = w2 > 0 ? sqrt(err2 / w2) : 0.0;
    return 0;
}

int qkf_quantize(const qkf_model *m, const qkf_hw_arith *a, const char *hw_name,
                 const qkf_quant_opts *o, qkf_qmodel *q)
{
    memset(q, 0, sizeof *q);
    if (qkf_quant_check_arith(a))
        return -1;
    if (qkf_graph_build(&m->cfg, &m->params, 0, &q->g))
        return -1;
    q->cfg = m->cfg;
    q->arith = *a;
    snprintf(q->hw_name, sizeof q->hw_name, "%s", hw_name ? hw_name : "");
    q->n_norm = m->n_norm;
    memcpy(q->input_mean, m->input_mean, sizeof q->input_mean);
    memcpy(q->input_std, m->input_std, sizeof q->input_std);
    q->ops = qkf_calloc((size_t)q->g.n_ops, sizeof(qkf_qop));
    for (int i = 0; i < q->g.n_ops; i++)
        q->ops[i].conv = -1;
    input_scale(m, a, o, q);
    int rc = 0;
    int *bits_min = qkf_calloc((size_t)q->g.n_ops, sizeof(int));
    if (o && o->bits_min && *o->bits_min)
        rc = parse_bits_min(o->bits_min, &q->g, a, bits_min);
    for (int i = 0; i < q->g.n_ops && !rc; i++) {
        const qkf_op *op = &q->g.ops[i];
        if (op->kind == QKF_OP_CONV)
            rc = quant_conv(m, a, o, q, i, bits_min[i]);
        else if (op->kind == QKF_OP_READOUT)
            rc = quant_head(m, a, q, i);
        else if (op->kind == QKF_OP_LIF && !q->ops[i].theta) {
            qkf_op_kind src = QKF_OP_LIF;
            for (int j = 0; j < i; j++)
                if (q->g.ops[j].out == op->in0)
                    src = q->g.ops[j].kind;
            if (src != QKF_OP_QK_SUM && src != QKF_OP_SSA)
                rc = qkf_set_error("%s: the integer form has no unit for a LIF fed by this op",
                                   op->name);
            else
                rc = quant_attn_lif(a, q, i, src);
        }
    }
    qkf_free(bits_min);
    if (rc) {
        qkf_qmodel_free(q);
        return -1;
    }
    return 0;
}
