#!/usr/bin/env python3
"""Full-depth ViT forward, dmpo-burn vs PyTorch (timm), same weights, same machine, same run.

For each architecture and batch size: timm builds the model with random weights (seeded), the
weights are saved as safetensors, PyTorch is timed (fp32, inference mode, the given thread
count), then our `dmpo bench-vit` imports the same file and is timed the same way (median of
the timed passes, after warm-up); PyTorch is timed again after each of our builds. The whole
sweep runs `--rounds` times (3 by default), so every figure is the median of interleaved rounds;
bench_vs_torch.{csv,json} keep one row per round, bench_vs_torch_summary.csv the median ratio
and its spread (min, max) per configuration.

    cargo build --release -p dmpo-cli           # one build per backend (see docs/benchmarks.md)
    benches/setup.sh                            # PyTorch, timm, OpenBLAS, perf
    python3 benches/bench_vs_torch.py --binaries flex=target/release/dmpo

Needs no download: the models are random (speed does not depend on the values).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import timm
import torch
from safetensors.torch import save_file


def torch_images_per_s(model, batch, size, warmup, iters):
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def ours_images_per_s(binary, weights, arch, batch, warmup, iters, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [binary, "bench-vit", "--weights", weights, "--arch", arch, "--batch", str(batch),
         "--warmup", str(warmup), "--iters", str(iters)],
        check=True, capture_output=True, text=True, env=env)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--binaries", default="flex=target/release/dmpo",
                   help="comma-separated NAME=PATH of dmpo builds (one per backend)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="runs/bench-vs-torch")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    binaries = [b.split("=", 1) for b in a.binaries.split(",") if b]
    os.makedirs(a.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for arch in a.archs.split(","):
            torch.manual_seed(0)
            model = timm.create_model(arch, pretrained=False).eval()
            weights = os.path.join(tmp, f"{arch}.safetensors")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
            models[arch] = (model, weights, model.default_cfg["input_size"][-1])
        for rnd, arch, batch in ((r, arch, int(b)) for r in range(1, a.rounds + 1)
                                 for arch in models for b in a.batches.split(",")):
            model, weights, size = models[arch]
            # PyTorch is timed before and after each of our builds, and each ratio is
            # against the mean of the two: load drifting during the run then cancels out.
            before = torch_images_per_s(model, batch, size, a.warmup, a.iters)
            for name, binary in binaries:
                ours = ours_images_per_s(binary, weights, arch, batch, a.warmup, a.iters, a.threads)
                after = torch_images_per_s(model, batch, size, a.warmup, a.iters)
                ref = (before + after) / 2
                before = after
                row = {"round": rnd, "arch": arch, "batch": batch, "threads": a.threads,
                       "backend": name, "torch_images_per_s": round(ref, 3),
                       "ours_images_per_s": round(ours["images_per_s"], 3),
                       "ratio": round(ours["images_per_s"] / ref, 3),
                       "torch": torch.__version__, "timm": timm.__version__}
                rows.append(row)
                print(f"round {rnd} {arch:24} batch {batch:3}  torch {ref:8.2f} img/s  "
                      f"dmpo-burn ({name}) {row['ours_images_per_s']:8.2f} img/s  "
                      f"ratio {row['ratio']:.2f}", flush=True)
    with open(os.path.join(a.out, "bench_vs_torch.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(a.out, "bench_vs_torch.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_summary(rows, ["arch", "batch", "backend"], os.path.join(a.out, "bench_vs_torch_summary.csv"))


def write_summary(rows, keys, path):
    """Median ratio over the rounds and its spread, per configuration: what docs report."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r["ratio"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys + ["rounds", "median_ratio", "min_ratio", "max_ratio"])
        for key, ratios in groups.items():
            w.writerow(list(key) + [len(ratios), round(statistics.median(ratios), 3),
                                    min(ratios), max(ratios)])
            print(f"{' '.join(map(str, key)):40} median ratio {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} rounds)")


if __name__ == "__main__":
    sys.exit(main())
