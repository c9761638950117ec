use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::Dataset;
use image::DynamicImage;

use super::decode::{DecodeError, DecodeLimits, decode_with};

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

/// Decodes an image file whatever its extension says, refusing ones over
/// [`MAX_IMAGE_PIXELS`](super::MAX_IMAGE_PIXELS).
pub fn decode_file(path: &Path) -> Result<DynamicImage, DataError> {
    decode_with(|| image::ImageReader::open(path), &DecodeLimits::default()).map_err(|e| match e {
        DecodeError::Io(source) => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => DataError::Image {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
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

    /// How many samples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.classes.len()];
        for s in &self.samples {
            counts[s.label] += 1;
        }
        counts
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
