"""Chip profiles from Python (pytest): qkf.hw_profiles / hw_profile, Model.run(..., hw=...) in
both integer engines, qkf.quantize and quantised checkpoints, bit for bit against the qkf command
(`qkf infer --hw`, `qkf quantize`) and the PyTorch integer reference's fixtures; errors raise
qkf.Error. Run as test_qkf.py is (tools/test.sh):

    PYTHONPATH=build/python /usr/bin/python3 -m pytest -q python/tests
"""

import os
import shutil
import subprocess
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
FMNIST = ROOT / "models" / "default" / "fmnist.h5"


def cli(*args, check=True):
    r = subprocess.run([str(QKF), *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def int_fixture(name, hw):
    """Weights, input and the PyTorch integer reference's logits of tests/fixtures."""
    with h5py.File(FIX / f"{name}_int_{hw}.h5", "r") as f:
        return FIX / f"{name}.weights.h5", f["input"][()], f["logits_int"][()]


def infer_hw(tmp_path, weights, x, *args):
    """qkf infer [--hw ...] on x: the output file's datasets."""
    inp, out = tmp_path / "x.h5", tmp_path / "y.h5"
    with h5py.File(inp, "w") as f:
        f["input"] = x
    cli("infer", "--weights", weights, "--input", inp, "--output", out, "--quiet", *args)
    with h5py.File(out, "r") as f:
        return {"logits": f["logits"][()], "logits_int": f["logits_int"][()],
                "counts": {k: int(v[()]) for k, v in f["spike_count"].items()},
                "rates": {k: float(v[()]) for k, v in f["firing_rate"].items()}}


def assert_same(r, c, names):
    assert np.array_equal(r.logits, c["logits"])
    assert r.logits_int.dtype == np.int64 and np.array_equal(r.logits_int, c["logits_int"])
    assert list(r.spike_counts) == names
    for k in names:
        assert r.spike_counts[k] == c["counts"][k], k
        assert r.firing_rates[k] == c["rates"][k], k


@pytest.mark.parametrize("name", ["cifar_small", "dvs128_small"])
@pytest.mark.parametrize("mode", ["dense", "event"])
def test_run_hw_equals_cli(tmp_path, name, mode):
    """m.run(x, mode, hw="loihi") is qkf infer --hw loihi --mode MODE, bit for bit (logits,
    integer logits, spike counts, firing rates), and the PyTorch integer reference's logits."""
    w, x, ref = int_fixture(name, "loihi")
    x = np.concatenate([x, x[::-1]])
    m = qkf.load(w)
    r = m.run(x, mode=mode, hw="loihi", batch=3)
    c = infer_hw(tmp_path, w, x, "--hw", "loihi", "--mode", mode, "--batch", 3)
    assert_same(r, c, m.layers)
    n = len(ref)
    assert np.array_equal(r.logits_int[:n], ref)
    assert (r.stats is None) == (mode == "dense")  # the integer event engine counts its work
    if mode == "event":
        assert r.stats["accumulates"] > 0
        for k, node in r.stats["layers"].items():
            assert node["out_spikes"] == r.spike_counts[k], k
    assert m.run(x).logits_int is None  # a float run, the same model


def test_run_hw_profile_file(tmp_path):
    """hw= a profile file gives what the bundled profile of the same arithmetic gives."""
    w, x, ref = int_fixture("cifar_small", "loihi")
    chip = tmp_path / "mychip.yaml"
    shutil.copy(ROOT / "models" / "hw" / "loihi.yaml", chip)
    r = qkf.load(w).run(x, mode="event", hw=chip)
    assert np.array_equal(r.logits_int, ref)
    p = qkf.hw_profile(chip)
    assert p["path"] == str(chip) and p["arith"] == qkf.hw_profile("loihi")["arith"]
    c = infer_hw(tmp_path, w, x, "--hw", chip, "--mode", "event")
    assert np.array_equal(r.logits, c["logits"])


def test_quantize_equals_cli(tmp_path):
    """qkf.quantize writes the file qkf quantize writes (every dataset equal), calibrated or
    not; qkf.load of qkf quantize's file runs what qkf infer runs on it."""
    data = tmp_path / "cal.h5"
    rng = np.random.default_rng(3)
    with h5py.File(data, "w") as f:
        f["images"] = (rng.random((16, 1, 28, 28)) * 255).astype(np.uint8)
        f["labels"] = (np.arange(16) % 10).astype(np.int64)
    m = qkf.load(FMNIST)
    # (uncalibrated: tests/test_api.c, api/profile_runs, against qkf infer --hw)
    for extra, kw in [(("--calib", 8, "--data", f"h5:{data}"),
                       {"calib": 8, "data": f"h5:{data}"})]:
        cli("quantize", "--weights", FMNIST, "--hw", "loihi", "--out", tmp_path / "c.h5",
            "--quiet", *extra)
        q = qkf.quantize(m, hw="loihi", **kw)
        assert q.quantized and q.hw == "loihi" and not m.quantized and m.hw is None
        assert q.num_parameters == m.num_parameters and q.layers == m.layers
        assert q.config == m.config
        q.save(tmp_path / "p.h5")
        with h5py.File(tmp_path / "c.h5", "r") as a, h5py.File(tmp_path / "p.h5", "r") as b:
            seen = []
            a.visititems(lambda k, v: seen.append(k) if isinstance(v, h5py.Dataset) else None)
            assert seen and set(seen) == {k for k in seen if k in b}
            for k in seen:
                assert np.array_equal(a[k][()], b[k][()]), k
            assert {k: str(v) for k, v in a.attrs.items()} == \
                   {k: str(v) for k, v in b.attrs.items()}
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    loaded = qkf.load(tmp_path / "c.h5")  # qkf quantize's file (calibrated)
    assert loaded.quantized and loaded.hw == "loihi"
    for mode in ["dense", "event"]:
        r = loaded.run(x, mode=mode, batch=2)  # an integer model needs no hw=
        c = infer_hw(tmp_path, tmp_path / "c.h5", x, "--mode", mode, "--batch", 2)
        assert_same(r, c, loaded.layers)
        assert np.array_equal(loaded.run(x, mode=mode, hw="loihi").logits_int, r.logits_int)


def test_profiles():
    names = qkf.hw_profiles()
    assert {"loihi", "speck", "truenorth", "ideal-45nm", "wide16"} <= set(names)
    listed = cli("hw", "list").stdout
    assert all(n in listed for n in names)
    p = qkf.hw_profile("loihi")
    assert p["name"] == "loihi" and p["path"] == "" and p["cost_basis"] == "calibrated"
    a = p["arith"]
    assert (a["weight_bits"], a["membrane_bits"], a["current_bits"], a["is_float"]) == \
           (8, 24, 16, 0)
    assert p["mesh"]["cores"] == 128 and p["core"]["max_neurons"] == 1024
    assert p["cost"]["e_process_spike"] == pytest.approx(24e-12)  # qkf hw show: 24 pJ
    assert qkf.hw_profile("ideal-45nm")["arith"]["is_float"] == 1


def test_hw_errors(tmp_path):
    w, x, _ = int_fixture("cifar_small", "loihi")
    m = qkf.load(w)
    bad = tmp_path / "bad.yaml"
    bad.write_text("architecture:\n  name: x\n  attributes: [\n")
    for call, want, code in [
            (lambda: qkf.hw_profile("nosuchchip"), "nosuchchip", -2),
            (lambda: qkf.hw_profile(bad), "bad.yaml", -2),
            (lambda: m.run(x, hw=bad), "bad.yaml", -2),
            (lambda: m.run(x, hw="ideal-45nm"), "float machine", -1),
            (lambda: m.run(x, hw="truenorth"), "leak", -1),
            (lambda: m.run(x[:, :, :8, :8], hw="loihi"), "own size", -1),
            (lambda: m.run(x, hw="loihi", trace=tmp_path / "t.h5"), "trace", -1),
            (lambda: m.run(x, hw="loihi", tb_compat=True), "tb_compat", -1),
            (lambda: qkf.quantize(m, hw="loihi").run(x, hw="wide16"), "quantised for 'loihi'", -1),
            (lambda: qkf.quantize(qkf.quantize(m, hw="loihi"), hw="loihi"), "already quantised",
             -1),
            (lambda: qkf.quantize(m, hw="loihi", headroom=0.5), "headroom", -1),
            (lambda: m.evaluate("fashion-mnist", hw="loihi"), "the model takes 3 x 16 x 16",
             -1)]:
        with pytest.raises(qkf.Error) as e:
            call()
        assert want in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert e.value.code == code, str(e.value)
    assert not (tmp_path / "t.h5").exists()


def test_hw_threads_side_by_side():
    """Integer runs release the GIL too: two models at once give what each gives alone."""
    w, x, ref = int_fixture("cifar_small", "loihi")
    ms = [qkf.load(w), qkf.load(w)]
    out = [None, None]

    def work(i):
        out[i] = ms[i].run(x, mode=["dense", "event"][i], hw="loihi", batch=1).logits_int

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert np.array_equal(out[0], ref) and np.array_equal(out[1], ref)


def test_evaluate_hw_equals_cli(tmp_path):
    """m.evaluate(data, hw=) and an integer model's evaluate give qkf eval --hw's accuracy."""
    data = tmp_path / "d.h5"
    rng = np.random.default_rng(7)
    with h5py.File(data, "w") as f:
        f["images"] = (rng.random((24, 1, 28, 28)) * 255).astype(np.uint8)
        f["labels"] = (np.arange(24) % 10).astype(np.int64)
    out = cli("eval", "--weights", FMNIST, "--hw", "loihi", "--data", f"h5:{data}",
              "--batch", 5).stdout
    want = float(out.split("accuracy: ")[1].split()[0])
    m = qkf.load(FMNIST)
    acc, n = m.evaluate(f"h5:{data}", hw="loihi", batch=5)
    assert n == 24 and round(acc, 4) == want
    assert qkf.quantize(m, hw="loihi").evaluate(f"h5:{data}", batch=7) == (acc, 24)
