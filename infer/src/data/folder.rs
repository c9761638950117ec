use std::path::Path;

use super::{DataError, ImageDataset, ImageRef, Sample};

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// An image folder: one sub-folder per class (sorted names give the class indices), images
/// inside by extension. Files whose header cannot be read are reported and skipped.
pub fn read_image_folder(dir: &Path) -> Result<ImageDataset, DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            reason: "no class sub-folders (expected <dir>/<class>/<image>)".into(),
        });
    }
    let mut samples = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&class_dir)
            .map_err(io(&class_dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        for path in files {
            let readable = image::ImageReader::open(&path)
                .and_then(|r| r.with_guessed_format())
                .is_ok_and(|r| r.into_dimensions().is_ok());
            if readable {
                samples.push(Sample {
                    image: ImageRef::File(path),
                    label,
                });
            } else {
                tracing::warn!("skipping {}: not a readable image", path.display());
            }
        }
    }
    Ok(ImageDataset { samples, classes })
}
