#!/usr/bin/python3
"""Writes the golden HDF5 fixtures in tests/fixtures/ from our PyTorch reference.

For each fixture NAME:
  NAME.weights.h5  a qkf checkpoint (float32 dataset per official state_dict key, config as
                   root attributes; see qkformer_ref.save_checkpoint);
  NAME.ref.h5      input, logits, and for every LIF layer (by module path) spikes/, v/, h/
                   ([T, B, n], n = per-sample flattened neuron index) and near/ (count of
                   |h - vth| < 1e-5), plus provenance attributes.

Weights are PyTorch's default initialisation with the BatchNorms randomised so that every LIF
layer fires at a realistic rate (qkformer_ref.randomize_bn), a head drawn so that the logits
are O(0.1-1), and single BN biases nudged so that no float-rounded membrane lies within 5e-5 of
its threshold (clear_thresholds): an engine that sums in another order then reproduces every
spike exactly. Everything is seeded; the script is deterministic (one thread, deterministic
algorithms). Usage:  tools/reference/make_fixtures.py [--out tests/fixtures] [--only NAME ...]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
from qkformer_ref import QKFConfig  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


REPO = Path(__file__).resolve().parents[2]
SCRIPT = "tools/reference/make_fixtures.py"
NEAR_EPS = 1e-5     # |h - vth| below this counts as near-threshold (possible flip)
CLEAR_EPS = 5e-5    # no float-rounded h is left this close to vth (see clear_thresholds)
CALIB_BATCH = 8     # samples used to calibrate the BatchNorms (not the fixture's own input)
MAX_RATE = 0.60     # sanity bound on any layer's firing rate

FIXTURES = [
    dict(name="cifar_small", seed=1001, B=2, tb_compat=False,
         cfg=QKFConfig("cifar", img_size=16, in_channels=3, num_classes=10, embed_dims=96,
                       num_heads=8, mlp_ratio=4.0, depths=4, T=4)),
    dict(name="cifar_qkca", seed=1002, B=2, tb_compat=False, derived=True,
         cfg=QKFConfig("cifar", img_size=16, in_channels=3, num_classes=10, embed_dims=96,
                       num_heads=8, mlp_ratio=4.0, depths=4, T=4, qk_attn="channel")),
    # Same model (and weights file, byte for byte) as cifar_small; own input, B 3, T*B quirk.
    dict(name="cifar_tb", seed=1003, model_seed=1001, B=3, tb_compat=True, derived=True,
         cfg=QKFConfig("cifar", img_size=16, in_channels=3, num_classes=10, embed_dims=96,
                       num_heads=8, mlp_ratio=4.0, depths=4, T=4)),
    dict(name="imagenet_small", seed=1004, B=2, tb_compat=False,
         cfg=QKFConfig("imagenet", img_size=32, in_channels=3, num_classes=10, embed_dims=96,
                       num_heads=6, mlp_ratio=4.0, depths=5, T=2)),
    dict(name="dvs128_small", seed=1005, B=2, tb_compat=False,
         cfg=QKFConfig("dvs128", img_size=32, in_channels=2, num_classes=11, embed_dims=64,
                       num_heads=16, mlp_ratio=4.0, depths=4, T=4)),
    dict(name="cifar10dvs_small", seed=1006, B=2, tb_compat=False,
         cfg=QKFConfig("cifar10dvs", img_size=32, in_channels=2, num_classes=10, embed_dims=64,
                       num_heads=16, mlp_ratio=1.0, depths=4, T=3)),
]


def git_commit():
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def make_input(cfg, B, gen):
    """Images: standard normal (like normalised pixels). Frames: Poisson(0.5) event counts."""
    if cfg.is_frames:
        lam = torch.full((B, cfg.T, cfg.in_channels, cfg.img_size, cfg.img_size), 0.5)
        return torch.poisson(lam, generator=gen)
    return torch.randn(B, cfg.in_channels, cfg.img_size, cfg.img_size, generator=gen)


def seeds(fx):
    """(model seed, input seed). The model seed drives the default initialisation, the
    calibration batch, the BatchNorm randomisation and the head; the input has its own stream."""
    ms = fx.get("model_seed", fx["seed"])
    return ms, fx["seed"] + 500


def fixture_input(fx):
    return make_input(fx["cfg"], fx["B"], torch.Generator().manual_seed(seeds(fx)[1]))


@torch.no_grad()
def clear_thresholds(model, runs, gen, eps=CLEAR_EPS, max_iter=500):
    """Nudges BatchNorm biases until no LIF layer with a float-rounded input has an h value
    within eps of its threshold on any of `runs` ([(input, tb_compat), ...]).

    A C engine sums in another order (and may fold BN into the conv), so its float32 currents
    differ from torch's by ~1e-6; an h that close to vth could flip. Layer by layer in forward
    order, each channel holding such a value gets its BN bias moved by +-(4..8)*eps, which moves
    all of that channel's h by at least half that (LIF leak), and the pass repeats until clear.
    Attention LIFs are skipped: their inputs are exact (integer counts / multiples of 0.125).
    Returns the number of channels nudged."""
    mods = dict(model.named_modules())
    nudged = 0
    for _ in range(max_iter):
        worst = None
        for x, tb in runs:
            model.set_tb_compat(tb)
            _, traces = model.run_traced(x)
            for order, (name, tr) in enumerate(traces.items()):
                if name.endswith(".attn_lif"):
                    continue
                close = (tr["h"] - tr["vth"]).abs() < eps
                if close.any():
                    if worst is None or order < worst[0]:
                        worst = (order, name, close)
                    break
        if worst is None:
            return nudged
        _, name, close = worst
        bn = mods[name[: -len("_lif")] + "_bn"]
        n = close.shape[2]
        per = n // bn.num_features  # neurons per channel (spatial positions / tokens)
        chans = torch.unique(torch.nonzero(close.reshape(-1, n))[:, 1] // per)
        for c in chans.tolist():
            sign = 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0
            bn.bias[c] += sign * eps * (4.0 + 4.0 * torch.rand(1, generator=gen).item())
            nudged += 1
    raise RuntimeError(f"could not clear the thresholds in {max_iter} passes")


def build(fx, log=None):
    """The fixture's model (calibrated, thresholds cleared, eval mode) and input."""
    cfg = fx["cfg"]
    model_seed, _ = seeds(fx)
    torch.manual_seed(model_seed)  # default initialisation of convs, BN affine
    model = ref.QKFormer(cfg).eval()
    gen = torch.Generator().manual_seed(model_seed)
    calib = make_input(cfg, CALIB_BATCH, gen)
    ref.randomize_bn(model, calib, gen, log=log)  # calibrated with per-sample LIFs
    # A head with O(1/sqrt(C)) weights and a nonzero bias, so logits are O(0.1-1) and every
    # parameter matters (the official trunc-normal(0.02) head gives logits ~1e-2).
    C = model.head.in_features
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=gen) / C ** 0.5)
        model.head.bias.copy_(0.2 * torch.rand(model.head.bias.shape, generator=gen) - 0.1)
    # Clear the thresholds for the inputs of every fixture that shares this model, so that
    # fixtures with one model_seed keep byte-identical weights.
    runs = [(fixture_input(o), o["tb_compat"]) for o in FIXTURES
            if seeds(o)[0] == model_seed and o["cfg"] == cfg]
    n = clear_thresholds(model, runs, gen)
    if log:
        log(f"  thresholds cleared: {n} channel biases nudged")
    model.set_tb_compat(fx["tb_compat"])
    return model, fixture_input(fx)


def gz(arr):
    return dict(data=arr, compression="gzip", compression_opts=9, shuffle=True,
                track_times=False)


def write_ref(path, fx, x, logits, traces, with_state=True):
    """Writes NAME.ref.h5 (temporary file, then rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        _write_ref(tmp, fx, x, logits, traces, with_state)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_ref(tmp, fx, x, logits, traces, with_state):
    cfg = fx["cfg"]
    with h5py.File(tmp, "w") as f:
        f.create_dataset("input", **gz(x.numpy().astype(np.float32)))
        f.create_dataset("logits", data=logits.numpy().astype(np.float32), track_times=False)
        for name, tr in traces.items():
            s = tr["s"].numpy().astype(np.uint8)
            v = tr["v"].numpy().astype(np.float32)
            h = tr["h"].numpy().astype(np.float32)
            near = int((np.abs(h - np.float32(tr["vth"])) < NEAR_EPS).sum())
            ds = f.create_dataset(f"spikes/{name}", **gz(s))
            ds.attrs["vth"] = np.float64(tr["vth"])
            ds.attrs["rate"] = np.float64(s.mean())
            # Attention LIFs get integer counts (QKTA/QKCA) or multiples of 0.125 (SSA): their
            # h is exact in any summation order, so h == vth there is a tie, not a flip risk.
            ds.attrs["exact_input"] = np.int64(name.endswith(".attn_lif"))
            if with_state:
                f.create_dataset(f"v/{name}", **gz(v))
                f.create_dataset(f"h/{name}", **gz(h))
            f.create_dataset(f"near/{name}", data=np.int64(near), track_times=False)
        f.attrs["tb_compat"] = np.int64(1 if fx["tb_compat"] else 0)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["seed"] = np.int64(fx["seed"])
        model_seed, input_seed = seeds(fx)
        f.attrs["model_seed"] = np.int64(model_seed)
        f.attrs["input_seed"] = np.int64(input_seed)
        f.attrs["script"] = SCRIPT
        f.attrs["git_commit"] = git_commit()
        f.attrs["config"] = cfg.to_json()
        f.attrs["fixture"] = fx["name"]
        f.attrs["batch"] = np.int64(fx["B"])
        f.attrs["near_eps"] = np.float64(NEAR_EPS)
        f.attrs["lif_names"] = json.dumps(list(traces.keys()))  # forward (call) order
        f.attrs["has_state"] = np.int64(with_state)  # v/ and h/ groups present


def make(fx, out_dir, verbose=False, lean=False):
    cfg = fx["cfg"]
    model, x = build(fx, log=print if verbose else None)
    with torch.no_grad():
        logits, traces = model.run_traced(x)
    rates = {n: tr["s"].mean().item() for n, tr in traces.items()}
    bad = [n for n, r in rates.items() if r == 0.0 or r > MAX_RATE]
    if bad:
        raise SystemExit(f"{fx['name']}: firing rate 0 or > {MAX_RATE} in {bad}")
    w_path = out_dir / f"{fx['name']}.weights.h5"
    r_path = out_dir / f"{fx['name']}.ref.h5"
    ref.save_checkpoint(str(w_path), model.state_dict(), cfg)
    write_ref(str(r_path), fx, x, logits, traces, with_state=not (lean and fx.get("derived")))

    # Round trip: the checkpoint we wrote reproduces the logits bit for bit.
    model2, _ = ref.load_checkpoint(str(w_path), tb_compat=fx["tb_compat"])
    with torch.no_grad():
        assert torch.equal(model2(x), logits), "checkpoint round trip changed the logits"

    print(f"\n== {fx['name']}: {cfg.variant} img {cfg.img_size} embed {cfg.embed_dims} "
          f"heads {cfg.num_heads} T {cfg.T} B {fx['B']} qk_attn {cfg.qk_attn} "
          f"tb_compat {int(fx['tb_compat'])} seed {fx['seed']}")
    print(f"   {'LIF layer':40s} {'vth':>4s} {'n/sample':>9s} {'rate':>7s} {'near':>5s}")
    for n, tr in traces.items():
        h = tr["h"].numpy()
        near = int((np.abs(h - np.float32(tr["vth"])) < NEAR_EPS).sum())
        print(f"   {n:40s} {tr['vth']:4.1f} {tr['s'].shape[2]:9d} {rates[n]:7.3f} {near:5d}")
    lo, hi = min(rates.values()), max(rates.values())
    sizes = (w_path.stat().st_size, r_path.stat().st_size)
    print(f"   rates {lo:.3f} .. {hi:.3f} over {len(rates)} LIF layers; logits "
          f"{logits.abs().max().item():.3f} max abs; files {sizes[0] / 1e3:.0f} kB + "
          f"{sizes[1] / 1e3:.0f} kB")
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--only", nargs="*", help="fixture names to (re)make")
    ap.add_argument("-v", "--verbose", action="store_true", help="print calibration targets")
    ap.add_argument("--lean", action="store_true",
                    help="omit the v/ and h/ groups from the derived fixtures (cifar_qkca, "
                         "cifar_tb), which are otherwise the bulk of the bytes")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    a.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for fx in FIXTURES:
        if a.only and fx["name"] not in a.only:
            continue
        total += sum(make(fx, a.out, a.verbose, a.lean))
    print(f"\ntotal {total / 1e6:.2f} MB in {a.out}")


if __name__ == "__main__":
    main()
