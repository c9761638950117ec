use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use image::{DynamicImage, GrayImage};

use super::{DataError, ImageDataset, ImageRef, Sample};

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// IDX image file (magic 0x00000803): `n` greyscale images of `rows × cols` bytes.
pub fn read_idx_images(path: &Path) -> Result<Vec<GrayImage>, DataError> {
    let bytes = read_maybe_gz(path)?;
    let fmt = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 16 || be_u32(&bytes, 0) != 0x0803 {
        return Err(fmt("not an IDX image file (magic 0x00000803)".into()));
    }
    let (n, rows, cols) = (
        be_u32(&bytes, 4) as usize,
        be_u32(&bytes, 8) as usize,
        be_u32(&bytes, 12) as usize,
    );
    let size = rows * cols;
    if bytes.len() != 16 + n * size {
        return Err(fmt(format!(
            "header says {n} images of {rows}x{cols} ({} bytes) but the file has {} bytes of data",
            n * size,
            bytes.len() - 16
        )));
    }
    Ok(bytes[16..]
        .chunks_exact(size.max(1))
        .map(|c| GrayImage::from_raw(cols as u32, rows as u32, c.to_vec()).expect("size checked"))
        .collect())
}

/// IDX label file (magic 0x00000801): one byte per label.
pub fn read_idx_labels(path: &Path) -> Result<Vec<usize>, DataError> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 8 || be_u32(&bytes, 0) != 0x0801 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: "not an IDX label file (magic 0x00000801)".into(),
        });
    }
    let n = be_u32(&bytes, 4) as usize;
    if bytes.len() != 8 + n {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("header says {n} labels, the file has {}", bytes.len() - 8),
        });
    }
    Ok(bytes[8..].iter().map(|&b| usize::from(b)).collect())
}

/// One split (`prefix` = `train` or `t10k`) of an MNIST-style directory, `.gz` or not.
pub fn read_idx_split(
    dir: &Path,
    prefix: &str,
    classes: &[String],
) -> Result<ImageDataset, DataError> {
    let find = |kind: &str| {
        let plain = dir.join(format!("{prefix}-{kind}"));
        let gz = dir.join(format!("{prefix}-{kind}.gz"));
        if plain.is_file() { plain } else { gz }
    };
    let images_path = find("images-idx3-ubyte");
    let labels_path = find("labels-idx1-ubyte");
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.len() != labels.len() {
        return Err(DataError::Format {
            path: labels_path,
            reason: format!("{} labels for {} images", labels.len(), images.len()),
        });
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= classes.len()) {
        return Err(DataError::Format {
            path: labels_path,
            reason: format!("label {bad} is out of range for {} classes", classes.len()),
        });
    }
    Ok(ImageDataset {
        samples: images
            .into_iter()
            .zip(labels)
            .map(|(img, label)| Sample {
                image: ImageRef::Memory(Arc::new(DynamicImage::ImageLuma8(img))),
                label,
            })
            .collect(),
        classes: classes.to_vec(),
    })
}
