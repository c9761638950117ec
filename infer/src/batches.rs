//! Turning dataset samples into preprocessed image batches for evaluation and benchmarks.

use burn::prelude::*;
use dmpo_model::Preprocess;

use crate::data::Sample;
use crate::transform::eval_transform;

/// Preprocesses `samples` with timm's evaluation transform into batches of `batch_size`
/// (`[b, 3, S, S]` images with their labels). Unreadable images are reported and skipped.
pub fn eval_batches<B: Backend>(
    samples: &[Sample],
    preprocess: &Preprocess,
    batch_size: usize,
    device: &B::Device,
) -> Vec<(Tensor<B, 4>, Vec<usize>)> {
    let size = preprocess.input_size;
    samples
        .chunks(batch_size.max(1))
        .filter_map(|chunk| {
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * size * size);
            let mut labels = Vec::with_capacity(chunk.len());
            for s in chunk {
                match s.image.load() {
                    Ok(img) => {
                        pixels.extend(eval_transform(&img, preprocess));
                        labels.push(s.label);
                    }
                    Err(e) => tracing::warn!("skipping {}: {e}", s.image.describe()),
                }
            }
            (!labels.is_empty()).then(|| {
                let n = labels.len();
                let images = Tensor::from_data(TensorData::new(pixels, [n, 3, size, size]), device);
                (images, labels)
            })
        })
        .collect()
}
