#!/usr/bin/python3
"""Draw a qkf chip report (qkf sim --hw PROFILE --report R.json, docs/report.md) to PNG.

    /usr/bin/python3 tools/plot_hw.py R.json -o hw.png [--by energy|busy]

Four panels: the mesh with each core coloured by its energy per inference (or its busy time),
the latency of each time step (compute, network, sync; with --latency detailed, the detailed
model's per step as a black mark), the energy of each step split into
synapse, dendrite, soma and network, and the energy of each layer split the same way. Needs
Debian's python3-matplotlib.
"""
import argparse
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

PARTS = ["synapse", "dendrite", "soma", "network"]
COLOURS = ["#4c72b0", "#8172b2", "#55a868", "#dd8452"]


def load(path):
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot_hw: {path}: {e}")
    if "hw" not in r:
        sys.exit(f"plot_hw: {path}: no \"hw\" key (run qkf sim --hw PROFILE --report {path})")
    return r["hw"]


def mesh(ax, hw, by):
    """Tiles as squares, each split into its core slots; a core's colour is the sum over its
    blocks (energy) or its busy time (the same for every block of the core)."""
    cpt = max(1, hw["cores_per_tile"])
    side = math.ceil(math.sqrt(cpt))
    value = {}
    where = {}
    for c in hw["cores"]:
        k = c["core"]
        where[k] = tuple(c["tile"])
        if by == "energy":
            value[k] = value.get(k, 0.0) + c["energy_j"]
        else:
            value[k] = c["core_busy_s"]
    scale, unit = (1e9, "nJ") if by == "energy" else (1e6, "us")
    vmax = max(value.values()) * scale if value else 1.0
    cmap = plt.get_cmap("viridis")
    W = hw["mesh"][0] * hw["chips"]
    H = hw["mesh"][1]
    for k, (x, y) in where.items():
        slot = k % cpt
        sx, sy = slot % side, slot // side
        v = value[k] * scale
        ax.add_patch(Rectangle((x + sx / side, y + sy / side), 1 / side, 1 / side,
                               facecolor=cmap(v / vmax if vmax > 0 else 0), edgecolor="white",
                               linewidth=0.3))
    for x in range(W + 1):
        ax.axvline(x, color="grey", linewidth=0.5)
    for y in range(H + 1):
        ax.axhline(y, color="grey", linewidth=0.5)
    for c in range(1, hw["chips"]):
        ax.axvline(c * hw["mesh"][0], color="black", linewidth=1.5)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)  # y grows southwards (row 0 at the top)
    ax.set_aspect("equal")
    ax.set_xlabel("tile x (chips side by side)")
    ax.set_ylabel("tile y")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, vmax))
    plt.colorbar(sm, ax=ax, fraction=0.046, pad=0.04,
                 label=f"{'energy per inference' if by == 'energy' else 'busy time'} ({unit})")
    ax.set_title(f"{hw['profile']}: {hw['n_cores']} cores on {hw['tiles']} tiles, "
                 f"{hw['chips']} chip{'s' if hw['chips'] != 1 else ''}")


def latency(ax, hw):
    lat = hw["latency_s"]
    steps = range(len(lat["per_step"]))
    net = [v * 1e6 for v in lat["network"]]
    sync = [v * 1e6 for v in lat["sync"]]
    comp = [p * 1e6 - n - s for p, n, s in zip(lat["per_step"], net, sync)]
    ax.bar(steps, comp, label="slowest core", color="#4c72b0")
    ax.bar(steps, net, bottom=comp, label="network", color="#dd8452")
    ax.bar(steps, sync, bottom=[a + b for a, b in zip(comp, net)], label="sync", color="#937860")
    title = f"latency: {lat['total'] * 1e6:.2f} us per inference"
    det = hw.get("latency_detailed_s")  # qkf sim --latency detailed: SANA-FE's contention model
    if det:
        ax.plot(list(steps), [v * 1e6 for v in det["per_step"]], "k_", markersize=18,
                markeredgewidth=2, label="detailed model")
        title += f" (detailed {det['total'] * 1e6:.2f})"
    ax.set_xlabel("time step")
    ax.set_ylabel("latency (us)")
    ax.set_title(title)
    ax.set_xticks(list(steps))
    ax.legend(fontsize=8)


def split(ax, rows, labels, title, horizontal=False):
    bottom = [0.0] * len(rows)
    for part, colour in zip(PARTS, COLOURS):
        vals = [r["energy_j"][part] * 1e9 for r in rows]
        if horizontal:
            ax.barh(labels, vals, left=bottom, label=part, color=colour)
        else:
            ax.bar(labels, vals, bottom=bottom, label=part, color=colour)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_title(title)
    if horizontal:
        ax.set_xlabel("energy per inference (nJ)")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=6)
    else:
        ax.set_ylabel("energy per inference (nJ)")
    ax.legend(fontsize=8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("-o", "--output", default="hw.png")
    ap.add_argument("--by", choices=["energy", "busy"], default="energy",
                    help="colour the cores by energy per inference or busy time")
    a = ap.parse_args()
    hw = load(a.report)
    fig = plt.figure(figsize=(14, 10))
    gs = fig.add_gridspec(2, 2, width_ratios=[1.3, 1])
    mesh(fig.add_subplot(gs[0, 0]), hw, a.by)
    latency(fig.add_subplot(gs[0, 1]), hw)
    steps = hw["steps_detail"]
    e = hw["energy_j"]
    split(fig.add_subplot(gs[1, 1]), steps, [f"t={s['t']}" for s in steps],
          f"energy per step: {e['total'] * 1e6:.3f} uJ per inference")
    split(fig.add_subplot(gs[1, 0]), hw["layers"], [r["name"] for r in hw["layers"]],
          "energy per layer", horizontal=True)
    fig.tight_layout()
    try:
        fig.savefig(a.output, dpi=110)
    except OSError as err:
        sys.exit(f"plot_hw: {a.output}: {err}")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
