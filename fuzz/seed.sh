#!/usr/bin/env bash
# Seeds the fuzz corpora from the repository's own fixtures (valid and hostile files alike).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/checkpoint corpus/image
cp ../tests/fixtures/timm/*.safetensors ../tests/fixtures/timm/*.pth ../tests/fixtures/hostile/*.pth corpus/checkpoint/
cp ../tests/fixtures/hostile/*.jpg ../tests/fixtures/hostile/*.png corpus/image/
# A few small images in every format the decoder accepts, if Pillow is there.
python3 - <<'PY' || echo "no Pillow: image corpus has the fixtures only"
from PIL import Image
for mode, ext in [("RGB", "png"), ("L", "jpg"), ("RGBA", "gif"), ("RGB", "bmp"), ("RGB", "tiff"), ("RGB", "webp"), ("P", "png")]:
    img = Image.new(mode, (7, 5), (200,) * len(mode) if mode not in ("L", "P") else 200)
    img.save(f"corpus/image/seed_{mode}.{ext}")
PY
