use std::path::Path;

use super::{DataError, ImageDataset, ImageRef, Sample};

/// A VTAB-1k split list (`train800val200.txt`, `test.txt`): lines `relative/path.jpg <label>`,
/// paths relative to `root`. Missing images are reported and skipped.
pub fn read_vtab_list(root: &Path, list: &str) -> Result<ImageDataset, DataError> {
    let path = root.join(list);
    let text = std::fs::read_to_string(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    let mut samples = Vec::new();
    let mut max_label = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (file, label) =
            line.rsplit_once(char::is_whitespace)
                .ok_or_else(|| DataError::Format {
                    path: path.clone(),
                    reason: format!("line {}: expected `<image path> <label>`", n + 1),
                })?;
        let label: usize = label.trim().parse().map_err(|_| DataError::Format {
            path: path.clone(),
            reason: format!("line {}: label `{label}` is not a class number", n + 1),
        })?;
        let image = root.join(file.trim());
        if !image.is_file() {
            tracing::warn!(
                "{}: line {}: skipping missing image {}",
                path.display(),
                n + 1,
                image.display()
            );
            continue;
        }
        max_label = max_label.max(label);
        samples.push(Sample {
            image: ImageRef::File(image),
            label,
        });
    }
    Ok(ImageDataset {
        samples,
        classes: (0..=max_label).map(|c| c.to_string()).collect(),
    })
}
