/* The training driver (tools/app/trainer.h): options by name, config files, resumable training
 * checkpoints, the training loop with its data-parallel all-reduce, and the metrics file. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../io/dataset.h"
#include "../../io/hw_profile.h"
#include "../../io/io.h"
#include "../../kernels/backward.h"
#include "../../kernels/base.h"
#include "../../sim/dense.h"
#include "../../sim/dense_int.h"
#include "../../sim/dist.h"
#include "../../sim/train.h"
#include "app_internal.h"
#include "dist_dataset.h"
#include "trainer.h"
#include "quantize.h"

int qkf_trainer_parse_steps(const char *spec, qkf_trainer_steps *st)
{
    st->n = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long long a = strtoll(p, &end, 10), b = a;
        if (end == p || a < 1)
            return qkf_set_error("option --trace-steps: '%s' is not a list like 1,100-105", spec);
        if (*end == '-') {
            p = end + 1;
            b = strtoll(p, &end, 10);
            if (end == p || b < a)
                return qkf_set_error("option --trace-steps: bad range in '%s'", spec);
        }
        if (st->n == 64)
            return qkf_set_error("option --trace-steps: at most 64 items");
        st->lo[st->n] = a, st->hi[st->n] = b, st->n++;
        if (*end == ',')
            end++;
        else if (*end)
            return qkf_set_error("option --trace-steps: '%s' is not a list like 1,100-105", spec);
        p = end;
    }
    return st->n ? 0 : qkf_set_error("option --trace-steps: empty list");
}

static int in_steps(const qkf_trainer_steps *st, int64_t step)
{
    for (int i = 0; i < st->n; i++)
        if (step >= st->lo[i] && step <= st->hi[i])
            return 1;
    return 0;
}

int qkf_trainer_parse_opt(qkf_args *a, qkf_trainer_opts *o)
{
    const char *v;
    int r;
    if ((r = qkf_arg_config(a, &o->cfg)) != 0) {
        o->cfg_given = 1;
        return r;
    }
    if ((r = qkf_arg(a, "--model", &v)) != 0) {
        if (r < 0 || qkf_config_preset(v, &o->cfg))
            return -1;
        o->cfg_given = 1;
        return 1;
    }
    struct {
        const char *name;
        const char **dst;
    } strs[] = {{"--data", &o->data},         {"--out", &o->out},         {"--resume", &o->resume},
                {"--init", &o->init},         {"--metrics", &o->metrics}, {"--hw", &o->hw},
                {"--bits-min", &o->bits_min}, {"--distill", &o->distill}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if ((r = qkf_arg(a, strs[i].name, strs[i].dst)) != 0)
            return r;
    struct {
        const char *name;
        long *dst;
        long lo, hi;
    } ints[] = {{"--epochs", &o->epochs, 1, 100000},
                {"--max-steps", &o->max_steps, 0, 1L << 40},
                {"--batch", &o->batch, 1, 65536},
                {"--save-every", &o->save_every, 0, 1L << 40},
                {"--log-every", &o->log_every, 1, 1L << 40},
                {"--eval-batch", &o->eval_batch, 1, 65536},
                {"--threads", &o->threads, 1, 1024},
                {"--crop-pad", &o->crop_pad, 0, 64},
                {"--mixup-off-epoch", &o->mixup_off_epoch, 0, 100000}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((r = qkf_arg(a, ints[i].name, &v)) != 0)
            return r < 0 || qkf_parse_int(ints[i].name, v, ints[i].lo, ints[i].hi, ints[i].dst)
                       ? -1
                       : 1;
    long lv;
    const char *lim[3] = {"--limit-train", "--limit-test", "--val"};
    for (int i = 0; i < 3; i++)
        if ((r = qkf_arg(a, lim[i], &v)) != 0) {
            if (r < 0 || qkf_parse_int(lim[i], v, i == 2 ? 0 : 1, 1L << 40, &lv))
                return -1;
            *(i == 0 ? &o->limit_train : i == 1 ? &o->limit_test : &o->val) = lv;
            return 1;
        }
    if ((r = qkf_arg(a, "--eval-mode", &v)) != 0) {
        if (r < 0)
            return -1;
        if (strcmp(v, "dense") && strcmp(v, "event"))
            return qkf_set_error("option --eval-mode: '%s' is not an engine (dense or event)", v);
        o->eval_event = !strcmp(v, "event");
        return 1;
    }
    if ((r = qkf_arg(a, "--seed", &v)) != 0) {
        if (r < 0 || qkf_parse_int("--seed", v, 0, 0x7fffffffffffffffL, &lv))
            return -1;
        o->seed = (uint64_t)lv;
        return 1;
    }
    struct {
        const char *name;
        double lo, hi;
        double *dst;
        float *fdst;
    } fl[] = {{"--lr", 0, 10, NULL, &o->opt.lr},
              {"--min-lr", 0, 10, NULL, &o->opt.min_lr},
              {"--warmup-lr", 0, 10, NULL, &o->opt.warmup_lr},
              {"--weight-decay", 0, 10, NULL, &o->opt.weight_decay},
              {"--clip", 0, 1e9, NULL, &o->opt.clip},
              {"--warmup-epochs", 0, 1e5, &o->warmup_epochs, NULL},
              {"--smoothing", 0, 0.99, &o->smoothing, NULL},
              {"--mixup", 0, 100, &o->mixup, NULL},
              {"--bucket-mb", 0, 1024, &o->bucket_mb, NULL},
              {"--distill-weight", 0, 1, &o->distill_weight, NULL},
              {"--distill-temp", 0.05, 100, &o->distill_temp, NULL}};
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        if ((r = qkf_arg(a, fl[i].name, &v)) != 0) {
            double x;
            if (r < 0 || qkf_parse_float(fl[i].name, v, fl[i].lo, fl[i].hi, &x))
                return -1;
            if (fl[i].dst)
                *fl[i].dst = x;
            else
                *fl[i].fdst = (float)x;
            return 1;
        }
    struct {
        const char *name;
        int *dst;
    } flags[] = {{"--flip", &o->flip},
                 {"--tb-compat", &o->tb},
                 {"--quiet", &o->quiet},
                 {"--no-eval", &o->no_eval},
                 {"--sync-bn", &o->sync_bn}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (qkf_flag(a, flags[i].name)) {
            *flags[i].dst = 1;
            return 1;
        }
    return 0;
}

const char *qkf__trainer_keep(qkf_trainer_opts *o, const char *s)
{
    size_t n = strlen(s) + 1;
    if (o->str_used + n > sizeof o->str_buf)
        return NULL;
    char *c = o->str_buf + o->str_used;
    memcpy(c, s, n);
    o->str_used += n;
    return c;
}

int qkf_trainer_read_config(const char *path, qkf_trainer_opts *o)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        /* "name value", "name = value" or "name: value": the name ends at the first blank,
         * '=' or ':'; one '=' or ':' may follow it; the value is the next word, whole (so
         * "data h5:FILE" and "data: h5:FILE" both give the dataset h5:FILE) */
        char *tok[2] = {NULL, NULL};
        int nt = 0;
        char *p = line + strspn(line, " \t\r\n");
        if (!*p)
            continue;
        tok[nt++] = p;
        p += strcspn(p, " \t\r\n=:");
        char *name_end = p;
        p += strspn(p, " \t\r\n");
        if (*p == '=' || *p == ':')
            p++;
        p += strspn(p, " \t\r\n");
        *name_end = 0;
        if (*p) {
            tok[nt++] = p;
            p += strcspn(p, " \t\r\n");
            char *val_end = p;
            p += strspn(p, " \t\r\n");
            *val_end = 0;
        }
        if (*p) {
            rc = qkf_set_error("%s:%d: expected 'name value' (a value is one word; '%.*s' "
                               "follows it)",
                               path, lineno, (int)strcspn(p, " \t\r\n"), p);
            break;
        }
        if (!*tok[0]) {
            rc = qkf_set_error("%s:%d: expected 'name value' (no name before the separator)",
                               path, lineno);
            break;
        }
        char opt[128];
        snprintf(opt, sizeof opt, "--%s", tok[0][0] == '-' ? tok[0] + 2 : tok[0]);
        /* values are kept by o (the line buffer is reused) */
        char *val = tok[1] ? (char *)qkf__trainer_keep(o, tok[1]) : NULL;
        if (tok[1] && !val) {
            rc = qkf_set_error("%s:%d: %s", path, lineno, "too much text in string options");
            break;
        }
        char *av[3] = {"config", opt, val};
        qkf_args a = {nt + 1, av, 1, "train"};
        int r = qkf_trainer_parse_opt(&a, o);
        if (r == 0)
            rc = qkf_set_error("%s:%d: unknown option '%s'", path, lineno, tok[0]);
        else if (r < 0) {
            char msg[700];
            snprintf(msg, sizeof msg, "%s", qkf_last_error());
            rc = qkf_set_error("%s:%d: %s", path, lineno, msg);
        } else if (a.i != nt)
            rc = qkf_set_error("%s:%d: option '%s' takes %s", path, lineno, tok[0],
                               nt == 2 ? "no value" : "a value");
        if (rc)
            break;
    }
    fclose(f);
    return rc;
}

/* Beta(a, a) through two Gamma(a) draws (Marsaglia-Tsang, with the a < 1 boost). */
static double rng_gamma(qkf_rng *r, double a)
{
    if (a < 1.0) {
        double u = (double)qkf_rng_uniform(r) + 1e-12;
        return rng_gamma(r, a + 1.0) * pow(u, 1.0 / a);
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = (double)qkf_rng_normal(r), v = 1.0 + c * x;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        double u = (double)qkf_rng_uniform(r) + 1e-12;
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v;
    }
}

/* Writes model + optimiser state + step atomically. */
static int save_train_ckpt(const char *path, const qkf_model *m, const qkf_optim *opt,
                           const qkf_trainer_opts *o, int64_t step)
{
    const qkf_params *ps = &m->params;
    qkf_h5out *h = qkf_h5out_open(path);
    if (!h)
        return -1;
    if (qkf_ckpt_write(h, path, m) < 0)
        goto fail;
    /* the training run, for the record and for --resume checks */
    if (qkf_h5out_attr_str(h, NULL, "train_data", o->data) < 0 ||
        qkf_h5out_attr_i64(h, NULL, "train_step", step) < 0 ||
        qkf_h5out_attr_i64(h, NULL, "train_epochs", o->epochs) < 0 ||
        qkf_h5out_attr_i64(h, NULL, "train_batch", o->batch) < 0 ||
        qkf_h5out_attr_i64(h, NULL, "train_seed", (int64_t)o->seed) < 0 ||
        qkf_h5out_attr_f64(h, NULL, "train_lr", (double)o->opt.lr) < 0 ||
        qkf_h5out_attr_i64(h, NULL, "tb_compat", o->tb) < 0)
        goto fail;
    if (o->hw_name) { /* quantisation-aware: the profile, which a --resume must give again */
        int64_t nn = (int64_t)strlen(o->hw_name), na = (int64_t)(sizeof o->hw_arith / sizeof(int));
        int64_t av[64];
        const int *ai = (const int *)&o->hw_arith;
        for (int64_t k = 0; k < na && k < 64; k++)
            av[k] = ai[k];
        if (qkf_h5out_attr_str(h, NULL, "train_hw", o->hw_name) < 0 ||
            qkf_h5out_u8(h, "optim/hw", 1, &nn, (const uint8_t *)o->hw_name) < 0 ||
            qkf_h5out_i64(h, "optim/hw_arith", 1, &na, av) < 0)
            goto fail;
        int64_t nb = o->bits_min ? (int64_t)strlen(o->bits_min) : 0;
        if (nb > 0 && qkf_h5out_u8(h, "quant/bits_min", 1, &nb, (const uint8_t *)o->bits_min) < 0)
            goto fail;
    }
    for (int k = 0; k < ps->n; k++) { /* the AdamW moments beside the weights */
        const qkf_param *p = &ps->p[k];
        if (p->is_buffer || !opt)
            continue;
        if (qkf_ckpt_write_param(h, "optim/m/", p, opt->m + p->offset) < 0 ||
            qkf_ckpt_write_param(h, "optim/v/", p, opt->v + p->offset) < 0)
            goto fail;
    }
    /* the options of the run, restored by --resume (the command line may override them) */
    double opts[] = {(double)o->opt.lr,         (double)o->opt.min_lr,
                     (double)o->opt.warmup_lr,  (double)o->opt.beta1,
                     (double)o->opt.beta2,      (double)o->opt.eps,
                     (double)o->opt.weight_decay, (double)o->opt.clip,
                     o->warmup_epochs,          o->smoothing,
                     o->mixup,                  (double)o->mixup_off_epoch,
                     (double)o->epochs,         (double)o->batch,
                     (double)o->crop_pad,       (double)o->flip,
                     (double)o->tb,             (double)o->limit_train,
                     (double)o->sync_bn};
    int64_t nopt = (int64_t)(sizeof opts / sizeof opts[0]), ndata = (int64_t)strlen(o->data);
    if (qkf_h5out_f64(h, "optim/options", 1, &nopt, opts) < 0 ||
        qkf_h5out_u8(h, "optim/data", 1, &ndata, (const uint8_t *)o->data) < 0)
        goto fail;
    if (o->val > 0 || o->distill) { /* --val and --distill, restored by --resume */
        double ex[5] = {(double)o->val, o->distill_weight, o->distill_temp, o->val_best,
                        (double)o->val_best_step};
        int64_t nex = 5, nd = o->distill ? (int64_t)strlen(o->distill) : 0;
        if (qkf_h5out_f64(h, "optim/extra", 1, &nex, ex) < 0 ||
            (nd > 0 && qkf_h5out_u8(h, "optim/distill", 1, &nd, (const uint8_t *)o->distill) < 0))
            goto fail;
        if (o->val > 0 && o->val_best >= 0.0 &&
            (qkf_h5out_attr_f64(h, NULL, "train_val_acc", o->val_best) < 0 ||
             qkf_h5out_attr_i64(h, NULL, "train_val_step", o->val_best_step) < 0 ||
             qkf_h5out_attr_i64(h, NULL, "train_val", o->val) < 0))
            goto fail;
    }
    int64_t one = 1, st[2] = {step, (int64_t)o->seed};
    if (qkf_h5out_i64(h, "optim/step", 1, &one, &st[0]) < 0 ||
        qkf_h5out_i64(h, "optim/seed", 1, &one, &st[1]) < 0)
        goto fail;
    return qkf_h5out_commit(h);
fail:
    qkf_h5out_abort(h);
    return -1;
}

/* Restores the optimiser moments and the step from a training checkpoint. */
static int load_train_state(const char *path, const qkf_params *ps, qkf_optim *opt,
                            int64_t *step, uint64_t *seed)
{
    int nd;
    int64_t s[5], *iv;
    if (qkf_h5_has(path, "optim/step") != 1)
        return qkf_set_error("%s: no optimiser state (optim/step): not written by qkf train", path);
    if (qkf_h5_read_i64(path, "optim/step", &iv, &nd, s))
        return -1;
    if (nd > 1 || (nd == 1 && s[0] != 1)) {
        qkf_free(iv);
        return qkf_set_error("%s: optim/step must hold one value (a step count)", path);
    }
    if (iv[0] < 0) {
        long long v = (long long)iv[0];
        qkf_free(iv);
        return qkf_set_error("%s: optim/step is %lld (a step count is >= 0)", path, v);
    }
    *step = iv[0];
    qkf_free(iv);
    if (qkf_h5_read_i64(path, "optim/seed", &iv, &nd, s))
        return -1;
    if (nd > 1 || (nd == 1 && s[0] != 1)) {
        qkf_free(iv);
        return qkf_set_error("%s: optim/seed must hold one value", path);
    }
    *seed = (uint64_t)iv[0];
    qkf_free(iv);
    for (int k = 0; k < ps->n; k++) {
        const qkf_param *p = &ps->p[k];
        if (p->is_buffer)
            continue;
        for (int w = 0; w < 2; w++) {
            char name[QKF_MAX_NAME + 16];
            float *buf;
            snprintf(name, sizeof name, "optim/%c/%s", w ? 'v' : 'm', p->name);
            if (qkf_h5_read_f32(path, name, &buf, &nd, s))
                return -1;
            int64_t n = 1;
            for (int i = 0; i < nd; i++)
                n *= s[i];
            if (n != p->numel) {
                qkf_free(buf);
                return qkf_set_error("%s: %s has %lld values, the model %lld", path, name,
                                     (long long)n, (long long)p->numel);
            }
            memcpy((w ? opt->v : opt->m) + p->offset, buf, (size_t)n * sizeof(float));
            qkf_free(buf);
        }
    }
    opt->step = *step;
    return 0;
}

int qkf_trainer_split(int64_t n, int64_t limit, int64_t val, int64_t batch, int64_t *train_n,
                      int64_t *val_lo)
{
    if (val < 0 || val >= n)
        return qkf_set_error("--val %lld: the training split has %lld samples (hold out fewer)",
                             (long long)val, (long long)n);
    int64_t t = limit > 0 && limit < n ? limit : n;
    if (t > n - val)
        t = n - val;
    if (t < batch)
        return qkf_set_error("--val %lld leaves %lld training samples, fewer than a batch of %lld",
                             (long long)val, (long long)t, (long long)batch);
    *train_n = t;
    *val_lo = n - val;
    return 0;
}

void qkf_trainer_best_path(const char *out, char *buf, size_t cap)
{
    size_t n = strlen(out);
    if (n > 3 && !strcmp(out + n - 3, ".h5"))
        n -= 3;
    snprintf(buf, cap, "%.*s.best.h5", (int)n, out);
}

/* The options a training checkpoint was written with (optim/options, optim/data). data_buf
 * receives the dataset name. */
static int load_train_options(const char *path, qkf_trainer_opts *o, char *data_buf, size_t cap)
{
    float *v;
    int64_t *d, s[5];
    int nd;
    int has = qkf_h5_has(path, "optim/options");
    if (has < 0)
        return -1;
    if (has == 0) /* an older training checkpoint: the options come from the command line */
        return 0;
    if (qkf_h5_read_f32(path, "optim/options", &v, &nd, s))
        return -1;
    if (nd != 1 || s[0] < 18) {
        qkf_free(v);
        return qkf_set_error("%s: optim/options has %lld values, expected 18", path,
                             (long long)s[0]);
    }
    for (int i = 11; i < (s[0] >= 19 ? 19 : 18); i++) /* counts and flags, as integers */
        if (!(v[i] >= -1.0f && v[i] <= 2147483520.0f && v[i] == floorf(v[i]))) {
            double bad = (double)v[i];
            qkf_free(v);
            return qkf_set_error("%s: optim/options value %g at index %d is not a count", path,
                                 bad, i);
        }
    o->opt.lr = v[0], o->opt.min_lr = v[1], o->opt.warmup_lr = v[2], o->opt.beta1 = v[3];
    o->opt.beta2 = v[4], o->opt.eps = v[5], o->opt.weight_decay = v[6], o->opt.clip = v[7];
    o->warmup_epochs = (double)v[8], o->smoothing = (double)v[9], o->mixup = (double)v[10];
    o->mixup_off_epoch = (long)v[11], o->epochs = (long)v[12], o->batch = (long)v[13];
    o->crop_pad = (long)v[14], o->flip = (int)v[15], o->tb = (int)v[16];
    o->limit_train = (int64_t)v[17];
    if (s[0] >= 19)
        o->sync_bn = (int)v[18];
    qkf_free(v);
    if (qkf_h5_read_i64(path, "optim/data", &d, &nd, s))
        return -1;
    if (nd != 1) {
        qkf_free(d);
        return qkf_set_error("%s: optim/data must be a dataset name, one character a value",
                             path);
    }
    size_t n = (size_t)s[0] < cap - 1 ? (size_t)s[0] : cap - 1;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < 0x20 || d[i] > 0x7e) {
            long long bad = (long long)d[i];
            qkf_free(d);
            return qkf_set_error("%s: optim/data is not a dataset name (value %lld at index "
                                 "%zu)",
                                 path, bad, i);
        }
        data_buf[i] = (char)d[i];
    }
    data_buf[n] = 0;
    qkf_free(d);
    o->data = data_buf;
    return 0;
}

/* --resume of a quantisation-aware run needs the same profile, and a float run none. */
static int check_resume_hw(const char *path, const qkf_hw_profile *hw)
{
    int has = qkf_h5_has(path, "optim/hw");
    if (has < 0)
        return -1;
    if (!has)
        return hw ? qkf_set_error("%s: a float training run; resume it without --hw (or start a "
                                  "quantisation-aware run from its weights: --init %s --hw %s)",
                                  path, path, hw->name)
                  : 0;
    int64_t *d = NULL, *ar = NULL, s[5];
    int nd, na;
    if (qkf_h5_read_i64(path, "optim/hw", &d, &nd, s))
        return -1;
    char name[QKF_HW_NAME];
    int64_t n = nd == 1 ? s[0] : 0;
    int ok = nd == 1 && n > 0 && n < QKF_HW_NAME;
    for (int64_t i = 0; ok && i < n; i++) {
        ok = d[i] >= 0x20 && d[i] <= 0x7e;
        name[i] = (char)d[i];
    }
    qkf_free(d);
    if (!ok)
        return qkf_set_error("%s: optim/hw is not a profile name", path);
    name[n] = 0;
    if (!hw)
        return qkf_set_error("%s: a quantisation-aware run for --hw %s; resume it with --hw %s",
                             path, name, name);
    if (qkf_h5_read_i64(path, "optim/hw_arith", &ar, &na, s))
        return -1;
    int64_t cnt = na == 1 ? s[0] : 0;
    int same = cnt == (int64_t)(sizeof hw->arith / sizeof(int));
    const int *ai = (const int *)&hw->arith;
    for (int64_t i = 0; same && i < cnt; i++)
        same = ar[i] == ai[i];
    qkf_free(ar);
    if (strcmp(name, hw->name) || !same)
        return qkf_set_error("%s: a quantisation-aware run for --hw %s, not --hw %s%s", path, name,
                             hw->name,
                             strcmp(name, hw->name) ? "" : " (the profile's arithmetic changed)");
    return 0;
}

/* Accuracy of the integer model of m (quantised now) on the first `limit` samples of d. */
static int evaluate_int(const qkf_model *m, const qkf_dataset *d, int64_t limit, int batch,
                        const qkf_hw_profile *hw, const char *bits_min, double *acc, int64_t *count)
{
    qkf_qmodel q;
    qkf_quant_opts qo;
    memset(&qo, 0, sizeof qo);
    qo.bits_min = bits_min;
    if (qkf_quantize(m, &hw->arith, hw->name, &qo, &q))
        return -1;
    qkf_dense_int *e = qkf_dense_int_create(&q, batch, 0);
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = d, lc.batch = batch, lc.limit = limit, lc.n_norm = m->n_norm;
    memcpy(lc.mean, m->input_mean, sizeof lc.mean);
    memcpy(lc.std, m->input_std, sizeof lc.std);
    int K = m->cfg.num_classes;
    int64_t *li = qkf_malloc((size_t)batch * K * sizeof(int64_t));
    qkf_loader *l = qkf_loader_start(&lc, 0, 0);
    const float *x;
    const int32_t *lab;
    int B, rc = 0;
    int64_t n = 0, ok = 0;
    while (!rc && qkf_loader_next(l, &x, &lab, &B)) {
        rc = qkf_dense_int_forward(e, x, B, NULL, li, NULL);
        for (int b = 0; b < B && !rc; b++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                best = li[b * K + k] > li[b * K + best] ? k : best;
            ok += best == lab[b];
        }
        n += B;
    }
    qkf_loader_stop(l);
    qkf_free(li);
    qkf_dense_int_free(e);
    qkf_qmodel_free(&q);
    *acc = n ? (double)ok / (double)n : 0.0;
    *count = n;
    return rc;
}

/* --val: the accuracy on the held-out samples (the integer model under --hw); a new best is
 * written to best_path (and noted in o, which the checkpoints record). Nothing without --val. */
static int save_dist(const char *path, const qkf_model *m, const qkf_optim *opt,
                     const qkf_trainer_opts *o, int64_t step);
static int validate(qkf_trainer_opts *o, const qkf_model *m, const qkf_optim *opt,
                    const qkf_dataset *dval, const qkf_hw_profile *hw, int64_t step, int64_t *done,
                    const char *best_path, qkf_trainer_cb cb, void *cb_ctx)
{
    if (o->val <= 0 || step == *done || step == o->val_best_step)
        return 0;
    *done = step;
    double acc;
    int64_t n;
    if (hw ? evaluate_int(m, dval, 0, (int)o->eval_batch, hw, o->bits_min, &acc, &n)
           : qkf_evaluate(m, dval, 0, (int)o->eval_batch, o->tb, o->eval_event, 0, &acc, &n))
        return -1;
    int better = acc > o->val_best;
    if (better) {
        o->val_best = acc, o->val_best_step = step;
        if (save_dist(best_path, m, opt, o, step))
            return -1;
    }
    if (!o->quiet) {
        char line[1300];
        snprintf(line, sizeof line,
                 "step %lld: validation accuracy %.2f%% (%lld held-out "
                 "samples%s)%s%s\n",
                 (long long)step, 100.0 * acc, (long long)n, hw ? ", integer model" : "",
                 better ? ", best so far: wrote " : "", better ? best_path : "");
        qkf_trainer_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = QKF_TRAINER_LOG, ev.text = line, ev.step = step;
        if (cb)
            cb(cb_ctx, &ev);
    }
    return 0;
}

static int same_config(const qkf_config *a, const qkf_config *b)
{
    return a->variant == b->variant && a->img_size == b->img_size &&
           a->in_channels == b->in_channels && a->num_classes == b->num_classes &&
           a->embed_dims == b->embed_dims && a->num_heads == b->num_heads &&
           a->mlp_ratio == b->mlp_ratio && a->depths == b->depths && a->T == b->T &&
           a->qk_attn == b->qk_attn;
}

static void fmt_time(char *buf, size_t cap, double s)
{
    if (s < 0 || s > 1e7)
        snprintf(buf, cap, "--");
    else if (s >= 3600)
        snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

/* Rank 0 writes the checkpoint; every rank learns whether it succeeded (collective). */
static int save_dist(const char *path, const qkf_model *m, const qkf_optim *opt,
                     const qkf_trainer_opts *o, int64_t step)
{
    int rc = qkf_dist_rank() == 0 ? save_train_ckpt(path, m, opt, o, step) : 0;
    int bad;
    if (qkf_dist_all_ok(rc == 0, &bad))
        return 0;
    return rc ? rc : qkf_set_error("rank %d could not write %s", bad, path);
}

/* Under mpirun: every rank must hold the same parameters and optimiser moments (they apply the
 * same update to the same summed gradient); a hash compared with rank 0's. */
static int params_agree(const qkf_model *m, const qkf_optim *opt, int64_t step)
{
    if (qkf_dist_size() == 1)
        return 0;
    size_t nb = (size_t)m->params.total * sizeof(float);
    uint64_t h = qkf_dist_hash(QKF_DIST_HASH_INIT, m->params.data, nb);
    h = qkf_dist_hash(h, opt->m, nb);
    h = qkf_dist_hash(h, opt->v, nb);
    int bad;
    if (qkf_dist_agree(h, &bad) == 0)
        return 0;
    return bad < 0 ? -1
                   : qkf_set_error("rank %d: its parameters differ from rank 0's after step %lld "
                                   "(the ranks diverged; stopping without writing)",
                                   bad, (long long)step);
}

/* Whether to stop (Ctrl-C, or the callback asked), agreed by every rank (collective under
 * mpirun). */
static int stop_now(int interrupted)
{
    if (qkf_dist_size() == 1)
        return interrupted != 0;
    double v = interrupted ? 1.0 : 0.0;
    if (qkf_dist_max_f64(&v))
        return 1;
    return v > 0.0;
}

/* Overlapped gradient all-reduce: after each op's backward, the parameters that op owns are
 * final; once every parameter above some offset is, the buckets there start (sim/dist.h). The
 * running-statistics slots of per-rank BatchNorm ride in the same buffer (their values / ranks,
 * summed to the mean): they are final after the forward, and filled at the first call. */
typedef struct {
    qkf_dist_buckets *bk;
    const qkf_graph *g;
    qkf_params *ps;
    float *grads;
    int *order;      /* parameter indices by offset */
    uint8_t *final;  /* per parameter, this step */
    int front;       /* order[front..] are final */
    int first, nr, sync_bn;
} grad_sync;

static void grad_sync_reset(grad_sync *gs)
{
    memset(gs->final, 0, (size_t)gs->ps->n);
    gs->front = gs->ps->n;
    gs->first = 1;
}

/* Per-rank BatchNorm: the running statistics ride in the gradient all-reduce, as their values
 * divided by the number of ranks (summed: the mean over the ranks); the gradient buffer holds
 * zeros there otherwise. */
static void bn_buffers_to_grads(const qkf_params *ps, float *grads, int nr, int sync_bn)
{
    for (int k = 0; k < ps->n; k++)
        if (ps->p[k].is_buffer && !sync_bn)
            for (int64_t i = 0; i < ps->p[k].numel; i++)
                grads[ps->p[k].offset + i] = ps->data[ps->p[k].offset + i] / (float)nr;
}

static void grad_sync_fill_buffers(grad_sync *gs)
{
    bn_buffers_to_grads(gs->ps, gs->grads, gs->nr, gs->sync_bn);
    for (int k = 0; k < gs->ps->n; k++)
        gs->final[k] |= gs->ps->p[k].is_buffer;
    gs->first = 0;
}

static int grad_sync_hook(void *ctx, int i)
{
    grad_sync *gs = ctx;
    if (gs->first)
        grad_sync_fill_buffers(gs);
    const qkf_op *op = &gs->g->ops[i];
    int own[6] = {-1, -1, -1, -1, -1, -1};
    if (op->kind == QKF_OP_CONV)
        own[0] = op->p_w, own[1] = op->p_b, own[2] = op->p_bn_w, own[3] = op->p_bn_b;
    else if (op->kind == QKF_OP_READOUT)
        own[4] = op->p_head_w, own[5] = op->p_head_b;
    for (int j = 0; j < 6; j++)
        if (own[j] >= 0)
            gs->final[own[j]] = 1;
    while (gs->front > 0 && gs->final[gs->order[gs->front - 1]])
        gs->front--;
    int64_t lo = gs->front < gs->ps->n ? gs->ps->p[gs->order[gs->front]].offset : gs->ps->total;
    return qkf_dist_buckets_ready(gs->bk, lo);
}

static void grad_sync_init(grad_sync *gs, qkf_dist_buckets *bk, const qkf_graph *g,
                           qkf_params *ps, float *grads, int nr, int sync_bn)
{
    gs->bk = bk, gs->g = g, gs->ps = ps, gs->grads = grads, gs->nr = nr, gs->sync_bn = sync_bn;
    gs->order = qkf_malloc((size_t)ps->n * sizeof(int));
    gs->final = qkf_malloc((size_t)ps->n + 1);
    for (int k = 0; k < ps->n; k++) { /* insertion sort by offset (a few hundred tensors) */
        int j = k;
        while (j > 0 && ps->p[gs->order[j - 1]].offset > ps->p[k].offset) {
            gs->order[j] = gs->order[j - 1];
            j--;
        }
        gs->order[j] = k;
    }
    grad_sync_reset(gs);
}

/* qkf__report_held's lines as trainer log events. */
typedef struct {
    qkf_trainer_cb cb;
    void *ctx;
} log_to_cb;

static void log_line(void *ctx, const char *line)
{
    log_to_cb *l = ctx;
    qkf_trainer_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = QKF_TRAINER_LOG, ev.text = line, ev.test_acc = -1.0;
    if (l->cb)
        l->cb(l->ctx, &ev);
}

static void tlog(qkf_trainer_cb cb, void *ctx, int kind, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    qkf_trainer_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind, ev.text = line, ev.test_acc = -1.0;
    if (cb)
        cb(ctx, &ev);
}

void qkf_trainer_opts_init(qkf_trainer_opts *o)
{
    memset(o, 0, sizeof *o);
    /* the default model: a small QKFormer for 28x28 grey images */
    qkf_config_preset("cifar", &o->cfg);
    o->cfg.img_size = 28, o->cfg.in_channels = 1, o->cfg.num_classes = 10;
    o->cfg.embed_dims = 64, o->cfg.num_heads = 4, o->cfg.mlp_ratio = 4.0f, o->cfg.depths = 3;
    o->cfg.T = 2;
    o->data = "fashion-mnist", o->out = "qkf-train.h5";
    o->epochs = 3, o->batch = 32, o->log_every = 50, o->eval_batch = 200, o->crop_pad = 2;
    o->bucket_mb = 4;
    o->warmup_epochs = 0.2, o->smoothing = 0.1, o->mixup_off_epoch = 100000, o->seed = 42;
    o->eval_event = 1;
    o->distill_weight = 0.5, o->distill_temp = 2.0, o->val_best = -1.0, o->val_best_step = -1;
    qkf_optim_defaults(&o->opt);
    o->opt.lr = 1.5e-3f;
    qkf_trace_opts_init(&o->trace);
    qkf_trainer_parse_steps("1", &o->trace_steps);
}

int qkf_trainer_set(qkf_trainer_opts *o, const char *name, const char *value)
{
    char opt[128];
    snprintf(opt, sizeof opt, "--%s", name[0] == '-' && name[1] == '-' ? name + 2 : name);
    char *kept = value ? (char *)qkf__trainer_keep(o, value) : NULL;
    if (value && !kept)
        return qkf_set_error("training option '%s': too much text in string options", name);
    char *av[3] = {"config", opt, kept};
    int n = value ? 3 : 2;
    qkf_args a = {n, av, 1, "train"};
    int r = qkf_trainer_parse_opt(&a, o);
    if (r == 0)
        return qkf_set_error("unknown training option '%s'", name);
    if (r < 0)
        return -1;
    if (a.i != n - 1)
        return qkf_set_error("training option '%s' takes %s", name, value ? "no value" : "a value");
    return 0;
}

int qkf_trainer_resume_options(const char *path, qkf_trainer_opts *o)
{
    qkf_h5_quiet();
    if (load_train_options(path, o, o->data_buf, sizeof o->data_buf))
        return -1;
    char spec[256];
    int r = qkf_app_ckpt_bits_min(path, spec, sizeof spec);
    if (r < 0)
        return -1;
    if (r > 0 && !(o->bits_min = qkf__trainer_keep(o, spec)))
        return qkf_set_error("%s: too much text in string options", path);
    int has = qkf_h5_has(path, "optim/extra");
    if (has < 0)
        return -1;
    if (has) {
        float *v;
        int nd;
        int64_t sh[5];
        if (qkf_h5_read_f32(path, "optim/extra", &v, &nd, sh))
            return -1;
        int ok = nd == 1 && sh[0] == 5 && v[0] >= 0.0f && v[0] == floorf(v[0]) && v[1] >= 0.0f &&
                 v[1] <= 1.0f && v[2] > 0.0f && v[3] <= 1.0f && v[4] >= -1.0f;
        if (ok) {
            o->val = (int64_t)v[0], o->distill_weight = (double)v[1];
            o->distill_temp = (double)v[2], o->val_best = (double)v[3];
            o->val_best_step = (int64_t)v[4];
        }
        qkf_free(v);
        if (!ok)
            return qkf_set_error("%s: optim/extra must hold 5 values (val, distill weight and "
                                 "temperature, best validation accuracy and step)",
                                 path);
        char dp[1024];
        if ((r = qkf__h5_chars(path, "optim/distill", 0x20, "a path", dp, sizeof dp)) < 0)
            return -1;
        if (r > 0 && !(o->distill = qkf__trainer_keep(o, dp)))
            return qkf_set_error("%s: too much text in string options", path);
    }
    return 0;
}

int qkf_trainer_run(qkf_trainer_opts *op, qkf_trainer_cb cb, void *cb_ctx)
{
    qkf_trainer_opts o = *op; /* the run adjusts a few (seed on resume, schedule lengths) */
    int cb_stop = 0;
    log_to_cb lt = {cb, cb_ctx};
    if (o.threads)
        qkf_set_threads((int)o.threads);
    int nr = qkf_dist_size(), rank = qkf_dist_rank();
    if (o.batch < nr)
        return qkf_set_error("--batch %ld is the global batch, split over %d ranks: at least one "
                             "sample per rank",
                             o.batch, nr);
    if (o.trace.path && nr > 1)
        return qkf_set_error("--trace records one process; run qkf train without mpirun to record");
    if (rank != 0) /* rank 0 alone prints and writes */
        o.quiet = 1, o.metrics = NULL;
    const char *desync = getenv("QKF_TEST_DESYNC_RANK"); /* test hook: the divergence check */
    int desync_rank = desync && *desync ? atoi(desync) : -1;

    int rc = QKF_APP_RANK0, frc, setup_failed = 1, stop = 0;
    qkf_trace *tr = NULL;
    qkf_trace_spec ts;
    qkf_trace_spec_init(&ts);
    qkf_model m;
    /* one process: dtrain is the whole training split. Under mpirun: dtrain is its probe (size
     * and shape) and dshard the samples this rank consumes in the current epoch. */
    qkf_dataset dtrain, dtest, dshard;
    float mx_train = 255.0f; /* HDF5 images: the training split's largest value (its scale) */
    qkf_optim opt;
    memset(&m, 0, sizeof m);
    memset(&dtrain, 0, sizeof dtrain);
    memset(&dtest, 0, sizeof dtest);
    memset(&dshard, 0, sizeof dshard);
    memset(&opt, 0, sizeof opt);
    qkf_train *e = NULL;
    qkf_hw_profile hwp; /* --hw: quantisation-aware fine-tuning */
    o.hw_name = NULL;
    qkf_dist_buckets *bk = NULL; /* overlapped gradient all-reduce (several ranks) */
    grad_sync gsync;
    memset(&gsync, 0, sizeof gsync);
    qkf_loader *ld = NULL;
    FILE *mf = NULL;
    float *xmix = NULL, *target = NULL, *tflip = NULL;
    float *xpack = NULL, *xall = NULL, *xmir = NULL; /* mixup under mpirun */
    int32_t *labmir = NULL;
    int64_t step = 0, spe = 0;
    qkf_model tm; /* --distill: the teacher and its engine */
    memset(&tm, 0, sizeof tm);
    qkf_dense *te = NULL;
    float *tlogits = NULL;
    qkf_dataset dval; /* --val: the held-out end of the training split */
    memset(&dval, 0, sizeof dval);
    char best_path[1100];
    int64_t val_done = -1;
    qkf_trainer_best_path(o.out ? o.out : "qkf", best_path, sizeof best_path);
#define INTERRUPTED ((o.interrupt && *o.interrupt) || cb_stop)

    if (o.hw) {
        if (qkf_hw_load(o.hw, &hwp))
            goto setup_end;
        if (hwp.arith.is_float) {
            qkf_set_error("--hw %s: the float machine (run without --hw)", hwp.name);
            goto setup_end;
        }
        if (nr > 1) {
            qkf_set_error("--hw: quantisation-aware training runs in one process (no mpirun)");
            goto setup_end;
        }
        if (o.tb) {
            qkf_set_error("--hw trains on the chip's integer form, which has no --tb-compat quirk "
                          "(drop --tb-compat)");
            goto setup_end;
        }
    } else if (o.bits_min) {
        qkf_set_error("--bits-min is an option of the quantiser: it needs --hw PROFILE");
        goto setup_end;
    }
    if (o.val > 0 && nr > 1) {
        qkf_set_error("--val: validation runs in one process (no mpirun)");
        goto setup_end;
    }
    /* model: resumed, initialised from weights, or fresh */
    const char *from = o.resume ? o.resume : o.init;
    if (from) {
        if (qkf_ckpt_load(from, &m))
            goto setup_end;
        if (o.resume && check_resume_hw(o.resume, o.hw ? &hwp : NULL))
            goto setup_end;
        if (o.cfg_given && !same_config(&o.cfg, &m.cfg)) {
            qkf_set_error("%s: the checkpoint's model configuration differs from the one given "
                          "(drop the model options, or start a new run)",
                          from);
            goto setup_end;
        }
    } else {
        if (qkf_config_validate(&o.cfg))
            goto setup_end;
        m.cfg = o.cfg;
        if (qkf_params_build(&m.cfg, &m.params))
            goto setup_end;
        qkf_params_init(&m.cfg, &m.params, o.seed);
    }
    if (nr == 1) {
        if (qkf_dataset_load(o.data, 1, &dtrain) || qkf__dataset_fits(&dtrain, &m.cfg))
            goto setup_end;
        if (!o.no_eval &&
            (qkf_dataset_load(o.data, 0, &dtest) || qkf__dataset_fits(&dtest, &m.cfg)))
            goto setup_end;
        if (m.n_norm == 0 && dtrain.t == 0) { /* images are normalised; event counts are not */
            m.n_norm = m.cfg.in_channels;
            qkf_dataset_stats(&dtrain, m.input_mean, m.input_std);
        }
        if (o.val > 0) { /* the last o.val samples: a copy the training never reads */
            int64_t tn, lo;
            if (qkf_trainer_split(dtrain.n, o.limit_train, o.val, o.batch, &tn, &lo))
                goto setup_end;
            o.limit_train = tn;
            int64_t per_s = (int64_t)dtrain.c * dtrain.h * dtrain.w * (dtrain.t > 0 ? dtrain.t : 1);
            dval = dtrain;
            dval.n = o.val;
            dval.pixels = qkf_malloc((size_t)(o.val * per_s));
            dval.labels = qkf_malloc((size_t)o.val * sizeof(int32_t));
            dval.total = o.val, dval.index = NULL; /* a split of its own to the loader */
            memcpy(dval.pixels, dtrain.pixels + lo * per_s, (size_t)(o.val * per_s));
            memcpy(dval.labels, dtrain.labels + lo, (size_t)o.val * sizeof(int32_t));
        }
    } else {
        /* every rank reads only what it needs: the training split's size now, its samples epoch
         * by epoch (dshard), and its shard of the test split. Each step below is agreed by all
         * ranks, so they stay in step through the collectives inside. */
        if ((frc = qkf__dist_failed(0))) {
            rc = frc;
            goto quiet;
        }
        int drc = qkf_dist_dataset_probe(o.data, 1, &dtrain, &mx_train);
        if (!drc && (frc = qkf__dist_failed(qkf__dataset_fits(&dtrain, &m.cfg) != 0))) {
            rc = frc;
            goto quiet;
        }
        if (!drc && !o.no_eval)
            drc = qkf_dist_dataset_shard(o.data, 0, o.limit_test, &dtest);
        if (!drc && !o.no_eval &&
            (frc = qkf__dist_failed(qkf__dataset_fits(&dtest, &m.cfg) != 0))) {
            rc = frc;
            goto quiet;
        }
        /* the normalisation of the whole training split (as one process computes it, from exact
         * per-rank pixel sums); computed by every rank if any rank needs it */
        int need = m.n_norm == 0 && dtrain.t == 0;
        if (!drc && !qkf_dist_all_ok(!need, NULL)) {
            float mean[4] = {0}, std[4] = {0};
            drc = qkf_dist_dataset_stats(o.data, 1, &dtrain, mx_train, mean, std);
            if (!drc && need) {
                m.n_norm = m.cfg.in_channels;
                memcpy(m.input_mean, mean, (size_t)dtrain.c * sizeof(float));
                memcpy(m.input_std, std, (size_t)dtrain.c * sizeof(float));
            }
        }
        if (drc) {
            setup_failed = drc == -2 ? 2 : 1;
            goto setup_end;
        }
        if (!o.no_eval &&
            (frc = qkf__report_held(
                 "test", &dtest,
                 o.limit_test > 0 && o.limit_test < dtest.total ? o.limit_test : dtest.total,
                 o.quiet, log_line, &lt))) {
            rc = frc;
            goto quiet;
        }
    }
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = &dtrain, lc.batch = (int)o.batch, lc.shuffle = 1, lc.crop_pad = (int)o.crop_pad;
    lc.flip = o.flip, lc.drop_last = 1, lc.limit = o.limit_train, lc.n_norm = m.n_norm;
    lc.ranks = nr, lc.rank = rank; /* each rank gets its slice of every global batch */
    memcpy(lc.mean, m.input_mean, sizeof lc.mean);
    memcpy(lc.std, m.input_std, sizeof lc.std);
    spe = qkf_loader_batches(&lc);
    if (spe < 1) {
        qkf_set_error("%s: fewer training images than one batch of %ld", dtrain.source, o.batch);
        goto setup_end;
    }
    o.opt.total_steps = o.epochs * spe;
    o.opt.warmup_steps = (int64_t)(o.warmup_epochs * (double)spe);
    qkf_optim_init(&opt, &m.params, &o.opt);
    if (o.distill) { /* the teacher: a float model on the same inputs */
        if (qkf_ckpt_load(o.distill, &tm))
            goto setup_end;
        int same_in =
            tm.cfg.num_classes == m.cfg.num_classes && tm.cfg.in_channels == m.cfg.in_channels &&
            tm.cfg.img_size == m.cfg.img_size &&
            qkf_config_is_frames(&tm.cfg) == qkf_config_is_frames(&m.cfg) &&
            (!qkf_config_is_frames(&m.cfg) || tm.cfg.T == m.cfg.T) && tm.n_norm == m.n_norm;
        for (int c = 0; same_in && c < m.n_norm; c++)
            same_in = tm.input_mean[c] == m.input_mean[c] && tm.input_std[c] == m.input_std[c];
        if (!same_in) {
            qkf_set_error("%s: the teacher (--distill) must take the student's inputs and classes "
                          "(size, channels, frames, normalisation, class count)",
                          o.distill);
            goto setup_end;
        }
        if (!(te = qkf_dense_create(&tm, (int)((o.batch + nr - 1) / nr), 0)))
            goto setup_end;
        tlogits = qkf_malloc((size_t)o.batch * (size_t)m.cfg.num_classes * sizeof(float));
    }
    if (o.resume) {
        uint64_t seed = o.seed;
        if (load_train_state(o.resume, &m.params, &opt, &step, &seed))
            goto setup_end;
        o.seed = seed;
        lc.seed = seed;
    }
    lc.seed = o.seed;
    /* each rank holds at most ceil(batch / ranks) samples of the global batch */
    e = qkf_train_create(&m, (int)((o.batch + nr - 1) / nr), o.tb ? QKF_TRAIN_TB_COMPAT : 0);
    if (!e)
        goto setup_end;
    if (o.hw) {
        qkf_quant_opts qo;
        memset(&qo, 0, sizeof qo);
        qo.bits_min = o.bits_min;
        if (qkf_train_set_hw(e, &hwp.arith, hwp.name, &qo)) { /* the quantiser's refusal */
            char msg[600];
            snprintf(msg, sizeof msg, "%s", qkf_last_error());
            if (from)
                qkf_set_error("%s: %s", from, msg);
            goto setup_end;
        }
        o.hw_name = hwp.name;
        o.hw_arith = hwp.arith;
    }
    if (nr > 1 && o.sync_bn)
        qkf_train_set_bn_sync(e, qkf_dist_sum_f64);
    if (nr > 1 && o.bucket_mb > 0) {
        bk = qkf_dist_buckets_create(qkf_train_grads(e), m.params.total,
                                     (int64_t)(o.bucket_mb * (1 << 20)) / (int64_t)sizeof(float));
        grad_sync_init(&gsync, bk, qkf_train_graph(e), &m.params, qkf_train_grads(e), nr,
                       o.sync_bn);
        qkf_train_set_grad_hook(e, grad_sync_hook, &gsync);
    }
    if (o.trace.path &&
        !(tr = qkf_trace_opts_open(&o.trace, &ts, qkf_train_graph(e),
                                   o.resume ? o.resume : o.init, "train", o.argc, o.argv)))
        goto setup_end;
    if (o.metrics) {
        mf = fopen(o.metrics, o.resume ? "a" : "w");
        if (!mf) {
            qkf_set_error("%s: cannot open (%s)", o.metrics, strerror(errno));
            goto setup_end;
        }
    }
    setup_failed = 0;
setup_end:
    if ((frc = qkf__dist_failed(setup_failed))) {
        rc = frc;
        goto quiet;
    }
    {
        /* every rank must run the same job: model, weights, normalisation and options */
        double agree[] = {(double)o.batch, (double)o.epochs, (double)o.seed, (double)step,
                          (double)o.limit_train, (double)o.limit_test, (double)o.sync_bn,
                          (double)o.max_steps, (double)o.tb, (double)o.crop_pad, (double)o.flip,
                          (double)o.no_eval, (double)o.opt.lr, (double)o.opt.min_lr,
                          (double)o.opt.warmup_lr, (double)o.opt.weight_decay,
                          (double)o.opt.clip, o.warmup_epochs, o.smoothing, o.mixup,
                          (double)o.mixup_off_epoch, (double)o.eval_event, (double)o.eval_batch,
                          (double)o.save_every};
        if (qkf__check_agree(&m, agree, sizeof agree))
            goto quiet;
    }
    size_t mlen = o.metrics ? strlen(o.metrics) : 0;
    int csv = mlen > 4 && !strcmp(o.metrics + mlen - 4, ".csv");
    if (mf && csv && !o.resume)
        fprintf(mf, "kind,epoch,step,lr,loss,acc,test_acc,grad_norm,img_per_s,seconds\n");
    int K = m.cfg.num_classes;
    /* floats per sample: an image, or T frames */
    int64_t per = (int64_t)m.cfg.in_channels * m.cfg.img_size * m.cfg.img_size *
                  (qkf_config_is_frames(&m.cfg) ? m.cfg.T : 1);
    xmix = qkf_malloc((size_t)(per * o.batch) * sizeof(float));
    target = qkf_malloc((size_t)(2 * o.batch * K) * sizeof(float)); /* room for mirrored rows */
    tflip = qkf_malloc((size_t)(o.batch * K) * sizeof(float));
    if (nr > 1 && o.mixup > 0.0) { /* mixup pairs rows held by other ranks: packed rows */
        xpack = qkf_malloc((size_t)((per + 1) * (o.batch + 1)) * sizeof(float)); /* 2 Bl rows */
        xall = qkf_malloc((size_t)((per + 1) * o.batch) * sizeof(float));
        xmir = qkf_malloc((size_t)((per + 1) * o.batch) * sizeof(float));
        labmir = qkf_malloc((size_t)o.batch * sizeof(int32_t));
    }
    if (!o.quiet)
        tlog(cb, cb_ctx, QKF_TRAINER_LOG,
             "qkf train: %s variant, img %d, embed %d, heads %d, T %d, %lld parameters; %s: "
             "%lld train / %lld test images; %lld steps of %ld (%lld per epoch)%s%s\n",
             qkf_variant_name(m.cfg.variant), m.cfg.img_size, m.cfg.embed_dims, m.cfg.num_heads,
             m.cfg.T, (long long)m.params.n_train, dtrain.source,
             (long long)(o.limit_train && o.limit_train < dtrain.n ? o.limit_train : dtrain.n),
             (long long)(o.no_eval                                    ? 0
                         : o.limit_test && o.limit_test < dtest.total ? o.limit_test
                                                                      : dtest.total),
             (long long)o.opt.total_steps, o.batch, (long long)spe, o.resume ? " (resumed)" : "",
             nr > 1 ? (o.sync_bn ? "; ranks share the batch, synchronised BatchNorm"
                                 : "; ranks share the batch, BatchNorm per rank")
                    : "");
    if (!o.quiet && o.hw)
        tlog(cb, cb_ctx, QKF_TRAINER_LOG,
             "quantisation-aware: --hw %s (forward: the dense integer engine on the weights "
             "quantised every step, BatchNorm frozen and folded; backward: straight-through)%s\n",
             hwp.name, o.no_eval ? "" : "; epochs evaluate the integer model");
    if (!o.quiet)
        tlog(cb, cb_ctx, QKF_TRAINER_LOG,
             "training engine: %.0f MB of activations, gradients and optimiser state\n",
             (double)(qkf_train_bytes(e) + 2 * m.params.total * 4) / 1e6);
    int tty = o.tty && !o.quiet;
    double t_start = qkf_now(), t_steps = 0.0;
    int64_t steps_run = 0;
    int saved_at_interrupt = 0;
    for (int64_t epoch = step / spe; epoch < o.epochs && !(stop = stop_now(INTERRUPTED)) &&
                                     !(o.max_steps && step >= o.max_steps);
         epoch++) {
        if (nr > 1) {
            /* this epoch's samples of this rank: its slices of the global batches, read from
             * the files; last epoch's are freed first */
            int64_t *idx = NULL, k = 0;
            lc.d = &dtrain;
            qkf_dataset_free(&dshard);
            qkf_loader_indices(&lc, epoch, step - epoch * spe, &idx, &k);
            int lrc = qkf_dataset_load_subset(o.data, 1, idx, k, mx_train, &dshard) ||
                      qkf__dataset_fits(&dshard, &m.cfg);
            qkf_free(idx);
            if ((frc = qkf__dist_failed(lrc != 0))) {
                rc = frc;
                goto quiet;
            }
            lc.d = &dshard;
            if (epoch == step / spe &&
                (frc = qkf__report_held("training", &dshard, spe * o.batch, o.quiet, log_line,
                                        &lt))) {
                rc = frc;
                goto quiet;
            }
        }
        ld = qkf_loader_start(&lc, epoch, step - epoch * spe);
        const float *x;
        const int32_t *lab;
        int B;
        double ep_loss = 0.0, win_loss = 0.0;
        int64_t ep_ok = 0, ep_n = 0, win_ok = 0, win_n = 0;
        double t_epoch = qkf_now();
        while (!(stop = stop_now(INTERRUPTED)) && !(o.max_steps && step >= o.max_steps) &&
               qkf_loader_next(ld, &x, &lab, &B)) {
            double t0 = qkf_now();
            /* under mpirun the loader hands this rank its contiguous slice of the global batch:
             * Bl of its B samples */
            int Bl = B;
            B = nr > 1 ? qkf_loader_global_batch(ld) : Bl;
            int mixing = o.mixup > 0.0 && epoch < o.mixup_off_epoch, mirrored = nr > 1 && mixing;
            qkf_xent_targets(target, lab, Bl, K, (float)o.smoothing);
            if (mirrored) {
                /* row b is mixed with row B-1-b of the global batch, which another rank may
                 * hold: those rows (and labels) come from the ranks holding them, to rows
                 * Bl.. of x and of the targets */
                for (int b = 0; b < Bl; b++) {
                    memcpy(xpack + b * (per + 1), x + b * per, (size_t)per * sizeof(float));
                    xpack[b * (per + 1) + per] = (float)lab[b];
                }
                if (qkf_dist_mirror_rows(xpack, B, per + 1, xall, xmir))
                    goto done;
                for (int b = 0; b < Bl; b++) {
                    memcpy(xpack + (Bl + b) * per, xmir + b * (per + 1),
                           (size_t)per * sizeof(float));
                    labmir[b] = (int32_t)xmir[b * (per + 1) + per];
                }
                memcpy(xpack, x, (size_t)(Bl * per) * sizeof(float));
                x = xpack;
                qkf_xent_targets(target + Bl * K, labmir, Bl, K, (float)o.smoothing);
            }
            const float *xin = x;
            if (mixing) {
                /* timm batch mixup: x = lam x + (1 - lam) x[::-1], same for the targets */
                qkf_rng r;
                qkf_rng_seed(&r, o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)step);
                double g1 = rng_gamma(&r, o.mixup), g2 = rng_gamma(&r, o.mixup);
                float lam = (float)(g1 / (g1 + g2));
                for (int b = 0; b < Bl; b++) {
                    int b2 = mirrored ? Bl + b : B - 1 - b; /* the row paired with row b */
                    const float *x1 = x + b * per, *x2 = x + b2 * per;
                    for (int64_t i = 0; i < per; i++)
                        xmix[b * per + i] = lam * x1[i] + (1.0f - lam) * x2[i];
                    for (int k = 0; k < K; k++)
                        tflip[b * K + k] =
                            lam * target[b * K + k] + (1.0f - lam) * target[b2 * K + k];
                }
                memcpy(target, tflip, (size_t)(Bl * K) * sizeof(float));
                xin = xmix;
            }
            /* this rank's loss gradient is weighted by its share, so that the summed gradients
             * are those of the global mean loss */
            double loss = 0.0;
            int ok = 0;
            qkf_train_zero_grad(e);
            if (tr) /* record the forward of the selected updates (1-based) */
                qkf_train_set_trace(e, in_steps(&o.trace_steps, step + 1) ? qkf_trace_sink(tr)
                                                                          : NULL);
            qkf_train_set_loss_weight(e, nr > 1 ? (float)Bl / (float)B : 1.0f);
            if (bk)
                grad_sync_reset(&gsync);
            int lfail;
            if (te)
                lfail =
                    qkf_dense_forward(te, xin, Bl, tlogits, NULL) != 0 ||
                    qkf_train_loss_backward_kd(e, xin, Bl, target, tlogits, (float)o.distill_weight,
                                               (float)o.distill_temp, &loss, &ok) != 0;
            else
                lfail = qkf_train_loss_backward(e, xin, Bl, target, &loss, &ok) != 0;
            float *grads = qkf_train_grads(e);
            if (nr > 1) {
                /* buckets the backward has not started go now, before any other collective,
                 * so every rank starts them in the same order (also after a failure) */
                if (bk && qkf_dist_buckets_start_all(bk))
                    goto done;
                double red[3] = {loss * Bl, ok, lfail};
                if (qkf_dist_sum_f64(red, 3) || (bk && red[2] > 0.0 && qkf_dist_buckets_finish(bk)))
                    goto done;
                if (red[2] > 0.0) {
                    if (!lfail)
                        qkf_set_error("step %lld failed on another rank", (long long)step);
                    goto done;
                }
                loss = red[0] / B, ok = (int)red[1];
                /* per-rank BatchNorm: the running statistics, averaged over the ranks in the
                 * same reduction (the gradient buffer has zeros there) */
                const qkf_params *ps = &m.params;
                if (bk) {
                    if (qkf_dist_buckets_finish(bk))
                        goto done;
                } else {
                    bn_buffers_to_grads(ps, grads, nr, o.sync_bn);
                    if (qkf_dist_sum_f32(grads, ps->total))
                        goto done;
                }
                for (int k = 0; k < ps->n; k++)
                    if (ps->p[k].is_buffer) {
                        if (!o.sync_bn)
                            memcpy(ps->data + ps->p[k].offset, grads + ps->p[k].offset,
                                   (size_t)ps->p[k].numel * sizeof(float));
                        memset(grads + ps->p[k].offset, 0, (size_t)ps->p[k].numel * sizeof(float));
                    }
            } else if (lfail)
                goto done;
            float lr = qkf_optim_lr(&opt.cfg, opt.step);
            double gnorm = qkf_optim_step(&opt, &m.params, grads);
            if (desync_rank == rank && nr > 1 && step == 0)
                m.params.data[0] += 1e-3f;
            if (!isfinite(loss)) {
                qkf_set_error("step %lld: the loss is %g (lower --lr, or set --clip)",
                              (long long)step, loss);
                goto done;
            }
            step++;
            steps_run++;
            double dt = qkf_now() - t0;
            t_steps += dt;
            ep_loss += loss * B, ep_ok += ok, ep_n += B;
            win_loss += loss * B, win_ok += ok, win_n += B;
            double ips = (double)steps_run * (double)o.batch / t_steps;
            if (mf && step % o.log_every == 0) {
                if (csv)
                    fprintf(mf, "step,%lld,%lld,%.6g,%.6f,%.4f,,%.5g,%.1f,%.1f\n", (long long)epoch,
                            (long long)step, (double)lr, win_loss / (double)win_n,
                            (double)win_ok / (double)win_n, gnorm, ips, qkf_now() - t_start);
                else
                    fprintf(mf,
                            "{\"kind\":\"step\",\"epoch\":%lld,\"step\":%lld,\"lr\":%.6g,"
                            "\"loss\":%.6f,\"acc\":%.4f,\"grad_norm\":%.5g,\"img_per_s\":%.1f,"
                            "\"seconds\":%.1f}\n",
                            (long long)epoch, (long long)step, (double)lr,
                            win_loss / (double)win_n, (double)win_ok / (double)win_n, gnorm, ips,
                            qkf_now() - t_start);
                fflush(mf);
                win_loss = 0.0, win_ok = 0, win_n = 0;
            }
            qkf_trainer_event ev;
            memset(&ev, 0, sizeof ev);
            char line[512];
            ev.kind = QKF_TRAINER_STEP, ev.epoch = epoch + 1, ev.step = step;
            ev.total_steps = o.opt.total_steps, ev.steps_per_epoch = spe;
            ev.loss = loss, ev.acc = Bl ? (double)ok / (double)B : 0.0, ev.test_acc = -1.0;
            ev.lr = (double)lr, ev.grad_norm = gnorm, ev.img_per_s = ips;
            ev.seconds = qkf_now() - t_start;
            if (!o.quiet && (tty || step % o.log_every == 0)) {
                int64_t in_ep = step - epoch * spe;
                char eta[32];
                fmt_time(eta, sizeof eta,
                         (double)(o.opt.total_steps - step) * t_steps / (double)steps_run);
                char bar[21];
                int fill = (int)(20 * in_ep / spe);
                for (int i = 0; i < 20; i++)
                    bar[i] = i < fill ? '#' : '.';
                bar[20] = 0;
                snprintf(line, sizeof line,
                         "%sepoch %lld/%ld [%s] %lld/%lld loss %.4f acc %.1f%% %.0f img/s ETA %s%s",
                         tty ? "\r" : "", (long long)epoch + 1, o.epochs, bar, (long long)in_ep,
                         (long long)spe, ep_loss / (double)ep_n,
                         100.0 * (double)ep_ok / (double)ep_n, ips, eta, tty ? "   " : "\n");
                ev.text = line;
            }
            if (cb && cb(cb_ctx, &ev))
                cb_stop = 1;
            if (o.save_every > 0 && step % o.save_every == 0 &&
                (validate(&o, &m, &opt, &dval, o.hw ? &hwp : NULL, step, &val_done, best_path, cb,
                          cb_ctx) ||
                 save_dist(o.out, &m, &opt, &o, step)))
                goto done;
        }
        double wait = qkf_loader_wait_seconds(ld);
        qkf_loader_stop(ld);
        ld = NULL;
        if (tty)
            tlog(cb, cb_ctx, QKF_TRAINER_LOG, "\n");
        if (stop || (o.max_steps && step >= o.max_steps && step % spe))
            break;
        if (params_agree(&m, &opt, step))
            goto quiet;
        double test_acc = -1.0;
        int64_t ntest = 0;
        if (!o.no_eval && (o.hw ? evaluate_int(&m, &dtest, o.limit_test, (int)o.eval_batch, &hwp,
                                               o.bits_min, &test_acc, &ntest)
                                : qkf_evaluate(&m, &dtest, o.limit_test, (int)o.eval_batch, o.tb,
                                               o.eval_event, 0, &test_acc, &ntest)))
            goto done;
        double secs = qkf_now() - t_epoch;
        {
            char line[512];
            size_t len = 0;
            len += (size_t)snprintf(line, sizeof line, "epoch %lld: train loss %.4f acc %.2f%%",
                                    (long long)epoch + 1, ep_n ? ep_loss / (double)ep_n : 0.0,
                                    ep_n ? 100.0 * (double)ep_ok / (double)ep_n : 0.0);
            if (test_acc >= 0)
                len += (size_t)snprintf(line + len, sizeof line - len,
                                        ", test acc %.2f%% (%lld images)", 100.0 * test_acc,
                                        (long long)ntest);
            snprintf(line + len, sizeof line - len, ", %.1f s (data wait %.2f s)\n", secs, wait);
            qkf_trainer_event ev;
            memset(&ev, 0, sizeof ev);
            ev.kind = QKF_TRAINER_EPOCH, ev.text = o.quiet ? NULL : line, ev.epoch = epoch + 1;
            ev.step = step, ev.total_steps = o.opt.total_steps, ev.steps_per_epoch = spe;
            ev.loss = ep_n ? ep_loss / (double)ep_n : 0.0;
            ev.acc = ep_n ? (double)ep_ok / (double)ep_n : 0.0, ev.test_acc = test_acc;
            ev.lr = (double)qkf_optim_lr(&opt.cfg, opt.step), ev.seconds = qkf_now() - t_start;
            if (cb && cb(cb_ctx, &ev))
                cb_stop = 1;
        }
        if (mf) {
            if (csv)
                fprintf(mf, "epoch,%lld,%lld,%.6g,%.6f,%.4f,%.4f,,,%.1f\n", (long long)epoch + 1,
                        (long long)step, (double)qkf_optim_lr(&opt.cfg, opt.step),
                        ep_n ? ep_loss / (double)ep_n : 0.0,
                        ep_n ? (double)ep_ok / (double)ep_n : 0.0, test_acc, qkf_now() - t_start);
            else
                fprintf(mf,
                        "{\"kind\":\"epoch\",\"epoch\":%lld,\"step\":%lld,\"loss\":%.6f,"
                        "\"acc\":%.4f,\"test_acc\":%.4f,\"seconds\":%.1f}\n",
                        (long long)epoch + 1, (long long)step,
                        ep_n ? ep_loss / (double)ep_n : 0.0,
                        ep_n ? (double)ep_ok / (double)ep_n : 0.0, test_acc,
                        qkf_now() - t_start);
            fflush(mf);
        }
        if (validate(&o, &m, &opt, &dval, o.hw ? &hwp : NULL, step, &val_done, best_path, cb,
                     cb_ctx) ||
            save_dist(o.out, &m, &opt, &o, step))
            goto done;
    }
    if (params_agree(&m, &opt, step))
        goto quiet;
    if (stop || (nr == 1 && INTERRUPTED)) {
        if (save_dist(o.out, &m, &opt, &o, step))
            goto done;
        saved_at_interrupt = 1;
        if (rank == 0)
            tlog(cb, cb_ctx, QKF_TRAINER_LOG,
                 "\ninterrupted: saved step %lld to %s (continue with --resume %s)\n",
                 (long long)step, o.out, o.out);
    } else if (step == 0 || o.epochs * spe == step || step % spe) {
        if (save_dist(o.out, &m, &opt, &o, step))
            goto done;
        if (!o.quiet)
            tlog(cb, cb_ctx, QKF_TRAINER_LOG, "wrote %s (step %lld, %.1f min)\n", o.out,
                 (long long)step, (qkf_now() - t_start) / 60.0);
    }
    if (nr > 1 && !o.quiet) /* rank 0: what the scale-out cost */
        tlog(cb, cb_ctx, QKF_TRAINER_LOG,
             "ranks: %d; all-reduce %.2f s of %.2f s (%.1f%%; time not hidden behind the "
             "backward), %.2f MB sent per rank over %lld steps, gradients in %d bucket%s\n",
             nr, qkf_dist_seconds(), qkf_now() - t_start,
             100.0 * qkf_dist_seconds() / (qkf_now() - t_start), (double)qkf_dist_bytes() / 1e6,
             (long long)step, bk ? qkf_dist_buckets_count(bk) : 1,
             bk && qkf_dist_buckets_count(bk) > 1 ? "s" : "");
    if (tr) {
        qkf_train_set_trace(e, NULL);
        int trc = qkf_trace_close(tr);
        tr = NULL;
        if (trc)
            goto done;
        if (!o.quiet)
            tlog(cb, cb_ctx, QKF_TRAINER_OUT, "wrote trace %s\n", o.trace.path);
    }
    rc = saved_at_interrupt ? 130 : 0;
done:
quiet:
#undef INTERRUPTED
    qkf_loader_stop(ld);
    if (mf)
        fclose(mf);
    qkf_free(xmix);
    qkf_free(target);
    qkf_free(tflip);
    qkf_dist_buckets_free(bk);
    qkf_free(gsync.order);
    qkf_free(gsync.final);
    qkf_free(xpack);
    qkf_free(xall);
    qkf_free(xmir);
    qkf_free(labmir);
    if (tr) {
        qkf_train_set_trace(e, NULL);
        qkf_trace_abort(tr);
    }
    qkf_trace_spec_free(&ts);
    qkf_train_free(e);
    qkf_optim_free(&opt);
    qkf_dataset_free(&dtrain);
    qkf_dataset_free(&dtest);
    qkf_dataset_free(&dshard);
    qkf_dataset_free(&dval);
    qkf_dense_free(te);
    qkf_free(tlogits);
    qkf_model_free(&tm);
    qkf_model_free(&m);
    return rc;
}
