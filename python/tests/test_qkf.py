"""Tests of the Python module qkf (pytest). Run by tools/test.sh after the build:

    PYTHONPATH=build/python /usr/bin/python3 -m pytest -q python/tests

The build directory (for the qkf command, to compare against) is found beside the module
(build/python/qkf -> build/qkf), or given as QKF_BUILD. The round trip through the official
checkpoint format needs PyTorch (python3-torch) and is skipped, saying so, without it."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import qkf

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
BUILD = Path(os.environ.get("QKF_BUILD", Path(qkf.__file__).resolve().parents[2]))
QKF = BUILD / "qkf"


def cli(*args, check=True):
    r = subprocess.run([str(QKF), *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def fixture(name):
    with h5py.File(FIX / f"{name}.ref.h5", "r") as f:
        return (FIX / f"{name}.weights.h5", f["input"][()], f["logits"][()],
                json.loads(f.attrs["lif_names"]),
                {k: int(f["spikes"][k][()].sum()) for k in f["spikes"]})


def test_binary_exists():
    assert QKF.exists(), f"{QKF}: build qkf first (or set QKF_BUILD)"


def test_model_properties():
    w, x, _, names, _ = fixture("cifar_small")
    m = qkf.load(w)
    c = m.config
    assert c == {"variant": "cifar", "img_size": 16, "in_channels": 3, "num_classes": 10,
                 "embed_dims": 96, "num_heads": 8, "mlp_ratio": 4.0, "depths": 4, "T": 4,
                 "qk_attn": "token"}
    assert m.layers == names  # official module paths, graph order
    info = cli("info", w).stdout
    assert f"parameters: {m.num_parameters}" in info  # as qkf info counts them
    assert all(n > 0 for n in m.layer_neurons.values())


@pytest.mark.parametrize("name", ["cifar_small", "dvs128_small", "cifar_qkca"])
@pytest.mark.parametrize("mode", ["dense", "event"])
def test_run_matches_reference(name, mode):
    """Logits and spike counts of our PyTorch reference's fixtures, in both engines."""
    w, x, ref_logits, names, ref_counts = fixture(name)
    r = qkf.load(w).run(x, mode=mode)
    assert r.logits.dtype == np.float32 and r.logits.shape == ref_logits.shape
    # Convolutions sum in another order than PyTorch's (docs/design.md, Numerics): logits agree
    # to ~1e-6; 1e-4 leaves room for a rare spike flipped at a threshold.
    assert np.abs(r.logits - ref_logits).max() < 1e-4
    assert list(r.spike_counts) == names
    flips = sum(abs(r.spike_counts[k] - ref_counts[k]) for k in names)
    assert flips <= 4, f"{flips} spikes differ from the reference"
    T = qkf.load(w).config["T"]
    for k in names:
        n = qkf.load(w).layer_neurons[k]
        assert r.firing_rates[k] == pytest.approx(r.spike_counts[k] / (T * len(x) * n))


@pytest.mark.parametrize("mode", ["dense", "event"])
def test_equals_cli(tmp_path, mode):
    """The same inputs give the same bits as qkf infer."""
    w, x, _, names, _ = fixture("cifar_small")
    x = np.concatenate([x, x[::-1] * 0.5])
    inp, out = tmp_path / "x.h5", tmp_path / "y.h5"
    with h5py.File(inp, "w") as f:
        f["input"] = x
    cli("infer", "--weights", w, "--input", inp, "--output", out, "--mode", mode, "--batch", 3,
        "--quiet")
    r = qkf.load(w).run(x, mode=mode, batch=3)
    with h5py.File(out, "r") as f:
        assert np.array_equal(r.logits, f["logits"][()])
        for k in names:
            assert r.spike_counts[k] == int(f[f"spike_count/{k}"][()]), k
            assert r.firing_rates[k] == float(f[f"firing_rate/{k}"][()]), k


def test_input_not_copied_and_converted():
    w, x, ref_logits, _, _ = fixture("cifar_small")
    m = qkf.load(w)
    a = m.run(x.astype(np.float64)).logits  # converted
    b = m.run(np.asfortranarray(x)).logits  # made contiguous
    c = m.run(x).logits                     # read in place
    assert np.array_equal(a, c) and np.array_equal(b, c)


def test_event_stats():
    w, x, _, names, _ = fixture("cifar_small")
    r = qkf.load(w).run(x, mode="event")
    s = r.stats
    assert s["accumulates"] > 0 and s["macs"] > 0
    assert s["energy_j"] == pytest.approx((0.9 * s["accumulates"] + 4.6 * s["macs"]) * 1e-12)
    assert sum(n["accumulates"] for n in s["nodes"]) == s["accumulates"]
    assert sum(n["macs"] for n in s["nodes"]) == s["macs"]
    # the nodes that emit a LIF layer's spikes emit exactly that layer's spikes
    for k, node in s["layers"].items():
        assert node["out_spikes"] == r.spike_counts[k], k
    assert qkf.load(w).run(x, mode="dense").stats is None
    d = qkf.load(w).run(x, mode="dense", stats=True).stats
    assert d["macs"] > s["macs"]  # the dense engine computes every neuron


def test_trace_as_cli(tmp_path):
    """m.run(..., trace=, record=) records what qkf infer --trace --record records."""
    w, x, _, _, _ = fixture("cifar_small")
    inp, out = tmp_path / "x.h5", tmp_path / "y.h5"
    with h5py.File(inp, "w") as f:
        f["input"] = x
    cli("infer", "--weights", w, "--input", inp, "--output", out, "--trace", tmp_path / "c.h5",
        "--record", "stage1.*:v", "--quiet")
    qkf.load(w).run(x, mode="dense", trace=tmp_path / "p.h5", record=["stage1.*:v"])
    with h5py.File(tmp_path / "c.h5", "r") as c, h5py.File(tmp_path / "p.h5", "r") as p:
        assert sorted(c["nodes"]) == sorted(p["nodes"]) and len(p["nodes"]) > 0
        for k in p["nodes"]:
            assert np.array_equal(c[f"nodes/{k}/observables/v/data"][()],
                                  p[f"nodes/{k}/observables/v/data"][()]), k
    with pytest.raises(qkf.Error, match="exists"):  # refused without force, as the CLI does
        qkf.load(w).run(x, trace=tmp_path / "p.h5")
    with pytest.raises(qkf.Error):
        qkf.load(w).run(x, trace=tmp_path / "q.h5", record=["nosuchlayer:v"])
    assert not (tmp_path / "q.h5").exists()


def test_errors():
    with pytest.raises(qkf.Error, match="cannot open") as e:
        qkf.load("/nonexistent/model.h5")
    assert e.value.code == -2
    w, x, _, _, _ = fixture("cifar_small")
    m = qkf.load(w)
    with pytest.raises(qkf.Error, match="channels"):
        m.run(x[:, :2])
    with pytest.raises(qkf.Error, match="dimensions"):
        m.run(x[0])
    with pytest.raises(ValueError, match="not an engine"):
        m.run(x, mode="analog")
    with pytest.raises(qkf.Error, match="conv"):
        m.run(x, conv="fft")


def test_threads_run_side_by_side():
    """Two models run at once from two threads (the GIL is released) and give what they give
    alone; one model refuses a second concurrent run instead of corrupting it."""
    w, x, _, _, _ = fixture("cifar_small")
    alone = qkf.load(w).run(x, mode="event").logits
    out = [None, None]

    def work(i):
        out[i] = qkf.load(w).run(x, mode="event").logits

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(np.array_equal(o, alone) for o in out)


def write_dataset(path, n, side=8, seed=0):
    """Images whose class is the bright quadrant (as tests/test_train.c's)."""
    rng = np.random.default_rng(seed)
    imgs = (rng.random((n, 1, side, side)) * 60).astype(np.uint8)
    labels = np.arange(n) % 4
    h = side // 2
    for i, c in enumerate(labels):
        y, x0 = (c // 2) * h, (c % 2) * h
        imgs[i, 0, y:y + h, x0:x0 + h] += 180
    with h5py.File(path, "w") as f:
        f["images"] = imgs
        f["labels"] = labels.astype(np.int64)


TINY = {"img-size": 8, "in-channels": 1, "num-classes": 4, "embed-dims": 16, "num-heads": 2,
        "mlp-ratio": 2, "depths": 3, "T": 2, "batch": 8, "epochs": 2, "warmup-epochs": 0.5,
        "threads": 1, "log-every": 1, "eval-batch": 16}


def test_train_equals_cli(tmp_path):
    """qkf.train runs the trainer qkf train runs: the same weights bit for bit, events for every
    step and epoch, and config files read the same way."""
    data = tmp_path / "d.h5"
    write_dataset(data, 48)
    args = []
    for k, v in TINY.items():
        args += [f"--{k}", v]
    cli("train", *args, "--data", f"h5:{data}", "--out", tmp_path / "cli.h5", "--quiet")
    events = []
    stopped = qkf.train(dict(TINY, data=f"h5:{data}", out=tmp_path / "py.h5", quiet=True),
                        callback=events.append)
    assert stopped is False
    with h5py.File(tmp_path / "cli.h5", "r") as a, h5py.File(tmp_path / "py.h5", "r") as b:
        keys = [k for k in qkf.load(tmp_path / "cli.h5").layers]  # loads
        assert keys
        for k in a:
            if isinstance(a[k], h5py.Dataset):
                assert np.array_equal(a[k][()], b[k][()]), k
    steps = [e for e in events if e["kind"] == "step"]
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert [e["step"] for e in steps] == list(range(1, 13))  # 48 / 8 = 6 steps, 2 epochs
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0.0 <= e["test_acc"] <= 1.0 for e in epochs)
    # the same run from a config file (the h5:FILE dataset written in it), keywords overriding
    # it
    cfg = tmp_path / "run.cfg"
    cfg.write_text("".join(f"{k} {v}\n" for k, v in TINY.items()) +
                   f"epochs = 5\ndata: h5:{data}\nout {tmp_path / 'cfg.h5'}\nquiet\n")
    qkf.train(str(cfg), epochs=2)
    m1, m2 = qkf.load(tmp_path / "cli.h5"), qkf.load(tmp_path / "cfg.h5")
    x = np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(m1.run(x).logits, m2.run(x).logits)


def test_train_stop_and_errors(tmp_path):
    data = tmp_path / "d.h5"
    write_dataset(data, 48)
    seen = []

    def stop_at_3(ev):
        seen.append(ev["kind"])
        return ev["kind"] == "step" and ev["step"] == 3

    assert qkf.train(dict(TINY, data=f"h5:{data}", out=tmp_path / "s.h5", quiet=True),
                     callback=stop_at_3) is True
    with h5py.File(tmp_path / "s.h5", "r") as f:  # saved where it stopped, resumable
        assert int(f["optim/step"][0]) == 3
    with pytest.raises(qkf.Error, match="epochs"):
        qkf.train(dict(TINY, data=f"h5:{data}", epochs="many"))
    with pytest.raises(qkf.Error, match="unknown training option"):
        qkf.train({"no_such_option": 1})

    def boom(ev):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        qkf.train(dict(TINY, data=f"h5:{data}", out=tmp_path / "b.h5", quiet=True), boom)


def test_evaluate_equals_cli(tmp_path):
    data = tmp_path / "d.h5"
    write_dataset(data, 32)
    qkf.train(dict(TINY, data=f"h5:{data}", out=tmp_path / "m.h5", quiet=True, epochs=1))
    for mode in ("dense", "event"):
        acc, n = qkf.load(tmp_path / "m.h5").evaluate(f"h5:{data}", mode=mode, limit=20)
        out = cli("eval", "--weights", tmp_path / "m.h5", "--data", f"h5:{data}", "--mode", mode,
                  "--limit", 20).stdout
        assert n == 20 and out.strip() == f"accuracy: {acc:.4f}"


# ---- the notebook-style round trip through the official checkpoint format --------------------

REF = ROOT / "tools" / "reference"


def torch_or_skip():
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("PyTorch is not installed (Debian: apt-get install python3-torch; "
                    "tools/deps.sh installs it): the official-format round trip is not tested")


@pytest.mark.parametrize("variant", ["cifar", "dvs128"])
def test_official_checkpoint_round_trip(tmp_path, variant):
    """An official-format .pth (a state_dict under 'model', keys prefixed 'module.' as DDP saves
    them) -> tools/reference/convert_pth.py -> qkf.load -> both engines, against the PyTorch
    reference's logits."""
    torch_or_skip()
    import torch
    sys.path.insert(0, str(REF))
    import qkformer_ref as ref

    if variant == "cifar":
        cfg = ref.QKFConfig(variant="cifar", img_size=16, in_channels=3, num_classes=10,
                            embed_dims=64, num_heads=8, mlp_ratio=2.0, depths=3, T=2)
        x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
        conv = ["--variant", "cifar", "--img-size", "16", "--in-channels", "3",
                "--num-classes", "10", "--embed-dims", "64", "--num-heads", "8",
                "--mlp-ratio", "2", "--depths", "3", "--T", "2"]
    else:
        cfg = ref.QKFConfig(variant="dvs128", img_size=32, in_channels=2, num_classes=11,
                            embed_dims=64, num_heads=16, mlp_ratio=2.0, depths=2, T=3)
        g = torch.Generator().manual_seed(4)
        x = (torch.rand(2, 3, 2, 32, 32, generator=g) < 0.15).float()
        conv = ["--variant", "dvs128", "--img-size", "32", "--in-channels", "2",
                "--num-classes", "11", "--embed-dims", "64", "--num-heads", "16",
                "--mlp-ratio", "2", "--T", "3"]
    torch.manual_seed(7)
    model = ref.QKFormer(cfg).eval()
    ref.randomize_bn(model, x, torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x).numpy()
    pth = tmp_path / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()},
                "epoch": 300}, pth)
    h5 = tmp_path / "converted.h5"
    r = subprocess.run(["/usr/bin/python3", str(REF / "convert_pth.py"), str(pth), "--out",
                        str(h5), *conv], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = qkf.load(h5)
    assert m.num_parameters == ref.num_params(model)
    assert m.config["variant"] == variant
    for mode in ("dense", "event"):
        got = m.run(x.numpy(), mode=mode).logits
        # summation order differs from PyTorch's (~1e-6 relative); a rare spike flipped at a
        # threshold may move a logit by a little more
        assert np.abs(got - want).max() < 1e-3, (mode, np.abs(got - want).max())
        assert np.array_equal(got.argmax(1), want.argmax(1)), mode
