use std::sync::Arc;

use burn::prelude::*;
use dmpo_model::Preprocess;
use rand::SeedableRng;

use crate::LossSchedule;
use dmpo_infer::data::Sample;
use dmpo_infer::transform::{Augment, eval_transform, train_transform};

/// A batch for the multi-exit model, carrying the exit loss weights of its epoch.
#[derive(Debug, Clone)]
pub struct ExitBatch<B: Backend> {
    /// `[B, 3, S, S]`, normalised.
    pub images: Tensor<B, 4>,
    /// `[B]` class indices.
    pub targets: Tensor<B, 1, Int>,
    /// One weight per exit, summing to 1.
    pub loss_weights: Vec<f32>,
    /// The epoch's last batch: the [`LossGuard`](crate::LossGuard) reads its losses back
    /// before the Learner can checkpoint.
    pub ends_epoch: bool,
    /// This batch's part of the optimisation step's items (1 on one device): data-parallel
    /// devices scale their losses by it, so the gradients Burn sums over devices are the
    /// gradient of the mean loss over the global batch, as on one device.
    pub share: f32,
}

/// The exit loss weights of each epoch of a run: the schedule applied to this run's exits and
/// length. The train step has no notion of epoch, so the weights travel with each batch.
#[derive(Debug, Clone)]
pub struct EpochWeights {
    schedule: Arc<LossSchedule>,
    exit_blocks: Arc<[usize]>,
    num_epochs: usize,
}

impl EpochWeights {
    pub fn new(schedule: LossSchedule, exit_blocks: Vec<usize>, num_epochs: usize) -> Self {
        Self {
            schedule: Arc::new(schedule),
            exit_blocks: exit_blocks.into(),
            num_epochs,
        }
    }

    /// The weights of `epoch` (from 0).
    pub fn weights(&self, epoch: usize) -> Vec<f32> {
        self.schedule
            .weights(epoch, self.num_epochs, &self.exit_blocks)
    }
}

/// Decodes, transforms and stacks samples; reports and drops unreadable images.
///
/// Every random choice of a sample's augmentation is drawn from a generator keyed on
/// `(seed, epoch, position in the epoch)`, so a batch is the same whichever thread makes it and
/// whether or not the run was interrupted and resumed.
#[derive(Debug, Clone)]
pub struct ExitBatcher {
    pub preprocess: Preprocess,
    /// Random crops and flips (training); `None`: the evaluation transform.
    pub augment: Option<Augment>,
    pub weights: EpochWeights,
    pub seed: u64,
}

impl ExitBatcher {
    /// The batch of `samples`, the first of which sits at `first_position` in `epoch`'s order;
    /// images are decoded and transformed on up to `workers` threads, in order.
    pub fn batch<B: Backend>(
        &self,
        samples: &[&Sample],
        epoch: usize,
        first_position: usize,
        workers: usize,
        device: &B::Device,
    ) -> ExitBatch<B> {
        let prepare = |(i, sample): (usize, &&Sample)| -> Option<(Vec<f32>, i64)> {
            let img = match sample.image.load() {
                Ok(img) => img,
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", sample.image.describe());
                    return None;
                }
            };
            let x = match &self.augment {
                Some(aug) => {
                    let key = mix(self.seed, epoch as u64, (first_position + i) as u64);
                    let mut rng = rand::rngs::StdRng::seed_from_u64(key);
                    train_transform(&img, &self.preprocess, aug, &mut rng)
                }
                None => eval_transform(&img, &self.preprocess),
            };
            Some((x, sample.label as i64))
        };
        let prepared: Vec<Option<(Vec<f32>, i64)>> = if workers <= 1 || samples.len() < 2 {
            samples.iter().enumerate().map(prepare).collect()
        } else {
            let per_thread = samples.len().div_ceil(workers);
            let indexed: Vec<(usize, &&Sample)> = samples.iter().enumerate().collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = indexed
                    .chunks(per_thread)
                    .map(|chunk| {
                        let prepare = &prepare;
                        scope.spawn(move || chunk.iter().copied().map(prepare).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("image worker panicked"))
                    .collect()
            })
        };
        let size = self.preprocess.input_size;
        let mut pixels = Vec::with_capacity(samples.len() * 3 * size * size);
        let mut labels = Vec::with_capacity(samples.len());
        for (x, label) in prepared.into_iter().flatten() {
            pixels.extend(x);
            labels.push(label);
        }
        let n = labels.len();
        ExitBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, size, size]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
            loss_weights: self.weights.weights(epoch),
            ends_epoch: false,
            share: 1.0,
        }
    }
}

/// Mixes a run's seed with an epoch and a position into one well-spread 64-bit key
/// (SplitMix64's finaliser over each word).
pub(crate) fn mix(seed: u64, epoch: u64, position: u64) -> u64 {
    let step = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let golden = 0x9E37_79B9_7F4A_7C15u64;
    step(step(step(seed.wrapping_add(golden)) ^ epoch.wrapping_add(golden)) ^ position)
}
