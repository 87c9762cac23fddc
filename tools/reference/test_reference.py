#!/usr/bin/python3
"""Self-tests of the PyTorch reference (stdlib unittest; run: tools/reference/test_reference.py).

Checks the official parameter counts, the LIF equations, official state_dict names and shapes,
the QKTA "attention = OR of the head's Q bits" property, the tb_compat quirk, the .pth -> qkf
conversion round trip, and that the fixtures in tests/fixtures are consistent and reproduce
from their own weights files (the integer-form fixtures from qkformer_int.py).
"""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import convert_pth  # noqa: E402

FIXTURES = HERE.parents[1] / "tests" / "fixtures"


class TestModel(unittest.TestCase):
    def test_official_param_counts(self):
        for name, want in ref.OFFICIAL_PARAM_COUNTS.items():
            with self.subTest(preset=name):
                self.assertEqual(ref.num_params(ref.QKFormer(ref.QKFConfig.preset(name))), want)

    def test_lif_equations(self):
        lif = ref.LIF(1.0)
        # Constant 1.5: h = 0.75, then 0.375 + 0.75 = 1.125 -> spike, reset, 0.75 again.
        s = lif(torch.full((4, 1), 1.5)).flatten().tolist()
        self.assertEqual(s, [0.0, 1.0, 0.0, 1.0])
        # h >= vth fires (equality included); input 2.0 gives h = 1.0 exactly at t = 0.
        self.assertEqual(lif(torch.tensor([[2.0]])).item(), 1.0)
        # Against a float64 loop of the spec's equations on random input (exact in float32:
        # x/2 and v/2 are exact, so only the final additions round, identically).
        x = torch.randn(6, 1000) * 2
        v = torch.zeros(1000, dtype=torch.float32)
        want = []
        for t in range(6):
            h = v + (x[t] - v) / 2.0
            sp = (h >= 1.0).float()
            v = h * (1 - sp)
            want.append(sp)
        self.assertTrue(torch.equal(lif(x), torch.stack(want)))

    def test_lif_trace_relations(self):
        lif = ref.LIF(0.5)
        rec = []
        lif.recorder, lif.trace_name = rec, "x"
        out = lif(torch.randn(5, 3, 7))
        _, _, s, v, h = rec[0]
        self.assertTrue(torch.equal(out, s))
        self.assertTrue(torch.equal(v, h * (1 - s)))
        self.assertTrue(torch.equal(s, (h >= 0.5).float()))

    def test_qkta_attention_is_or(self):
        # Spec section 1: with vth 0.5 and integer counts, attn fires iff count >= 1.
        counts = torch.randint(0, 4, (8, 2000)).float() * (torch.rand(8, 2000) < 0.4)
        self.assertTrue(torch.equal(ref.LIF(0.5)(counts), (counts >= 1).float()))

    def test_official_names_and_shapes(self):
        def sd(**kw):
            cfg = ref.QKFConfig.preset(**kw)
            return {k: tuple(v.shape) for k, v in ref.QKFormer(cfg).state_dict().items()}
        c = sd(name="cifar10")
        self.assertEqual(c["patch_embed1.proj_conv.weight"], (48, 3, 3, 3))
        self.assertEqual(c["stage1.0.tssa.q_conv.weight"], (96, 96, 1))
        self.assertEqual(c["stage1.0.mlp.mlp1_conv.weight"], (384, 96, 1, 1))
        self.assertIn("patch_embed2.proj3_conv.weight", c)
        self.assertIn("stage3.1.ssa.v_bn.running_var", c)
        self.assertEqual(c["head.weight"], (10, 384))
        i = sd(name="imagenet-10-384")
        self.assertIn("stage1.0.mlp.fc1_conv.weight", i)
        self.assertIn("stage3.6.attn.proj_conv.bias", i)
        self.assertNotIn("stage3.7.attn.proj_conv.bias", i)
        self.assertEqual(i["patch_embed1.proj_res_conv.weight"], (96, 48, 1, 1))
        d = sd(name="dvs128-gesture")
        self.assertIn("stage2.0.ssa.q_conv.weight", d)
        self.assertIn("patch_embed2.proj_conv.weight", d)
        self.assertNotIn("patch_embed2.proj3_conv.weight", d)
        self.assertEqual(d["patch_embed1.proj_res_conv.weight"], (128, 32, 1, 1))

    def test_tb_compat_equals_per_sample_at_batch_1(self):
        cfg = ref.QKFConfig("cifar", 16, 3, 10, 96, 8, 4.0, 4, 4)
        torch.manual_seed(0)
        m = ref.QKFormer(cfg).eval()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 3, 16, 16, generator=g)
        ref.randomize_bn(m, x, g)
        with torch.no_grad():
            a = m(x[:1])
            m.set_tb_compat(True)
            b = m(x[:1])
            c = m(x)
            m.set_tb_compat(False)
            d = m(x)
        self.assertTrue(torch.equal(a, b))
        self.assertFalse(torch.equal(c, d))  # at B > 1 the quirk changes the result


class TestConvert(unittest.TestCase):
    def test_roundtrip(self):
        cfg = ref.QKFConfig.preset("cifar10-dvs", img_size=32, T=3)
        torch.manual_seed(3)
        model = ref.QKFormer(cfg)
        with torch.no_grad():
            for name, buf in model.named_buffers():  # make running stats nontrivial
                if buf.dtype.is_floating_point:
                    buf.uniform_(0.5, 1.5)
        sd = model.state_dict()
        wrapped = {"epoch": 3, "model": {"module." + k: v for k, v in sd.items()}}
        with tempfile.TemporaryDirectory() as tmp:
            pth, out = Path(tmp) / "m.pth", Path(tmp) / "m.h5"
            torch.save(wrapped, pth)
            r = subprocess.run([sys.executable, str(HERE / "convert_pth.py"), "--preset",
                                "cifar10-dvs", "--img-size", "32", "--T", "3", str(pth),
                                "--out", str(out), "--mean", "0", "0", "--std", "1", "2"],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            with h5py.File(out, "r") as f:
                keys = {k for k in sd if not k.endswith("num_batches_tracked")}
                self.assertEqual(set(f.keys()), keys)
                for k in keys:
                    self.assertTrue(np.array_equal(f[k][()], sd[k].numpy()), k)
                    self.assertEqual(f[k].dtype, np.float32)
                self.assertEqual(f.attrs["variant"], "cifar10dvs")
                self.assertEqual(int(f.attrs["T"]), 3)
                self.assertEqual(float(f.attrs["mlp_ratio"]), 1.0)
                self.assertEqual(int(f.attrs["qkf_format"]), 1)
                self.assertEqual(list(f.attrs["input_std"]), [1.0, 2.0])
            # A mismatching config is refused, and nothing is written.
            bad = Path(tmp) / "bad.h5"
            r = subprocess.run([sys.executable, str(HERE / "convert_pth.py"), "--preset",
                                "dvs128-gesture", str(pth), "--out", str(bad)],
                               capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertFalse(bad.exists())
            self.assertEqual(sorted(p.name for p in Path(tmp).iterdir()), ["m.h5", "m.pth"])


class TestConvertHeads(unittest.TestCase):
    """The official cifar and DVS constructors ignore num_heads (8 and 16 heads always): a head
    count they would not build is refused, naming it, and nothing is written; imagenet takes
    its num_heads as given."""

    def test_heads(self):
        cfg = ref.QKFConfig.preset("cifar100", img_size=32)
        torch.manual_seed(5)
        sd = ref.QKFormer(cfg).state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            pth = Path(tmp) / "c.pth"
            torch.save(sd, pth)
            for preset, heads, ok in (("cifar100", 4, False), ("cifar100", 8, True),
                                      ("cifar100", 16, False)):
                out = Path(tmp) / f"c{heads}.h5"
                r = subprocess.run([sys.executable, str(HERE / "convert_pth.py"), "--preset",
                                    preset, "--num-heads", str(heads), str(pth), "--out",
                                    str(out)], capture_output=True, text=True)
                self.assertEqual(r.returncode == 0, ok, r.stderr)
                self.assertEqual(out.exists(), ok)
                if not ok:
                    self.assertIn(f"--num-heads {heads}", r.stderr)
                    self.assertIn("always has 8 heads", r.stderr)
                    self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        for variant, heads in (("dvs128", 16), ("cifar10dvs", 16), ("cifar", 8)):
            self.assertIsNone(convert_pth.heads_error(variant, heads))
            self.assertIn(f"always has {heads} heads", convert_pth.heads_error(variant, 4))
        self.assertIsNone(convert_pth.heads_error("imagenet", 6))
        self.assertIsNone(convert_pth.heads_error("imagenet", 12))


class TestFixtures(unittest.TestCase):
    def test_fixtures(self):
        refs = sorted(FIXTURES.glob("*.ref.h5"))
        if not refs:
            self.skipTest(f"no fixtures in {FIXTURES}")
        torch.set_num_threads(1)
        for rp in refs:
            name = rp.name[: -len(".ref.h5")]
            with self.subTest(fixture=name), h5py.File(rp, "r") as f:
                tb = bool(f.attrs["tb_compat"])
                model, attrs = ref.load_checkpoint(str(FIXTURES / f"{name}.weights.h5"), tb)
                cfg = json.loads(f.attrs["config"])
                self.assertEqual(cfg, ref.dataclasses.asdict(model.cfg))
                x = torch.from_numpy(f["input"][()])
                with torch.no_grad():
                    logits, traces = model.run_traced(x)
                # Exact equality would tie the check to the BLAS torch runs on (OpenBLAS's
                # OpenMP or pthreads build, the reference BLAS sum in different orders): the
                # float values agree within 1e-5, the spikes below exactly (near_eps margin).
                np.testing.assert_allclose(logits.numpy(), f["logits"][()], rtol=1e-5, atol=1e-5)
                self.assertEqual(json.loads(f.attrs["lif_names"]), list(traces))
                self.assertEqual(set(f["spikes"].keys()), set(traces))
                T, B = model.cfg.T, x.shape[0]
                for n, tr in traces.items():
                    s = f[f"spikes/{n}"][()]
                    self.assertEqual(s.shape[:2], (T, B), n)
                    self.assertEqual(s.dtype, np.uint8)
                    self.assertTrue(np.array_equal(s, tr["s"].numpy().astype(np.uint8)), n)
                    self.assertGreater(s.mean(), 0.0, n)
                    h = tr["h"].numpy()
                    if f.attrs["has_state"]:
                        v = f[f"v/{n}"][()]
                        np.testing.assert_allclose(h, f[f"h/{n}"][()], rtol=1e-5, atol=1e-5,
                                                   err_msg=n)
                        h = f[f"h/{n}"][()]  # the fixture's own values below
                        self.assertTrue(np.array_equal(v, h * (1 - s.astype(np.float32))), n)
                    vth = np.float32(f[f"spikes/{n}"].attrs["vth"])
                    self.assertTrue(np.array_equal(s, (h >= vth).astype(np.uint8)), n)
                    near = int((np.abs(h - vth) < f.attrs["near_eps"]).sum())
                    self.assertEqual(int(f[f"near/{n}"][()]), near, n)


class TestIntegerForm(unittest.TestCase):
    """The integer reference (qkformer_int.py): its fixtures reproduce; the QKTA attention neuron
    is the OR rule in integers too; without rounding error (a profile with plenty of bits) the
    integer model classifies like the float one."""

    def test_int_fixtures_reproduce(self):
        import qkformer_int as qi
        files = sorted(FIXTURES.glob("*_int_*.h5"))
        self.assertGreaterEqual(len(files), 10)
        for path in files:
            with self.subTest(fixture=path.name), h5py.File(path, "r") as f:
                tb = bool(f.attrs.get("tb_compat", 0))
                model, attrs = ref.load_checkpoint(str(FIXTURES / f.attrs["weights"]),
                                                   tb_compat=tb)
                fields = json.loads(f.attrs["arith_fields"])
                a = dict(zip(fields, (int(v) for v in f["arith"][()])))
                norm = None
                if "norm_mean" in f:
                    norm = ([float(v) for v in f["norm_mean"][()]],
                            [float(v) for v in f["norm_std"][()]])
                bits = f.attrs.get("bits_min")  # fixtures made with the quantiser's --bits-min
                q = qi.quantize(model, a, norm, bits_min=bits.decode() if isinstance(bits, bytes)
                                else bits)
                for k, v in q.items():
                    if isinstance(v, torch.Tensor):
                        self.assertTrue(np.array_equal(v.numpy(), f[f"q/{k}"][()]), k)
                x = torch.from_numpy(f["input"][()])
                with torch.no_grad():
                    li, _, traces = qi.forward_int(model, q, a, x)
                self.assertTrue(np.array_equal(li.numpy(), f["logits_int"][()]))
                for n, s in traces.items():
                    self.assertTrue(np.array_equal(s.numpy(), f[f"spikes/{n}"][()]), n)

    def test_attention_or_rule(self):
        import qkformer_int as qi
        for prof in ("loihi", "speck", "wide16"):
            a = qi.arith_of(prof)
            th = (1 << a["current_shift"]) - (0 if a["threshold_ge"] else 1)
            run = qi.IntRun(None, {}, a)
            count = torch.randint(0, 3, (8, 50))
            s = run.lif("x", count, 0, torch.tensor([th]), 1)
            self.assertTrue(torch.equal(s, (count >= 1).long()), prof)

    def test_ssa_neuron_exact(self):
        """SSA's attention neuron: the integer membrane (units of 1/16, decay by truncation)
        fires exactly when the float one (x = 0.125 P, vth 0.5) does, at any T (docs/hardware.md:
        P >= 0, so the integer membrane is the floor of the real one)."""
        import qkformer_int as qi
        for prof in ("loihi", "wide16", "wrap", "gtsat"):
            a = qi.arith_of(prof)
            if a["leak"] != qi.LEAK_DECAY or a["reset_subtract"]:  # not QKFormer's neuron
                continue
            th = (8 << a["current_shift"]) - (0 if a["threshold_ge"] else 1)
            run = qi.IntRun(None, {}, a)
            P = torch.randint(0, 12, (16, 4000), generator=torch.Generator().manual_seed(7))
            P[:, ::3] = torch.randint(0, 3, (16, (4000 + 2) // 3))  # near-threshold sums
            s = run.lif("x", P, 0, torch.tensor([th]), 1)
            sf = ref.LIF(0.5)(P.float() * 0.125)
            self.assertTrue(torch.equal(s, sf.long()), prof)

    def test_close_to_float_with_wide_registers(self):
        import qkformer_int as qi
        model, _ = ref.load_checkpoint(str(FIXTURES / "cifar_small.weights.h5"))
        a = qi.arith_of("wide16")
        q = qi.quantize(model, a)
        x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
        with torch.no_grad():
            li, logits, tr = qi.forward_int(model, q, a, x)
            lf, trf = model.run_traced(x)
        # 16-bit weights, 32-bit registers: the first layer differs only by the 8-bit input
        # (measured 0.04% of its spikes); the logits stay within 0.5 of the float ones (this
        # random model amplifies flips layer by layer; measured 0.4).
        first = next(iter(tr))
        self.assertLess((tr[first].float() != trf[first]["s"]).float().mean().item(), 0.005)
        self.assertLess((logits - lf).abs().max().item(), 0.5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
