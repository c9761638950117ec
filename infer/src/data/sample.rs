use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::Dataset;
use image::DynamicImage;

/// Images larger than this many pixels are refused (decompression bombs); 64 megapixels.
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// Reading a dataset went wrong; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: not a decodable image: {reason}")]
    Image { path: PathBuf, reason: String },
}

/// Where a sample's pixels are: decoded in memory (IDX, CIFAR) or a file read when needed.
#[derive(Debug, Clone)]
pub enum ImageRef {
    Memory(Arc<DynamicImage>),
    File(PathBuf),
}

impl ImageRef {
    /// The decoded image, or a clear error naming the file.
    pub fn load(&self) -> Result<DynamicImage, DataError> {
        match self {
            Self::Memory(img) => Ok((**img).clone()),
            Self::File(path) => decode_file(path),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Memory(_) => "<in memory>".into(),
            Self::File(p) => p.display().to_string(),
        }
    }
}

/// Decodes an image file whatever its extension says, refusing ones over [`MAX_IMAGE_PIXELS`].
pub fn decode_file(path: &Path) -> Result<DynamicImage, DataError> {
    let err = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    // Reading the dimensions consumes the reader, so the file is opened twice: once for the
    // header (cheap), once to decode within a memory limit fitted to the image.
    let open = || {
        image::ImageReader::open(path)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))
    };
    let no_pixels = |w: u32, h: u32| err(format!("{w}x{h}: the image has no pixels"));
    let (w, h) = open()?.into_dimensions().map_err(|e| err(e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(no_pixels(w, h));
    }
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(err(format!(
            "{w}x{h} pixels is over the limit of {MAX_IMAGE_PIXELS} (a decompression bomb?)"
        )));
    }
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(u64::from(w) * u64::from(h) * 16 + (1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    // A container can declare one size and hold a frame of another (GIF's logical screen).
    if img.width() == 0 || img.height() == 0 {
        return Err(no_pixels(img.width(), img.height()));
    }
    Ok(img)
}

/// One labelled image.
#[derive(Debug, Clone)]
pub struct Sample {
    pub image: ImageRef,
    pub label: usize,
}

/// A labelled image dataset with class names.
#[derive(Debug, Clone, Default)]
pub struct ImageDataset {
    pub samples: Vec<Sample>,
    pub classes: Vec<String>,
}

impl ImageDataset {
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Splits off `fraction` of the samples (every k-th, so classes stay balanced in sorted data
    /// and the split is the same on every run) as a held-out set.
    pub fn split_off_held_out(&mut self, fraction: f64) -> ImageDataset {
        if fraction <= 0.0 || self.samples.is_empty() {
            return ImageDataset {
                samples: Vec::new(),
                classes: self.classes.clone(),
            };
        }
        let every = (1.0 / fraction).round().max(2.0) as usize;
        let (mut keep, mut held) = (Vec::new(), Vec::new());
        for (i, s) in std::mem::take(&mut self.samples).into_iter().enumerate() {
            if i % every == every - 1 {
                held.push(s);
            } else {
                keep.push(s);
            }
        }
        self.samples = keep;
        ImageDataset {
            samples: held,
            classes: self.classes.clone(),
        }
    }

    /// Keeps at most `per_class` samples of each class, in order.
    pub fn take_per_class(&mut self, per_class: usize) {
        let mut counts = vec![0usize; self.classes.len()];
        self.samples.retain(|s| {
            let c = &mut counts[s.label];
            *c += 1;
            *c <= per_class
        });
    }
}

impl Dataset<Sample> for ImageDataset {
    fn get(&self, index: usize) -> Option<Sample> {
        self.samples.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.samples.len()
    }
}
