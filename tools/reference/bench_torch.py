#!/usr/bin/python3
"""Times PyTorch CPU inference of the reference QKFormer, the baseline for `qkf bench`.

Model: the cifar10 preset (HST-4-384, T 4, 32x32) unless --preset says otherwise, with default
initialisation and the BatchNorm randomisation of qkformer_ref.randomize_bn, so every LIF layer
fires at a realistic rate (5-45%). Eval mode, torch.no_grad(), BatchNorm not folded, per-sample
LIFs, float32. For each batch size: warm-up runs, then the median of timed runs. Prints one line
per batch size (`torch batch=1 images_per_s=11.3 ...`), or one JSON object with --json.
--save-weights writes the exact model as a qkf checkpoint so the C side can time the same one;
--weights times the model of a qkf checkpoint instead (as `qkf bench --torch --weights` does).

Example:  tools/reference/bench_torch.py --threads 2 --batch 1,32 --json
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
import torch  # noqa: E402
from make_fixtures import make_input  # noqa: E402 (the fixtures' inputs)


CALIB_BATCH = 8


def build(preset, seed, log=None):
    cfg = ref.QKFConfig.preset(preset)
    torch.manual_seed(seed)
    model = ref.QKFormer(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    calib = make_input(cfg, CALIB_BATCH, gen)
    ref.randomize_bn(model, calib, gen, log=log)
    return cfg, model


def time_batch(model, x, warmup, runs):
    """Median and min wall time of model(x) in seconds."""
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def batch_list(text):
    """'1,32' or '1' -> [1, 32] / [1]."""
    try:
        out = [int(b) for b in text.split(",") if b]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of batch sizes like 1,32")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cifar10", choices=sorted(ref.PRESETS))
    ap.add_argument("--weights", type=Path, metavar="PATH",
                    help="time the model of this qkf checkpoint instead of a random one")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--batch", type=batch_list, nargs="+", default=[[1, 32]],
                    help="batch sizes, comma- or space-separated (default 1,32)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=0,
                    help="timed runs per batch size (default: 10 at batch 1, 5 above)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--save-weights", type=Path, metavar="PATH",
                    help="also write the benchmarked model as a qkf checkpoint")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    a.batch = [b for group in a.batch for b in group]
    if a.weights and a.save_weights:
        ap.error("--weights and --save-weights exclude each other")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if a.weights:
        model, _ = ref.load_checkpoint(str(a.weights))
        cfg = model.cfg
    else:
        cfg, model = build(a.preset, a.seed)
    t_build = time.perf_counter() - t0
    if a.save_weights:
        ref.save_checkpoint(str(a.save_weights), model.state_dict(), cfg,
                            extra_attrs={"bench_seed": a.seed})

    gen = torch.Generator().manual_seed(a.seed + 1)
    results = []
    for B in a.batch:
        x = make_input(cfg, B, gen)
        if B == a.batch[0]:  # firing rates of the timed model, for the record
            with torch.no_grad():
                _, traces = model.run_traced(x)
            rates = [tr["s"].mean().item() for tr in traces.values()]
        runs = a.runs or (10 if B == 1 else 5)
        med, best = time_batch(model, x, a.warmup, runs)
        results.append(dict(batch=B, runs=runs, median_s=med, min_s=best,
                            images_per_s=B / med))
        if not a.json:
            print(f"torch batch={B} images_per_s={B / med:.2f} median_ms={med * 1e3:.1f} "
                  f"min_ms={best * 1e3:.1f} runs={runs}", flush=True)

    info = dict(engine="torch", preset=None if a.weights else a.preset,
                config=ref.dataclasses.asdict(cfg),
                threads=a.threads, torch_version=str(torch.__version__),
                mkldnn=bool(torch.backends.mkldnn.enabled), python=platform.python_version(),
                params=ref.num_params(model), seed=a.seed, build_s=round(t_build, 2),
                firing_rate_min=min(rates), firing_rate_max=max(rates),
                firing_rate_mean=sum(rates) / len(rates), results=results)
    if a.save_weights or a.weights:
        info["weights"] = str(a.save_weights or a.weights)
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"# {a.weights or a.preset}: {info['params']:,d} params, T {cfg.T}, "
              f"{a.threads} threads, firing rates {min(rates):.3f}..{max(rates):.3f} (mean "
              f"{info['firing_rate_mean']:.3f}), torch {info['torch_version']}")


if __name__ == "__main__":
    main()
