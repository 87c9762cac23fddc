/* Quantising for a chip profile, as every application does it (tools/app/quantize.h). */
#include <stdio.h>
#include <string.h>

#include "../../io/dataset.h"
#include "../../io/io.h"
#include "../../kernels/base.h"
#include "../../sim/dense_int.h"
#include "app_internal.h"
#include "quantize.h"

/* The first n samples of the training split of `data`, normalised as m's inputs are. */
static int calib_samples(const char *data, const qkf_model *m, long n, float **x, long *got)
{
    qkf_dataset d;
    memset(&d, 0, sizeof d);
    if (qkf_dataset_load(data, 1, &d))
        return -1;
    int frames = qkf_config_is_frames(&m->cfg);
    if ((d.t > 0) != frames || d.c != m->cfg.in_channels || d.h != m->cfg.img_size ||
        d.w != m->cfg.img_size || (frames && d.t != m->cfg.T)) {
        qkf_set_error("%s: samples are %d x %d x %d%s, the model takes %d x %d x %d (--calib)",
                      d.source, d.c, d.h, d.w, d.t > 0 ? " frames" : "", m->cfg.in_channels,
                      m->cfg.img_size, m->cfg.img_size);
        qkf_dataset_free(&d);
        return -1;
    }
    if (n > d.n)
        n = (long)d.n;
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = &d, lc.batch = (int)n, lc.limit = n, lc.n_norm = m->n_norm;
    memcpy(lc.mean, m->input_mean, sizeof lc.mean);
    memcpy(lc.std, m->input_std, sizeof lc.std);
    int64_t per = (int64_t)d.c * d.h * d.w * (d.t > 0 ? d.t : 1);
    *x = qkf_malloc((size_t)(n * per) * sizeof(float));
    qkf_loader *l = qkf_loader_start(&lc, 0, 0);
    const float *bx;
    const int32_t *lab;
    int B;
    long k = 0;
    while (k < n && qkf_loader_next(l, &bx, &lab, &B)) {
        memcpy(*x + k * per, bx, (size_t)(B * per) * sizeof(float));
        k += B;
    }
    qkf_loader_stop(l);
    qkf_dataset_free(&d);
    *got = k;
    return 0;
}

int qkf_app_quantize(const qkf_model *fm, const char *label, const qkf_hw_profile *hw, long calib,
                     const char *data, const qkf_quant_opts *base, qkf_qmodel *q)
{
    memset(q, 0, sizeof *q);
    if (hw->arith.is_float)
        return qkf_set_error("--hw %s: the float machine (run without --hw)", hw->name);
    qkf_quant_opts o;
    memset(&o, 0, sizeof o);
    o.headroom = base ? base->headroom : 0.0;
    o.clip_bias = base ? base->clip_bias : 0;
    o.bits_min = base ? base->bits_min : NULL;
    float *x = NULL;
    int rc = 0;
    if (calib > 0) {
        long got = 0;
        rc = calib_samples(data ? data : "fashion-mnist", fm, calib, &x, &got) ||
             qkf_quant_calibrate(fm, x, (int)got, 32, &o);
    }
    if (!rc) {
        rc = qkf_quantize(fm, &hw->arith, hw->name, &o, q);
        if (rc && label) { /* name the checkpoint in front of the layer */
            char msg[600];
            snprintf(msg, sizeof msg, "%s", qkf_last_error());
            qkf_set_error("%s: %s", label, msg);
        }
    }
    qkf_quant_calib_free(&o, fm);
    qkf_free(x);
    return rc ? -1 : 0;
}

int qkf__h5_chars(const char *path, const char *key, int lo, const char *what, char *buf,
                  size_t cap)
{
    int has = qkf_h5_has(path, key);
    if (has <= 0)
        return has;
    int64_t *d = NULL, s[5];
    int nd;
    if (qkf_h5_read_i64(path, key, &d, &nd, s))
        return -1;
    int ok = nd == 1 && s[0] > 0 && (size_t)s[0] < cap;
    for (int64_t i = 0; ok && i < s[0]; i++) {
        ok = d[i] >= lo && d[i] <= 0x7e;
        buf[i] = (char)d[i];
    }
    qkf_free(d);
    if (!ok)
        return qkf_set_error("%s: %s is not %s (printable characters, fewer than %zu)", path, key,
                             what, cap);
    buf[s[0]] = 0;
    return 1;
}

int qkf_app_ckpt_bits_min(const char *path, char *buf, size_t cap)
{
    return qkf__h5_chars(path, "quant/bits_min", 0x21, "a --bits-min spec", buf, cap);
}

int qkf_app_qmodel(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                   const qkf_quant_opts *base, qkf_model *fm, qkf_qmodel *q)
{
    memset(fm, 0, sizeof *fm);
    memset(q, 0, sizeof *q);
    int isq = qkf_qckpt_is_quant(weights);
    if (isq < 0)
        return -1;
    if (isq) {
        if (calib)
            return qkf_set_error("%s: already quantised (--calib applies to float checkpoints)",
                                 weights);
        if (qkf_qckpt_load(weights, q))
            return -1;
        if (hw && memcmp(&hw->arith, &q->arith, sizeof q->arith) != 0) {
            qkf_set_error("%s: quantised for '%s', whose arithmetic differs from --hw %s "
                          "(quantise the float checkpoint again)",
                          weights, q->hw_name, hw->name);
            qkf_qmodel_free(q);
            return -1;
        }
        return 0;
    }
    if (!hw)
        return qkf_set_error("%s: a float checkpoint: --hw PROFILE says which chip to quantise "
                             "it for",
                             weights);
    if (hw->arith.is_float)
        return qkf_set_error("--hw %s: the float machine (run without --hw)", hw->name);
    char spec[256];
    qkf_quant_opts ob;
    memset(&ob, 0, sizeof ob);
    if (base)
        ob = *base;
    if (!ob.bits_min) { /* fine-tuned with --bits-min: quantised as it was trained */
        int r = qkf_app_ckpt_bits_min(weights, spec, sizeof spec);
        if (r < 0)
            return -1;
        if (r > 0)
            ob.bits_min = spec;
    }
    if (qkf_ckpt_load(weights, fm))
        return -1;
    if (qkf_app_quantize(fm, weights, hw, calib, data, &ob, q)) {
        qkf_model_free(fm);
        return -1;
    }
    return 0;
}
