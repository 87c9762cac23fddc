/* Model construction: parameter counts equal the official ones (from the training logs), names
 * follow the official state_dict, and configurations are validated. */
#include <criterion/criterion.h>
#include <string.h>

#include "../kernels/base.h"
#include "../models/qkformer.h"

static int64_t count(const char *preset, float mlp_ratio)
{
    qkf_config c;
    cr_assert_eq(qkf_config_preset(preset, &c), 0, "%s", qkf_last_error());
    if (mlp_ratio > 0)
        c.mlp_ratio = mlp_ratio;
    qkf_params ps;
    cr_assert_eq(qkf_params_build(&c, &ps), 0, "%s", qkf_last_error());
    int64_t n = ps.n_train;
    qkf_params_free(&ps);
    return n;
}

Test(model, official_parameter_counts)
{
    cr_expect_eq(count("cifar10", 0), 6706234);
    cr_expect_eq(count("cifar100", 0), 6740884);
    cr_expect_eq(count("imagenet-10-384", 0), 16473688);
    cr_expect_eq(count("imagenet-10-512", 0), 29079336);
    cr_expect_eq(count("imagenet-10-768", 0), 64962760);
    cr_expect_eq(count("dvs128-gesture", 0), 1999371);
    cr_expect_eq(count("cifar10-dvs", 0), 1504138);
    /* the paper's 1.50 M DVS128 model is mlp_ratio 1 (spec section 9) */
    cr_expect_eq(count("dvs128-gesture", 1.0f), 1504395);
}

Test(model, official_names_and_shapes)
{
    qkf_config c;
    qkf_params ps;
    cr_assert_eq(qkf_config_preset("cifar10", &c), 0);
    cr_assert_eq(qkf_params_build(&c, &ps), 0);
    int i = qkf_params_find(&ps, "stage1.0.tssa.q_conv.weight");
    cr_assert_geq(i, 0);
    cr_expect_eq(ps.p[i].ndim, 3); /* Conv1d */
    cr_expect_eq(ps.p[i].shape[0], 96);
    i = qkf_params_find(&ps, "stage1.0.mlp.mlp1_conv.weight");
    cr_assert_geq(i, 0);
    cr_expect_eq(ps.p[i].ndim, 4);
    cr_expect_eq(ps.p[i].shape[0], 384);
    cr_expect_geq(qkf_params_find(&ps, "stage3.1.ssa.proj_conv.bias"), 0);
    cr_expect_geq(qkf_params_find(&ps, "patch_embed2.proj3_conv.weight"), 0);
    cr_expect_geq(qkf_params_find(&ps, "patch_embed1.proj_res_bn.running_var"), 0);
    cr_expect_lt(qkf_params_find(&ps, "stage1.0.tssa.q_conv.bias"), 0);
    qkf_params_free(&ps);

    cr_assert_eq(qkf_config_preset("imagenet-10-384", &c), 0);
    cr_assert_eq(qkf_params_build(&c, &ps), 0);
    cr_expect_geq(qkf_params_find(&ps, "stage3.6.attn.v_conv.weight"), 0);
    cr_expect_geq(qkf_params_find(&ps, "stage2.1.mlp.fc2_conv.bias"), 0);
    cr_expect_geq(qkf_params_find(&ps, "patch_embed1.proj2_conv.weight"), 0);
    qkf_params_free(&ps);

    cr_assert_eq(qkf_config_preset("dvs128-gesture", &c), 0);
    cr_assert_eq(qkf_params_build(&c, &ps), 0);
    cr_expect_geq(qkf_params_find(&ps, "patch_embed2.proj_conv.weight"), 0);
    cr_expect_geq(qkf_params_find(&ps, "stage2.0.ssa.attn_lif.x"), -1);
    i = qkf_params_find(&ps, "patch_embed1.proj_res_conv.weight");
    cr_assert_geq(i, 0);
    cr_expect_eq(ps.p[i].shape[0], 128);
    cr_expect_eq(ps.p[i].shape[1], 32);
    qkf_params_free(&ps);
}

Test(model, lif_layer_names)
{
    qkf_config c;
    qkf_graph g;
    cr_assert_eq(qkf_config_preset("cifar10", &c), 0);
    cr_assert_eq(qkf_graph_walk(&c, 0, &g), 0);
    const char *want[] = {"patch_embed1.proj_lif", "stage1.0.tssa.q_lif",
                          "stage1.0.tssa.attn_lif", "stage3.1.ssa.attn_lif",
                          "stage3.1.mlp.mlp2_lif", "patch_embed3.proj_res_lif"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        int found = 0;
        for (int l = 0; l < g.n_lif; l++)
            found |= strcmp(g.ops[g.lif_ops[l]].name, want[k]) == 0;
        cr_expect(found, "no LIF layer %s", want[k]);
    }
    /* QKTA attention neurons: one per (head, token); 8 heads x 32x32 tokens in stage 1 */
    for (int l = 0; l < g.n_lif; l++)
        if (!strcmp(g.ops[g.lif_ops[l]].name, "stage1.0.tssa.attn_lif"))
            cr_expect_eq(qkf_graph_lif_neurons(&g, l), 8 * 32 * 32);
    qkf_graph_free(&g);
}

Test(model, config_validation)
{
    qkf_config c;
    cr_assert_eq(qkf_config_preset("imagenet-10-384", &c), 0);
    c.img_size = 288;
    cr_expect_eq(qkf_config_validate(&c), 0);
    c.img_size = 230;
    cr_expect_eq(qkf_config_validate(&c), -1);
    cr_expect(strstr(qkf_last_error(), "230") != NULL);
    cr_assert_eq(qkf_config_preset("cifar10", &c), 0);
    c.num_heads = 7;
    cr_expect_eq(qkf_config_validate(&c), -1);
    cr_expect_eq(qkf_config_preset("resnet", &c), -1);
    cr_expect(strstr(qkf_last_error(), "resnet") != NULL);
}

/* Sizes are checked field by field in 64-bit arithmetic: a huge field is named, never an
 * overflow further on (embed_dims 2^30 was refused as "mlp_ratio 4 gives an empty MLP"), and a
 * model too large to allocate is refused before anything is allocated. */
static void expect_config_error(const qkf_config *c, const char *want)
{
    cr_assert_lt(qkf_config_validate(c), 0, "accepted: expected '%s'", want);
    cr_expect_not_null(strstr(qkf_last_error(), want), "'%s' does not say '%s'", qkf_last_error(),
                       want);
}

Test(model, config_sizes_64bit)
{
    qkf_config c, base;
    cr_assert_eq(qkf_config_preset("cifar10", &base), 0);
    c = base, c.embed_dims = 1 << 30;
    expect_config_error(&c, "embed_dims 1073741824 is larger than 65536");
    c = base, c.embed_dims = 2147483632; /* a multiple of 16 near INT_MAX */
    expect_config_error(&c, "embed_dims 2147483632 is larger than 65536");
    c = base, c.depths = 2147483647;
    expect_config_error(&c, "depths 2147483647 is larger than 1024");
    c = base, c.mlp_ratio = 1e-6f;
    expect_config_error(&c, "gives an empty MLP");
    /* every field in range, but their product: 4096^2 x 65536 x 64 values in one layer */
    c = base, c.img_size = 4096, c.embed_dims = 65536, c.mlp_ratio = 64.0f;
    expect_config_error(&c, "img_size 4096 with embed_dims 65536 and mlp_ratio 64 makes layers");
    /* valid, but 65536^2 x 8 x 1022 weights: refused by the parameter count, nothing allocated */
    c = base, c.embed_dims = 65536, c.img_size = 4, c.depths = 1024, c.num_heads = 8;
    cr_assert_eq(qkf_config_validate(&c), 0, "%s", qkf_last_error());
    qkf_params ps;
    cr_assert_lt(qkf_params_build(&c, &ps), 0);
    cr_expect_not_null(strstr(qkf_last_error(), "parameters (at most 2^31"), "%s",
                       qkf_last_error());
    cr_expect_null(ps.data);
    cr_expect_null(ps.p);
    /* the official configurations stay valid */
    const char *presets[] = {"cifar10", "cifar100", "imagenet-10-768", "dvs128-gesture",
                             "cifar10-dvs"};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(qkf_config_preset(presets[i], &c), 0);
        cr_expect_eq(qkf_config_validate(&c), 0, "%s: %s", presets[i], qkf_last_error());
    }
}
