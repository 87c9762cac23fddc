#!/usr/bin/python3
"""Our own PyTorch reference of QKFormer (Zhou et al., NeurIPS 2024), written from the spec
(/work/shared/spec/qkformer.md, sections 1-5 and "Decisions for qkf").

It builds all four official variants (cifar, imagenet, dvs128, cifar10dvs) with state_dict keys
identical to the official code, so official checkpoints load with load_state_dict(strict=True),
and it is the oracle the C library is tested against (tools/reference/make_fixtures.py).

Layout conventions (as in the official code): LIF layers see [T, B, ...] and integrate over the
leading axis; convolutions and BatchNorm see [T*B, ...] (time-major flattening). Everything runs
in float32; BatchNorm is always used in eval mode with its running statistics.

Differences from the official code, all deliberate:
  * the LIF neuron is implemented here (no SpikingJelly), forward only;
  * every LIF runs per sample over T. The official SSA proj_lif integrates over the flattened
    T*B axis (spec section 3, "QUIRK"); QKFormer(cfg, tb_compat=True) reproduces that;
  * qk_attn="channel" builds QKCA (spec "Decisions" 2), which the official code lacks;
  * num_heads is used as given for every attention (the official cifar/dvs code hard-codes
    8 / 16 and ignores the argument).

Needs only torch (Debian python3-torch); h5py is imported lazily by the checkpoint helpers.
"""

import dataclasses
import json
import os
import sys
from collections import OrderedDict

try:
    import torch
except ImportError:  # pragma: no cover
    # Debian's python3-torch lives in /usr/bin/python3; another python3 may come first on PATH
    # (pyenv, a venv). Re-run the calling script under the system interpreter in that case.
    _SYS_PY = "/usr/bin/python3"
    if os.path.exists(_SYS_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYS_PY) \
            and not os.environ.get("QKF_NO_REEXEC"):
        os.environ["QKF_NO_REEXEC"] = "1"
        os.execv(_SYS_PY, [_SYS_PY] + sys.argv)
    raise
import torch.nn as nn

VARIANTS = ("cifar", "imagenet", "dvs128", "cifar10dvs")

# Official configurations (constructors in the official model files, spec section 5).
PRESETS = {
    "cifar10": dict(variant="cifar", img_size=32, in_channels=3, num_classes=10,
                    embed_dims=384, num_heads=8, mlp_ratio=4.0, depths=4, T=4),
    "cifar100": dict(variant="cifar", img_size=32, in_channels=3, num_classes=100,
                     embed_dims=384, num_heads=8, mlp_ratio=4.0, depths=4, T=4),
    "imagenet-10-384": dict(variant="imagenet", img_size=224, in_channels=3, num_classes=1000,
                            embed_dims=384, num_heads=6, mlp_ratio=4.0, depths=10, T=4),
    "imagenet-10-512": dict(variant="imagenet", img_size=224, in_channels=3, num_classes=1000,
                            embed_dims=512, num_heads=8, mlp_ratio=4.0, depths=10, T=4),
    "imagenet-10-768": dict(variant="imagenet", img_size=224, in_channels=3, num_classes=1000,
                            embed_dims=768, num_heads=12, mlp_ratio=4.0, depths=10, T=4),
    "dvs128-gesture": dict(variant="dvs128", img_size=128, in_channels=2, num_classes=11,
                           embed_dims=256, num_heads=16, mlp_ratio=4.0, depths=4, T=16),
    "cifar10-dvs": dict(variant="cifar10dvs", img_size=128, in_channels=2, num_classes=10,
                        embed_dims=256, num_heads=16, mlp_ratio=1.0, depths=4, T=16),
}
# The bare variant names stand for their first official preset (as on the C side).
PRESETS["cifar"] = PRESETS["cifar10"]
PRESETS["imagenet"] = PRESETS["imagenet-10-384"]
PRESETS["dvs128"] = PRESETS["dvs128-gesture"]
PRESETS["cifar10dvs"] = PRESETS["cifar10-dvs"]

# Input normalisation used in training (spec section 6), for convert_pth.py --preset-norm.
PRESET_NORM = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Official parameter counts (training logs / spec section 5), checked by test_reference.py.
OFFICIAL_PARAM_COUNTS = {
    "cifar10": 6_706_234,
    "cifar100": 6_740_884,
    "imagenet-10-384": 16_473_688,
    "imagenet-10-512": 29_079_336,
    "imagenet-10-768": 64_962_760,
    "dvs128-gesture": 1_999_371,
    "cifar10-dvs": 1_504_138,
}


@dataclasses.dataclass
class QKFConfig:
    """Model configuration; field names are the HDF5 root attributes of a qkf checkpoint."""
    variant: str = "cifar"
    img_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    embed_dims: int = 384     # channels of the last stage
    num_heads: int = 8        # heads of every attention
    mlp_ratio: float = 4.0
    depths: int = 4           # cifar {1,1,depths-2}; imagenet {1,2,depths-3}; dvs ignored
    T: int = 4
    qk_attn: str = "token"    # stages 1-2 attention: "token" (QKTA) or "channel" (QKCA)

    @classmethod
    def preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
        d = dict(PRESETS[name])
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**d).validated()

    @property
    def is_frames(self):
        return self.variant in ("dvs128", "cifar10dvs")

    def stage_blocks(self):
        """Blocks per stage; the last entry is the SSA stage."""
        if self.variant == "cifar":
            return [1, 1, self.depths - 2]
        if self.variant == "imagenet":
            return [1, 2, self.depths - 3]
        return [1, 1]  # dvs: one QK block, one SSA block, whatever depths says

    def stage_dims(self):
        D = self.embed_dims
        if self.variant in ("cifar", "imagenet"):
            return [D // 4, D // 2, D]
        return [D // 2, D]

    def validated(self):
        """Checks the fields and returns self; raises ValueError naming the bad field."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant {self.variant!r} not in {VARIANTS}")
        if self.qk_attn not in ("token", "channel"):
            raise ValueError(f"qk_attn {self.qk_attn!r} must be 'token' or 'channel'")
        for f in ("img_size", "in_channels", "num_classes", "embed_dims", "num_heads", "T"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1")
        if self.mlp_ratio <= 0:
            raise ValueError("mlp_ratio must be > 0")
        if min(self.stage_blocks()) < 1:
            raise ValueError(f"depths {self.depths} too small for variant {self.variant}")
        # The official reshapes use H//2 etc., so every pooling/stride stage needs an even side.
        div = {"cifar": 4, "imagenet": 16, "dvs128": 16, "cifar10dvs": 16}[self.variant]
        if self.img_size % div:
            raise ValueError(f"img_size {self.img_size} must be a multiple of {div} "
                             f"for variant {self.variant}")
        if self.embed_dims % (16 if self.is_frames else 8):
            raise ValueError(f"embed_dims {self.embed_dims} does not split into the stages")
        for d in self.stage_dims():
            if d % self.num_heads:
                raise ValueError(f"stage dim {d} not divisible by num_heads {self.num_heads}")
        return self

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# ---- LIF -----------------------------------------------------------------------------------

class LIF(nn.Module):
    """Multi-step LIF, tau = 2, decay_input, hard reset to 0 (spec section 1), forward only.

    Integrates over axis 0 of its input; the membrane has the shape of one slice and starts at 0.
    Per step:  h = v + (x - v) / 2 ;  s = (h >= vth) ;  v = h * (1 - s).
    Dividing by 2.0 is exact in float32, so this equals SpikingJelly's `v + (x - v) * (1/tau)`.
    When `recorder` is a list, every call appends (name, vth, s, v, h) stacked over axis 0.
    """

    def __init__(self, vth=1.0):
        super().__init__()
        self.vth = float(vth)
        self.recorder = None
        self.trace_name = None

    def extra_repr(self):
        return f"vth={self.vth}"

    def forward(self, x):
        x = x.float()
        v = torch.zeros_like(x[0])
        keep = self.recorder is not None
        S, V, H = [], [], []
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / 2.0
            s = (h >= self.vth).float()
            v = h * (1.0 - s)
            S.append(s)
            if keep:
                V.append(v)
                H.append(h)
        out = torch.stack(S)
        if keep:
            self.recorder.append((self.trace_name, self.vth, out, torch.stack(V), torch.stack(H)))
        return out


def _bn(dim, one_d):
    return nn.BatchNorm1d(dim) if one_d else nn.BatchNorm2d(dim)


# ---- attention -----------------------------------------------------------------------------

class QKAttention(nn.Module):
    """Q-K attention. mode "token" = official Token_QK_Attention (QKTA), "channel" = QKCA.

    Input and output [T, B, C, H, W]. Heads are contiguous channel groups of C/heads.
    QKTA: count Q over the channels of each head per token -> attn_lif [T,B,heads,1,N] ->
          mask K per (head, token).
    QKCA: count Q over the N tokens per channel -> attn_lif [T,B,C] -> mask K per channel.
    Then proj Conv1d (bias) + BN1d + proj_lif.
    """

    def __init__(self, dim, num_heads, mode="token"):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.mode = mode
        self.q_conv = nn.Conv1d(dim, dim, kernel_size=1, bias=False)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = LIF(1.0)
        self.k_conv = nn.Conv1d(dim, dim, kernel_size=1, bias=False)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_lif = LIF(1.0)
        self.attn_lif = LIF(0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, bias=True)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = LIF(1.0)

    def forward(self, x):
        T, B, C, H, W = x.shape
        N, nh = H * W, self.num_heads
        flat = x.reshape(T * B, C, N)
        q = self.q_lif(self.q_bn(self.q_conv(flat)).reshape(T, B, C, N))
        k = self.k_lif(self.k_bn(self.k_conv(flat)).reshape(T, B, C, N))
        if self.mode == "token":
            count = q.reshape(T, B, nh, C // nh, N).sum(dim=3, keepdim=True)  # [T,B,nh,1,N]
            attn = self.attn_lif(count)
            y = (attn * k.reshape(T, B, nh, C // nh, N)).reshape(T, B, C, N)
        else:
            count = q.sum(dim=3)                                               # [T,B,C]
            attn = self.attn_lif(count)
            y = k * attn.unsqueeze(-1)
        y = self.proj_bn(self.proj_conv(y.reshape(T * B, C, N))).reshape(T, B, C, H, W)
        return self.proj_lif(y)


class SSA(nn.Module):
    """Spiking self-attention (official Spiking_Self_Attention), input/output [T, B, C, H, W].

    Per head (contiguous channel groups of d = C/heads): Y = Q (K^T V) * 0.125 with Q, K, V the
    [N, d] spike maps; attn_lif (vth 0.5) on Y laid out [T,B,C,N] with c = head*d + j; then proj
    Conv1d (bias) + BN1d + proj_lif. All products are of small integers, hence exact in float32.
    With tb_compat the proj_lif integrates over the flattened T*B axis like the official code.
    """

    def __init__(self, dim, num_heads):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.tb_compat = False
        for n in ("q", "k", "v"):
            setattr(self, f"{n}_conv", nn.Conv1d(dim, dim, kernel_size=1, bias=False))
            setattr(self, f"{n}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{n}_lif", LIF(1.0))
        self.attn_lif = LIF(0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, bias=True)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = LIF(1.0)
        # (The official module also holds an unused MaxPool1d "qkv_mp"; it has no state.)

    def forward(self, x):
        T, B, C, H, W = x.shape
        N, nh = H * W, self.num_heads
        d = C // nh
        flat = x.reshape(T * B, C, N)

        def branch(n):  # spikes as [T, B, heads, N, d]
            cur = getattr(self, f"{n}_bn")(getattr(self, f"{n}_conv")(flat))
            s = getattr(self, f"{n}_lif")(cur.reshape(T, B, C, N))
            return s.reshape(T, B, nh, d, N).transpose(3, 4)

        q, k, v = branch("q"), branch("k"), branch("v")
        y = (q @ (k.transpose(3, 4) @ v)) * 0.125           # K^T V first: [d, d] per head
        y = y.transpose(3, 4).reshape(T, B, C, N)
        a = self.attn_lif(y)
        cur = self.proj_bn(self.proj_conv(a.reshape(T * B, C, N)))
        if self.tb_compat:
            # Official quirk: time axis = T*B in the order (t0,b0),(t0,b1),...,(t1,b0),...
            s = self.proj_lif(cur.reshape(T * B, 1, C, N))
        else:
            s = self.proj_lif(cur.reshape(T, B, C, N))
        return s.reshape(T, B, C, H, W)


class MLP(nn.Module):
    """SMLP: 1x1 conv (bias) + BN2d + LIF, twice. Names mlp1_/mlp2_ (cifar, dvs) or fc1_/fc2_
    (imagenet), as in the official code."""

    def __init__(self, dim, hidden, names=("mlp1", "mlp2")):
        super().__init__()
        self.names = names
        for n, cin, cout in ((names[0], dim, hidden), (names[1], hidden, dim)):
            setattr(self, f"{n}_conv", nn.Conv2d(cin, cout, kernel_size=1, bias=True))
            setattr(self, f"{n}_bn", nn.BatchNorm2d(cout))
            setattr(self, f"{n}_lif", LIF(1.0))

    def forward(self, x):
        for n in self.names:
            T, B = x.shape[:2]
            cur = getattr(self, f"{n}_bn")(getattr(self, f"{n}_conv")(x.flatten(0, 1)))
            x = getattr(self, f"{n}_lif")(cur.reshape(T, B, *cur.shape[1:]))
        return x


class QKBlock(nn.Module):
    """Official TokenSpikingTransformer: x + attention(x), then x + MLP(x). The attention
    attribute is "tssa" in every variant, whether QKTA or QKCA."""

    def __init__(self, dim, num_heads, hidden, mode, mlp_names):
        super().__init__()
        self.tssa = QKAttention(dim, num_heads, mode)
        self.mlp = MLP(dim, hidden, mlp_names)

    def forward(self, x):
        x = x + self.tssa(x)
        return x + self.mlp(x)


class SSABlock(nn.Module):
    """Official SpikingTransformer; the SSA attribute is "ssa" (cifar, dvs) or "attn"
    (imagenet)."""

    def __init__(self, dim, num_heads, hidden, attn_name, mlp_names):
        super().__init__()
        self.attn_name = attn_name
        setattr(self, attn_name, SSA(dim, num_heads))
        self.mlp = MLP(dim, hidden, mlp_names)

    def forward(self, x):
        x = x + getattr(self, self.attn_name)(x)
        return x + self.mlp(x)


# ---- patch embeddings (SPEDS) ----------------------------------------------------------------

class SPEDS(nn.Module):
    """A patch-embedding module described as data (spec section 4).

    units: (name, cin, cout, kernel, stride, pool_attr) in official registration order; each unit
           is {name}_conv (bias-free) -> {name}_bn -> optional MaxPool2d(3,2,1) on the BN output
           -> {name}_lif.
    main:  unit names of the main chain, run in order.
    res:   the shortcut unit; tap = which main-chain output feeds it (0 = the block input,
           1 = the output of main[0], ...). Output = main-chain spikes + shortcut spikes.
    """

    def __init__(self, units, main, res, tap):
        super().__init__()
        self.main, self.res, self.tap = list(main), res, tap
        self.pools = {}
        for name, cin, cout, k, stride, pool in units:
            setattr(self, f"{name}_conv",
                    nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(cout))
            if pool:
                setattr(self, pool, nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
                self.pools[name] = pool
            setattr(self, f"{name}_lif", LIF(1.0))

    def unit(self, name, x):
        T, B = x.shape[:2]
        cur = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x.flatten(0, 1)))
        if name in self.pools:
            cur = getattr(self, self.pools[name])(cur)
        return getattr(self, f"{name}_lif")(cur.reshape(T, B, *cur.shape[1:]))

    def forward(self, x):
        outs = [x]
        for name in self.main:
            outs.append(self.unit(name, outs[-1]))
        return outs[-1] + self.unit(self.res, outs[self.tap])


def make_patch_embed(variant, first, in_ch, e):
    """The official PatchEmbedInit (first=True) or PatchEmbeddingStage of a variant with
    embed_dims e (the argument the official constructor receives)."""
    if variant == "cifar":
        if first:  # no downsampling; stride-1 shortcut from the first conv's spikes
            units = [("proj", in_ch, e // 2, 3, 1, None), ("proj1", e // 2, e, 3, 1, None),
                     ("proj_res", e // 2, e, 1, 1, None)]
            return SPEDS(units, ["proj", "proj1"], "proj_res", 1)
        units = [("proj3", e // 2, e, 3, 1, None), ("proj4", e, e, 3, 1, "proj4_maxpool"),
                 ("proj_res", e // 2, e, 1, 2, None)]
        return SPEDS(units, ["proj3", "proj4"], "proj_res", 0)
    if variant == "imagenet":
        if first:  # pools after conv 1 and 2; stride-2 shortcut from conv 1's spikes
            units = [("proj", in_ch, e // 2, 3, 1, "proj_maxpool"),
                     ("proj1", e // 2, e, 3, 1, "proj1_maxpool"), ("proj2", e, e, 3, 1, None),
                     ("proj_res", e // 2, e, 1, 2, None)]
            return SPEDS(units, ["proj", "proj1", "proj2"], "proj_res", 1)
        units = [("proj3", e // 2, e, 3, 1, "proj3_maxpool"), ("proj4", e, e, 3, 1, None),
                 ("proj_res", e // 2, e, 1, 2, None)]
        return SPEDS(units, ["proj3", "proj4"], "proj_res", 0)
    # dvs128 / cifar10dvs
    if first:  # 4 convs, pools after convs 2-4; stride-4 shortcut from conv 2's spikes
        units = [("proj", in_ch, e // 8, 3, 1, None), ("proj1", e // 8, e // 4, 3, 1, "maxpool1"),
                 ("proj2", e // 4, e // 2, 3, 1, "maxpool2"),
                 ("proj3", e // 2, e, 3, 1, "maxpool3"), ("proj_res", e // 4, e, 1, 4, None)]
        return SPEDS(units, ["proj", "proj1", "proj2", "proj3"], "proj_res", 2)
    # The dvs stage embedding names its first conv "proj", not "proj3".
    units = [("proj", e // 2, e, 3, 1, None), ("proj4", e, e, 3, 1, "proj4_maxpool"),
             ("proj_res", e // 2, e, 1, 2, None)]
    return SPEDS(units, ["proj", "proj4"], "proj_res", 0)


# ---- the model -------------------------------------------------------------------------------

class QKFormer(nn.Module):
    """QKFormer for one QKFConfig. forward(x): x is [B,C,H,W] images (repeated over T) or, for
    the dvs variants, [B,T,C,H,W] frames. Returns logits [B, num_classes]."""

    def __init__(self, cfg, tb_compat=False):
        super().__init__()
        cfg = cfg.validated()
        self.cfg = cfg
        v = cfg.variant
        mlp_names = ("fc1", "fc2") if v == "imagenet" else ("mlp1", "mlp2")
        ssa_name = "attn" if v == "imagenet" else "ssa"
        dims, blocks = cfg.stage_dims(), cfg.stage_blocks()
        n_stages = len(dims)

        embeds, stages = [], []
        for i, (dim, nb) in enumerate(zip(dims, blocks)):
            embeds.append(make_patch_embed(v, i == 0, cfg.in_channels, dim))
            hidden = int(dim * cfg.mlp_ratio)
            if i == n_stages - 1:
                blks = [SSABlock(dim, cfg.num_heads, hidden, ssa_name, mlp_names)
                        for _ in range(nb)]
            else:
                blks = [QKBlock(dim, cfg.num_heads, hidden, cfg.qk_attn, mlp_names)
                        for _ in range(nb)]
            stages.append(nn.ModuleList(blks))

        # Registration order follows the official code so state_dict() lists keys in the same
        # order: cifar/imagenet register all patch embeddings first, dvs interleaves them.
        if cfg.is_frames:
            for i in range(n_stages):
                setattr(self, f"patch_embed{i + 1}", embeds[i])
                setattr(self, f"stage{i + 1}", stages[i])
        else:
            for i in range(n_stages):
                setattr(self, f"patch_embed{i + 1}", embeds[i])
            for i in range(n_stages):
                setattr(self, f"stage{i + 1}", stages[i])
        self.n_stages = n_stages
        self.head = nn.Linear(dims[-1], cfg.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # official init of the head
        nn.init.zeros_(self.head.bias)
        self.set_tb_compat(tb_compat)

    def set_tb_compat(self, on):
        self.tb_compat = bool(on)
        for m in self.modules():
            if isinstance(m, SSA):
                m.tb_compat = self.tb_compat

    def to_time_major(self, x):
        """Network input [T, B, C, H, W] from the model input."""
        cfg = self.cfg
        if cfg.is_frames:
            if x.dim() != 5:
                raise ValueError(f"{cfg.variant} expects frames [B,T,C,H,W], got {tuple(x.shape)}")
            return x.float().permute(1, 0, 2, 3, 4)
        if x.dim() != 4:
            raise ValueError(f"{cfg.variant} expects images [B,C,H,W], got {tuple(x.shape)}")
        return x.float().unsqueeze(0).repeat(cfg.T, 1, 1, 1, 1)

    def forward(self, x):
        x = self.to_time_major(x)
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"stage{i}"):
                x = blk(x)
        feat = x.flatten(3).mean(3).mean(0)  # mean over tokens, then over T -> [B, C]
        return self.head(feat)

    # -- tracing --

    def lif_layers(self):
        """(module path, LIF) for every LIF layer, in registration order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, LIF)]

    def run_traced(self, x):
        """Forward pass recording every LIF layer. Returns (logits, traces) where traces is an
        OrderedDict in call (forward) order: name -> dict(vth, s, v, h), each [T, B, n] with n
        the per-sample flattening of the layer's [C, H, W] / [C, N] / [heads, 1, N] / [C]."""
        rec = []
        for name, m in self.lif_layers():
            m.trace_name, m.recorder = name, rec
        try:
            logits = self.forward(x)
        finally:
            for _, m in self.lif_layers():
                m.recorder = None
        B = x.shape[0]
        traces = OrderedDict()
        for name, vth, s, v, h in rec:
            T = s.shape[0] * s.shape[1] // B  # tb_compat layers come as [T*B, 1, ...]
            traces[name] = dict(vth=vth, s=s.reshape(T, B, -1), v=v.reshape(T, B, -1),
                                h=h.reshape(T, B, -1))
        return logits, traces


def num_params(model):
    """Trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- BatchNorm randomisation for realistic firing -------------------------------------------

class _Stop(Exception):
    pass


def _capture_input(model, x, module, pre=None):
    """Runs model(x) until `module` is called and returns its first input (the rest of the
    forward pass is skipped). `model` may be any module containing `module`. `pre` = optional
    (module, hook) forward-pre-hook to add."""
    got = {}

    def grab(m, args):
        got["x"] = args[0].clone()
        raise _Stop

    hooks = [module.register_forward_pre_hook(grab)]
    if pre is not None:
        hooks.append(pre[0].register_forward_pre_hook(pre[1]))
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for hk in hooks:
            hk.remove()
    if "x" not in got:
        raise RuntimeError("module not reached in the forward pass")
    return got["x"]


def _bisect(rate_of, target, lo=-8.0, hi=8.0, iters=24, back_off=1e-3):
    """Shift d in [lo, hi] with rate_of(d) ~= target; rate_of grows (almost) monotonically.
    Bisection converges onto a jump of the rate, i.e. a shift that puts some membrane exactly
    on its threshold; stepping back by `back_off` leaves that membrane >= back_off/2 below."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if rate_of(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi) - back_off


@torch.no_grad()
def randomize_bn(model, x, gen, rate=(0.08, 0.30), attn_rate=(0.20, 0.45),
                 ssa_rate=(0.2, 0.4), ssa_attn_rate=(0.05, 0.25), ssa_max_rate=0.5,
                 qkca_silent=(0.45, 0.7), gamma=(1.0, 2.0), beta=(-0.5, 0.5),
                 ssa_beta=(-4.0, 4.0), log=None):
    """Makes every LIF layer fire at a realistic rate on inputs like x. In forward order, for
    each BatchNorm `P_bn` feeding the LIF `P_lif`:
      1. running_mean / running_var := mean and (biased) variance of the BN's input on x;
      2. weight ~ U(gamma), bias ~ U(beta) per channel;
      3. the bias is shifted by one scalar, found by bisection, so that P_lif fires at a target
         rate drawn from U(rate). The shift adds to the LIF input exactly (per-channel max-pool
         commutes with it), so the LIF input is captured once and the bisection runs locally.
    Special cases, because attention LIFs have no BatchNorm of their own:
      * QKTA q_bn: its attn_lif fires iff any Q bit of the head fired, so q aims at
        p_q = 1 - (1 - p_attn)^(1/d) with p_attn ~ U(attn_rate), d = channels per head;
      * QKCA q_bn: a channel's attention fires iff any of its N tokens fired, so a random
        fraction U(qkca_silent) of the channels is silenced (bias -30) and the rest aim at
        U(rate);
      * SSA q/k/v_bn draw their bias from the wider U(ssa_beta) (some hot channels, as the
        attention product needs) and aim at U(ssa_rate); then one common extra shift of the
        three biases aims the SSA attn_lif at U(ssa_attn_rate) (bisection through the forward
        pass), as long as none of q, k, v exceeds ssa_max_rate.
    gen is a torch.Generator; the model is put in eval mode. Returns {lif name: target rate}."""
    model.eval()
    mods = dict(model.named_modules())
    bns = [n for n, m in mods.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    order = []  # forward order of the BatchNorms
    hooks = [mods[n].register_forward_pre_hook(lambda m, a, n=n: order.append(n)) for n in bns]
    try:
        model(x)
    finally:
        for hk in hooks:
            hk.remove()

    def u(lo_hi, *shape):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(shape or (1,), generator=gen)

    def set_stats(m, args):
        inp = args[0].float()
        dims = [0] + list(range(2, inp.dim()))
        m.running_mean.copy_(inp.mean(dim=dims))
        m.running_var.copy_(inp.var(dim=dims, unbiased=False))

    def lif_rate(lif, xin, d, mask=None):
        s = lif(xin + d)
        return (s[:, :, mask] if mask is not None else s).mean().item()

    targets = {}
    ssa_inputs = {}  # q/k/v LIF inputs of the current SSA block
    for bn_name in order:
        bn = mods[bn_name]
        parent_name, short = bn_name.rsplit(".", 1)
        parent = mods[parent_name]
        lif_name = f"{parent_name}.{short[:-3]}_lif"
        lif = mods[lif_name]
        C = bn.num_features
        is_ssa = isinstance(parent, SSA) and short in ("q_bn", "k_bn", "v_bn")
        bn.weight.copy_(u(gamma, C))
        bn.bias.copy_(u(ssa_beta if is_ssa else beta, C))
        mask = None
        note = ""
        if isinstance(parent, QKAttention) and short == "q_bn":
            if parent.mode == "token":
                d = C // parent.num_heads
                pa = u(attn_rate).item()
                target = max(0.02, 1.0 - (1.0 - pa) ** (1.0 / d))
                note = f"(attn target {pa:.3f})"
            else:
                n_silent = int(round(u(qkca_silent).item() * C))
                silent = torch.randperm(C, generator=gen)[:n_silent]
                bn.bias[silent] = -30.0
                mask = torch.ones(C, dtype=torch.bool)
                mask[silent] = False
                target = u(rate).item()
                note = f"({n_silent}/{C} channels silent)"
        else:
            target = u(ssa_rate if is_ssa else rate).item()

        xin = _capture_input(model, x, lif, pre=(bn, set_stats))
        delta = _bisect(lambda d: lif_rate(lif, xin, d, mask), target)

        if mask is None:
            bn.bias.add_(delta)
        else:
            bn.bias[mask] += delta
        targets[lif_name] = target
        if is_ssa:
            ssa_inputs[short[0]] = xin + delta  # the LIF input with this bias

        if is_ssa and short == "v_bn":
            # The SSA attention LIF has no BatchNorm: aim it with one common extra shift of the
            # q, k and v biases, within the cap on their own rates (their LIF inputs do not
            # depend on each other, so each cap is found locally).
            pa = u(ssa_attn_rate).item()
            qkv = [(n, getattr(parent, f"{n}_bn"), getattr(parent, f"{n}_lif"), ssa_inputs[n])
                   for n in "qkv"]
            base = [b.bias.clone() for _, b, _, _ in qkv]
            block_in = _capture_input(model, x, parent)  # unaffected by the shift

            def attn_rate_of(d):
                for (_, b, _, _), b0 in zip(qkv, base):
                    b.bias.copy_(b0 + d)
                a_in = _capture_input(parent, block_in, parent.attn_lif)
                return parent.attn_lif(a_in).mean().item()

            d_attn = _bisect(attn_rate_of, pa, iters=20)
            d_cap = min(_bisect(lambda d, l=l, xi=xi: lif_rate(l, xi, d), ssa_max_rate)
                        for _, _, l, xi in qkv)
            d = min(d_attn, d_cap)
            for (n, b, l, xi), b0 in zip(qkv, base):
                b.bias.copy_(b0 + d)
                targets[f"{parent_name}.{n}_lif"] = lif_rate(l, xi, d)
            note += f"; q/k/v shifted {d:+.3f} for attn target {pa:.3f}" + \
                (" (capped)" if d_cap < d_attn else "")
        if log:
            log(f"  {lif_name:40s} target {target:.3f} shift {delta:+.3f} {note}")
    return targets


# ---- qkf HDF5 checkpoints ----------------------------------------------------------------------

QKF_FORMAT = 1


def checkpoint_attrs(cfg):
    """Root attributes of a qkf checkpoint for cfg (numpy types as the C reader expects)."""
    import numpy as np
    return {
        "variant": cfg.variant,
        "img_size": np.int64(cfg.img_size),
        "in_channels": np.int64(cfg.in_channels),
        "num_classes": np.int64(cfg.num_classes),
        "embed_dims": np.int64(cfg.embed_dims),
        "num_heads": np.int64(cfg.num_heads),
        "depths": np.int64(cfg.depths),
        "T": np.int64(cfg.T),
        "mlp_ratio": np.float64(cfg.mlp_ratio),
        "qk_attn": cfg.qk_attn,
        "qkf_format": np.int64(QKF_FORMAT),
    }


def save_checkpoint(path, state_dict, cfg, extra_attrs=None, compression=None):
    """Writes a qkf checkpoint: one float32 dataset per state_dict key at the root (skipping
    num_batches_tracked), config as root attributes. Written to a temporary file, then renamed.
    Datasets are contiguous by default: trained or random float weights hardly compress, and
    chunking adds per-dataset metadata. compression="gzip" chunks and deflates them."""
    import h5py
    import numpy as np
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            for k, t in state_dict.items():
                if k.endswith("num_batches_tracked"):
                    continue
                arr = t.detach().cpu().to(torch.float32).contiguous().numpy()
                kw = dict(compression="gzip", compression_opts=9, shuffle=True) \
                    if compression == "gzip" and arr.size > 16 else {}
                f.create_dataset(k, data=arr, track_times=False, **kw)
            for k, val in checkpoint_attrs(cfg).items():
                f.attrs[k] = val
            for k, val in (extra_attrs or {}).items():
                f.attrs[k] = np.asarray(val, dtype=np.float64) if isinstance(val, (list, tuple)) \
                    else val
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, tb_compat=False):
    """Reads a qkf checkpoint back into (QKFormer, attrs); load_state_dict(strict=True)."""
    import h5py
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}

        def s(v):
            return v.decode() if isinstance(v, bytes) else str(v)
        cfg = QKFConfig(variant=s(attrs["variant"]), img_size=int(attrs["img_size"]),
                        in_channels=int(attrs["in_channels"]),
                        num_classes=int(attrs["num_classes"]),
                        embed_dims=int(attrs["embed_dims"]), num_heads=int(attrs["num_heads"]),
                        mlp_ratio=float(attrs["mlp_ratio"]), depths=int(attrs["depths"]),
                        T=int(attrs["T"]), qk_attn=s(attrs.get("qk_attn", "token")))
        model = QKFormer(cfg, tb_compat=tb_compat)
        sd = model.state_dict()
        new = OrderedDict()
        for k, t in sd.items():
            if k.endswith("num_batches_tracked"):
                new[k] = t
            else:
                new[k] = torch.from_numpy(f[k][()]).to(t.dtype)
        extra = set(f.keys()) - set(sd.keys())
        if extra:
            raise KeyError(f"{path}: unexpected keys {sorted(extra)[:5]}")
        model.load_state_dict(new, strict=True)
    model.eval()
    return model, attrs


if __name__ == "__main__":
    for name, want in OFFICIAL_PARAM_COUNTS.items():
        got = num_params(QKFormer(QKFConfig.preset(name)))
        print(f"{name:16s} {got:>11,d} official {want:>11,d} {'ok' if got == want else 'MISMATCH'}")
