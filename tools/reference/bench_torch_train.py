#!/usr/bin/python3
"""Times PyTorch training of our reference QKFormer — surrogate-gradient BPTT (sigmoid alpha 4,
detached reset, as tools/reference/make_grad_fixtures.py), BatchNorm in training mode, AdamW —
the baseline `qkf bench train --torch` runs beside qkf. Prints one line per measurement:

    torch train batch=32 images_per_s=2.31 peak_rss_mb=5600
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
import make_grad_fixtures as mg  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--weights", help="train this qkf checkpoint's model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref.LIF.forward = mg.lif_forward  # the surrogate-gradient LIF
    if args.weights:
        model = ref.load_checkpoint(args.weights)[0]
        cfg = model.cfg
    else:
        cfg = ref.QKFConfig.preset(args.preset)
        model = ref.QKFormer(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.06)
    g = torch.Generator().manual_seed(1)
    B = args.batch
    x = torch.randn(B, cfg.in_channels, cfg.img_size, cfg.img_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (B,), generator=g)
    times = []
    for i in range(1 + args.steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    med = statistics.median(times)
    print(f"torch train batch={B} images_per_s={B / med:.2f} peak_rss_mb={peak:.0f} "
          f"median_ms={1e3 * med:.1f} steps={len(times)}", flush=True)


if __name__ == "__main__":
    main()
