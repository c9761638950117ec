#!/usr/bin/env python3
"""Full-depth ViT forward, dmpo-burn vs PyTorch (timm), same weights, same machine, same run.

For each architecture and batch size: timm builds the model with random weights (seeded), the
weights are saved as safetensors, PyTorch is timed (fp32, inference mode, the given thread
count), then our `dmpo bench-vit` imports the same file and is timed the same way (median of
the timed passes, after warm-up); PyTorch is timed again after each of our builds. The whole
sweep runs `--rounds` times (3 by default), so every figure is the median of interleaved rounds;
bench_vs_torch.{csv,json} keep one row per round, bench_vs_torch_summary.csv the median ratio
and its spread (min, max) per configuration.

Beside each ratio: the achieved GFLOP/s (2 x the model's MACs per image x images/s) and its
fraction of the machine's gemm peak, which `dmpo roofline` measures at the start of every round;
at batch 1, the latency distribution of `--latency-iters` passes (p50 / p95 / p99) on both sides.
`demo` is the embedded demo backbone's architecture (28 px, 4 px patches, width 96, depth 6).

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


def percentile(sorted_xs, p):
    """Nearest rank, as `dmpo bench-vit` reports it."""
    import math
    return sorted_xs[min(len(sorted_xs), max(1, math.ceil(p * len(sorted_xs)))) - 1]


def torch_timing(model, batch, size, warmup, iters):
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    times.sort()
    return {"images_per_s": batch / statistics.median(times), "median_s": statistics.median(times),
            "p95_s": percentile(times, 0.95), "p99_s": percentile(times, 0.99)}


def ours_timing(binary, weights, arch, batch, warmup, iters, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    arch_args = ["--heads", "3"] if arch == "demo" else ["--arch", arch]
    out = subprocess.run(
        [binary, "bench-vit", "--weights", weights, *arch_args, "--batch", str(batch),
         "--warmup", str(warmup), "--iters", str(iters)],
        check=True, capture_output=True, text=True, env=env)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def roofline(binary, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "roofline", "--seconds", "1"], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])


def create_model(arch):
    if arch == "demo":
        from timm.models.vision_transformer import VisionTransformer
        return VisionTransformer(img_size=28, patch_size=4, embed_dim=96, depth=6, num_heads=3,
                                 mlp_ratio=4.0, num_classes=10)
    return timm.create_model(arch, pretrained=False)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--latency-iters", type=int, default=100,
                   help="timed passes at batch 1, for the latency percentiles")
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
            model = create_model(arch).eval()
            weights = os.path.join(tmp, f"{arch}.safetensors")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
            size = 28 if arch == "demo" else model.default_cfg["input_size"][-1]
            models[arch] = (model, weights, size)
        peaks = {}
        for rnd, arch, batch in ((r, arch, int(b)) for r in range(1, a.rounds + 1)
                                 for arch in models for b in a.batches.split(",")):
            model, weights, size = models[arch]
            if rnd not in peaks:
                peaks[rnd] = roofline(binaries[0][1], a.threads)["peak_gflops"]
                print(f"round {rnd}: gemm peak {peaks[rnd]:.1f} GFLOP/s", flush=True)
            peak = peaks[rnd]
            iters = a.latency_iters if batch == 1 else a.iters
            # PyTorch is timed before and after each of our builds, and each ratio is
            # against the mean of the two: load drifting during the run then cancels out.
            before = torch_timing(model, batch, size, a.warmup, iters)
            for name, binary in binaries:
                ours = ours_timing(binary, weights, arch, batch, a.warmup, iters, a.threads)
                after = torch_timing(model, batch, size, a.warmup, iters)
                ref = (before["images_per_s"] + after["images_per_s"]) / 2
                gflop_per_image = 2 * ours["macs_per_image"] / 1e9
                row = {"round": rnd, "arch": arch, "batch": batch, "threads": a.threads,
                       "backend": name, "torch_images_per_s": round(ref, 3),
                       "ours_images_per_s": round(ours["images_per_s"], 3),
                       "ratio": round(ours["images_per_s"] / ref, 3),
                       "ours_gflops": round(ours["images_per_s"] * gflop_per_image, 2),
                       "torch_gflops": round(ref * gflop_per_image, 2),
                       "peak_gflops": round(peak, 2),
                       "ours_peak_fraction": round(ours["images_per_s"] * gflop_per_image / peak, 3),
                       "torch_peak_fraction": round(ref * gflop_per_image / peak, 3),
                       "ours_p50_ms": round(ours["median_s"] * 1e3, 3),
                       "ours_p95_ms": round(ours["p95_s"] * 1e3, 3),
                       "ours_p99_ms": round(ours["p99_s"] * 1e3, 3),
                       "torch_p50_ms": round(after["median_s"] * 1e3, 3),
                       "torch_p95_ms": round(after["p95_s"] * 1e3, 3),
                       "torch_p99_ms": round(after["p99_s"] * 1e3, 3),
                       "torch": torch.__version__, "timm": timm.__version__}
                before = after
                rows.append(row)
                print(f"round {rnd} {arch:24} batch {batch:3}  torch {ref:8.2f} img/s  "
                      f"dmpo-burn ({name}) {row['ours_images_per_s']:8.2f} img/s  "
                      f"ratio {row['ratio']:.2f}  {row['ours_gflops']:.1f} GFLOP/s "
                      f"({100 * row['ours_peak_fraction']:.0f}% of peak)  p50 "
                      f"{row['ours_p50_ms']:.2f} / {row['torch_p50_ms']:.2f} ms", flush=True)
    with open(os.path.join(a.out, "bench_vs_torch.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(a.out, "bench_vs_torch.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_summary(rows, ["arch", "batch", "backend"], os.path.join(a.out, "bench_vs_torch_summary.csv"))


def write_summary(rows, keys, path):
    """Median ratio over the rounds and its spread, per configuration, with the medians of the
    other columns that are numbers (GFLOP/s, peak fraction, latencies): what docs report."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    extra = [k for k in rows[0] if k not in keys and k not in ("round", "ratio", "threads")
             and isinstance(rows[0][k], (int, float))]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys + ["rounds", "median_ratio", "min_ratio", "max_ratio"]
                   + [f"median_{k}" for k in extra])
        for key, group in groups.items():
            ratios = [r["ratio"] for r in group]
            w.writerow(list(key) + [len(ratios), round(statistics.median(ratios), 3),
                                    min(ratios), max(ratios)]
                       + [round(statistics.median(r[k] for r in group), 3) for k in extra])
            print(f"{' '.join(map(str, key)):40} median ratio {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} rounds)")


if __name__ == "__main__":
    sys.exit(main())
