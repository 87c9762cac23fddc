#!/usr/bin/python3
"""Cross-checks qkformer_ref.py against the official QKFormer model files.

The official files import SpikingJelly, timm and einops, which are not installed here. This
script puts minimal stand-ins for the few names they import into sys.modules (a multi-step LIF
with the same equations as ours, to_2tuple, trunc_normal_, register_model, ...), imports each
official model file from the given path, and checks on small random models that
  * the state_dict keys, their order and their shapes are identical to ours, and
  * with our weights loaded (strict=True) the official forward gives the same logits as ours with
    tb_compat=True (the official SSA proj_lif integrates over T*B) at batch size > 1, and as ours
    with per-sample LIFs at batch size 1.

Usage:
  tools/reference/check_official.py --cifar cifar10/model.py --imagenet imagenet/qkformer.py \
      --dvs dvs128-gesture/model.py --cifar10dvs cifar10-dvs/model.py
"""

import argparse
import importlib.util
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


class _StubMultiStepLIF(nn.Module):
    """Stand-in for spikingjelly.clock_driven.neuron.MultiStepLIFNode (tau 2, decay_input,
    hard reset to 0): integrates over axis 0. Our equations; see qkformer_ref.LIF."""

    def __init__(self, tau=2.0, v_threshold=1.0, **_):
        super().__init__()
        assert tau == 2.0
        self.vth = v_threshold

    def forward(self, x):
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / 2.0
            s = (h >= self.vth).float()
            v = h * (1.0 - s)
            out.append(s)
        return torch.stack(out)


def _install_stubs():
    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    mod("spikingjelly")
    mod("spikingjelly.clock_driven")
    mod("spikingjelly.clock_driven.neuron", MultiStepLIFNode=_StubMultiStepLIF,
        MultiStepParametricLIFNode=None)
    mod("spikingjelly.clock_driven.layer")
    mod("timm")
    mod("timm.models", create_model=None)
    mod("timm.models.layers", to_2tuple=lambda x: x if isinstance(x, tuple) else (x, x),
        trunc_normal_=lambda t, std=1.0: nn.init.trunc_normal_(t, std=std), DropPath=None)
    mod("timm.models.registry", register_model=lambda f: f)
    mod("timm.models.vision_transformer", _cfg=lambda **k: {})
    mod("einops")
    mod("einops.layers")
    mod("einops.layers.torch", Rearrange=None)


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def _official_model(module, cfg):
    """Instantiates the official class for cfg with the official constructor arguments."""
    kw = dict(img_size_h=cfg.img_size, img_size_w=cfg.img_size, patch_size=4,
              in_channels=cfg.in_channels, num_classes=cfg.num_classes,
              embed_dims=cfg.embed_dims, num_heads=cfg.num_heads, mlp_ratios=cfg.mlp_ratio,
              depths=cfg.depths, sr_ratios=1, T=cfg.T)
    if cfg.variant == "cifar":
        return module.spiking_transformer(**kw)
    if cfg.variant == "imagenet":
        return module.hierarchical_spiking_transformer(**kw)
    return module.vit_snn(**kw)


def check(path, cfg, seed=0):
    mod = _load(path, f"official_{cfg.variant}")
    torch.manual_seed(seed)
    ours = ref.QKFormer(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    if cfg.is_frames:
        x = torch.poisson(torch.full((3, cfg.T, cfg.in_channels, cfg.img_size, cfg.img_size),
                                     0.5), generator=g)
    else:
        x = torch.randn(3, cfg.in_channels, cfg.img_size, cfg.img_size, generator=g)
    ref.randomize_bn(ours, x, g)
    nn.init.normal_(ours.head.weight, std=0.3)

    off = _official_model(mod, cfg).eval()
    sd_o, sd_r = off.state_dict(), ours.state_dict()
    assert list(sd_o.keys()) == list(sd_r.keys()), "state_dict keys or order differ"
    for k in sd_o:
        assert sd_o[k].shape == sd_r[k].shape, \
            f"{k}: {tuple(sd_o[k].shape)} vs {tuple(sd_r[k].shape)}"
    off.load_state_dict(sd_r, strict=True)
    n_off = sum(p.numel() for p in off.parameters())
    with torch.no_grad():
        ours.set_tb_compat(True)
        d_tb = (off(x) - ours(x)).abs().max().item()
        ours.set_tb_compat(False)
        d_b1 = (off(x[:1]) - ours(x[:1])).abs().max().item()
        d_ps = (off(x) - ours(x)).abs().max().item()  # differs only through the quirk
    ok = d_tb == 0.0 and d_b1 == 0.0
    print(f"{cfg.variant:10s} keys {len(sd_o):4d} params {n_off:9,d}  "
          f"max|diff| B=3 tb_compat {d_tb:.2e}  B=1 per-sample {d_b1:.2e}  "
          f"(B=3 per-sample vs official {d_ps:.2e})  {'OK' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for v in ("cifar", "imagenet", "dvs", "cifar10dvs"):
        ap.add_argument(f"--{v}", type=Path, help=f"official model file of the {v} variant")
    a = ap.parse_args()
    _install_stubs()
    torch.set_num_threads(1)
    small = {
        "cifar": ref.QKFConfig("cifar", 16, 3, 10, 96, 8, 4.0, 4, 4),
        "imagenet": ref.QKFConfig("imagenet", 32, 3, 10, 96, 6, 4.0, 5, 2),
        "dvs": ref.QKFConfig("dvs128", 32, 2, 11, 64, 16, 4.0, 4, 4),
        "cifar10dvs": ref.QKFConfig("cifar10dvs", 32, 2, 10, 64, 16, 1.0, 4, 3),
    }
    ok = True
    for v, cfg in small.items():
        path = getattr(a, v)
        if path:
            ok &= check(path, cfg)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
