use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::batcher::Batcher;
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
}

/// Knows which epoch a batch belongs to by counting the training batches made, so the loss
/// weights (which change with the epoch) travel with each batch into the train step.
#[derive(Debug, Clone)]
pub struct EpochClock {
    schedule: Arc<LossSchedule>,
    exit_blocks: Arc<[usize]>,
    num_epochs: usize,
    batches_per_epoch: usize,
    made: Arc<AtomicUsize>,
}

impl EpochClock {
    /// `start_epoch` > 0 when resuming.
    pub fn new(
        schedule: LossSchedule,
        exit_blocks: Vec<usize>,
        num_epochs: usize,
        batches_per_epoch: usize,
        start_epoch: usize,
    ) -> Self {
        let batches_per_epoch = batches_per_epoch.max(1);
        Self {
            schedule: Arc::new(schedule),
            exit_blocks: exit_blocks.into(),
            num_epochs,
            batches_per_epoch,
            made: Arc::new(AtomicUsize::new(start_epoch * batches_per_epoch)),
        }
    }

    /// The epoch of the training batch being made, counting it.
    fn tick(&self) -> (usize, usize) {
        let n = self.made.fetch_add(1, Ordering::SeqCst);
        (n / self.batches_per_epoch, n)
    }

    /// The epoch of the last training batch made.
    pub fn epoch(&self) -> usize {
        self.made.load(Ordering::SeqCst).saturating_sub(1) / self.batches_per_epoch
    }

    pub fn weights(&self, epoch: usize) -> Vec<f32> {
        self.schedule
            .weights(epoch, self.num_epochs, &self.exit_blocks)
    }
}

/// Decodes, transforms and stacks samples; reports and drops unreadable images.
#[derive(Debug, Clone)]
pub struct ExitBatcher {
    pub preprocess: Preprocess,
    /// True for the training split: batches advance the epoch clock.
    pub train: bool,
    /// Random crops and flips (training only); `None`: the evaluation transform.
    pub augment: Option<Augment>,
    pub clock: EpochClock,
    pub seed: u64,
}

impl<B: Backend> Batcher<B, Sample, ExitBatch<B>> for ExitBatcher {
    fn batch(&self, items: Vec<Sample>, device: &B::Device) -> ExitBatch<B> {
        let (weights, mut rng) = if self.train {
            let (epoch, n) = self.clock.tick();
            // Seeded by the batch's position in the run: augmentation is reproducible.
            let seed = self.seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (
                self.clock.weights(epoch),
                rand::rngs::StdRng::seed_from_u64(seed),
            )
        } else {
            (
                self.clock.weights(self.clock.epoch()),
                rand::rngs::StdRng::seed_from_u64(0),
            )
        };
        let size = self.preprocess.input_size;
        let mut pixels = Vec::with_capacity(items.len() * 3 * size * size);
        let mut labels = Vec::with_capacity(items.len());
        for sample in &items {
            match sample.image.load() {
                Ok(img) => {
                    let x = match &self.augment {
                        Some(aug) => train_transform(&img, &self.preprocess, aug, &mut rng),
                        None => eval_transform(&img, &self.preprocess),
                    };
                    pixels.extend(x);
                    labels.push(sample.label as i64);
                }
                Err(e) => tracing::warn!("skipping {}: {e}", sample.image.describe()),
            }
        }
        let n = labels.len();
        ExitBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, size, size]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
            loss_weights: weights,
        }
    }
}
