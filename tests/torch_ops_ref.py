#!/usr/bin/python3
"""torch_ops_ref.py: writes tests/fixtures/ops_ref.safetensors, PyTorch's forward outputs and
gradients for the CPU backend's ops, which tests/test_ops.c compares against.

Run with the system python that has torch 1.13:  /usr/bin/python3 tests/torch_ops_ref.py
Each case NAME stores NAME.<input> tensors, NAME.dout (the upstream gradient), NAME.out and
NAME.d<input> (gradients). float32 throughout, seed fixed. The attention case spells out the
contract of backend.h (q, k, v as channel blocks, head h on channels [h*d, (h+1)*d)); the
sinusoidal case is EDM's PositionalEmbedding (networks.py) verbatim. The safetensors file is
written by hand (the safetensors package is not installed here)."""
import json
import os
import struct

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
T = {}


def put(name, t):
    T[name] = t.detach().contiguous().to(torch.float32)


def case(name, fn, inputs, dout_shape=None):
    """inputs: dict name -> tensor (leaf, requires grad); fn(**inputs) -> out."""
    for k, v in inputs.items():
        v.requires_grad_(True)
        put(f"{name}.{k}", v)
    out = fn(**inputs)
    dout = torch.randn(out.shape)
    out.backward(dout)
    put(f"{name}.out", out)
    put(f"{name}.dout", dout)
    for k, v in inputs.items():
        put(f"{name}.d{k}", v.grad)


def conv(name, N, C, H, W, O, K, stride, pad):
    case(name, lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad),
         dict(x=torch.randn(N, C, H, W), w=torch.randn(O, C, K, K) * 0.3, b=torch.randn(O)))
    put(f"{name}.shape", torch.tensor([N, C, H, W, O, K, stride, pad], dtype=torch.float32))


conv("conv3x3", 2, 3, 5, 7, 4, 3, 1, 1)
conv("conv4x4s2", 2, 3, 9, 8, 5, 4, 2, 1)
conv("conv1x1", 3, 4, 5, 3, 6, 1, 1, 0)
conv("conv3x3s2", 2, 2, 7, 6, 3, 3, 2, 1)

case("linear", lambda x, w, b: F.linear(x, w, b),
     dict(x=torch.randn(3, 5), w=torch.randn(4, 5), b=torch.randn(4)))

case("groupnorm", lambda x, g, b: F.group_norm(x, 3, g, b, eps=1e-5),
     dict(x=torch.randn(2, 6, 4, 5) * 2 + 1, g=torch.rand(6) + 0.5, b=torch.randn(6)))


def attention(qkv, N=2, C=8, L=5, heads=2):
    d = C // heads
    q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
    q = q.reshape(N, heads, d, L)
    k = k.reshape(N, heads, d, L)
    v = v.reshape(N, heads, d, L)
    w = torch.einsum("nhci,nhcj->nhij", q, k / d ** 0.5).softmax(dim=3)
    return torch.einsum("nhij,nhcj->nhci", w, v).reshape(N, C, L)


case("attention", attention, dict(qkv=torch.randn(2, 24, 5)))

case("silu", lambda x: F.silu(x), dict(x=torch.randn(37) * 4))
case("softplus", lambda x: F.softplus(x),
     dict(x=torch.cat([torch.randn(30) * 5, torch.tensor([-100.0, -30.0, 19.0, 21.0, 30.0, 100.0])])))
case("upsample", lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), dict(x=torch.randn(2, 3, 3, 5)))


def positional_embedding(x, num_channels=16, max_positions=10000, endpoint=False):
    # EDM networks.py PositionalEmbedding.forward
    freqs = torch.arange(start=0, end=num_channels // 2, dtype=torch.float32, device=x.device)
    freqs = freqs / (num_channels // 2 - (1 if endpoint else 0))
    freqs = (1 / max_positions) ** freqs
    x = x.ger(freqs.to(x.dtype))
    x = torch.cat([x.cos(), x.sin()], dim=1)
    return x


case("sinusoidal", lambda t: positional_embedding(t), dict(t=torch.randn(5) * 1.5))

# ---- the sentence encoder's forward-only ops (BERT, common/text/minilm.c) ----
def fwd(name, out, **inputs):
    for k, v in inputs.items():
        put(f"{name}.{k}", v)
    put(f"{name}.out", out)


x = torch.cat([torch.randn(40) * 3, torch.tensor([-10.0, -4.0, 0.0, 4.0, 10.0])])
fwd("gelu", F.gelu(x), x=x)  # erf form (approximate='none', torch's default)
# LayerNorm over the last dim (BERT's eps 1e-12; one row of large offset and small spread)
x = torch.randn(5, 24) * 3 + 2
x[3] = x[3] * 0.1 + 20.0  # |mean|/std ~ 70 (groupnorm writes x*sc + sh: a ratio ~1e4 loses digits)
g, b = torch.rand(24) + 0.5, torch.randn(24)
fwd("layernorm", F.layer_norm(x, (24,), g, b, eps=1e-12), x=x, g=g, b=b)
table = torch.randn(11, 6)
ids = torch.tensor([0, 10, 3, 3, 7])
fwd("embedding", F.embedding(ids, table), table=table, ids=ids.float())


def token_attention(qkv, mask, heads):
    # qkv (N, L, 3C), mask (N, L) 1 real / 0 padded; as HF BERT's additive mask, but padded keys exact 0
    N, L, C3 = qkv.shape
    C = C3 // 3
    d = C // heads
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(N, L, heads, d).transpose(1, 2) for i in range(3))
    s = q @ k.transpose(-1, -2) / d ** 0.5
    s = s.masked_fill(mask[:, None, None, :] <= 0, float("-inf"))
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(N, L, C)


qkv = torch.randn(3, 7, 36) * 2
mask = torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3, [1.0] * 2 + [0.0] * 5])
fwd("tokattn", token_attention(qkv, mask, 3), qkv=qkv, mask=mask)
h = torch.randn(3, 7, 10)
fwd("maskmean", (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9), x=h, mask=mask)

# ---- safetensors writer: 8-byte header length, JSON header, raw little-endian data ----
names = sorted(T)
header, blobs, off = {"__metadata__": {"generator": "tests/torch_ops_ref.py", "torch": torch.__version__}}, [], 0
for n in names:
    b = T[n].numpy().astype("<f4").tobytes()
    header[n] = {"dtype": "F32", "shape": list(T[n].shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
hj = json.dumps(header, separators=(",", ":")).encode()
hj += b" " * ((8 - len(hj) % 8) % 8)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "ops_ref.safetensors")
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(hj)))
    f.write(hj)
    for b in blobs:
        f.write(b)
print(f"wrote {path}: {len(names)} tensors, {off} bytes of data")
