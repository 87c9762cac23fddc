/* Model configurations: the official presets, parsing of variant names, and validation. */
#include <string.h>

#include "../kernels/base.h"
#include "qkformer.h"

static const char *variant_names[] = {"cifar", "imagenet", "dvs128", "cifar10dvs"};

const char *qkf_variant_name(qkf_variant v)
{
    return (unsigned)v < 4 ? variant_names[v] : "unknown";
}

int qkf_variant_parse(const char *s, qkf_variant *v)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, variant_names[i]) == 0) {
            *v = (qkf_variant)i;
            return 0;
        }
    return qkf_set_error("unknown variant '%s' (expected cifar, imagenet, dvs128 or cifar10dvs)", s);
}

typedef struct {
    const char *name;
    qkf_config cfg;
} preset;

/* Values as the official constructors receive them (spec section 5). */
static const preset presets[] = {
    {"cifar10", {QKF_VARIANT_CIFAR, 32, 3, 10, 384, 8, 4.0f, 4, 4, QKF_QK_TOKEN}},
    {"cifar100", {QKF_VARIANT_CIFAR, 32, 3, 100, 384, 8, 4.0f, 4, 4, QKF_QK_TOKEN}},
    {"imagenet-10-384", {QKF_VARIANT_IMAGENET, 224, 3, 1000, 384, 6, 4.0f, 10, 4, QKF_QK_TOKEN}},
    {"imagenet-10-512", {QKF_VARIANT_IMAGENET, 224, 3, 1000, 512, 8, 4.0f, 10, 4, QKF_QK_TOKEN}},
    {"imagenet-10-768", {QKF_VARIANT_IMAGENET, 224, 3, 1000, 768, 12, 4.0f, 10, 4, QKF_QK_TOKEN}},
    {"dvs128-gesture", {QKF_VARIANT_DVS128, 128, 2, 11, 256, 16, 4.0f, 4, 16, QKF_QK_TOKEN}},
    {"cifar10-dvs", {QKF_VARIANT_CIFAR10DVS, 128, 2, 10, 256, 16, 1.0f, 4, 16, QKF_QK_TOKEN}},
    /* bare variant names: the usual model of that family */
    {"cifar", {QKF_VARIANT_CIFAR, 32, 3, 10, 384, 8, 4.0f, 4, 4, QKF_QK_TOKEN}},
    {"imagenet", {QKF_VARIANT_IMAGENET, 224, 3, 1000, 384, 6, 4.0f, 10, 4, QKF_QK_TOKEN}},
    {"dvs128", {QKF_VARIANT_DVS128, 128, 2, 11, 256, 16, 4.0f, 4, 16, QKF_QK_TOKEN}},
    {"cifar10dvs", {QKF_VARIANT_CIFAR10DVS, 128, 2, 10, 256, 16, 1.0f, 4, 16, QKF_QK_TOKEN}},
};

const char *qkf_config_preset_list(void)
{
    return "cifar10, cifar100, imagenet-10-384, imagenet-10-512, imagenet-10-768, "
           "dvs128-gesture, cifar10-dvs, cifar, imagenet, dvs128, cifar10dvs";
}

int qkf_config_preset(const char *name, qkf_config *cfg)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            *cfg = presets[i].cfg;
            return 0;
        }
    return qkf_set_error("unknown variant or preset '%s' (known: %s)", name,
                         qkf_config_preset_list());
}

int qkf_config_is_frames(const qkf_config *cfg)
{
    return cfg->variant == QKF_VARIANT_DVS128 || cfg->variant == QKF_VARIANT_CIFAR10DVS;
}

/* Token grid side of stage s (1-based) for an input of side img_size. */
int qkf_config_token_grid(const qkf_config *cfg, int stage, int *h)
{
    int s = cfg->img_size;
    switch (cfg->variant) {
    case QKF_VARIANT_CIFAR: s = s >> (stage - 1); break;
    case QKF_VARIANT_IMAGENET: s = (s >> 2) >> (stage - 1); break;
    default:
        if (stage > 2)
            return qkf_set_error("dvs models have 2 stages");
        s = (s >> 3) >> (stage - 1);
        break;
    }
    *h = s;
    return 0;
}

int qkf_config_validate(const qkf_config *c)
{
    if ((unsigned)c->variant > QKF_VARIANT_CIFAR10DVS)
        return qkf_set_error("config: unknown variant %d", (int)c->variant);
    if (c->T < 1 || c->T > 1024)
        return qkf_set_error("config: T must be in 1..1024, got %d", c->T);
    if (c->in_channels < 1 || c->in_channels > 64)
        return qkf_set_error("config: in_channels must be in 1..64, got %d", c->in_channels);
    if (c->num_classes < 1 || c->num_classes > 100000)
        return qkf_set_error("config: num_classes must be in 1..100000, got %d", c->num_classes);
    if (c->num_heads < 1)
        return qkf_set_error("config: num_heads must be >= 1, got %d", c->num_heads);
    if (!(c->mlp_ratio > 0.0f) || c->mlp_ratio > 64.0f)
        return qkf_set_error("config: mlp_ratio must be in (0, 64], got %g", (double)c->mlp_ratio);
    if (c->qk_attn != QKF_QK_TOKEN && c->qk_attn != QKF_QK_CHANNEL)
        return qkf_set_error("config: qk_attn must be token or channel");
    if (c->img_size < 1 || c->img_size > 4096)
        return qkf_set_error("config: img_size must be in 1..4096, got %d", c->img_size);
    if (c->embed_dims > QKF_MAX_EMBED)
        return qkf_set_error("config: embed_dims %d is larger than %d", c->embed_dims,
                             QKF_MAX_EMBED);
    if ((c->variant == QKF_VARIANT_CIFAR || c->variant == QKF_VARIANT_IMAGENET) &&
        c->depths > QKF_MAX_DEPTHS)
        return qkf_set_error("config: depths %d is larger than %d", c->depths, QKF_MAX_DEPTHS);
    int div = 4, emb_div = 8; /* image divisibility, and embed_dims divisibility */
    const char *why = "";
    switch (c->variant) {
    case QKF_VARIANT_CIFAR:
        div = 4, emb_div = 8, why = "cifar halves the grid twice";
        if (c->depths < 3)
            return qkf_set_error("config: cifar depths must be >= 3 (stages 1/1/depths-2), got %d",
                                 c->depths);
        break;
    case QKF_VARIANT_IMAGENET:
        div = 16, emb_div = 8, why = "imagenet downsamples by 16";
        if (c->depths < 4)
            return qkf_set_error(
                "config: imagenet depths must be >= 4 (stages 1/2/depths-3), got %d", c->depths);
        break;
    default:
        div = 16, emb_div = 16, why = "dvs downsamples by 16";
        break;
    }
    if (c->img_size % div)
        return qkf_set_error("config: img_size %d does not fit the model: it must be divisible by "
                             "%d (%s)",
                             c->img_size, div, why);
    if (c->embed_dims < emb_div || c->embed_dims % emb_div)
        return qkf_set_error("config: embed_dims %d must be a positive multiple of %d",
                             c->embed_dims, emb_div);
    int first = c->variant == QKF_VARIANT_CIFAR || c->variant == QKF_VARIANT_IMAGENET
                    ? c->embed_dims / 4
                    : c->embed_dims / 2;
    if (first % c->num_heads)
        return qkf_set_error("config: num_heads %d must divide every stage width (%d, %d, %d)",
                             c->num_heads, first, first * 2, c->embed_dims);
    /* Sizes in 64-bit arithmetic (below), each field against its own bound first, so that no
     * overflow speaks for a field that is wrong. */
    double hidden = (double)c->embed_dims * (double)c->mlp_ratio;
    if (hidden < 1.0)
        return qkf_set_error("config: mlp_ratio %g gives an empty MLP (embed_dims %d)",
                             (double)c->mlp_ratio, c->embed_dims);
    /* the widest layer at full resolution bounds every activation of one sample and step */
    double widest = hidden > (double)c->embed_dims ? hidden : (double)c->embed_dims;
    double values = (double)c->img_size * (double)c->img_size * widest;
    if (values > (double)QKF_MAX_LAYER_VALUES)
        return qkf_set_error("config: img_size %d with embed_dims %d and mlp_ratio %g makes layers "
                             "of up to %.3g values per sample and step (at most 2^31)",
                             c->img_size, c->embed_dims, (double)c->mlp_ratio, values);
    return 0;
}
