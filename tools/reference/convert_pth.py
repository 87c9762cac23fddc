#!/usr/bin/python3
"""Converts an official QKFormer PyTorch checkpoint (.pth) into a qkf HDF5 checkpoint.

The input is a state_dict, or a dict holding one under 'model', 'state_dict' or
'state_dict_ema' (a leading 'module.' from DataParallel/DDP is stripped). The model
configuration comes from --preset (or --variant) plus overrides; the weights are validated by
loading them into our reference model with load_state_dict(strict=True), which checks every
name and shape, before anything is written. Output: one float32 dataset per state_dict key
(num_batches_tracked dropped) and the config as root attributes, written to a temporary file and
renamed into place.

Examples:
  convert_pth.py --preset cifar10 cifar10_best.pth --out cifar10.h5 --preset-norm
  convert_pth.py --preset imagenet-10-768 --img-size 384 model.pth --out in768_384.h5
  convert_pth.py --preset cifar10-dvs --T 10 checkpoint.pth --out c10dvs_t10.h5
"""

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
import torch  # noqa: E402


WRAPPER_KEYS = ("model", "state_dict", "state_dict_ema")

# The official cifar and DVS constructors ignore their num_heads argument and build this many
# heads in every attention (spec section 5); the imagenet one uses the argument.
OFFICIAL_HEADS = {"cifar": 8, "dvs128": 16, "cifar10dvs": 16}


def heads_error(variant, num_heads):
    """Why a converted checkpoint of `variant` cannot have `num_heads` heads, or None. Heads
    change no tensor shape, so loading the weights cannot catch a wrong count."""
    want = OFFICIAL_HEADS.get(variant)
    if want is None or num_heads == want:
        return None
    return (f"--num-heads {num_heads}: the official {variant} model always has {want} heads "
            f"(its constructor ignores num_heads), so an official checkpoint cannot be converted "
            f"with {num_heads}")


def extract_state_dict(obj, key=None):
    """The state_dict inside a loaded .pth object, with any 'module.' prefix removed. `key`
    picks the wrapper entry; by default the first of WRAPPER_KEYS present."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"no entry {key!r} in the checkpoint")
        obj = obj[key]
    elif isinstance(obj, dict):
        for k in WRAPPER_KEYS:
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError("no state_dict found (expected a dict of tensors, or one under "
                         f"{', '.join(repr(k) for k in WRAPPER_KEYS)})")
    out = OrderedDict()
    for k, v in obj.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert an official QKFormer .pth into a qkf HDF5 checkpoint.",
        epilog="Presets: " + ", ".join(ref.PRESETS))
    ap.add_argument("input", type=Path, help="official .pth checkpoint")
    ap.add_argument("--out", type=Path, required=True, help="output .h5 path")
    ap.add_argument("--key", help="entry holding the state_dict (default: the first of "
                    + ", ".join(WRAPPER_KEYS) + " present, else the file itself)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", choices=sorted(ref.PRESETS), help="official configuration")
    g.add_argument("--variant", choices=ref.VARIANTS,
                   help="architecture family (its first official preset, then overrides)")
    ap.add_argument("--img-size", type=int)
    ap.add_argument("--in-channels", type=int)
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--embed-dims", type=int)
    ap.add_argument("--num-heads", type=int)
    ap.add_argument("--mlp-ratio", type=float)
    ap.add_argument("--depths", type=int)
    ap.add_argument("--T", type=int, help="time steps")
    ap.add_argument("--qk-attn", choices=("token", "channel"))
    ap.add_argument("--mean", type=float, nargs="+", help="input normalisation mean per channel")
    ap.add_argument("--std", type=float, nargs="+", help="input normalisation std per channel")
    ap.add_argument("--preset-norm", action="store_true",
                    help="store the training normalisation of the variant (cifar, imagenet)")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    cfg = ref.QKFConfig.preset(a.preset or a.variant, img_size=a.img_size,
                               in_channels=a.in_channels, num_classes=a.num_classes,
                               embed_dims=a.embed_dims, num_heads=a.num_heads,
                               mlp_ratio=a.mlp_ratio, depths=a.depths, T=a.T,
                               qk_attn=a.qk_attn)

    why = heads_error(cfg.variant, cfg.num_heads)
    if why:
        sys.exit(f"convert_pth: {why}")

    mean, std = a.mean, a.std
    if a.preset_norm:
        if cfg.variant not in ref.PRESET_NORM:
            sys.exit(f"convert_pth: --preset-norm: no normalisation known for {cfg.variant}")
        mean, std = ref.PRESET_NORM[cfg.variant]
    if (mean is None) != (std is None):
        sys.exit("convert_pth: --mean and --std go together")
    extra = {}
    if mean is not None:
        if len(mean) != cfg.in_channels or len(std) != cfg.in_channels:
            sys.exit(f"convert_pth: --mean/--std need {cfg.in_channels} values each")
        if min(std) <= 0:
            sys.exit("convert_pth: --std values must be > 0")
        extra = {"input_mean": list(mean), "input_std": list(std)}

    try:
        obj = torch.load(a.input, map_location="cpu")
        sd = extract_state_dict(obj, a.key)
    except Exception as e:  # noqa: BLE001 - report any load failure as one line
        sys.exit(f"convert_pth: {a.input}: {e}")

    model = ref.QKFormer(cfg)
    # BatchNorm step counters carry no information; tolerate checkpoints saved without them.
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        sys.exit(f"convert_pth: {a.input}: does not match {cfg.variant} config "
                 f"{cfg.to_json()}:\n  " + "\n  ".join(first[:12]))

    ref.save_checkpoint(str(a.out), model.state_dict(), cfg, extra_attrs=extra)
    print(f"convert_pth: wrote {a.out}: {cfg.variant}, {ref.num_params(model):,d} parameters, "
          f"{sum(1 for k in sd if not k.endswith('num_batches_tracked'))} tensors")


if __name__ == "__main__":
    main()
