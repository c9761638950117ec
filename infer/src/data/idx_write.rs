//! Writing gzip'ed IDX files (MNIST's format), one split at a time: what `subset` and the
//! digits converter produce and `load_splits` reads back.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::DataError;

/// Writes `out/{prefix}-images-idx3-ubyte.gz` and `out/{prefix}-labels-idx1-ubyte.gz` from
/// `(pixels, label)` pairs of `rows × cols` grey bytes, each file atomically.
pub(crate) fn write_idx_split(
    out: &Path,
    prefix: &str,
    rows: usize,
    cols: usize,
    images: &[(&[u8], u8)],
) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut img_bytes = vec![0, 0, 8, 3];
    for v in [images.len(), rows, cols] {
        img_bytes.extend((v as u32).to_be_bytes());
    }
    let mut lbl_bytes = vec![0, 0, 8, 1];
    lbl_bytes.extend((images.len() as u32).to_be_bytes());
    for &(pixels, label) in images {
        debug_assert_eq!(pixels.len(), rows * cols);
        img_bytes.extend_from_slice(pixels);
        lbl_bytes.push(label);
    }
    for (kind, bytes) in [
        ("images-idx3-ubyte", img_bytes),
        ("labels-idx1-ubyte", lbl_bytes),
    ] {
        let path: PathBuf = out.join(format!("{prefix}-{kind}.gz"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let compressed = gz
            .write_all(&bytes)
            .and_then(|()| gz.finish())
            .map_err(io(&path))?;
        dmpo_import::write_atomic(&path, &compressed).map_err(|e| DataError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    tracing::info!("{}: {prefix}, {} images", out.display(), images.len());
    Ok(())
}
