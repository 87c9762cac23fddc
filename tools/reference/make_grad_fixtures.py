#!/usr/bin/python3
"""Writes the gradient fixtures tests/fixtures/grad_<name>.{weights,}.h5 from our PyTorch
reference (qkformer_ref.py) trained the official way: BatchNorm in training mode (batch
statistics, running statistics updated with momentum 0.1 and the unbiased variance) and
SpikingJelly's LIF with the sigmoid surrogate (alpha 4) and the detached hard reset (spec
section 1), implemented here as an autograd function patched into qkformer_ref.LIF.

For each fixture NAME:
  grad_NAME.weights.h5  a qkf checkpoint (the weights before the step);
  grad_NAME.h5          input (float32), labels (int64 [B]), loss (float32 scalar: mean
                        cross-entropy, no smoothing), grad/<key> for every trainable parameter
                        (official shape), bn_after/<key> for every running_mean / running_var
                        after the training-mode forward, near (count of |h - vth| < 2e-6 over
                        the vth-1 LIF layers: 0, the input is drawn so; see make()), and
                        provenance attributes.

Weights: PyTorch default initialisation with the BatchNorms randomised (qkformer_ref.randomize_bn)
on the fixture's own input, so that in training mode, where BatchNorm normalises with that
input's statistics, every LIF layer fires at a realistic rate. Deterministic (one thread).
Usage:  tools/reference/make_grad_fixtures.py [--out tests/fixtures] [--only NAME ...]
"""

import argparse
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402
from qkformer_ref import QKFConfig  # noqa: E402
from make_fixtures import git_commit, make_input  # noqa: E402 (shared with the forward fixtures)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "tools/reference/make_grad_fixtures.py"
ALPHA = 4.0
NEAR_EPS = 2e-6
MAX_ATTEMPTS = 100

FIXTURES = [
    dict(name="cifar", seed=2001, B=2, tb_compat=False,
         cfg=QKFConfig("cifar", img_size=16, in_channels=3, num_classes=10, embed_dims=48,
                       num_heads=4, mlp_ratio=2.0, depths=4, T=2)),
    dict(name="cifar_qkca", seed=2002, B=2, tb_compat=False,
         cfg=QKFConfig("cifar", img_size=16, in_channels=3, num_classes=10, embed_dims=48,
                       num_heads=4, mlp_ratio=2.0, depths=3, T=2, qk_attn="channel")),
    dict(name="cifar_tb", seed=2003, B=3, tb_compat=True,
         cfg=QKFConfig("cifar", img_size=8, in_channels=3, num_classes=10, embed_dims=48,
                       num_heads=4, mlp_ratio=2.0, depths=3, T=2)),
    dict(name="imagenet", seed=2004, B=2, tb_compat=False,
         cfg=QKFConfig("imagenet", img_size=32, in_channels=3, num_classes=10, embed_dims=48,
                       num_heads=4, mlp_ratio=2.0, depths=4, T=2)),
    dict(name="dvs", seed=2005, B=2, tb_compat=False,
         cfg=QKFConfig("dvs128", img_size=32, in_channels=2, num_classes=11, embed_dims=32,
                       num_heads=4, mlp_ratio=2.0, depths=4, T=3)),
    dict(name="cifar10dvs", seed=2006, B=2, tb_compat=False,
         cfg=QKFConfig("cifar10dvs", img_size=32, in_channels=2, num_classes=10, embed_dims=32,
                       num_heads=4, mlp_ratio=1.0, depths=4, T=2)),
]


class SpikeFn(torch.autograd.Function):
    """Heaviside forward (x >= 0), SpikingJelly's Sigmoid surrogate backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(ALPHA * x)
        return grad * ALPHA * sg * (1.0 - sg)


NEAR = [0]


def lif_forward(self, x):
    """Multi-step LIF with surrogate gradient and detached reset (spec section 1):
    h = v + (x - v)/2; s = H(h - vth); v = h * (1 - s.detach())."""
    x = x.float()
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / 2.0
        s = SpikeFn.apply(h - self.vth)
        v = h * (1.0 - s.detach())
        if self.vth == 1.0:  # attention LIFs (vth 0.5) take exact multiples of 1/8: no rounding
            NEAR[0] += int((h.detach() - self.vth).abs().lt(NEAR_EPS).sum())
        out.append(s)
    return torch.stack(out)


def attempt(fx, k):
    """Model, input, labels, logits, loss and near-threshold count for input seed attempt k."""
    cfg, seed, B = fx["cfg"], fx["seed"], fx["B"]
    torch.manual_seed(seed)
    model = ref.QKFormer(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    x = make_input(cfg, B, torch.Generator().manual_seed(seed + 500 + k))
    labels = torch.randint(0, cfg.num_classes, (B,), generator=gen)
    ref.randomize_bn(model, x, gen)
    C = model.head.in_features
    with torch.no_grad():
        # randomize_bn's bisection leaves one membrane of each layer exactly at the threshold
        # (the shift where the firing rate jumps); move every BN bias off that point.
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                n = mod.bias.shape[0]
                sign = torch.randint(0, 2, (n,), generator=gen).float() * 2.0 - 1.0
                mod.bias.add_(sign * (0.003 + 0.01 * torch.rand(n, generator=gen)))
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=gen) / C ** 0.5)
        model.head.bias.copy_(0.2 * torch.rand(model.head.bias.shape, generator=gen) - 0.1)
    model.set_tb_compat(fx["tb_compat"])
    state = {k2: t.clone() for k2, t in model.state_dict().items()}
    model.train()
    model.zero_grad()
    NEAR[0] = 0
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    return model, state, x, labels, loss, NEAR[0]


def make(fx, out_dir):
    cfg, seed = fx["cfg"], fx["seed"]
    # A membrane within NEAR_EPS of the threshold can flip its spike under a different float
    # summation order (BLAS, BatchNorm statistics), and in a small random network one flip
    # cascades. Draw inputs until no vth-1 neuron is that close: the C engine must then
    # produce the same spikes, and gradients comparable to float rounding.
    for att in range(MAX_ATTEMPTS):
        model, state, x, labels, loss, near = attempt(fx, att)
        if near == 0:
            break
    else:
        raise SystemExit(f"{fx['name']}: no input without near-threshold membranes")
    w_path = out_dir / f"grad_{fx['name']}.weights.h5"
    ref.save_checkpoint(str(w_path), state, cfg)

    g_path = out_dir / f"grad_{fx['name']}.h5"
    tmp = f"{g_path}.tmp.{os.getpid()}"
    gz = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
    gnorm = 0.0
    with h5py.File(tmp, "w") as f:
        f.create_dataset("input", data=x.numpy().astype(np.float32), **gz)
        f.create_dataset("labels", data=labels.numpy().astype(np.int64), track_times=False)
        f.create_dataset("loss", data=np.float32(loss.item()), track_times=False)
        for k, p in model.named_parameters():
            g = p.grad.detach().numpy().astype(np.float32)
            gnorm += float((g.astype(np.float64) ** 2).sum())
            f.create_dataset(f"grad/{k}", data=g, **gz)
        for k, t in model.state_dict().items():
            if k.endswith("running_mean") or k.endswith("running_var"):
                f.create_dataset(f"bn_after/{k}", data=t.numpy().astype(np.float32), **gz)
        f.create_dataset("near", data=np.int64(near), track_times=False)
        f.attrs["tb_compat"] = np.int64(1 if fx["tb_compat"] else 0)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["seed"] = np.int64(seed)
        f.attrs["input_attempt"] = np.int64(att)
        f.attrs["near_eps"] = np.float64(NEAR_EPS)
        f.attrs["script"] = SCRIPT
        f.attrs["git_commit"] = git_commit()
        f.attrs["config"] = cfg.to_json()
        f.attrs["fixture"] = fx["name"]
        f.attrs["surrogate"] = f"sigmoid alpha={ALPHA}, detach_reset, hard reset, tau 2"
    os.replace(tmp, g_path)
    sizes = (w_path.stat().st_size, g_path.stat().st_size)
    print(f"grad_{fx['name']}: attempt {att}, loss {loss.item():.5f} grad norm {gnorm ** 0.5:.4g} "
          f"near-threshold {near}, files {sizes[0] / 1e3:.0f} kB + {sizes[1] / 1e3:.0f} kB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--only", nargs="*", help="fixture names to (re)make")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    ref.LIF.forward = lif_forward
    args.out.mkdir(parents=True, exist_ok=True)
    for fx in FIXTURES:
        if args.only and fx["name"] not in args.only:
            continue
        make(fx, args.out)


if __name__ == "__main__":
    main()
