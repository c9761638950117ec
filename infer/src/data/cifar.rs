use std::path::Path;
use std::sync::Arc;

use image::{DynamicImage, RgbImage};

use super::{DataError, ImageDataset, ImageRef, Sample};

/// Records of `label_bytes` label bytes (the last is used) followed by a 32×32 RGB image stored
/// channel-planar.
fn read_records(path: &Path, label_bytes: usize, classes: usize) -> Result<Vec<Sample>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let record = label_bytes + 3072;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is not a whole number of {record}-byte CIFAR records",
                bytes.len()
            ),
        });
    }
    bytes
        .chunks_exact(record)
        .map(|r| {
            let label = usize::from(r[label_bytes - 1]);
            if label >= classes {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                    reason: format!("label {label} is out of range for {classes} classes"),
                });
            }
            let planes = &r[label_bytes..];
            let img = RgbImage::from_fn(32, 32, |x, y| {
                let i = (y * 32 + x) as usize;
                image::Rgb([planes[i], planes[1024 + i], planes[2048 + i]])
            });
            Ok(Sample {
                image: ImageRef::Memory(Arc::new(DynamicImage::ImageRgb8(img))),
                label,
            })
        })
        .collect()
}

fn dataset(
    files: &[std::path::PathBuf],
    label_bytes: usize,
    classes: usize,
) -> Result<ImageDataset, DataError> {
    let mut samples = Vec::new();
    for f in files {
        samples.extend(read_records(f, label_bytes, classes)?);
    }
    Ok(ImageDataset {
        samples,
        classes: (0..classes).map(|c| c.to_string()).collect(),
    })
}

/// CIFAR-10 binary version: `data_batch_1..5.bin` (train) and `test_batch.bin`.
pub fn read_cifar10(dir: &Path) -> Result<(ImageDataset, ImageDataset), DataError> {
    let train: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let mut train_ds = dataset(&train, 1, 10)?;
    let mut test_ds = dataset(&[dir.join("test_batch.bin")], 1, 10)?;
    let names = dir.join("batches.meta.txt");
    if let Ok(text) = std::fs::read_to_string(names) {
        let classes: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect();
        if classes.len() == 10 {
            train_ds.classes = classes.clone();
            test_ds.classes = classes;
        }
    }
    Ok((train_ds, test_ds))
}

/// CIFAR-100 binary version: `train.bin` and `test.bin`, fine labels.
pub fn read_cifar100(dir: &Path) -> Result<(ImageDataset, ImageDataset), DataError> {
    Ok((
        dataset(&[dir.join("train.bin")], 2, 100)?,
        dataset(&[dir.join("test.bin")], 2, 100)?,
    ))
}
