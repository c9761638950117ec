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

    /// Splits off `fraction` of the samples as a held-out set: every k-th (the same split on
    /// every run; close to balanced in shuffled data, exactly so in data sorted by class).
    ///
    /// Images that come in a repeating class order (0, 1, …, 9, 0, 1, …) would lose whole
    /// classes that way (every 10th is always a 9): when every k-th image overall leaves a class
    /// without training images, or one with k or more images without any held out, the split
    /// takes every k-th image of the images *ordered by class* instead (the same number, spread
    /// over the classes).
    pub fn split_off_held_out(&mut self, fraction: f64) -> ImageDataset {
        if fraction <= 0.0 || self.samples.is_empty() {
            return ImageDataset {
                samples: Vec::new(),
                classes: self.classes.clone(),
            };
        }
        let every = (1.0 / fraction).round().max(2.0) as usize;
        let samples = std::mem::take(&mut self.samples);
        let overall: Vec<bool> = (0..samples.len()).map(|i| i % every == every - 1).collect();
        let mut counts = vec![(0usize, 0usize); self.classes.len()];
        for (s, &held) in samples.iter().zip(&overall) {
            let c = &mut counts[s.label];
            if held { c.1 += 1 } else { c.0 += 1 }
        }
        let uneven = counts
            .iter()
            .enumerate()
            .find(|&(_, &(kept, held))| (kept == 0 && held > 0) || (held == 0 && kept >= every));
        let take = match uneven {
            None => overall,
            Some((c, _)) => {
                tracing::info!(
                    "holding out every {every}th image in class order: every {every}th image \
                     as stored takes all or none of class '{}' (the images come in a repeating \
                     class order)",
                    self.classes[c]
                );
                let mut by_class: Vec<usize> = (0..samples.len()).collect();
                by_class.sort_by_key(|&i| samples[i].label);
                let mut take = vec![false; samples.len()];
                for (position, &i) in by_class.iter().enumerate() {
                    take[i] = position % every == every - 1;
                }
                take
            }
        };
        let (mut keep, mut held) = (Vec::new(), Vec::new());
        for (s, held_out) in samples.into_iter().zip(take) {
            if held_out {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: impl IntoIterator<Item = usize>) -> ImageDataset {
        let img = Arc::new(DynamicImage::new_rgb8(1, 1));
        ImageDataset {
            samples: labels
                .into_iter()
                .map(|label| Sample {
                    image: ImageRef::Memory(img.clone()),
                    label,
                })
                .collect(),
            classes: (0..5).map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn holding_out_keeps_every_class_on_both_sides_whatever_the_order() {
        // Five classes in turn: every 5th image overall would be all of class 4 and none of the
        // others; the split takes every 5th of each class instead.
        let mut periodic = labelled((0..50).map(|i| i % 5));
        let held = periodic.split_off_held_out(0.2);
        assert_eq!(held.class_counts(), vec![2; 5]);
        assert_eq!(periodic.class_counts(), vec![8; 5]);
        // Classes smaller than k: still the same number held out, none taken whole.
        let mut small = labelled((0..15).map(|i| i % 5));
        let held = small.split_off_held_out(0.2);
        assert_eq!(held.samples.len(), 3);
        assert!(small.class_counts().iter().all(|&c| c >= 2));
        // Sorted by class or in another order, every 5th image overall, as before.
        let mut sorted = labelled((0..50).map(|i| i / 10));
        let held = sorted.split_off_held_out(0.2);
        assert_eq!(held.class_counts(), vec![2; 5]);
        let mut shuffled = labelled([3, 1, 4, 1, 0, 2, 2, 3, 0, 4, 1, 0, 4, 3, 2]);
        let order: Vec<usize> = shuffled.samples.iter().map(|s| s.label).collect();
        let held = shuffled.split_off_held_out(0.2);
        let labels: Vec<usize> = held.samples.iter().map(|s| s.label).collect();
        assert_eq!(labels, [order[4], order[9], order[14]]);
    }
}
