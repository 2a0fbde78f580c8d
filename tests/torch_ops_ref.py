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
