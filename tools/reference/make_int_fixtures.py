#!/usr/bin/python3
"""Writes the integer-form fixtures tests/fixtures/MODEL_int_PROFILE.h5 from our PyTorch
integer reference (qkformer_int.py): the float fixture model MODEL.weights.h5 quantised for a
profile's arithmetic, run on a fresh input.

Each file holds
  arith              int64 [21]   the arithmetic, in qkformer_int.ARITH_FIELDS order (attribute
                                  arith_fields names them)
  input              float32      [B,C,H,W] images uniform in [-1.2, 1.2] (some clamp), or
                                  [B,T,C,H,W] Poisson(0.5) event counts
  norm_mean, norm_std float32 [C] only in fixtures made with a dataset normalisation (the
                                  model's input_mean / input_std: the input scale on the pixel
                                  grid and the encoding's rounding offset in the bias)
  q/<key>            int64        every integer of the quantised model under its quantised-
                                  checkpoint name (mantissas, exponents, biases, thresholds);
                                  q/in_max; float64 q/<lif>.delta, q/head.scale, q/in_scale
  logits_int         int64 [B,K]  the exact integer logits
  logits             float32      logits_int * head scale
  spikes/<lif>       uint8 [T,B,n] every LIF layer (n = per-sample neuron index c*N + token)
plus provenance attributes. Deterministic. Usage: make_int_fixtures.py [--out DIR] [--only N]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402
import qkformer_int as qi  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "tools/reference/make_int_fixtures.py"

# (model, profile, seed, batch[, options]); options: norm = a PRESET_NORM entry the model is
# given (as a checkpoint's input_mean / input_std); tb = run with tb_compat (the official SSA
# proj_lif over the T*B axis; attribute tb_compat = 1); bits_min = the quantiser's --bits-min
# spec (attribute bits_min; the file is MODEL_int_PROFILE_bitsM.h5)
FIXTURES = [
    ("cifar_small", "loihi", 2001, 2),
    ("cifar_small", "speck", 2002, 2, dict(norm="cifar")),
    ("cifar_small", "gtsat", 2003, 2),
    ("cifar_qkca", "loihi", 2004, 2),
    ("imagenet_small", "loihi", 2005, 2),
    ("imagenet_small", "wide16", 2006, 2, dict(norm="imagenet")),
    ("dvs128_small", "loihi", 2007, 2),
    ("dvs128_small", "speck", 2008, 2),
    ("cifar10dvs_small", "loihi", 2009, 2),
    ("cifar10dvs_small", "gtsat", 2010, 2),
    ("dvs128_small", "wrap", 2011, 2),
    ("cifar_tb", "loihi", 2012, 2, dict(tb=True)),
    ("cifar_small", "speck", 2013, 2, dict(norm="cifar", bits_min="7")),
]


def fixture_name(model_name, prof, opts):
    bm = (opts or {}).get("bits_min")
    return f"{model_name}_int_{prof}" + (f"_bits{bm}" if bm else "")


def git_commit():
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def make_input(cfg, B, gen):
    if cfg.is_frames:
        lam = torch.full((B, cfg.T, cfg.in_channels, cfg.img_size, cfg.img_size), 0.5)
        return torch.poisson(lam, generator=gen)
    return torch.rand(B, cfg.in_channels, cfg.img_size, cfg.img_size, generator=gen) * 2.4 - 1.2


def make(model_name, prof, seed, B, out, opts=None):
    opts = opts or {}
    model, attrs = ref.load_checkpoint(str(out / f"{model_name}.weights.h5"),
                                       tb_compat=bool(opts.get("tb")))
    norm = None
    if "input_mean" in attrs:
        norm = (list(attrs["input_mean"]), list(attrs["input_std"]))
    if "norm" in opts:  # float32 values, as a checkpoint stores them
        norm = tuple([float(np.float32(v)) for v in vals] for vals in ref.PRESET_NORM[opts["norm"]])
    a = qi.arith_of(prof)
    q = qi.quantize(model, a, norm, bits_min=opts.get("bits_min"))
    x = make_input(model.cfg, B, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        li, logits, traces = qi.forward_int(model, q, a, x)
    path = out / f"{fixture_name(model_name, prof, opts)}.h5"
    tmp = f"{path}.tmp.{os.getpid()}"
    gz = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
    rates = {}
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("arith", data=np.array([a[k] for k in qi.ARITH_FIELDS], np.int64),
                             track_times=False)
            f.create_dataset("input", data=x.numpy().astype(np.float32), **gz)
            if "norm" in opts:
                f.create_dataset("norm_mean", data=np.array(norm[0], np.float32), track_times=False)
                f.create_dataset("norm_std", data=np.array(norm[1], np.float32), track_times=False)
            for k, v in q.items():
                if isinstance(v, torch.Tensor):
                    dt = np.float64 if v.dtype == torch.float64 else np.int64
                    kw = gz if v.numel() > 16 else dict(track_times=False)
                    f.create_dataset(f"q/{k}", data=v.numpy().astype(dt), **kw)
                elif isinstance(v, float):
                    f.create_dataset(f"q/{k}", data=np.float64(v), track_times=False)
                else:
                    f.create_dataset(f"q/{k}", data=np.int64(v), track_times=False)
            f.create_dataset("logits_int", data=li.numpy().astype(np.int64), track_times=False)
            f.create_dataset("logits", data=logits.numpy().astype(np.float32), track_times=False)
            for n, s in traces.items():
                f.create_dataset(f"spikes/{n}", data=s.numpy(), **gz)
                rates[n] = float(s.double().mean())
            f.attrs["arith_fields"] = json.dumps(qi.ARITH_FIELDS)
            f.attrs["profile"] = prof
            f.attrs["weights"] = f"{model_name}.weights.h5"
            f.attrs["seed"] = np.int64(seed)
            f.attrs["batch"] = np.int64(B)
            f.attrs["tb_compat"] = np.int64(1 if opts.get("tb") else 0)
            if opts.get("bits_min"):
                f.attrs["bits_min"] = opts["bits_min"]
            f.attrs["script"] = SCRIPT
            f.attrs["git_commit"] = git_commit()
            f.attrs["torch_version"] = str(torch.__version__)
            f.attrs["lif_names"] = json.dumps(list(traces.keys()))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    lo, hi = min(rates.values()), max(rates.values())
    silent = [n for n, r in rates.items() if r == 0.0]
    print(f"{path.name}: {len(rates)} LIF layers, rates {lo:.3f} .. {hi:.3f}, silent "
          f"{len(silent)}, logits_int {li.abs().max().item()}, {path.stat().st_size / 1e3:.0f} kB")
    return path.stat().st_size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(1)
    total = 0
    for m, p, s, b, *opts in FIXTURES:
        if a.only and fixture_name(m, p, opts[0] if opts else None) not in a.only:
            continue
        total += make(m, p, s, b, a.out, opts[0] if opts else None)
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
