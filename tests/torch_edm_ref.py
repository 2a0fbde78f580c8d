#!/usr/bin/python3
"""torch_edm_ref.py: writes tests/fixtures/edm_ref.safetensors, the reference that tests/test_edm.c
compares the EDM preconditioning and loss of common/edm.c with. Run with the system python that
has torch 1.13:

    /usr/bin/python3 tests/torch_edm_ref.py

Written from Karras et al. 2022 (EDM, training/networks.py EDMPrecond and training/loss.py
EDMLoss) and docs/UNET.md section 6, not from edm.c:

    c_skip = sd^2 / (sigma^2 + sd^2)        c_out = sigma sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)       c_noise = ln(sigma) / 4
    D(x; sigma, c) = c_skip x + c_out F(c_in x; c_noise, c)
    lambda = (sigma^2 + sd^2) / (sigma sd)^2
    loss   = mean over samples and elements of lambda (D(x0 + sigma n; sigma, c) - x0)^2

(EDM sums over the elements and divides by the batch; this project takes the mean over both,
docs/UNET.md section 6: the same up to the constant 1/D.) The network F is a stand-in with one
parameter vector A that test_edm.c implements as well:

    F(x_in; c_noise, c) = tanh(A * x_in + c_noise * B + onehot(c) @ L)      (elementwise, (N, D))

Cases "s05" (sigma_data 0.5, N 6, D 5, 3 classes, sigma from 0.002 to 80) and "s2" (sigma_data
2.0, as toynet passes the mixture's std, N 4, D 2). Each stores the inputs x0, noise, sigma,
labels (int32), A, B, L, sigma_data, and the expected
    x_noisy = x0 + sigma noise,  x_in = c_in x_noisy (what F receives),  c_noise,
    D (the denoiser output on x_noisy), loss, lambda (per sample),
    dF = d loss / d F (the gradient the network's backward receives),
    dD = d loss / d D,  dA = d loss / d A (the parameter gradient),
    dx = d loss / d x_noisy (through both c_skip and F's input; edm_backward with dout = dD).
Reference in float64 from the float32 inputs, stored float32.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet import st_write  # noqa: E402  (the fixture writer; torch 1.13 has no safetensors)

torch.manual_seed(31337)
T = {}


class StandIn(torch.nn.Module):
    """F(x_in; c_noise, c) = tanh(A x_in + c_noise B + onehot(c) L)."""

    def __init__(self, A, B, L):
        super().__init__()
        self.A = torch.nn.Parameter(A.double())
        self.B, self.L = B.double(), L.double()

    def forward(self, x_in, c_noise, onehot):
        return torch.tanh(self.A * x_in + c_noise[:, None] * self.B + onehot @ self.L)


class EDMPrecond(torch.nn.Module):
    """EDM's EDMPrecond.forward, for flat (N, D) samples; also returns F's output."""

    def __init__(self, model, sigma_data):
        super().__init__()
        self.model, self.sigma_data = model, sigma_data

    def forward(self, x, sigma, onehot):
        sigma = sigma.reshape(-1, 1)
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model(c_in * x, c_noise.flatten(), onehot)
        F_x.retain_grad()
        return c_skip * x + c_out * F_x, F_x, c_in * x, c_noise.flatten()


def case(name, N, D, K, sigma_data, sigma):
    x0 = torch.randn(N, D).float()
    noise = torch.randn(N, D).float()
    labels = torch.randint(0, K, (N,), dtype=torch.int32)
    A = (1 + 0.5 * torch.randn(D)).float()
    B = (0.7 * torch.randn(D)).float()
    L = (0.5 * torch.randn(K, D)).float()
    sigma = torch.tensor(sigma).float()
    sd = float(torch.tensor(sigma_data).float())
    for k, v in (("x0", x0), ("noise", noise), ("sigma", sigma), ("labels", labels), ("A", A), ("B", B), ("L", L),
                 ("sigma_data", torch.tensor([sd]))):
        T[f"{name}.{k}"] = v
    net = EDMPrecond(StandIn(A, B, L), sd)
    onehot = F.one_hot(labels.long(), K).double()
    s = sigma.double()
    # EDMLoss.__call__ with the given sigma and noise
    y = x0.double()
    x_noisy = (y + noise.double() * s[:, None]).requires_grad_(True)
    weight = (s ** 2 + sd ** 2) / (s * sd) ** 2
    D_yn, F_x, x_in, c_noise = net(x_noisy, s, onehot)
    D_yn.retain_grad()
    loss = (weight[:, None] * (D_yn - y) ** 2).mean()
    loss.backward()
    out = {"x_noisy": x_noisy, "x_in": x_in, "c_noise": c_noise, "D": D_yn, "loss": loss.reshape(1), "lambda": weight,
           "dF": F_x.grad, "dD": D_yn.grad, "dA": net.model.A.grad, "dx": x_noisy.grad}
    for k, v in out.items():
        T[f"{name}.{k}"] = v.detach().float()


case("s05", 6, 5, 3, 0.5, [0.002, 0.04, 0.5, 1.3, 9.0, 80.0])
case("s2", 4, 2, 8, 2.0, [0.01, 0.7, 2.0, 30.0])

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "edm_ref.safetensors")
st_write(path, T, generator="tests/torch_edm_ref.py")
print(f"wrote {path}: {len(T)} tensors")
