#!/usr/bin/env python3
"""Compares qkf's cost model with a SANA-FE run of the same network.

usage: tools/sanafe_compare.py DIR OUT

DIR: written by `qkf map --export-sanafe DIR` (arch.yaml, snn.yaml, qkf.json); OUT: SANA-FE's
output directory of `sim -s -t simple -o OUT DIR/arch.yaml DIR/snn.yaml T` (perf.csv,
run_summary.yaml). Prints per step and in total: the counts qkf's cost model charges (qkf.json
"hw"), the counts SANA-FE should see on the exported network (qkf.json "export") and what SANA-FE
reports (perf.csv), then energy by part and step latency from both, and SANA-FE's simple latency
model recomputed from the export's per-core counts. Standard library only."""
import csv
import json
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    d, out = sys.argv[1], sys.argv[2]
    q = json.load(open(f"{d}/qkf.json"))
    hw, ex = q["hw"], q["export"]
    k = hw["costs"]
    T = hw["steps"]
    rows = list(csv.DictReader(open(f"{out}/perf.csv")))
    if len(rows) != T:
        sys.exit(f"{out}/perf.csv: {len(rows)} steps, qkf.json {T}")

    def hops(c):
        return c["hops_north"] + c["hops_east"] + c["hops_south"] + c["hops_west"]

    print(f"{'step':>4} {'activity':<16} {'qkf cost model':>15} {'export (expect)':>15} "
          f"{'SANA-FE':>12}")
    for t in range(T):
        qc, xc, s = hw["steps_detail"][t], ex["steps"][t], rows[t]
        look_sf = float(s["synapse_energy"]) / k["e_process_spike"] if k["e_process_spike"] else 0
        for name, a, b, c in [
            ("spikes", qc["spikes_out"], xc["spikes_out"], int(s["fired"])),
            ("neuron updates", qc["neuron_updates"], xc["neuron_updates"], int(s["updated"])),
            ("synapse lookups", qc["synapse_lookups"], xc["synapse_lookups"], round(look_sf)),
            ("messages", qc["messages_out"], xc["messages_out"], int(s["packets"])),
            ("hops", hops(qc), hops(xc), int(s["hops"])),
        ]:
            print(f"{t:>4} {name:<16} {a:>15} {b:>15} {c:>12}")
    print()
    print(f"{'step':>4} {'part':<10} {'qkf (pJ)':>12} {'SANA-FE (pJ)':>14}")
    for t in range(T):
        qe, s = hw["steps_detail"][t]["energy_j"], rows[t]
        for part in ["synapse", "dendrite", "soma", "network", "total"]:
            print(f"{t:>4} {part:<10} {qe[part] * 1e12:>12.2f} "
                  f"{float(s[part + '_energy']) * 1e12:>14.2f}")
    print()
    # SANA-FE's simple model on the export's per-core counts: max(generation, processing) + sync
    cols = ex["core_columns"]
    i = {c: n for n, c in enumerate(cols)}
    sync = hw["latency_s"]["sync"]
    print(f"{'step':>4} {'qkf latency (ns)':>17} {'of it network':>14} {'sync':>8} "
          f"{'recomputed SANA-FE rule':>24} {'SANA-FE':>10}")
    for t in range(T):
        gen = proc = 0.0
        for core in ex["cores"]:
            c = core["per_step"][t]
            g = (c[i["neuron_accesses"]] * k["t_access_neuron"] +
                 c[i["neuron_updates"]] * k["t_update_neuron"] +
                 c[i["spikes_out"]] * k["t_spike_out"] + c[i["messages_out"]] * k["t_message_out"])
            p = c[i["messages_in"]] * k["t_message_in"] + c[i["synapse_lookups"]] * k["t_process_spike"]
            gen, proc = max(gen, g), max(proc, p)
        lat = hw["latency_s"]
        print(f"{t:>4} {lat['per_step'][t] * 1e9:>17.1f} {lat['network'][t] * 1e9:>14.1f} "
              f"{sync[t] * 1e9:>8.1f} {(max(gen, proc) + sync[t]) * 1e9:>24.1f} "
              f"{float(rows[t]['sim_time']) * 1e9:>10.1f}")
    # every difference, from qkf's own per-layer counts
    print()
    tot_q = hw["activity"]
    sf = {c: sum(float(r[c]) for r in rows) for c in rows[0] if c != "timestep"}
    layer = {}
    for lay in hw["layers"]:
        for key in ("synapse_lookups", "messages_out"):
            layer[(lay["kind"], key)] = layer.get((lay["kind"], key), 0) + lay[key]
    d_upd = tot_q["neuron_updates"] - round(sf["updated"])
    d_look = tot_q["synapse_lookups"] - round(sf["spikes"])
    d_msg = tot_q["messages_out"] - round(sf["packets"])
    enc, kv = layer.get(("encode", "synapse_lookups"), 0), layer.get(("kv", "synapse_lookups"), 0)
    kv_tab = layer.get(("kv", "messages_out"), 0)
    print("qkf - SANA-FE, totals over the steps:")
    print(f"  neuron updates  {d_upd:>8}  qkf updates every neuron of a conv layer every step (its "
          f"BatchNorm shift is a bias), SANA-FE's input soma only the ones that fire: "
          f"x {k['e_update_neuron'] * 1e12:g} pJ = {d_upd * k['e_update_neuron'] * 1e9:.3f} nJ of soma")
    print(f"  synapse lookups {d_look:>8}  = encoding MACs {enc} + kv table {kv} + head MACs "
          f"{d_look - enc - kv}: x {k['e_process_spike'] * 1e12:g} pJ = "
          f"{d_look * k['e_process_spike'] * 1e9:.3f} nJ of synapse")
    print(f"  messages        {d_msg:>8}  = kv tables sent {kv_tab} + k, v spikes to cores only a kv "
          f"table takes {d_msg - kv_tab}: x {(k['e_message_out'] + k['e_message_in']) * 1e12:g} pJ "
          f"= {d_msg * (k['e_message_out'] + k['e_message_in']) * 1e9:.3f} nJ of network (+ their hops)")
    hop_q = sum(tot_q[h] for h in ("hops_north", "hops_east", "hops_south", "hops_west"))
    print(f"  hops            {hop_q - round(sf['hops']):>8}")
    e_q = {p: sum(st["energy_j"][p] for st in hw["steps_detail"]) for p in
           ("synapse", "soma", "network", "total")}
    for p in ("synapse", "soma", "network", "total"):
        print(f"  energy {p:<8} qkf {e_q[p] * 1e9:10.3f} nJ, SANA-FE {sf[p + '_energy'] * 1e9:10.3f} nJ, "
              f"difference {(e_q[p] - sf[p + '_energy']) * 1e9:8.3f} nJ")
    lq = sum(hw["latency_s"]["per_step"])
    print(f"  latency         qkf {lq * 1e6:.4f} us, SANA-FE {sf['sim_time'] * 1e6:.4f} us "
          f"(qkf adds the longest route's hops each step; the rest: the updates and look-ups above)")


if __name__ == "__main__":
    main()
