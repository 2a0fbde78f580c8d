#!/usr/bin/python3
"""torch_distill_ref.py: writes tests/fixtures/distill_ref.safetensors, the reference that
tests/test_distill.c compares common/msd/distill.c with. Run with the system python that has
torch 1.13:

    /usr/bin/python3 tests/torch_distill_ref.py

Written from docs/ALGORITHMS.md sections 2.1, 2.3, 2.4, 2.7, 2.10 and 3.3 and the DMD2 reference
code (Yin et al. 2024), not from distill.c. The networks are tests/torch_unet.py's UNet twin
(docs/UNET.md) with random weights (no zero-initialised tensors); every reference is float64
from the float32 weights and inputs, stored float32. Tiny configurations, 1x8x8 images, 3 classes:

    NET  (generator, teacher, critic): in=1,res=8,ch=4,mult=1-2,blocks=1,attn=4,classes=3,headch=4
                                      (bottleneck 8x4x4)
    PHI  (the small TSM student):      in=1,res=8,ch=2,mult=1-2,blocks=1,attn=none,classes=3,headch=2

Weights: gen.*, teacher.*, critic.*, phi.*, head.* (the GAN head below). Cases (N = 3 each):

  dm.*    one DM generator step (section 2.3): inputs z, labels, t (indices into the 1000-entry
          Karras table, in [20, 980]), eps; expected sigma = table[t], x = G(z, c) = D_gen(80 z;
          80, c), x_t = x + sigma eps, d_real = D_teacher(x_t), d_fake = D_critic(x_t), loss =
          L_DM = 0.5 mse(x, stopgrad(x - g)), g = (d_fake - d_real) / mean_j |x - d_real| (non-finite
          -> 0), and grad.<generator param> of L_DM (autograd through G only).
  fake.*  the critic's fake-score loss (section 2.4) on the detached dm.x: inputs t (any of
          0..999), noise; expected sigma, loss = mean(lambda (D_critic(x + sigma n) - x)^2),
          lambda = (sigma^2 + sd^2) / (sigma sd)^2, sd = 0.5, and grad.<critic param>.
  tsm.*   teacher score matching (section 3.3): inputs x0 (real images in [-1, 1]), noise, sigma
          (log-normal-like values); expected x_t = x0 + sigma n, d_teacher = D_teacher(x_t),
          loss = mean(lambda (D_phi(x_t) - d_teacher)^2) (same lambda), grad.<phi param>.
  gan.*   the GAN head on the critic's bottleneck (section 2.7): head f = out(flatten(silu(gn1(
          conv3x3(silu(gn0(h))))))) (GroupNorm groups max(1, min(32, C/4)), eps 1e-5); inputs
          x_fake (= dm.x, labels dm.labels), noise_fake, t_fake, x_real, labels_real,
          noise_real, t_real, weight (1e-2); expected sigma_fake, sigma_real, logit_fake, logit_real (f of the critic's bottleneck at x + sigma n),
          loss_d = mean softplus(f_fake) + mean softplus(-f_real), grad.critic.* and grad.head.*
          of weight * loss_d, loss_g = mean softplus(-f(x_fake + sigma n)) and dx = d loss_g /
          d x_fake.
  dm_gan.* the DM step of dm.* with the GAN term: the generator's parameter gradient when its
          output gradient is dL_DM/dx + weight * gan.dx (weight 3e-3, DMD2's generator weight;
          gan.dx is evaluated at dm.x, the same samples), grad.<generator param>.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet import build, edm, gn, st_write, state_names  # noqa: E402

NET = "in=1,res=8,ch=4,mult=1-2,blocks=1,attn=4,classes=3,headch=4"
PHI = "in=1,res=8,ch=2,mult=1-2,blocks=1,attn=none,classes=3,headch=2"
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
SIGMA_GEN, SD, K, N = 80.0, 0.5, 3, 3
T = {}


def karras_table(n=1000):
    i = torch.arange(n, dtype=torch.float64)
    a, b = SIGMA_MAX ** (1 / RHO), SIGMA_MIN ** (1 / RHO)
    return ((a + i / (n - 1) * (b - a)) ** RHO).flip(0).float()


TABLE = karras_table()


def randomise(named):
    """every tensor random and O(1/sqrt(fan_in)); GroupNorm weights around 1; float32 values"""
    with torch.no_grad():
        for name, p in named.items():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 4
                p.copy_(torch.randn_like(p) / math.sqrt(fan_in))
            p.copy_(p.float())


def net(spec, prefix):
    model, cfg = build(spec)
    names = state_names(model)
    randomise(names)
    for k, v in names.items():
        T[prefix + k] = v.detach().float().clone()
    return model.double().train(False), cfg


class GanHead(nn.Module):
    """f = out(flatten(silu(norm1(conv(silu(norm0(h)))))))"""

    def __init__(self, C, H, W):
        super().__init__()
        self.norm0 = gn(C, 32)
        self.conv = nn.Conv2d(C, C, 3, padding=1)
        self.norm1 = gn(C, 32)
        self.out = nn.Linear(C * H * W, 1)

    def forward(self, h):
        a = F.silu(self.norm1(self.conv(F.silu(self.norm0(h)))))
        return self.out(a.flatten(1)).squeeze(1)


def onehot(labels):
    return F.one_hot(labels.long(), K).double()


def lam(sigma):
    s = sigma.double()
    return (s ** 2 + SD ** 2) / (s * SD) ** 2


def rows(v):
    return v.reshape(-1, 1, 1, 1)


def grads(model, prefix, out):
    """parameter gradients; a parameter the loss does not reach (the critic's decoder under the GAN
    loss) has gradient 0"""
    for k, p in state_names(model).items():
        out[prefix + k] = p.grad.detach().float().clone() if p.grad is not None else torch.zeros(p.shape)
        p.grad = None


torch.manual_seed(20261203)
gen, cfg = net(NET, "gen.")
teacher, _ = net(NET, "teacher.")
critic, _ = net(NET, "critic.")
phi, _ = net(PHI, "phi.")
shape = (N, cfg["in_ch"], cfg["res"], cfg["res"])
R = cfg["res"] >> (len(cfg["mult"]) - 1)
C = cfg["ch"] * cfg["mult"][-1]
head = GanHead(C, R, R)
hn = dict(head.named_parameters())
randomise(hn)
for k, v in hn.items():
    T["head." + k] = v.detach().float().clone()
head = head.double()

# ---- dm: one DM generator step ----
z = torch.randn(shape).float()
labels = torch.tensor([2, 0, 1], dtype=torch.int32)
t = torch.tensor([20, 517, 980], dtype=torch.int32)
eps = torch.randn(shape).float()
sigma = TABLE[t.long()]
c = onehot(labels)
x, _ = edm(gen, SIGMA_GEN * z.double(), torch.full((N,), SIGMA_GEN, dtype=torch.float64), c)
with torch.no_grad():
    x_t = x.detach() + rows(sigma.double()) * eps.double()
    d_real = edm(teacher, x_t, sigma.double(), c)[0]
    d_fake = edm(critic, x_t, sigma.double(), c)[0]
    w = (x.detach() - d_real).abs().flatten(1).mean(1)
    g = (d_fake - d_real) / rows(w)
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
loss = 0.5 * F.mse_loss(x, (x - g).detach(), reduction="mean")
loss.backward()
for k, v in dict(z=z, labels=labels, t=t, eps=eps, sigma=sigma, x=x, x_t=x_t, d_real=d_real, d_fake=d_fake,
                 loss=loss.reshape(1)).items():
    T["dm." + k] = v.detach() if v.dtype == torch.int32 else v.detach().float()
grads(gen, "dm.grad.gen.", T)
x_fake = T["dm.x"]  # float32: what the critic receives over the wire

# ---- fake: the critic's fake-score loss on the detached samples ----
t = torch.tensor([0, 300, 999], dtype=torch.int32)
noise = torch.randn(shape).float()
sigma = TABLE[t.long()]
xd = x_fake.double()
pred = edm(critic, xd + rows(sigma.double()) * noise.double(), sigma.double(), c)[0]
loss = (rows(lam(sigma)) * (pred - xd) ** 2).mean()
loss.backward()
T.update({"fake.t": t, "fake.noise": noise, "fake.sigma": sigma, "fake.loss": loss.detach().float().reshape(1)})
grads(critic, "fake.grad.critic.", T)

# ---- tsm: teacher score matching ----
x0 = (torch.rand(shape) * 2 - 1).float()
noise = torch.randn(shape).float()
sigma = torch.tensor([0.03, 0.4, 2.5]).float()
labels_r = torch.tensor([1, 1, 0], dtype=torch.int32)
cr = onehot(labels_r)
with torch.no_grad():
    x_t = x0.double() + rows(sigma.double()) * noise.double()
    d_teacher = edm(teacher, x_t, sigma.double(), cr)[0]
pred = edm(phi, x_t, sigma.double(), cr)[0]
loss = (rows(lam(sigma)) * (pred - d_teacher) ** 2).mean()
loss.backward()
T.update({"tsm.x0": x0, "tsm.noise": noise, "tsm.sigma": sigma, "tsm.labels": labels_r, "tsm.x_t": x_t.float(),
          "tsm.d_teacher": d_teacher.float(), "tsm.loss": loss.detach().float().reshape(1)})
grads(phi, "tsm.grad.phi.", T)

# ---- gan: the head on the critic's bottleneck, both losses ----
weight = 1e-2
t_fake = torch.tensor([100, 600, 900], dtype=torch.int32)
t_real = torch.tensor([50, 400, 800], dtype=torch.int32)
noise_fake, noise_real = torch.randn(shape).float(), torch.randn(shape).float()
x_real = (torch.rand(shape) * 2 - 1).float()
s_fake, s_real = TABLE[t_fake.long()], TABLE[t_real.long()]


def logits(xin, s, n, cc):
    _, bott = edm(critic, xin + rows(s.double()) * n.double(), s.double(), cc)
    return head(bott)


f_fake = logits(x_fake.double(), s_fake, noise_fake, c)
f_real = logits(x_real.double(), s_real, noise_real, cr)
loss_d = F.softplus(f_fake).mean() + F.softplus(-f_real).mean()
(weight * loss_d).backward()
T.update({"gan.x_fake": x_fake, "gan.noise_fake": noise_fake, "gan.t_fake": t_fake, "gan.x_real": x_real,
          "gan.noise_real": noise_real, "gan.t_real": t_real, "gan.labels_real": labels_r,
          "gan.sigma_fake": s_fake, "gan.sigma_real": s_real,
          "gan.weight": torch.tensor([weight]).float(), "gan.logit_fake": f_fake.detach().float(),
          "gan.logit_real": f_real.detach().float(), "gan.loss_d": loss_d.detach().float().reshape(1)})
grads(critic, "gan.grad.critic.", T)
for k, p in head.named_parameters():
    T["gan.grad.head." + k] = p.grad.detach().float().clone()
    p.grad = None
xg = x_fake.double().requires_grad_(True)
loss_g = F.softplus(-logits(xg, s_fake, noise_fake, c)).mean()
loss_g.backward()
T.update({"gan.loss_g": loss_g.detach().float().reshape(1), "gan.dx": xg.grad.float()})

# ---- dm_gan: the DM step with the GAN term added at the generator's output ----
w_gen = 3e-3
x, _ = edm(gen, SIGMA_GEN * z.double(), torch.full((N,), SIGMA_GEN, dtype=torch.float64), c)
loss = 0.5 * F.mse_loss(x, (x - g).detach(), reduction="mean") + w_gen * (x * T["gan.dx"].double()).sum()
loss.backward()
T["dm_gan.weight"] = torch.tensor([w_gen]).float()
grads(gen, "dm_gan.grad.gen.", T)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "distill_ref.safetensors")
st_write(path, T, generator="tests/torch_distill_ref.py")
print(f"wrote {path}: {len(T)} tensors; L_DM {float(T['dm.loss']):.6g}, L_fake {float(T['fake.loss']):.6g}, "
      f"L_TSM {float(T['tsm.loss']):.6g}, L_D {float(T['gan.loss_d']):.6g}, L_G {float(T['gan.loss_g']):.6g}, "
      f"logits fake {T['gan.logit_fake'].tolist()} real {T['gan.logit_real'].tolist()}")
