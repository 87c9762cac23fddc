/* The integer model of a chip profile as the applications get it (qkf quantize, qkf infer/eval/
 * sim --hw, qkf serve --hw, the public API's qkf_net_quantize and profile runs): a float model
 * quantised for a profile (models/quant.h), optionally calibrated on the first samples of a
 * dataset's training split, or a quantised checkpoint (qkf quantize's output) as it is. */
#ifndef QKF_APP_QUANTIZE_H
#define QKF_APP_QUANTIZE_H

#include "../../models/hw.h"
#include "../../models/quant.h"
#include "../../models/qkformer.h"

#include <stddef.h>

/* Quantises the float model fm for hw (which must not be the float machine) with base's
 * headroom and clip_bias (base may be NULL: the defaults), calibrated first on the first `calib`
 * training samples of dataset `data` when calib > 0. label (the checkpoint's path, or NULL)
 * names the model in front of a layer the profile cannot hold. 0, or -1 with one line. */
int qkf_app_quantize(const qkf_model *fm, const char *label, const qkf_hw_profile *hw, long calib,
                     const char *data, const qkf_quant_opts *base, qkf_qmodel *q);

/* The integer model of checkpoint `weights`: a quantised checkpoint as it is (hw, if given, must
 * have its arithmetic; calib must be 0), or a float checkpoint quantised for hw
 * (qkf_app_quantize). *fm then holds the float model (zeroed for a quantised checkpoint); free
 * both with qkf_model_free / qkf_qmodel_free. 0, or -1 with one line naming the file. */
int qkf_app_qmodel(const char *weights, const qkf_hw_profile *hw, long calib, const char *data,
                   const qkf_quant_opts *base, qkf_model *fm, qkf_qmodel *q);

/* The quantiser's --bits-min SPEC a float checkpoint was fine-tuned with (qkf train --hw
 * --bits-min records it as dataset quant/bits_min, one character a value) into buf: 1, 0 when the
 * checkpoint has none, -1 with one line naming the file when it is not a spec. qkf_app_qmodel
 * quantises a float checkpoint with it unless base->bits_min is given. */
int qkf_app_ckpt_bits_min(const char *path, char *buf, size_t cap);

#endif
