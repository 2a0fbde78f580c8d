#!/usr/bin/python3
"""torch_unet_bench.py: the PyTorch twin of bench/bench_unet.c. The network is fmnist-s built
from docs/UNET.md by tests/torch_unet.py (same blocks, same parameter names); the work is the
same: an EDM training step (ln sigma ~ N(-1.2, 1.2^2), lambda-weighted MSE, backward, AdamW)
at batch 32 and 128, and the EDM-preconditioned forward under no_grad at batch 256 and at
batch 1 (the latency of one image), with torch.set_num_threads(2). Each configuration runs in
its own process (peak RSS via getrusage ru_maxrss). Prints the same JSON lines with
"bench":"torch_unet".

    /usr/bin/python3 bench/torch_unet_bench.py [--only train_b32|train_b128|fwd_b256|fwd_b1]
                     [--config SPEC] [--batch N] [--threads 2] [--reps R]

--config and --batch mean what they mean to bench_unet: another network (a CONFIG-SPEC of
docs/UNET.md section 1, e.g. the student sizes fmnist-m, fmnist-xs; 28x28x1, 10 classes; the
lines then carry "config":"SPEC"), and the batch of the configurations run (metric names
follow: fwd_bN). --only A,B,... runs several configurations one after the other in one
process (PyTorch's start-up, a few seconds on a loaded machine, paid once; each peak RSS is
then the process's so far), each with its own --reps R if given as NAME:R; there, and alone,
fwd_bN names the forward at any batch N (3 repetitions unless :R says):
--only fwd_b1:10,fwd_b16:5,fwd_b64:2 is a latency and a batch sweep in one process.
tools/bench-student runs both sides on the student sizes.

--device cuda is the twin of bench/bench_unet_gpu.c instead: training at batch 256 and the
forward at batch 1024 on the GPU ("bench":"torch_unet_gpu", TFLOP/s, peak GPU memory), float32
with TF32 off in cuBLAS and cuDNN (cudnn.benchmark on, as our backend times its algorithms),
or with --tf32 TF32 on (metric names end in _tf32). Each repetition ends with a device sync.
"""
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

CONFIGS = {"train_b32": (True, 32, 5), "train_b128": (True, 128, 3), "fwd_b256": (False, 256, 3),
           "fwd_b1": (False, 1, 30)}
CONFIGS_CUDA = {"train_b256": (True, 256, 10), "fwd_b1024": (False, 1024, 10), "fwd_b1": (False, 1, 30)}
BENCH = "torch_unet"
SPEC = None  # --config


def emit(metric, value, unit):
    line = {"bench": BENCH}
    if SPEC is not None:
        line["config"] = SPEC
    line.update({"metric": metric, "value": float("%.6g" % value), "unit": unit})
    print(json.dumps(line, separators=(",", ":")), flush=True)


def run_one(name, threads, reps, device="cpu", tf32=False, batch=0):
    import torch
    import torch_unet as tu
    global BENCH
    torch.set_num_threads(threads)
    cuda = device == "cuda"
    if cuda:
        BENCH = "torch_unet_gpu"
        torch.set_default_device("cuda")  # tensors made inside torch_unet.py land there too
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    train, N, default_reps = config_named(name, CONFIGS_CUDA if cuda else CONFIGS)
    N = batch or N
    reps = reps or default_reps
    torch.manual_seed(1)
    spec = SPEC or "fmnist-s"
    try:
        cfg = tu.parse_spec(spec)
    except (KeyError, ValueError) as e:
        sys.exit("torch_unet_bench: --config %s: not a CONFIG-SPEC (%r)" % (spec, e))
    if cfg["kind"] != "unet" or cfg["in_ch"] != 1 or cfg["res"] != 28 or cfg["classes"] != 10 or cfg["cond"]:
        sys.exit("torch_unet_bench: --config %s is not a 28x28x1 network with 10 classes" % spec)
    model, cfg = tu.build(spec)
    x = torch.rand(N, 1, 28, 28) * 2 - 1
    labels = torch.arange(N) % 10
    c = torch.nn.functional.one_hot(labels, 10).float()
    sigma_fixed = 0.5 + 0.1 * torch.arange(N, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    sd = tu.SIGMA_DATA
    times = []
    for r in range(reps + 1):  # r = 0 warms up
        t0 = time.perf_counter()
        if train:
            opt.zero_grad(set_to_none=False)
            sigma = (torch.randn(N) * 1.2 - 1.2).exp()
            xn = x + sigma[:, None, None, None] * torch.randn_like(x)
            d, _ = tu.edm(model, xn, sigma, c)
            lam = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
            loss = (lam[:, None, None, None] * (d - x) ** 2).mean()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                tu.edm(model, x, sigma_fixed, c)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sec = sorted(times[1:])[reps // 2]
    fl = flops_per_image(model, cfg) * N * (3 if train else 1)
    kind = "train" if train else "fwd"
    if cuda:
        sfx = "_tf32" if tf32 else ""
        emit(f"train_step_b{N}{sfx}" if train else f"fwd_b{N}{sfx}", sec * 1e3, "ms")
        emit(f"{kind}_images_per_s_b{N}{sfx}", N / sec, "images/s")
        emit(f"{kind}_tflops_b{N}{sfx}", fl / sec * 1e-12, "TFLOP/s")
        emit(f"{kind}_peak_gpu_mem_b{N}{sfx}", torch.cuda.max_memory_allocated() / 2**20, "MB")
        return
    emit(f"train_step_b{N}" if train else f"fwd_b{N}", sec * 1e3, "ms")
    emit(f"{kind}_images_per_s_b{N}", N / sec, "images/s")
    emit(f"{kind}_gflops_b{N}", fl / sec * 1e-9, "GFLOP/s")
    emit(f"{kind}_peak_rss_b{N}", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "MB")


def config_named(name, names):
    """(train, batch, reps) of a configuration: one of names, or fwd_bN for any batch N; None if neither"""
    if name in names:
        return names[name]
    if name.startswith("fwd_b") and name[5:].isdigit() and 1 <= int(name[5:]) <= 65536:
        return (False, int(name[5:]), 3)
    return None


def flops_per_image(model, cfg):
    """docs/UNET.md section 8, counted with forward hooks on one image."""
    import torch
    import torch_unet as tu
    total = [0.0]

    def conv_hook(m, inp, out):
        total[0] += 2.0 * out[0].numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        total[0] += 2.0 * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        tu.edm(model, torch.zeros(1, 1, 28, 28), torch.ones(1), torch.zeros(1, 10))
    for h in hooks:
        h.remove()
    # attention products: 4 L^2 C per block with attention (L = r*r at the block's resolution)
    for name, m in model.named_modules():
        if isinstance(m, tu.Block) and m.heads:
            r = cfg["res"] >> (len(cfg["mult"]) - 1) if name.startswith("mid") else int(name.split(".")[1].split("x")[0])
            total[0] += 4.0 * (r * r) ** 2 * m.cout
    return total[0]


def main():
    global SPEC
    args = sys.argv[1:]
    only, threads, reps, device, tf32, batch = None, 2, 0, "cpu", False, 0
    while args:
        a = args.pop(0)
        if a == "--only":
            only = args.pop(0)
        elif a == "--threads":
            threads = int(args.pop(0))
        elif a == "--reps":
            reps = int(args.pop(0))
        elif a == "--device" and args and args[0] in ("cpu", "cuda"):
            device = args.pop(0)
        elif a == "--tf32":
            tf32 = True
        elif a == "--config" and args:
            SPEC = args.pop(0)
        elif a == "--batch" and args:
            v = args.pop(0)
            if not v.isdigit() or not 1 <= int(v) <= 65536:
                sys.exit("torch_unet_bench: --batch %s: not a batch size in [1, 65536]" % v)
            batch = int(v)
        else:
            sys.exit("usage: torch_unet_bench.py [--only NAME] [--config SPEC] [--batch N] [--threads T] [--reps R] "
                     "[--device cpu|cuda] [--tf32]")
    names = CONFIGS_CUDA if device == "cuda" else CONFIGS
    if only:
        runs = []
        for item in only.split(","):
            name, _, r = item.partition(":")
            if config_named(name, names) is None:
                sys.exit("torch_unet_bench: --only %s: no configuration named '%s' (%s, fwd_bN)" % (only, name,
                                                                                                   ", ".join(names)))
            if r and (not r.isdigit() or int(r) < 1):
                sys.exit("torch_unet_bench: --only %s: repetitions '%s' not a positive count" % (item, r))
            runs.append((name, int(r) if r else reps))
        for name, r in runs:
            run_one(name, threads, r, device, tf32, batch)
        return
    failed = 0
    for name in (CONFIGS_CUDA if device == "cuda" else CONFIGS):
        cmd = [sys.executable, os.path.abspath(__file__), "--only", name, "--threads", str(threads)]
        if reps:
            cmd += ["--reps", str(reps)]
        if SPEC is not None:
            cmd += ["--config", SPEC]
        if batch:
            cmd += ["--batch", str(batch)]
        if device == "cuda":
            cmd += ["--device", "cuda"] + (["--tf32"] if tf32 else [])
        failed |= subprocess.call(cmd) != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
