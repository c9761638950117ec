//! Keeping a tuning set's images out of pretraining.
//!
//! The embedded demo backbone is pretrained on Fashion-MNIST's training split, and the demo then
//! tunes on 2,000 images of that same split. Those images must never have been seen by the
//! backbone, or the demo would measure memory rather than transfer. Images are matched by their
//! decoded pixels (not by position), so the exclusion holds whatever order or file the tuning
//! set was written in, and exact duplicates inside the pretraining data go with them.

use std::collections::HashSet;

use dmpo_infer::data::{DataError, ImageDataset};
use sha2::{Digest, Sha256};

/// A fingerprint of an image's decoded pixels and size.
fn fingerprint(sample: &dmpo_infer::data::Sample) -> Result<[u8; 32], DataError> {
    let img = sample.image.load()?;
    let mut hash = Sha256::new();
    hash.update(img.width().to_le_bytes());
    hash.update(img.height().to_le_bytes());
    hash.update(img.color().channel_count().to_le_bytes());
    hash.update(img.as_bytes());
    Ok(hash.finalize().into())
}

/// Removes from `pretrain` every sample whose pixels equal those of a sample in any of `held`;
/// returns how many were removed. Each pretraining image is fingerprinted once, however many
/// sets are held apart.
pub fn exclude_images(
    pretrain: &mut ImageDataset,
    held: &[&ImageDataset],
) -> Result<usize, DataError> {
    let held: HashSet<[u8; 32]> = held
        .iter()
        .flat_map(|set| &set.samples)
        .map(fingerprint)
        .collect::<Result<_, _>>()?;
    let before = pretrain.samples.len();
    let mut keep = Vec::with_capacity(before);
    for sample in std::mem::take(&mut pretrain.samples) {
        if !held.contains(&fingerprint(&sample)?) {
            keep.push(sample);
        }
    }
    pretrain.samples = keep;
    Ok(before - pretrain.samples.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dmpo_infer::data::{ImageRef, Sample};
    use image::{DynamicImage, GrayImage};

    use super::*;

    fn set(values: &[u8]) -> ImageDataset {
        ImageDataset {
            samples: values
                .iter()
                .map(|&v| Sample {
                    image: ImageRef::Memory(Arc::new(DynamicImage::ImageLuma8(
                        GrayImage::from_pixel(4, 4, image::Luma([v])),
                    ))),
                    label: usize::from(v % 2),
                })
                .collect(),
            classes: vec!["even".into(), "odd".into()],
        }
    }

    #[test]
    fn images_of_the_held_set_are_removed_by_content_duplicates_included() {
        let mut pretrain = set(&[1, 2, 3, 2, 4, 5]);
        let removed = exclude_images(&mut pretrain, &[&set(&[2, 9]), &set(&[5])]).unwrap();
        assert_eq!(removed, 3);
        let left: Vec<u8> = pretrain
            .samples
            .iter()
            .map(|s| s.image.load().unwrap().to_luma8().get_pixel(0, 0)[0])
            .collect();
        assert_eq!(left, [1, 3, 4]);
    }
}
