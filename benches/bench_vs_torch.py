#!/usr/bin/env python3
"""Full-depth ViT forward, dmpo-burn vs PyTorch (timm), same weights, same machine, same run.

For each architecture and batch size: timm builds the model with random weights (seeded), the
weights are saved as safetensors, PyTorch is timed (fp32, inference mode, the given thread
count), then our `dmpo-import bench-vit` imports the same file and is timed the same way (median
of the timed passes, after warm-up); PyTorch is timed again after each of our builds. Prints a table and writes bench_vs_torch.{csv,json}.

    cargo build --release -p dmpo-import        # one build per backend (see docs/benchmarks.md)
    benches/setup.sh                            # PyTorch, timm, OpenBLAS, perf
    python3 benches/bench_vs_torch.py --binaries flex=target/release/dmpo-import

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
    p.add_argument("--binaries", default="flex=target/release/dmpo-import",
                   help="comma-separated NAME=PATH of dmpo-import builds (one per backend)")
    p.add_argument("--out", default="runs/bench-vs-torch")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    binaries = [b.split("=", 1) for b in a.binaries.split(",") if b]
    os.makedirs(a.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs.split(","):
            torch.manual_seed(0)
            model = timm.create_model(arch, pretrained=False).eval()
            weights = os.path.join(tmp, f"{arch}.safetensors")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
            size = model.default_cfg["input_size"][-1]
            for batch in map(int, a.batches.split(",")):
                # PyTorch is timed before and after each of our builds, and each ratio is
                # against the mean of the two: load drifting during the run then cancels out.
                before = torch_images_per_s(model, batch, size, a.warmup, a.iters)
                for name, binary in binaries:
                    ours = ours_images_per_s(binary, weights, arch, batch, a.warmup, a.iters, a.threads)
                    after = torch_images_per_s(model, batch, size, a.warmup, a.iters)
                    ref = (before + after) / 2
                    before = after
                    row = {"arch": arch, "batch": batch, "threads": a.threads,
                           "backend": name, "torch_images_per_s": round(ref, 3),
                           "ours_images_per_s": round(ours["images_per_s"], 3),
                           "ratio": round(ours["images_per_s"] / ref, 3),
                           "torch": torch.__version__, "timm": timm.__version__}
                    rows.append(row)
                    print(f"{arch:24} batch {batch:3}  torch {ref:8.2f} img/s  "
                          f"dmpo-burn ({name}) {row['ours_images_per_s']:8.2f} img/s  "
                          f"ratio {row['ratio']:.2f}", flush=True)
    with open(os.path.join(a.out, "bench_vs_torch.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(a.out, "bench_vs_torch.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
