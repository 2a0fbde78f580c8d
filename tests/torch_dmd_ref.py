#!/usr/bin/python3
"""torch_dmd_ref.py: writes tests/fixtures/dmd_ref.safetensors, the reference that tests/test_dmd.c
compares common/dmd.c with. Run with the system python that has torch 1.13:

    /usr/bin/python3 tests/torch_dmd_ref.py

Written from ALGORITHMS.md section 2 and the DMD2 code (Yin et al. 2024, main/sd_guidance.py
compute_distribution_matching_loss), not from dmd.c:

    w    = mean over the sample's elements of |x - D_real|
    g    = (D_fake - D_real) / w, NaN/inf replaced by 0
    L_DM = 0.5 * mse(x, stopgrad(x - g))            (mean over every element of the batch)

and dx = dL_DM/dx by autograd. The Karras table: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho)
- smax^(1/rho)))^rho for i = 0..n-1 (descending, the EDM sampler's), stored ascending.

Cases (float32 inputs; the reference computed in float64 from them and stored as float32):
    toy.*   (6, 2): the MoG student's shape; sample 4 has x == D_real (w = 0: g = inf -> 0)
            and sample 5 has x == D_real == D_fake (0/0 = NaN -> 0)
    img.*   (3, 20): a small image batch, D_fake far from D_real on sample 1
    each case: x, d_real, d_fake (inputs), dx, loss, w (per sample), g (before the 1/numel)
    table1000, table7: dmd_sigma_table(n) for n = 1000 (the one the student and critic use) and 7
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet import st_write  # noqa: E402  (the fixture writer; torch 1.13 has no safetensors)

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
torch.manual_seed(20240512)
T = {}


def dmd_case(name, x, d_real, d_fake):
    x, d_real, d_fake = (t.float() for t in (x, d_real, d_fake))
    for k, v in (("x", x), ("d_real", d_real), ("d_fake", d_fake)):
        T[f"{name}.{k}"] = v
    xd = x.double().requires_grad_(True)
    dr, df = d_real.double(), d_fake.double()
    w = (xd.detach() - dr).abs().mean(dim=1, keepdim=True)
    with torch.no_grad():
        g = (df - dr) / w
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    loss = 0.5 * F.mse_loss(xd, (xd - g).detach(), reduction="mean")
    loss.backward()
    T[f"{name}.dx"] = xd.grad.float()
    T[f"{name}.loss"] = loss.detach().float().reshape(1)
    T[f"{name}.w"] = w.reshape(-1).float()
    T[f"{name}.g"] = g.float()


# toy: the 2-D mixture scale (points on a circle of radius ~6), D_real near x, D_fake near D_real
N, D = 6, 2
x = 6 * torch.randn(N, D)
d_real = x + 0.8 * torch.randn(N, D)
d_fake = d_real + 0.3 * torch.randn(N, D)
d_real[4] = x[4]                       # w = 0 with D_fake != D_real: g = +-inf -> 0
d_real[5] = x[5]
d_fake[5] = x[5]                       # 0 / 0 -> 0
dmd_case("toy", x, d_real, d_fake)

# img: values in [-1, 1], one sample whose critic disagrees strongly with the teacher
N, D = 3, 20
x = torch.rand(N, D) * 2 - 1
d_real = (x + 0.2 * torch.randn(N, D)).clamp(-1, 1)
d_fake = d_real + 0.05 * torch.randn(N, D)
d_fake[1] = -d_real[1] + 0.5
dmd_case("img", x, d_real, d_fake)


def karras_table(n):
    i = torch.arange(n, dtype=torch.float64)
    a, b = SIGMA_MAX ** (1 / RHO), SIGMA_MIN ** (1 / RHO)
    return ((a + i / (n - 1) * (b - a)) ** RHO).flip(0).float()


T["table1000"] = karras_table(1000)
T["table7"] = karras_table(7)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "dmd_ref.safetensors")
st_write(path, T, generator="tests/torch_dmd_ref.py")
print(f"wrote {path}: {len(T)} tensors")
