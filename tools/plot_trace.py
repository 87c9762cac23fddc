#!/usr/bin/python3
"""Plot a qkf trace (NIR data layout, docs/traces.md) to PNG.

    /usr/bin/python3 tools/plot_trace.py TRACE.h5 -o trace.png [--layer NAME] [--samples N]
                                         [--neurons K]

Three panels: a spike raster of one layer, membrane traces of a few of its neurons with the
threshold line, and the firing rate of every recorded layer. Samples are laid side by side on the
time axis (QKFormer runs only a few steps per sample). Needs Debian's python3-h5py and
python3-matplotlib. Works on a trace that is still being written (SWMR) or was left by a killed
run: rows not written yet read as NaN (membranes) or -1 (spikes) and are skipped.
"""
import argparse
import sys

import h5py
import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def open_trace(path):
    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", swmr=True)  # still being written, or left by a killed run


def nodes(f):
    """(name, group) of every recorded layer in graph order."""
    out = [(name, g) for name, g in f["nodes"].items()]
    return sorted(out, key=lambda x: int(x[1].attrs.get("lif_index", 0)))


def steps_of(obs):
    t0 = float(obs.attrs.get("t_start", 0.0))
    dt = float(obs.attrs.get("dt", 1.0))
    n = int(obs.attrs.get("n_steps", 0))
    return t0, dt, n


def spike_image(obs, n_samples, n_neurons, T):
    """Spikes of the first n_samples and neurons as a 0/1 image [neuron, sample*T + step]."""
    idx = obs["idx"][:n_samples]
    tim = obs["time"][:n_samples]
    img = np.zeros((n_neurons, n_samples * T), dtype=np.uint8)
    for s in range(idx.shape[0]):
        ok = (idx[s] >= 0) & (idx[s] < n_neurons)
        img[idx[s][ok], s * T + tim[s][ok].astype(int)] = 1
    return img


def firing_rates(f):
    names, rates, kind = [], [], []
    for name, g in nodes(f):
        obs = g["observables"]
        if "spikes" not in obs:
            continue
        sp = obs["spikes"]
        idx = sp["idx"]
        samples = idx.shape[0]
        _, _, steps = steps_of(sp)
        steps = steps or int(float(sp.attrs["t_max"]))
        neurons = len(sp["neurons"]) if "neurons" in sp else int(sp.attrs["n_neurons"])
        count = 0
        for s0 in range(0, samples, 64):  # bounded memory on big traces
            count += int((idx[s0:s0 + 64] >= 0).sum())
        denom = samples * steps * neurons
        names.append(name)
        rates.append(count / denom if denom else 0.0)
        kind.append(2 if name.endswith("tssa.attn_lif") else 1 if name.endswith("attn_lif") else 0)
    return names, np.array(rates), kind


def pick_layer(f, want):
    cand = nodes(f)
    if want:
        for name, g in cand:
            if name == want:
                return name, g
        sys.exit(f"plot_trace: no layer {want} in the trace (have: "
                 f"{', '.join(n for n, _ in cand)})")
    # the first layer with both spikes and a membrane, else the first with spikes
    for need in (("spikes", "h"), ("spikes", "v"), ("spikes",), ("h",), ("v",)):
        for name, g in cand:
            if all(k in g["observables"] for k in need):
                return name, g
    sys.exit("plot_trace: the trace records no spikes or membranes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("-o", "--out", default="trace.png")
    ap.add_argument("--layer", help="layer for the raster and membranes (module path)")
    ap.add_argument("--samples", type=int, default=3, help="samples side by side (default 3)")
    ap.add_argument("--neurons", type=int, default=5, help="membrane traces (default 5)")
    ap.add_argument("--raster-neurons", type=int, default=400,
                    help="neurons in the raster (the lowest indices; default 400)")
    a = ap.parse_args()

    f = open_trace(a.trace)
    T = int(f.attrs.get("T", 1))
    layer, g = pick_layer(f, a.layer)
    obs = g["observables"]
    vth = float(g.attrs.get("vth", 1.0))

    fig = plt.figure(figsize=(11, 7.5), dpi=90)
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1.05], hspace=0.5, wspace=0.22)
    title = f"{a.trace.split('/')[-1]}: {f.attrs.get('engine', '?')} engine, T = {T}"
    fig.suptitle(title, fontsize=11)

    def sample_axis(ax, n_samples):
        for s in range(1, n_samples):
            ax.axvline(s * T - 0.5, color="0.75", lw=0.8)
        ax.set_xticks([s * T + t for s in range(n_samples) for t in range(T)])
        ax.set_xticklabels([str(t) for s in range(n_samples) for t in range(T)], fontsize=7)
        ax.set_xlim(-0.5, n_samples * T - 0.5)
        for s in range(n_samples):
            ax.text(s * T + (T - 1) / 2, 1.02, f"sample {s}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="0.35")

    # 1. raster
    ax = fig.add_subplot(gs[0, 0])
    if "spikes" in obs:
        sp = obs["spikes"]
        n_samples = min(a.samples, sp["idx"].shape[0])
        n_show = min(a.raster_neurons, int(sp.attrs["n_neurons"]))
        img = spike_image(sp, n_samples, n_show, T)
        ax.imshow(img, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1,
                  extent=(-0.5, n_samples * T - 0.5, n_show - 0.5, -0.5))
        sample_axis(ax, n_samples)
        ax.set_ylabel("neuron (c*N + token)")
        ax.set_xlabel("time step")
        ax.set_title(f"spikes of {layer}", fontsize=10, pad=14)
    else:
        ax.text(0.5, 0.5, f"{layer}: no spikes recorded", ha="center", transform=ax.transAxes)
        ax.set_axis_off()

    # 2. membrane traces
    ax = fig.add_subplot(gs[0, 1])
    mem = "h" if "h" in obs else "v" if "v" in obs else None
    if mem:
        d = obs[mem]["data"]
        n_samples = min(a.samples, d.shape[0])
        data = d[:n_samples]  # [samples, steps, neurons]
        t0, dt, _ = steps_of(obs[mem])
        neurons = obs[mem]["neurons"][()] if "neurons" in obs[mem] else np.arange(d.shape[2])
        x = np.concatenate([s * T + t0 + dt * np.arange(data.shape[1]) for s in range(n_samples)])
        flat = data.reshape(n_samples * data.shape[1], data.shape[2])  # [sample*step, neuron]
        # neurons that cross the threshold sometimes but not always: the interesting ones
        crosses = np.nanmean(flat >= vth, axis=0)
        order = np.argsort(np.abs(crosses - 0.4) + 0.01 * np.arange(len(crosses)) / len(crosses))
        chosen = order[:a.neurons]
        colors = plt.cm.tab10(np.arange(len(chosen)) % 10)
        for k, j in enumerate(chosen):
            y = flat[:, j]
            for s in range(n_samples):
                sl = slice(s * data.shape[1], (s + 1) * data.shape[1])
                ax.plot(x[sl], y[sl], "-o", ms=3, lw=1.2, color=colors[k],
                        label=f"neuron {neurons[j]}" if s == 0 else None)
                fire = y[sl] >= vth
                ax.plot(x[sl][fire], y[sl][fire], "*", ms=9, color=colors[k])
        ax.axhline(vth, color="crimson", ls="--", lw=1.2, label=f"threshold {vth:g}")
        if mem == "h":
            ax.axhline(0.0, color="0.6", lw=0.6)
        sample_axis(ax, n_samples)
        ax.set_xlabel("time step")
        ax.set_ylabel("h (before the spike)" if mem == "h" else "v (after reset)")
        ax.set_title(f"membrane of {layer} (* = spike)", fontsize=10, pad=14)
        ax.legend(fontsize=7, loc="best", ncol=2, framealpha=0.85)
    else:
        ax.text(0.5, 0.5, f"{layer}: no membrane recorded", ha="center", transform=ax.transAxes)
        ax.set_axis_off()

    # 3. firing rates
    ax = fig.add_subplot(gs[1, :])
    names, rates, kind = firing_rates(f)
    if names:
        palette = ["tab:blue", "tab:green", "tab:orange"]
        ax.bar(np.arange(len(names)), 100 * rates, color=[palette[k] for k in kind])
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("firing rate (%)")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title("firing rate per layer (orange: QK attention masks, tssa.attn_lif; "
                     "green: SSA attention)", fontsize=10)
        ax.grid(axis="y", color="0.9")
        ax.set_axisbelow(True)
    else:
        ax.text(0.5, 0.5, "no spikes recorded", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.savefig(a.out, bbox_inches="tight")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
