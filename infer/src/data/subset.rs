//! A class-balanced subset of an IDX dataset, written as gzip'ed IDX files (how the demo data
//! in assets/ was made).

use std::path::Path;

use super::idx_write::write_idx_split;
use super::{DataError, read_idx_images, read_idx_labels};

/// Copies the first `train_n` images of each class of `from`'s training split and the first
/// `test_n` of its test split (`t10k`) into `out`, each file written atomically; `skip` images
/// of each class are passed over first in both splits (so a second subset can be made that
/// shares no image with a first one of `skip` per class).
pub fn write_idx_subset(
    from: &Path,
    out: &Path,
    train_n: usize,
    test_n: usize,
    skip: usize,
) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    for (prefix, n) in [("train", train_n), ("t10k", test_n)] {
        let find = |kind: &str| {
            let plain = from.join(format!("{prefix}-{kind}"));
            if plain.is_file() {
                plain
            } else {
                from.join(format!("{prefix}-{kind}.gz"))
            }
        };
        let images_path = find("images-idx3-ubyte");
        let images = read_idx_images(&images_path)?;
        let labels = read_idx_labels(&find("labels-idx1-ubyte"))?;
        let Some(first) = images.first() else {
            return Err(DataError::Format {
                path: images_path,
                reason: "no images".into(),
            });
        };
        let (rows, cols) = (first.height() as usize, first.width() as usize);
        let mut counts = [0usize; 256];
        let keep: Vec<(&[u8], u8)> = (0..labels.len().min(images.len()))
            .filter(|&i| {
                counts[labels[i]] += 1;
                counts[labels[i]] > skip && counts[labels[i]] <= skip + n
            })
            .map(|i| (images[i].as_raw().as_slice(), labels[i] as u8))
            .collect();
        write_idx_split(out, prefix, rows, cols, &keep)?;
    }
    Ok(())
}
