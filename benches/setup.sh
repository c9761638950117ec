#!/usr/bin/env bash
# What the benchmarks in docs/benchmarks.md need beyond cargo, on Debian: PyTorch + timm as the
# reference, OpenBLAS for the `openblas` ndarray build, perf for the profiles. Run as root (or
# with sudo available); nothing here is needed to build, test or use dmpo-burn itself.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get install -y libopenblas-dev linux-perf
python3 -m pip install torch timm safetensors
