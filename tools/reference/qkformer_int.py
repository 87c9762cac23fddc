#!/usr/bin/python3
"""The integer form of QKFormer on a chip's arithmetic, in PyTorch: our own reference of the C
quantiser (models/quant.c) and of both integer engines (sim/dense_int.c, the integer event
engine). docs/hardware.md ("The integer form of every operation", "Quantisation") is the
specification; this file follows it operation by operation, in int64 tensors (convolutions in
float64, which is exact: every product and partial sum is an integer below 2^53, then wrapped to
int32 as the contract says).

quantize(model, arith, norm) -> dict of integer tensors keyed like a quantised checkpoint
("patch_embed1.proj_conv.weight" mantissas, ".weight_exp", ".bias", ".bias_exp",
"<lif>.threshold", "<lif>.delta", "head.weight", "head.weight_exp", "head.bias") plus the scales.
forward_int(model, q, arith, x) -> (logits_int [B, K] int64, logits float32, traces name -> spikes
[T, B, n] uint8).
"""

import math
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qkformer_ref as ref  # noqa: E402 (first: finds a python with torch)
import torch  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

ARITH_FIELDS = ["is_float", "weight_bits", "weight_exp_min", "weight_exp_max", "per_channel",
                "current_bits", "current_wrap", "current_shift", "membrane_bits",
                "membrane_wrap", "decay_bits", "threshold_bits", "threshold_shift",
                "threshold_ge", "reset_subtract", "bias_bits", "bias_exp_max", "graded_bits",
                "input_bits", "leak", "weight_codebook"]
LEAK_DECAY, LEAK_NONE = 0, 1

# Arithmetic of the fixtures (the bundled profiles' numbers, models/hw/*.yaml, plus a '>'
# comparator with saturating registers and subtractive reset, and small wrapping registers, to
# exercise those paths).
PROFILES = {
    "loihi": dict(weight_bits=8, weight_exp_min=-8, weight_exp_max=7, per_channel=0,
                  current_bits=16, current_wrap=1, current_shift=6, membrane_bits=24,
                  membrane_wrap=0, decay_bits=12, threshold_bits=17, threshold_shift=6,
                  threshold_ge=0, reset_subtract=0, bias_bits=13, bias_exp_max=7, graded_bits=0,
                  input_bits=8, leak=LEAK_DECAY),
    "speck": dict(weight_bits=8, weight_exp_min=0, weight_exp_max=0, per_channel=0,
                  current_bits=16, current_wrap=0, current_shift=0, membrane_bits=16,
                  membrane_wrap=0, decay_bits=0, threshold_bits=15, threshold_shift=0,
                  threshold_ge=1, reset_subtract=0, bias_bits=8, bias_exp_max=0, graded_bits=0,
                  input_bits=8, leak=LEAK_NONE),
    "gtsat": dict(weight_bits=6, weight_exp_min=0, weight_exp_max=3, per_channel=1,
                  current_bits=10, current_wrap=0, current_shift=2, membrane_bits=14,
                  membrane_wrap=0, decay_bits=8, threshold_bits=10, threshold_shift=2,
                  threshold_ge=0, reset_subtract=1, bias_bits=8, bias_exp_max=3, graded_bits=0,
                  input_bits=6, leak=LEAK_DECAY),
    "wrap": dict(weight_bits=7, weight_exp_min=0, weight_exp_max=4, per_channel=1,
                 current_bits=12, current_wrap=1, current_shift=3, membrane_bits=16,
                 membrane_wrap=1, decay_bits=12, threshold_bits=12, threshold_shift=3,
                 threshold_ge=1, reset_subtract=0, bias_bits=10, bias_exp_max=2, graded_bits=0,
                 input_bits=8, leak=LEAK_DECAY),
    "wide16": dict(weight_bits=16, weight_exp_min=-8, weight_exp_max=7, per_channel=1,
                   current_bits=32, current_wrap=1, current_shift=0, membrane_bits=32,
                   membrane_wrap=0, decay_bits=12, threshold_bits=25, threshold_shift=6,
                   threshold_ge=1, reset_subtract=0, bias_bits=24, bias_exp_max=7,
                   graded_bits=0, input_bits=8, leak=LEAK_DECAY),
}


def arith_of(name):
    a = dict(is_float=0, weight_codebook=0)
    a.update(PROFILES[name])
    return a


def rnd(x):
    """Round half away from zero (scalar or float64 tensor), as quant.c's rnd."""
    if isinstance(x, torch.Tensor):
        return torch.where(x < 0, -torch.floor(-x + 0.5), torch.floor(x + 0.5))
    return -math.floor(-x + 0.5) if x < 0 else math.floor(x + 0.5)


def reduce(x, bits, wrap):
    """x (int64 tensor) in a signed register of `bits` bits: wrap or saturate to +-(2^(b-1)-1)."""
    if bits >= 64:
        return x
    if wrap:
        m = 1 << bits
        u = x & (m - 1)
        return torch.where(u >= (1 << (bits - 1)), u - m, u)
    hi = (1 << (bits - 1)) - 1
    return x.clamp(-hi, hi)


def bn_fold(bn):
    """qkf_bn_fold in float32: alpha = (1 / sqrt(var + 1e-5)) * gamma, shift = beta - mean*alpha."""
    eps = torch.tensor(1e-5, dtype=torch.float32)
    var = bn.running_var.detach().float()
    invstd = torch.tensor(1.0, dtype=torch.float32) / torch.sqrt(var + eps)
    alpha = invstd * bn.weight.detach().float()
    shift = bn.bias.detach().float() - bn.running_mean.detach().float() * alpha
    return alpha, shift


def bits_of(v):
    v = abs(int(v))
    return v.bit_length() + 1


def conv_units(model):
    """(conv path, conv module, bn module, lif path) of every conv -> BN -> LIF in the model."""
    mods = dict(model.named_modules())
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) and name.endswith("_conv"):
            base = name[: -len("_conv")]
            out.append((name, m, mods[base + "_bn"], base + "_lif"))
    return out


def input_scale(model, a, norm):
    cfg = model.cfg
    if cfg.is_frames:
        return 1.0, 0
    xmax = 1.0
    if norm is not None:
        xmax = 0.0
        for mean, std in zip(*norm):
            lo = abs((0.0 - float(mean)) / float(std))
            hi = abs((1.0 - float(mean)) / float(std))
            xmax = max(xmax, lo, hi)
    in_max = (1 << a["input_bits"]) - 1
    scale = xmax / in_max
    if norm is not None:  # a whole multiple of the 8-bit pixel step 1 / (255 std)
        sd = max(float(s) for s in norm[1])
        grid = 1.0 / (255.0 * sd)
        k = math.ceil(scale / grid)
        scale = max(k, 1) * grid
    return scale, in_max


def input_offsets(norm, in_scale, in_max):
    """Per input channel, the mean of X - x / in_scale over the 256 pixel values of 8-bit data
    (x = p * (1 / (255 std)) + (-mean / std) in float32, as the dataset reader computes it)."""
    if norm is None:
        return None
    import numpy as np
    u = []
    for mean, std in zip(*norm):
        m32, s32 = np.float32(mean), np.float32(std)
        a32 = np.float32(1.0) / (np.float32(255.0) * s32)
        b32 = -m32 / s32
        acc = 0.0
        for p in range(256):
            xf = float(np.float32(np.float32(p) * a32) + b32)
            r = xf / in_scale
            X = min(max(math.floor(r + 0.5), -in_max), in_max)
            acc += X - r
        u.append(acc / 256.0)
    return u


def parse_bits_min(spec, names, a):
    """qkf_quant_opts.bits_min: "M" or a comma list of "M" and "LAYER=M" (later items win)."""
    out = {}
    for item in (spec or "").split(","):
        if not item:
            continue
        layer, _, m = item.rpartition("=")
        m = int(m)
        if m != 0 and not 2 <= m <= a["weight_bits"]:
            raise ValueError(f"bits_min '{item}': M must be 0 or 2..{a['weight_bits']}")
        hit = [n for n in names if not layer or n == layer]
        if not hit:
            raise ValueError(f"bits_min '{item}': no convolution of that name")
        for n in hit:
            out[n] = m
    return out


def quantize(model, a, norm=None, headroom=16.0, bits_min=None):
    """The quantiser of models/quant.c, step for step (no calibration). bits_min: the
    --bits-min spec (a layer's unit leaves its weights at least M bits; biases saturate)."""
    q = OrderedDict()
    in_scale, in_max = input_scale(model, a, norm)
    q["in_scale"], q["in_max"] = in_scale, in_max
    mmax = math.ldexp(1.0, a["weight_bits"] - 1) - 1.0
    bmax = math.ldexp(1.0, a["bias_bits"] - 1) - 1.0
    mem_range = math.ldexp(1.0, a["membrane_bits"] - 1) - 1.0
    cur_range = math.inf if a["current_bits"] >= 64 else \
        (math.ldexp(1.0, a["current_bits"] - 1) - 1.0) * math.ldexp(1.0, a["current_shift"])
    tmax = math.ldexp(1.0, a["threshold_bits"]) - 1.0
    gt = 0 if a["threshold_ge"] else 1
    e_lo = max(a["weight_exp_min"], 0)
    e_hi = a["weight_exp_max"]
    while e_hi > e_lo and math.ldexp(mmax, e_hi) > 2147483647.0:
        e_hi -= 1
    first = None if model.cfg.is_frames else "patch_embed1.proj_conv"
    u_in = input_offsets(norm, in_scale, in_max) if first else None
    bm_of = parse_bits_min(bits_min, [c for c, _, _, _ in conv_units(model)], a)
    for cname, conv, bn, lname in conv_units(model):
        M = bm_of.get(cname, 0)
        vth = 1.0
        alpha, shift = bn_fold(bn)
        W = conv.weight.detach().float()
        cout = W.shape[0]
        wf = W * alpha.reshape(-1, *([1] * (W.dim() - 1)))
        sc = in_scale if cname == first else 1.0
        wr = ((wf.double() * sc) * 0.5).reshape(cout, -1)
        if conv.bias is not None:
            t = conv.bias.detach().float() * alpha
            bf = t + shift
        else:
            bf = shift
        br = bf.double() * 0.5
        group = 1 if a["per_channel"] else cout
        mant = torch.zeros(cout, wr.shape[1], dtype=torch.int64)
        wexp = torch.zeros(cout, dtype=torch.int64)
        bmant = torch.zeros(cout, dtype=torch.int64)
        bexp = torch.zeros(cout, dtype=torch.int64)
        theta = torch.zeros(cout, dtype=torch.int64)
        delta = torch.zeros(cout, dtype=torch.float64)
        for c0 in range(0, cout, group):
            g = slice(c0, c0 + group)
            maxw = wr[g].abs().max().item()
            maxb = br[g].abs().max().item()
            rx = rh = headroom * vth
            dmin = rh / mem_range
            dmin = max(dmin, rx / cur_range)
            dmin = max(dmin, vth / (tmax * math.ldexp(1.0, a["threshold_shift"])))
            dbias = maxb / (bmax * math.ldexp(1.0, a["bias_exp_max"]))
            if M > 0:  # the weights keep M bits; larger biases saturate
                cap = maxw / (math.ldexp(1.0, a["current_shift"]) * (math.ldexp(1.0, M - 1) - 1.0))
                dbias = min(dbias, cap)
            dmin = max(dmin, dbias)
            K = maxw / (math.ldexp(1.0, a["current_shift"]) * mmax)
            e, d0 = e_lo, dmin
            if maxw > 0:
                for ee in range(e_hi, e_lo - 1, -1):
                    if math.ldexp(K, -ee) >= dmin:
                        e, d0 = ee, math.ldexp(K, -ee)
                        break
            mf = math.floor((vth / d0 - gt) / math.ldexp(1.0, a["threshold_shift"]))
            mf = min(mf, tmax)
            if mf < 1.0:
                raise ValueError(f"{cname}: cannot be represented")
            th = math.ldexp(mf, a["threshold_shift"])
            if th > mem_range:
                raise ValueError(f"{lname}: threshold beyond the membrane")
            dl = vth / (th + gt)
            wunit = dl * math.ldexp(1.0, a["current_shift"] + e)
            mt = rnd(wr[g] / wunit).clamp(-mmax, mmax)
            mant[g] = mt.long()
            wexp[g] = e
            theta[g] = int(th)
            delta[g] = dl
            for c in range(c0, c0 + group):
                b = br[c].item() / dl
                if cname == first and u_in is not None and len(u_in) == conv.in_channels:
                    # the encoding's rounding offset, cancelled through the bias
                    row = mant[c].tolist()
                    per = len(row) // len(u_in)
                    unit = math.ldexp(1.0, a["current_shift"] + e)
                    corr = 0.0
                    for j, mv in enumerate(row):
                        corr += (mv * unit) * u_in[j // per]
                    b = b - corr
                be = None
                for ex in range(0, a["bias_exp_max"] + 1):
                    if abs(rnd(math.ldexp(b, -ex))) <= bmax:
                        be = ex
                        break
                bm = None
                if be is None and M > 0:
                    be, bm = a["bias_exp_max"], (-bmax if b < 0 else bmax)
                if be is None:
                    raise ValueError(f"{cname}: bias of channel {c} cannot be represented")
                bmant[c] = int(rnd(math.ldexp(b, -be))) if bm is None else int(bm)
                bexp[c] = be
        q[cname + ".weight"] = mant.reshape(W.shape)
        q[cname + ".weight_exp"] = wexp
        q[cname + ".bias"] = bmant
        q[cname + ".bias_exp"] = bexp
        q[lname + ".threshold"] = theta
        q[lname + ".delta"] = delta
    # attention neurons
    shift = a["current_shift"]
    for name, m in model.named_modules():
        if isinstance(m, (ref.QKAttention, ref.SSA)):
            units = 8 if isinstance(m, ref.SSA) else 1
            th = (units << shift) - (0 if a["threshold_ge"] else 1)
            dl = (1.0 / 16.0 if isinstance(m, ref.SSA) else 0.5) / math.ldexp(1.0, shift)
            C = m.proj_conv.in_channels
            n = m.num_heads if (isinstance(m, ref.QKAttention) and m.mode == "token") else C
            q[name + ".attn_lif.threshold"] = torch.full((n,), th, dtype=torch.int64)
            q[name + ".attn_lif.delta"] = torch.full((n,), dl, dtype=torch.float64)
            q[name + ".attn_lif.in_weight"] = 1
    # head
    W = model.head.weight.detach().float()
    b = model.head.bias.detach().float()
    cfg = model.cfg
    side = cfg.img_size
    # tokens of the last stage: the last stage's grid (qkf_config_token_grid)
    TN = cfg.T * last_tokens(model)
    maxw = W.double().abs().max().item()
    sh = maxw / mmax if maxw > 0 else 1.0
    q["head.weight"] = rnd(W.double() / sh).clamp(-mmax, mmax).long()
    q["head.weight_exp"] = torch.zeros(1, dtype=torch.int64)
    q["head.bias"] = torch.tensor([int(rnd((float(v) * float(TN)) / sh)) for v in b.tolist()],
                                  dtype=torch.int64)
    q["head.scale"] = sh / float(TN)
    del side
    return q


def last_tokens(model):
    """Tokens of the final stage: run a zero input through the float model's shapes."""
    cfg = model.cfg
    x = torch.zeros(1, cfg.T, cfg.in_channels, cfg.img_size, cfg.img_size) if cfg.is_frames \
        else torch.zeros(1, cfg.in_channels, cfg.img_size, cfg.img_size)
    x = model.to_time_major(x)
    with torch.no_grad():
        for i in range(1, model.n_stages + 1):
            x = getattr(model, f"patch_embed{i}")(x)
            for blk in getattr(model, f"stage{i}"):
                x = blk(x)
    return x.shape[3] * x.shape[4]


# ---- the integer forward ------------------------------------------------------------------

class IntRun:
    def __init__(self, model, q, a):
        self.model, self.q, self.a = model, q, a
        self.traces = OrderedDict()

    def weight(self, cname):
        m = self.q[cname + ".weight"]
        e = self.q[cname + ".weight_exp"]
        return m * (torch.ones_like(e) << e).reshape(-1, *([1] * (m.dim() - 1)))

    def bias(self, cname):
        return self.q[cname + ".bias"] * (torch.ones_like(self.q[cname + ".bias_exp"])
                                          << self.q[cname + ".bias_exp"])

    def lif(self, lname, P, bias, theta, chan_axis):
        """P [T, ...] int64 -> spikes [T, ...] int64; bias/theta per channel on chan_axis."""
        a = self.a
        shape = [1] * (P.dim() - 1)
        shape[chan_axis - 1] = -1
        bias = bias.reshape(shape) if isinstance(bias, torch.Tensor) else bias
        theta = theta.reshape(shape)
        V = torch.zeros_like(P[0])
        S = []
        for t in range(P.shape[0]):
            A = reduce(P[t], a["current_bits"], a["current_wrap"])
            dec = V if a["leak"] == LEAK_NONE else torch.div(V, 2, rounding_mode="trunc")
            h = dec + A * (1 << a["current_shift"]) + bias
            h = reduce(h, a["membrane_bits"], a["membrane_wrap"])
            s = (h >= theta) if a["threshold_ge"] else (h > theta)
            if a["reset_subtract"]:
                V = torch.where(s, reduce(h - theta, a["membrane_bits"], a["membrane_wrap"]), h)
            else:
                V = torch.where(s, torch.zeros_like(h), h)
            S.append(s.long())
        out = torch.stack(S)
        T, B = out.shape[:2]
        self.traces[lname] = out.reshape(T, B, -1).to(torch.uint8)
        return out

    def conv_lif(self, cname, lname, x, one_d, pool=False, tb=False):
        """x [T, B, C, ...] int64 -> spikes [T, B, Cout, ...]. tb: one membrane per neuron over
        the T*B frames in the order (t0,b0),(t0,b1),... (the official SSA proj_lif quirk)."""
        conv = dict(self.model.named_modules())[cname]
        T, B = x.shape[:2]
        W = self.weight(cname).double()
        xf = x.flatten(0, 1).double()
        if one_d:
            S = Fn.conv1d(xf, W)
        else:
            S = Fn.conv2d(xf, W, stride=conv.stride, padding=conv.padding)
        S = reduce(S.round().long(), 32, 1)  # exact integers; the int32 wrap of the contract
        if pool:  # int32 values are exact in float64: max of them is exact
            S = Fn.max_pool2d(S.double(), 3, 2, 1).long()
        S = S.reshape(T, B, *S.shape[1:])
        if not tb:
            return self.lif(lname, S, self.bias(cname), self.q[lname + ".threshold"], 2)
        s = self.lif(lname, S.reshape(T * B, 1, *S.shape[2:]), self.bias(cname),
                     self.q[lname + ".threshold"], 2)
        self.traces[lname] = s.reshape(T, B, -1).to(torch.uint8)
        return s.reshape(T, B, *S.shape[2:])

    def speds(self, path, mod, x):
        outs = [x]

        def unit(name, inp):
            return self.conv_lif(f"{path}.{name}_conv", f"{path}.{name}_lif", inp, False,
                                 name in mod.pools)
        for name in mod.main:
            outs.append(unit(name, outs[-1]))
        return outs[-1] + unit(mod.res, outs[mod.tap])

    def mlp(self, path, mod, x):
        for n in mod.names:
            x = self.conv_lif(f"{path}.{n}_conv", f"{path}.{n}_lif", x, False)
        return x

    def qk(self, path, mod, x):
        T, B, C, H, W = x.shape
        N, nh = H * W, mod.num_heads
        flat = x.reshape(T, B, C, N)
        qs = self.conv_lif(f"{path}.q_conv", f"{path}.q_lif", flat, True)
        ks = self.conv_lif(f"{path}.k_conv", f"{path}.k_lif", flat, True)
        th = self.q[f"{path}.attn_lif.threshold"]
        wgt = self.q[f"{path}.attn_lif.in_weight"]
        if mod.mode == "token":
            count = qs.reshape(T, B, nh, C // nh, N).sum(dim=3)          # [T,B,nh,N]
            attn = self.lif(f"{path}.attn_lif", count * wgt, 0, th, 2)
            y = (attn.unsqueeze(3) * ks.reshape(T, B, nh, C // nh, N)).reshape(T, B, C, N)
        else:
            count = qs.sum(dim=3)                                         # [T,B,C]
            attn = self.lif(f"{path}.attn_lif", count * wgt, 0, th, 2)
            y = ks * attn.unsqueeze(-1)
        s = self.conv_lif(f"{path}.proj_conv", f"{path}.proj_lif", y, True)
        return s.reshape(T, B, C, H, W)

    def ssa(self, path, mod, x):
        T, B, C, H, W = x.shape
        N, nh = H * W, mod.num_heads
        d = C // nh
        flat = x.reshape(T, B, C, N)

        def branch(n):
            s = self.conv_lif(f"{path}.{n}_conv", f"{path}.{n}_lif", flat, True)
            return s.reshape(T, B, nh, d, N).transpose(3, 4).double()   # [T,B,nh,N,d]
        qs, ks, vs = branch("q"), branch("k"), branch("v")
        P = (qs @ (ks.transpose(3, 4) @ vs)).round().long()             # exact integers
        P = reduce(P, 32, 1).transpose(3, 4).reshape(T, B, C, N)
        th = self.q[f"{path}.attn_lif.threshold"]
        a = self.lif(f"{path}.attn_lif", P * self.q[f"{path}.attn_lif.in_weight"], 0, th, 2)
        s = self.conv_lif(f"{path}.proj_conv", f"{path}.proj_lif", a, True,
                          tb=getattr(mod, "tb_compat", False))
        return s.reshape(T, B, C, H, W)

    def forward(self, x):
        m, q = self.model, self.q
        cfg = m.cfg
        if cfg.is_frames:
            X = x.permute(1, 0, 2, 3, 4).long()
        else:
            xi = torch.floor(x.double() / q["in_scale"] + 0.5).clamp(-q["in_max"], q["in_max"])
            X = xi.long().unsqueeze(0).repeat(cfg.T, 1, 1, 1, 1)
        for i in range(1, m.n_stages + 1):
            X = self.speds(f"patch_embed{i}", getattr(m, f"patch_embed{i}"), X)
            for j, blk in enumerate(getattr(m, f"stage{i}")):
                p = f"stage{i}.{j}"
                if isinstance(blk, ref.QKBlock):
                    X = X + self.qk(f"{p}.tssa", blk.tssa, X)
                else:
                    X = X + self.ssa(f"{p}.{blk.attn_name}", getattr(blk, blk.attn_name), X)
                X = X + self.mlp(f"{p}.mlp", blk.mlp, X)
        F = X.flatten(3).sum(3).sum(0)                                  # [B, C] int64
        Wh = q["head.weight"] * (1 << int(q["head.weight_exp"][0]))
        li = (F.unsqueeze(1) * Wh.unsqueeze(0)).sum(-1) + q["head.bias"]
        logits = (li.double() * q["head.scale"]).float()
        return li, logits, self.traces


def forward_int(model, q, a, x):
    return IntRun(model, q, a).forward(x)
