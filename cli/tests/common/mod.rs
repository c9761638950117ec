//! Helpers shared by the command-line tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file of the timm fixtures.
#[allow(dead_code)] // each test file includes this module; not every one uses each helper
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/timm")
        .join(name)
}

/// `dmpo <task>` of the pico backbone with two exits, on `data` into `out`; callers add the
/// budgets, the training length and anything else.
#[allow(dead_code)]
pub fn pico_command(task: &str, data: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmpo"));
    cmd.args([task, "--heads", "3", "--exits", "2,4"])
        .arg("--backbone")
        .arg(fixture("vit_pico_cls.pth"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    cmd
}

/// A 10-class MNIST-style directory of `n` images (gzipped IDX, `prefix` = `train` or `t10k`):
/// image `i` is a bar at row 2(i mod 10)+4, so it can be learnt, with a brightness that depends
/// on `i`, so the first `n` images of two such files are the same images. `labels` replaces the
/// label file's contents (to make it wrong).
pub fn write_idx(dir: &Path, prefix: &str, n: usize, labels: Option<Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for v in [n as u32, 28, 28] {
        images.extend(v.to_be_bytes());
    }
    for i in 0..n {
        let c = i % 10;
        for y in 0..28 {
            for x in 0..28 {
                let on = y / 2 == c + 2 && x > 3 && x < 24;
                images.push(if on {
                    100 + (i % 150) as u8
                } else {
                    (x * y % 7) as u8
                });
            }
        }
    }
    let labels = labels.unwrap_or_else(|| (0..n).map(|i| (i % 10) as u8).collect());
    let mut label_bytes = vec![0, 0, 8, 1];
    label_bytes.extend((labels.len() as u32).to_be_bytes());
    label_bytes.extend(labels);
    for (kind, bytes) in [
        ("images-idx3-ubyte", images),
        ("labels-idx1-ubyte", label_bytes),
    ] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-{kind}.gz")),
            gz.finish().unwrap(),
        )
        .unwrap();
    }
}
