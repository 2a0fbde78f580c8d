#!/usr/bin/python3
"""torch_unet.py: the PyTorch twin of common/models/unet.c and common/models/mlp.c, built from docs/UNET.md
(same blocks, same parameter names), and the script that regenerates the UNet test fixtures.

    /usr/bin/python3 tests/torch_unet.py            # rewrites tests/fixtures/unet_tiny_*.safetensors
    /usr/bin/python3 tests/torch_unet.py --count fmnist-s    # prints the parameter count

Fixtures (the tiny configuration TINY below, float32 files, reference computed in float64 from
the float32-rounded weights and inputs):
    unet_tiny_weights.safetensors   every parameter, random (no zero-initialised tensors)
    unet_tiny_inputs.safetensors    x (N, C, H, W), sigma (N), labels (N, int32)
    unet_tiny_dout.safetensors      dout (N, C, H, W), dbottleneck (bottleneck shape)
    unet_tiny_expect.safetensors    out = D(x; sigma, labels), bottleneck, dx and grad.<param>
                                    of the scalar sum(out * dout) + sum(bottleneck * dbottleneck)
    unet_tiny_dropout_expect.safetensors
                                    the same network with dropout p = 0.3 (dropout_p), seed 5
                                    (dropout_seed), masks rebuilt here from the documented Philox
                                    stream (docs/UNET.md section 9, tests/rng_ref.py): out,
                                    bottleneck, dx of the first training forward (step 1) and
                                    grad.<param> of every block's conv0.bias, norm1 and conv1
                                    (the parameters next to the mask), out_step2 of the second
                                    training forward (step 2: new masks)
The safetensors writer is written out here because torch 1.13 has no safetensors module.
Needs torch (Debian python3-torch); not run by `make test`.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rng_ref import f32, philox  # noqa: E402  (the Philox mapping of common/rng.h)

SIGMA_DATA = 0.5
NAMED = {
    "fmnist-s": "in=1,res=28,ch=32,mult=1-2-2,blocks=2,attn=7,classes=10",
    "fmnist-m": "in=1,res=28,ch=16,mult=1-3-3,blocks=1,attn=7,classes=10",
    "fmnist-xs": "in=1,res=28,ch=16,mult=1-2-2,blocks=1,attn=7,classes=10",
}
TINY = "in=3,res=8,ch=8,mult=1-2,blocks=1,attn=4,classes=3,headch=8"


def parse_spec(spec):
    """CONFIG-SPEC of docs/UNET.md section 1 -> dict."""
    cfg = dict(kind="unet", in_ch=1, res=28, ch=32, mult=[1, 2, 2], blocks=2, attn=[7], classes=0, cond=0,
               dropout=0.0, groups=32, emb=4, headch=64)
    parts = [p for p in spec.split(",") if p]
    if parts and "=" not in parts[0]:
        name = parts.pop(0)
        if name == "mlp":
            cfg = dict(kind="mlp", in_ch=2, width=128, depth=4, emb=128, noise=32, classes=0, cond=0)
        else:
            base = parse_spec(NAMED[name])
            cfg.update(base)
    keys = {"in": "in_ch"}
    for p in parts:
        k, v = p.split("=", 1)
        k = keys.get(k, k)
        if k in ("mult", "attn"):
            cfg[k] = [] if v == "none" else [int(a) for a in v.split("-")]
        elif k == "dropout":
            cfg[k] = float(v)
        else:
            cfg[k] = int(v)
    return cfg


def gn(c, cap):
    g = max(1, min(cap, c // 4))
    assert c % g == 0
    return nn.GroupNorm(g, c, eps=1e-5)


def conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class Embedding(nn.Module):
    """Section 2: sinusoidal(c_noise) -> map_layer0 -> silu -> map_layer1 (+ map_label) -> silu."""

    def __init__(self, noise_ch, E, cdim):
        super().__init__()
        self.noise_ch = noise_ch
        self.map_layer0 = nn.Linear(noise_ch, E)
        self.map_layer1 = nn.Linear(E, E)
        self.map_label = nn.Linear(cdim, E, bias=False) if cdim > 0 else None

    def forward(self, c_noise, c):
        half = self.noise_ch // 2
        k = torch.arange(half, dtype=c_noise.dtype)
        f = (1.0 / 10000.0) ** (k / half)
        a = c_noise[:, None] * f[None, :]
        t = torch.cat([torch.cos(a), torch.sin(a)], dim=1)
        emb = self.map_layer1(F.silu(self.map_layer0(t)))
        if self.map_label is not None:
            emb = emb + self.map_label(c)
        return F.silu(emb)


def philox_mask(shape, seed, stream, p):
    """The dropout mask of docs/UNET.md section 9: element i of the (N, C, H, W) activation is
    1/(1-p) (float32) when uniform number i of the Philox stream is >= p (float32), else 0."""
    n = math.prod(shape)
    p32 = f32(p)
    keep = float(torch.tensor(1.0) / (1 - torch.tensor(p32)))
    key = [seed & 0xFFFFFFFF, seed >> 32]
    vals = []
    for b in range((n + 3) // 4):
        for w in philox([b & 0xFFFFFFFF, b >> 32, stream & 0xFFFFFFFF, stream >> 32], key):
            vals.append(keep if (w >> 8) * 2.0 ** -24 >= p32 else 0.0)
    return torch.tensor(vals[:n], dtype=torch.float64).reshape(shape)


def set_dropout(model, seed, step, p):
    """Masks of training forward number `step` (1 for the first): layer number li of the C layer
    list (encoder, mid, decoder, in order) draws from stream step * 4096 + li."""
    for li, m in enumerate(model.layer_list()):
        if isinstance(m, Block):
            m.philox = (seed, step * 4096 + li, p)


class Block(nn.Module):
    """Section 3: residual block with scale-shift conditioning and optional self-attention."""

    def __init__(self, cin, cout, E, attention, cfg):
        super().__init__()
        self.cout, self.dropout = cout, cfg["dropout"]
        self.philox = None  # (seed, stream, p): the explicit dropout mask of philox_mask
        self.norm0 = gn(cin, cfg["groups"])
        self.conv0 = conv(cin, cout, 3)
        self.affine = nn.Linear(E, 2 * cout)
        self.norm1 = gn(cout, cfg["groups"])
        self.conv1 = conv(cout, cout, 3)
        self.skip = conv(cin, cout, 1) if cin != cout else None
        self.heads = max(1, cout // cfg["headch"]) if attention else 0
        if attention:
            self.norm2 = gn(cout, cfg["groups"])
            self.qkv = conv(cout, 3 * cout, 1)
            self.proj = conv(cout, cout, 1)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        ss = self.affine(emb)
        scale, shift = ss[:, :self.cout, None, None], ss[:, self.cout:, None, None]
        h = F.silu(self.norm1(h) * (1 + scale) + shift)
        if self.philox is not None:
            self.last_mask = philox_mask(h.shape, *self.philox).to(h.dtype)
            h = h * self.last_mask
        else:
            h = F.dropout(h, self.dropout, self.training)
        h = self.conv1(h)
        out = h + (self.skip(x) if self.skip is not None else x)
        if self.heads:
            N, C, H, W = out.shape
            L, nh = H * W, self.heads
            qkv = self.qkv(self.norm2(out)).reshape(N, 3, nh, C // nh, L)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
            a = torch.softmax(torch.einsum("nhci,nhcj->nhij", q, k) / math.sqrt(C // nh), dim=-1)
            o = torch.einsum("nhij,nhcj->nhci", a, v).reshape(N, C, H, W)
            out = out + self.proj(o)
        return out


class UNet(nn.Module):
    """Section 4. forward(x_in, c_noise, c) -> (F, bottleneck)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch, mult, nb = cfg["ch"], cfg["mult"], cfg["blocks"]
        E = cfg["emb"] * ch
        cdim = cfg["classes"] or cfg["cond"]
        self.emb = Embedding(ch, E, cdim)
        self.enc = nn.ModuleDict()
        self.mid = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        self.out = nn.ModuleDict()
        R = [cfg["res"] >> l for l in range(len(mult))]
        widths = [ch * m for m in mult]
        self.enc[f"{R[0]}x{R[0]}_conv"] = conv(cfg["in_ch"], widths[0], 3)
        c = widths[0]
        skips = [c]
        self.enc_order = [f"{R[0]}x{R[0]}_conv"]
        for l in range(len(mult)):
            r = R[l]
            if l > 0:
                self.enc[f"{r}x{r}_down"] = conv(c, c, 3, stride=2)
                self.enc_order.append(f"{r}x{r}_down")
                skips.append(c)
            for i in range(nb):
                self.enc[f"{r}x{r}_block{i}"] = Block(c, widths[l], E, r in cfg["attn"], cfg)
                self.enc_order.append(f"{r}x{r}_block{i}")
                c = widths[l]
                skips.append(c)
        self.mid["block0"] = Block(c, c, E, True, cfg)
        self.mid["block1"] = Block(c, c, E, False, cfg)
        self.dec_order = []
        for l in reversed(range(len(mult))):
            r = R[l]
            if l < len(mult) - 1:
                self.dec[f"{r}x{r}_up"] = conv(c, c, 3)
                self.dec_order.append(f"{r}x{r}_up")
            for i in range(nb + 1):
                self.dec[f"{r}x{r}_block{i}"] = Block(c + skips.pop(), widths[l], E, r in cfg["attn"], cfg)
                self.dec_order.append(f"{r}x{r}_block{i}")
                c = widths[l]
        self.out["norm"] = gn(c, cfg["groups"])
        self.out["conv"] = conv(c, cfg["in_ch"], 3)

    def layer_list(self):
        """The layers in the order of common/unet.c's layer list."""
        return ([self.enc[n] for n in self.enc_order] + [self.mid["block0"], self.mid["block1"]] +
                [self.dec[n] for n in self.dec_order])

    def forward(self, x, c_noise, c):
        emb = self.emb(c_noise, c)
        h, stack = x, []
        for name in self.enc_order:
            m = self.enc[name]
            h = m(h, emb) if isinstance(m, Block) else m(h)
            stack.append(h)
        h = self.mid["block1"](self.mid["block0"](h, emb), emb)
        bottleneck = h
        for name in self.dec_order:
            m = self.dec[name]
            if isinstance(m, Block):
                h = m(torch.cat([h, stack.pop()], dim=1), emb)
            else:
                h = m(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out["conv"](F.silu(self.out["norm"](h))), bottleneck


class MLP(nn.Module):
    """Section 5."""

    def __init__(self, cfg):
        super().__init__()
        W, E = cfg["width"], cfg["emb"]
        self.emb = Embedding(cfg["noise"], E, cfg["classes"] or cfg["cond"])
        self.depth = cfg["depth"]
        for i in range(self.depth):
            setattr(self, f"fc{i}", nn.Linear(cfg["in_ch"] if i == 0 else W, W))
            setattr(self, f"affine{i}", nn.Linear(E, 2 * W))
        self.out = nn.Linear(W, cfg["in_ch"])

    def forward(self, x, c_noise, c):
        emb = self.emb(c_noise, c)
        h = x
        for i in range(self.depth):
            ss = getattr(self, f"affine{i}")(emb)
            W = ss.shape[1] // 2
            h = F.silu(getattr(self, f"fc{i}")(h) * (1 + ss[:, :W]) + ss[:, W:])
        return self.out(h), h


def state_names(model):
    """Parameter names as in docs/UNET.md: the embedding's live at top level."""
    return {k.replace("emb.", "", 1) if k.startswith("emb.") else k: v for k, v in model.named_parameters()}


def edm(model, x, sigma, c):
    """Section 6: D(x; sigma, c) and the raw network's bottleneck."""
    s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    c_skip = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2)
    c_out = s * SIGMA_DATA / (s ** 2 + SIGMA_DATA ** 2).sqrt()
    c_in = 1 / (s ** 2 + SIGMA_DATA ** 2).sqrt()
    f, bott = model(c_in * x, sigma.log() / 4, c)
    return c_skip * x + c_out * f, bott


def build(spec):
    cfg = parse_spec(spec)
    return (MLP(cfg) if cfg["kind"] == "mlp" else UNet(cfg)), cfg


def st_write(path, tensors, generator="tests/torch_unet.py"):
    """Minimal safetensors writer: name -> tensor (float32 or int32), sorted by name."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if t.dtype == torch.int32:
            dt, raw = "I32", t.numpy().astype("<i4").tobytes()
        else:
            dt, raw = "F32", t.to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps({"__metadata__": {"generator": generator}, **header}, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def make_fixtures(outdir):
    torch.manual_seed(1234)
    model, cfg = build(TINY)
    names = state_names(model)
    with torch.no_grad():
        for name, p in names.items():
            # every tensor random and O(1/sqrt(fan_in)); GN weights around 1
            if name.endswith("weight") and p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 4
                p.copy_(torch.randn_like(p) / math.sqrt(fan_in))
            p.copy_(p.float())  # the float32 values the C side reads
    weights = {k: v.detach().float().clone() for k, v in names.items()}
    N = 3
    x = torch.randn(N, cfg["in_ch"], cfg["res"], cfg["res"]).float()
    sigma = torch.tensor([0.05, 0.9, 12.0]).float()
    labels = torch.tensor([2, 0, 1], dtype=torch.int32)
    model = model.double()
    model.train(False)
    xd = x.double().requires_grad_(True)
    c = F.one_hot(labels.long(), cfg["classes"]).double()
    out, bott = edm(model, xd, sigma.double(), c)
    dout = torch.randn(out.shape).float()
    dbott = (0.1 * torch.randn(bott.shape)).float()
    (out * dout.double()).sum().add_((bott * dbott.double()).sum()).backward()
    expect = {"out": out.float(), "bottleneck": bott.float(), "dx": xd.grad.float()}
    for k, p in state_names(model).items():
        expect["grad." + k] = p.grad.float()
    os.makedirs(outdir, exist_ok=True)
    st_write(os.path.join(outdir, "unet_tiny_weights.safetensors"), weights)
    st_write(os.path.join(outdir, "unet_tiny_inputs.safetensors"), {"x": x, "sigma": sigma, "labels": labels})
    st_write(os.path.join(outdir, "unet_tiny_dout.safetensors"), {"dout": dout, "dbottleneck": dbott})
    st_write(os.path.join(outdir, "unet_tiny_expect.safetensors"), expect)

    # dropout: the same weights and inputs, explicit masks of steps 1 and 2
    p, seed = 0.3, 5
    model.zero_grad()
    set_dropout(model, seed, 1, p)
    xd = x.double().requires_grad_(True)
    out, bott = edm(model, xd, sigma.double(), c)
    (out * dout.double()).sum().add_((bott * dbott.double()).sum()).backward()
    drop = {"out": out.float(), "bottleneck": bott.float(), "dx": xd.grad.float(),
            "dropout_p": torch.tensor([p]), "dropout_seed": torch.tensor([float(seed)])}
    for k, v in state_names(model).items():
        if any(s in k for s in (".conv0.bias", ".norm1.", ".conv1.")):
            drop["grad." + k] = v.grad.float()
    # the masks keep a share 1 - p (within 5 binomial standard errors) and scale by 1/(1-p)
    masks = [m.last_mask for m in model.layer_list() if isinstance(m, Block)]
    n_all = sum(mk.numel() for mk in masks)
    frac = sum(float((mk > 0).sum()) for mk in masks) / n_all
    assert abs(frac - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n_all), frac
    assert all(abs(float(mk.max()) - 1 / (1 - p)) < 1e-6 for mk in masks)
    set_dropout(model, seed, 2, p)
    with torch.no_grad():
        drop["out_step2"] = edm(model, x.double(), sigma.double(), c)[0].float()
    st_write(os.path.join(outdir, "unet_tiny_dropout_expect.safetensors"), drop)
    print(f"tiny UNet '{TINY}': {sum(p.numel() for p in weights.values())} parameters, fixtures in {outdir}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--count":
        model, _ = build(sys.argv[2])
        print(sum(p.numel() for p in model.parameters()))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--names":
        model, _ = build(sys.argv[2])
        for k, v in state_names(model).items():
            print(k, tuple(v.shape))
        return
    make_fixtures(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))


if __name__ == "__main__":
    main()
