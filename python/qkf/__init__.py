"""qkf: QKFormer, the hierarchical spiking transformer, simulated and trained in C.

A thin Python layer over qkf's public C API (include/qkf/qkf.h) through the CPython extension
``qkf._qkf``: numpy arrays in (read in place when they are C-contiguous float32), numpy arrays and
dicts out; the GIL is released while qkf computes. docs/python.md documents it.

    import qkf
    m = qkf.load("models/default/fmnist.h5")
    r = m.run(x, mode="event")          # x: float32 [B,C,H,W] (or [B,T,C,H,W] frames)
    r.logits, r.spike_counts, r.firing_rates, r.stats
    r = m.run(x, mode="event", hw="loihi")   # on a chip's integer arithmetic (qkf infer --hw)
    q = qkf.quantize(m, hw="loihi")          # an integer model, as qkf quantize makes it
"""

import os

from . import _qkf

# numpy is imported by the calls that make arrays, so `import qkf` works without it.

__all__ = ["Error", "Model", "Result", "load", "quantize", "hw_profiles", "hw_profile", "train",
           "set_threads", "__version__"]

__version__ = _qkf.version
Error = _qkf.Error


def set_threads(n):
    """OpenMP and BLAS threads of every later call (default: all cores). Results do not depend
    on it."""
    _qkf.set_threads(int(n))


class Result:
    """The outputs of one Model.run.

    logits        float32 [B, num_classes]
    spike_counts  {layer: spikes over T, samples and neurons}
    firing_rates  {layer: spike_count / (T * samples * neurons)}
    stats         work statistics (the event engine's counters, or the dense engine's with
                  run(..., stats=True)): accumulates, macs, in_events, out_spikes, energy_j,
                  nodes (per-node detail) and layers (the nodes that emit a LIF layer's spikes,
                  by layer name); None when not collected
    seconds       time of the forward passes
    logits_int    runs on a chip profile: the exact integer logits, int64 [B, num_classes]
                  (logits are these times the head's scale); None for float runs
    """

    __slots__ = ("logits", "spike_counts", "firing_rates", "stats", "seconds", "logits_int")

    def __init__(self, logits, spike_counts, firing_rates, stats, seconds, logits_int=None):
        self.logits = logits
        self.spike_counts = spike_counts
        self.firing_rates = firing_rates
        self.stats = stats
        self.seconds = seconds
        self.logits_int = logits_int

    def __repr__(self):
        return (f"<qkf.Result {self.logits.shape[0]} samples, "
                f"{sum(self.spike_counts.values())} spikes, {self.seconds:.3f} s>")


class Model:
    """A loaded checkpoint (qkf.load)."""

    def __init__(self, path, _net=None):
        self._net = _net if _net is not None else _qkf.Net(os.fspath(path))
        self.path = None if path is None else os.fspath(path)
        self._layers = self._net.layers()

    @property
    def quantized(self):
        """True for an integer model (a quantised checkpoint, or qkf.quantize's result): it runs
        on its chip profile's integer arithmetic only."""
        return self._net.is_quantized()

    @property
    def hw(self):
        """The chip profile an integer model was quantised for ("loihi"), or None."""
        return self._net.profile_name()

    @property
    def config(self):
        """dict: variant, img_size, in_channels, num_classes, embed_dims, num_heads,
        mlp_ratio, depths, T, qk_attn."""
        return self._net.config()

    @property
    def num_parameters(self):
        """Trainable parameters, as `qkf info` prints them."""
        return self._net.num_parameters()

    @property
    def layers(self):
        """LIF layer names (official module paths), in graph order."""
        return [name for name, _ in self._layers]

    @property
    def layer_neurons(self):
        """{layer: neurons per sample}."""
        return dict(self._layers)

    def run(self, x, mode="dense", trace=None, record=None, batch=32, tb_compat=False,
            conv=None, stats=False, e_ac=0.9, e_mac=4.6, force=False, raw=False,
            trace_buffer_mb=64, hw=None):
        """Runs the samples of x and returns a Result.

        x      float32 [B,C,H,W] images, or [B,T,C,H,W] event frames for dvs models (other
               dtypes and layouts are converted; a C-contiguous float32 array is read in place)
        mode   "dense" (every neuron, GEMMs) or "event" (event-driven scheduler)
        trace  path of a trace file to record (docs/traces.md), with record: a list of specs
               such as ["stage1.*:v"] (default: spikes of every layer); force overwrites
        batch  samples per forward pass; tb_compat: the official SSA proj_lif quirk
        conv   dense 3x3 convolutions: "winograd4" (default), "winograd2", "direct"
        stats  dense mode: also tally work statistics (slower; the event engine always does)
        e_ac, e_mac  energy per accumulate / multiply-accumulate in pJ, for stats["energy_j"]
        hw     a chip profile (a bundled name such as "loihi", or a profile .yaml file): run on
               its integer arithmetic as qkf infer --hw does, mode "dense" in the dense integer
               engine, "event" in the integer event engine (the model is quantised for it on the
               first run with the defaults; qkf.quantize for calibration). An integer model
               always runs so (hw: none, or one of its arithmetic).
        """
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float32)
        if isinstance(record, str):
            record = [record]
        B, K, logits, counts, rates, st, seconds, li = self._net.run(
            x, x.shape, mode=mode, batch=int(batch), tb_compat=bool(tb_compat), conv=conv,
            stats=bool(stats), e_ac=float(e_ac), e_mac=float(e_mac),
            trace=None if trace is None else os.fspath(trace),
            record=None if record is None else list(record), force=bool(force), raw=bool(raw),
            trace_buffer_mb=int(trace_buffer_mb), hw=None if hw is None else os.fspath(hw))
        names = self.layers
        if st is not None:
            st["layers"] = {names[n["layer"]]: n for n in st["nodes"] if n["layer"] >= 0}
        return Result(np.frombuffer(logits, dtype=np.float32).reshape(B, K).copy(),
                      dict(zip(names, counts)), dict(zip(names, rates)), st, seconds,
                      None if li is None else
                      np.frombuffer(li, dtype=np.int64).reshape(B, K).copy())

    def evaluate(self, data, mode="dense", limit=0, batch=100, tb_compat=False, conv=None,
                 hw=None):
        """Accuracy on the test split of dataset `data` (names as qkf eval --data:
        fashion-mnist, mnist, cifar10:DIR, h5:FILE.h5, ...): (accuracy, samples). With hw (a
        profile's name or file), or for an integer model: as qkf eval --hw, the dense integer
        engine."""
        return self._net.evaluate(str(data), mode=mode, limit=int(limit), batch=int(batch),
                                  tb_compat=bool(tb_compat), conv=conv,
                                  hw=None if hw is None else os.fspath(hw))

    def save(self, path):
        """Writes the checkpoint (atomically); an integer model as qkf quantize writes it."""
        self._net.save(os.fspath(path))

    def __repr__(self):
        c = self.config
        hw = f", integer ({self.hw})" if self.quantized else ""
        return (f"<qkf.Model {self.path!r}: {c['variant']}, img {c['img_size']}, "
                f"embed {c['embed_dims']}, T {c['T']}, {self.num_parameters} parameters{hw}>")


def load(path):
    """Loads a qkf checkpoint (qkf init / qkf train / tools/reference/convert_pth.py), or a
    quantised checkpoint (qkf quantize / Model.save of qkf.quantize's result): an integer
    model."""
    return Model(path)


def quantize(model, hw, calib=0, data="fashion-mnist", headroom=None, clip_bias=False):
    """Quantises a float model for a chip profile as `qkf quantize` does, and returns the integer
    model (Model.save writes the same file as qkf quantize --out).

    hw        a bundled profile's name ("loihi") or a profile .yaml file
    calib     calibrate the scales on the first `calib` training samples of dataset `data`
              (0: the profile's headroom)
    headroom  without calibration, registers hold +-headroom thresholds (default 16)
    clip_bias a bias beyond its register saturates instead of widening its layer's unit
    """
    if not isinstance(model, Model):
        model = load(model)
    net = model._net.quantize(os.fspath(hw), calib=int(calib), data=str(data),
                              headroom=0.0 if headroom is None else float(headroom),
                              clip_bias=bool(clip_bias))
    return Model(None, _net=net)


def hw_profiles():
    """Names of the chip profiles bundled with qkf (as `qkf hw list`), e.g. ["loihi", ...]."""
    return _qkf.hw_profiles()


def hw_profile(name):
    """A chip profile (a bundled name or a profile .yaml file) as a dict: name, description,
    path ("" when bundled), cost_basis, and the numbers by group: arith (the integer arithmetic:
    weight_bits, membrane_bits, ..., is_float), mesh, core (limits per core; 0: unlimited), cost
    (per-activity energies in J and latencies in s), hop (per hop, J and s), energy (e_ac_j,
    e_mac_j). Raises qkf.Error naming the file, line and key of a bad profile."""
    flat = _qkf.hw_profile(os.fspath(name))
    out = {}
    for k, v in flat.items():
        group, dot, field = k.partition(".")
        if dot:
            out.setdefault(group, {})[field] = v
        else:
            out[k] = v
    return out


def _option_pairs(options):
    pairs = []
    items = list(options.items())
    # "resume" first: it restores the run's options, which the others then override
    items.sort(key=lambda kv: kv[0].lstrip("-") != "resume")
    for name, value in items:
        name = name.lstrip("-").replace("_", "-")
        if value is True:
            pairs.append((name, None))
        elif value is False or value is None:
            continue
        else:
            pairs.append((name, os.fspath(value) if isinstance(value, os.PathLike) else
                          str(value)))
    return pairs


def train(config, callback=None, verbose=False, **options):
    """Trains as `qkf train` does (the same trainer, checkpoints, metrics and evaluation).

    config    a dict of qkf train options without dashes ({"epochs": 1, "data": "h5:a.h5",
              "flip": True, "out": "run.h5"}; underscores may stand for dashes), or the path of
              a config file as qkf train --config reads it; keyword options override it
    callback  called with a dict per event: kind ("step", "epoch", "log", "out"), text (the
              line qkf train prints, or None), epoch, step, total_steps, steps_per_epoch, loss,
              acc, test_acc, lr, grad_norm, img_per_s, seconds. Returning True stops training
              after the update (the checkpoint is saved, resumable with resume=PATH).
    verbose   print the lines qkf train prints (to stderr)

    Returns True if the callback stopped the run, False when it ran to the end.
    """
    import sys

    path = None
    opts = {}
    if isinstance(config, (str, bytes, os.PathLike)):
        path = os.fspath(config)
    elif config is not None:
        opts.update(config)
    opts.update(options)

    def cb(ev):
        if verbose and ev["text"]:
            (sys.stdout if ev["kind"] == "out" else sys.stderr).write(ev["text"])
        return bool(callback(ev)) if callback is not None else False

    return _qkf.train(_option_pairs(opts), path, cb)
