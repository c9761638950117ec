#!/usr/bin/env python3
"""DMPO training step, dmpo-burn vs PyTorch, same architecture, same machine, same run.

One training step = every exit's forward, the weighted multi-exit loss (cross-entropy with label
smoothing 0.1, equal weights), the non-finite-loss check (one scalar read back), backward, AdamW
(decay 0.05 on matrices only). The PyTorch model below is the same DMPO model as `model/`: timm's
ViT, an AdaptFormer adapter in every block, a bypass and a covariance head (iSQRT-COV, 5
Newton-Schulz iterations) at each early exit, timm's norm + head at the last; the script checks
that both have the same total and trainable parameter counts before timing.

Each measurement runs in its own process (so one's freed memory does not hide the next one's
peak): images/s is the median over the timed steps; memory is the peak resident set during the
steps above what was resident before them (Linux `/proc`), for a frozen backbone (DMPO) and for
full fine-tuning. Interleaved like the forward's: within a round, PyTorch is timed before and
after each of our builds and each ratio is against the mean of the two; the whole sweep runs
`--rounds` times (3 by default). bench_train_vs_torch.{csv,json} keep one row per round,
bench_train_vs_torch_summary.csv the median ratio and its spread per configuration.
Each of our rows also has its achieved GFLOP/s (the step's nominal work: forward, activation
gradients and, in full fine-tuning, weight gradients) and the fraction of the gemm peak that
`dmpo roofline` measures at the start of every round.

    cargo build --release -p dmpo-cli --bin dmpo              # one binary per backend
    benches/setup.sh                                          # PyTorch, timm, OpenBLAS, perf
    python3 benches/bench_train_vs_torch.py --binaries flex=target/release/dmpo

Needs no download: the models are random (speed does not depend on the values). `--archs demo`
times the embedded demo model (28x28 inputs, width 96, 6 blocks) with the demo recipe's exits.
"""
import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class PeakMemory:
    """Peak resident memory over the steps, as `train/src/peak_memory.rs` measures it."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.start = status_kib("VmRSS")
        except OSError:
            self.start = None

    def finish(self):
        if self.start is None:
            return None, None
        peak = status_kib("VmHWM")
        return (peak - self.start) * 1024, peak * 1024


def torch_dmpo(arch, classes):
    """The DMPO model of `model/src/dmpo/` in PyTorch (defaults of `DmpoConfig`)."""
    import timm
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if arch == "demo":
        # The embedded demo backbone (train/src/pretrain.rs, demo_vit_config) and the demo
        # recipe's model: exits after blocks 1, 2, 3, 6, covariance heads d' = 32 with the class
        # token fused (So-ViT), adapter scale 1.
        from timm.models.vision_transformer import VisionTransformer
        vit = VisionTransformer(img_size=28, patch_size=4, embed_dim=96, depth=6, num_heads=3,
                                mlp_ratio=4.0, global_pool="token", num_classes=classes)
        exits, cov_dim, adapter_scale, fuse_cls = [1, 2, 3, 6], 32, 1.0, True
    else:
        vit = timm.create_model(arch, pretrained=False, num_classes=classes)
        depth = len(vit.blocks)
        stages = max(1, min(depth, 4))
        exits = [-(-depth * k // stages) for k in range(1, stages + 1)]
        cov_dim, adapter_scale, fuse_cls = max(vit.embed_dim // 12, 8), 0.1, False
    d, depth = vit.embed_dim, len(vit.blocks)
    prefix = vit.num_prefix_tokens

    class Adapter(nn.Module):
        def __init__(self, bottleneck=16, scale=adapter_scale):
            super().__init__()
            self.down, self.up, self.scale = nn.Linear(d, bottleneck), nn.Linear(bottleneck, d), scale
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

        def forward(self, normed):
            return self.up(F.relu(self.down(normed))) * self.scale

    class Bypass(nn.Module):
        def __init__(self, scale=1.0):
            super().__init__()
            r = max(d // 12, 1)
            self.norm, self.down, self.up = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, r), nn.Linear(r, d)
            self.scale = scale
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

        def forward(self, h):
            return h + self.up(F.gelu(self.down(self.norm(h)))) * self.scale

    class CovarianceHead(nn.Module):
        def __init__(self, iterations=5, eps=1e-5):
            super().__init__()
            r = cov_dim
            self.norm, self.reduce = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, r)
            self.classifier = nn.Linear(r * (r + 1) // 2, classes)
            self.iterations, self.eps = iterations, eps
            self.register_buffer("triu", torch.triu_indices(r, r), persistent=False)
            self.cls = nn.Linear(d, classes) if fuse_cls and prefix > 0 else None

        def forward(self, tokens):
            x = self.reduce(self.norm(tokens[:, prefix:]))
            n = x.shape[1]
            c = x - x.mean(1, keepdim=True)
            sigma = c.transpose(1, 2) @ c / n
            eye = torch.eye(sigma.shape[1], device=x.device).expand_as(sigma)
            trace = sigma.diagonal(dim1=1, dim2=2).sum(1) + self.eps
            # The model crate's iterations: Z0 = I not multiplied, the last Z not computed.
            a = sigma / trace[:, None, None]
            p = (3 * eye - a) * 0.5
            y, z = a @ p, p
            for i in range(1, self.iterations):
                p = (3 * eye - z @ y) * 0.5
                y = y @ p
                if i + 1 < self.iterations:
                    z = p @ z
            y = y * trace.sqrt()[:, None, None]
            logits = self.classifier(y[:, self.triu[0], self.triu[1]])
            if self.cls is not None:
                logits = logits + self.cls(self.norm(tokens[:, 0]))
            return logits

    class Dmpo(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit
            self.adapters = nn.ModuleList(Adapter() for _ in range(depth))
            self.bypasses = nn.ModuleList(Bypass() for _ in exits[:-1])
            self.heads = nn.ModuleList(CovarianceHead() for _ in exits[:-1])

        def block(self, i, x):
            b = self.vit.blocks[i]
            x = x + b.ls1(b.attn(b.norm1(x)))
            normed = b.norm2(x)
            return x + b.ls2(b.mlp(normed)) + self.adapters[i](normed)

        def forward(self, images):
            x = self.vit.patch_embed(images)
            x = self.vit.norm_pre(self.vit._pos_embed(x))
            logits, start = [], 0
            for k, e in enumerate(exits):
                for i in range(start, e):
                    x = self.block(i, x)
                start = e
                if k + 1 < len(exits):
                    logits.append(self.heads[k](self.bypasses[k](x)))
                else:
                    logits.append(self.vit.forward_head(self.vit.norm(x)))
            return logits

    return Dmpo(), exits


def torch_one(a):
    import timm
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, exits = torch_dmpo(a.arch, a.classes)
    backbone = set(id(p) for p in model.vit.parameters()) - set(id(p) for p in model.vit.head.parameters())
    for p in model.parameters():
        p.requires_grad_(a.tuning == "full" or id(p) not in backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW([
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.05},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ], lr=1e-4)
    model.train()
    size = model.vit.patch_embed.img_size[0]
    weights = [1.0 / len(exits)] * len(exits)
    memory = PeakMemory()
    times = []
    for step in range(a.warmup + a.steps):
        images = torch.randn(a.batch, 3, size, size)
        targets = torch.randint(0, a.classes, (a.batch,))
        start = time.perf_counter()
        logits = model(images)
        loss = sum(w * F.cross_entropy(l, targets, label_smoothing=0.1) for w, l in zip(weights, logits))
        if not math.isfinite(loss.item()):
            raise SystemExit("non-finite loss")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - start)
    above, peak = memory.finish()
    step_s = statistics.median(times)
    return {
        "backend": "pytorch", "arch": a.arch, "tuning": a.tuning, "batch": a.batch,
        "steps": a.steps, "step_s": step_s, "images_per_s": a.batch / step_s,
        "total_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in params),
        "step_memory_bytes": above, "peak_memory_bytes": peak,
        "torch": torch.__version__, "timm": timm.__version__,
    }


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224")
    p.add_argument("--tunings", default="frozen,full")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--binaries", default="flex=target/release/dmpo",
                   help="comma-separated NAME=PATH of dmpo builds (one per backend)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="runs/bench-train-vs-torch")
    p.add_argument("--torch-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--tuning", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_one:
        print(json.dumps(torch_one(a)))
        return 0
    binaries = [b.split("=", 1) for b in a.binaries.split(",") if b]
    common = ["--batch", str(a.batch), "--classes", str(a.classes),
              "--warmup", str(a.warmup), "--steps", str(a.steps)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    rows = []
    torch_cmd = lambda arch, tuning: [sys.executable, __file__, "--torch-one", "--arch", arch,
                                      "--tuning", tuning, "--threads", str(a.threads)] + common
    for rnd in range(1, a.rounds + 1):
        peak = run_json([binaries[0][1], "roofline", "--seconds", "1"], env)["peak_gflops"]
        print(f"round {rnd}: gemm peak {peak:.1f} GFLOP/s", flush=True)
        for arch in a.archs.split(","):
            for tuning in a.tunings.split(","):
                before = run_json(torch_cmd(arch, tuning))
                rows.append(dict(before, round=rnd, ratio=1.0, threads=a.threads))
                print(f"round {rnd} {arch:24} {tuning:6} pytorch      "
                      f"{before['images_per_s']:7.2f} img/s  "
                      f"step memory {before['step_memory_bytes'] / 2**20:7.0f} MiB", flush=True)
                for name, binary in binaries:
                    ours = run_json([binary, "bench-step", "--arch", arch, "--tuning", tuning] + common, env)
                    after = run_json(torch_cmd(arch, tuning))
                    if (ours["total_params"], ours["trainable_params"]) != (after["total_params"], after["trainable_params"]):
                        raise SystemExit(f"{arch}: parameter counts differ: ours {ours} vs PyTorch {after}")
                    ref = (before["images_per_s"] + after["images_per_s"]) / 2
                    before = after
                    row = dict(ours, round=rnd, backend=name, threads=a.threads,
                               torch_images_per_s=round(ref, 3),
                               ratio=round(ours["images_per_s"] / ref, 3),
                               gflops=round(ours["images_per_s"] * ours["nominal_flops_per_image"] / 1e9, 2),
                               peak_gflops=round(peak, 2))
                    row["peak_fraction"] = round(row["gflops"] / peak, 3)
                    rows.append(row)
                    print(f"round {rnd} {arch:24} {tuning:6} {name:12} {ours['images_per_s']:7.2f} img/s  "
                          f"step memory {ours['step_memory_bytes'] / 2**20:7.0f} MiB  "
                          f"ratio {row['ratio']:.2f}", flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_train_vs_torch.json"), "w") as f:
        json.dump(rows, f, indent=1)
    fields = ["round", "arch", "tuning", "backend", "batch", "threads", "images_per_s",
              "torch_images_per_s", "ratio", "step_s", "gflops", "peak_gflops", "peak_fraction",
              "step_memory_bytes", "peak_memory_bytes", "trainable_params", "total_params"]
    with open(os.path.join(a.out, "bench_train_vs_torch.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    summary = os.path.join(a.out, "bench_train_vs_torch_summary.csv")
    with open(summary, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "tuning", "backend", "rounds", "median_ratio", "min_ratio", "max_ratio",
                    "median_gflops", "median_peak_fraction"])
        groups = {}
        for r in rows:
            if r["backend"] != "pytorch":
                groups.setdefault((r["arch"], r["tuning"], r["backend"]), []).append(r)
        for key, group in groups.items():
            ratios = [r["ratio"] for r in group]
            w.writerow(list(key) + [len(ratios), round(statistics.median(ratios), 3),
                                    min(ratios), max(ratios),
                                    round(statistics.median(r["gflops"] for r in group), 2),
                                    round(statistics.median(r["peak_fraction"] for r in group), 3)])
            print(f"{' '.join(key):48} median ratio {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
