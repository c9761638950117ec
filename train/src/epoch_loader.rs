//! The training data loader: every epoch's order and augmentation are a function of
//! `(seed, epoch)` alone.
//!
//! Burn's shuffling loader draws each epoch's order from one generator that lives as long as the
//! loader, and its worker threads hand batches over in whatever order they finish: a resumed
//! run would see the first epoch's order again and batches in another sequence than the
//! uninterrupted run. Here the order is a permutation keyed on the epoch, one producer thread
//! makes the batches in that order (decoding each batch's images on several threads), and keeps
//! two ready ahead of the device.
//!
//! Data-parallel training over `n` devices splits the loader with Burn's `slice`: each shard
//! takes its part of every *global* batch of the one epoch order (device `k` the `k`-th
//! `batch_size` items of each `n * batch_size`), so the devices together see exactly the batches
//! one device would, with the same augmentation (keyed on each image's position in the epoch).
//! Several nodes ([`EpochLoader::for_node`]) split it the same way: node `r` of `m`, with `n`
//! devices each, takes shards `r * n .. (r + 1) * n` of every `m * n * batch_size`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::batcher::{ExitBatch, ExitBatcher, mix};
use dmpo_infer::data::Sample;

/// Batches made ahead of the one being consumed.
const PREFETCH: usize = 2;

/// The training epochs started so far, shared by the training loader (which advances it) and
/// the validation loader (which uses the weights of the epoch just trained).
#[derive(Debug, Clone, Default)]
pub struct EpochCounter(Arc<AtomicUsize>);

impl EpochCounter {
    /// `started` > 0 when resuming after that many epochs.
    pub fn new(started: usize) -> Self {
        Self(Arc::new(AtomicUsize::new(started)))
    }

    /// Epochs started so far.
    pub fn started(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether iterating the loader starts a training epoch or validates the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Shuffled per epoch; each iteration starts the next epoch.
    Train,
    /// In order; uses the loss weights of the last epoch started.
    Valid,
}

/// Which part of each global batch a loader yields: one shard per device of every node, node
/// `rank`'s devices taking shards `rank * devices ..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shard {
    rank: usize,
    nodes: usize,
    /// Devices on each node.
    devices: usize,
    /// This loader's device on its node.
    device: usize,
}

impl Shard {
    /// The whole batch (one device).
    const WHOLE: Self = Self {
        rank: 0,
        nodes: 1,
        devices: 1,
        device: 0,
    };

    fn index(&self) -> usize {
        self.rank * self.devices + self.device
    }

    fn count(&self) -> usize {
        self.nodes * self.devices
    }
}

/// A [`DataLoader`] of [`ExitBatch`]es for Burn's Learner.
pub struct EpochLoader<B: Backend> {
    samples: Arc<[Sample]>,
    batcher: Arc<ExitBatcher>,
    /// Items per batch of this loader (per device when sharded).
    batch_size: usize,
    split: Split,
    epochs: EpochCounter,
    shard: Shard,
    /// Threads decoding one batch's images.
    workers: usize,
    device: B::Device,
}

impl<B: Backend> Clone for EpochLoader<B> {
    fn clone(&self) -> Self {
        Self {
            samples: self.samples.clone(),
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            split: self.split,
            epochs: self.epochs.clone(),
            shard: self.shard,
            workers: self.workers,
            device: self.device.clone(),
        }
    }
}

impl<B: Backend> EpochLoader<B> {
    pub fn new(
        samples: Vec<Sample>,
        batcher: ExitBatcher,
        batch_size: usize,
        split: Split,
        epochs: EpochCounter,
        workers: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            samples: samples.into(),
            batcher: Arc::new(batcher),
            batch_size: batch_size.max(1),
            split,
            epochs,
            shard: Shard::WHOLE,
            workers: workers.max(1),
            device: device.clone(),
        }
    }

    /// The loader to be split over `devices` (Burn's multi-device training calls
    /// [`DataLoader::slice`] once per device): `batch_size` becomes the per-device batch, so
    /// `batch_size * devices` items make one optimisation step, as `batch_size` do unsplit.
    pub fn for_devices(mut self, devices: usize) -> Self {
        self.shard.devices = devices.max(1);
        self
    }

    /// The loader of node `rank` of `nodes` training together: `batch_size` (per device) times
    /// the devices of every node make one optimisation step, and this node's devices take their
    /// parts of it (so the nodes together see the batches one process would).
    pub fn for_node(mut self, rank: usize, nodes: usize) -> Self {
        self.shard.rank = rank;
        self.shard.nodes = nodes.max(1);
        self
    }

    /// Items of one optimisation step over all devices.
    fn global_batch(&self) -> usize {
        self.batch_size * self.shard.count()
    }

    /// The positions (in `order`) of this shard's part of every global batch, with the share of
    /// its global batch each part is: `(first position, positions, share)`.
    ///
    /// Every shard has a part of every global batch, so that all of them take the same number of
    /// steps (the devices and nodes sum their gradients step by step): a full batch gives each
    /// shard `batch_size` items, a short last one is split as evenly as it goes, and a shard
    /// left without an item (fewer items than shards) gets the batch's first one at share 0,
    /// which adds nothing to the gradient.
    fn parts(&self, total: usize) -> Vec<(usize, std::ops::Range<usize>, f32)> {
        let global = self.global_batch();
        let (index, count) = (self.shard.index(), self.shard.count());
        (0..total.div_ceil(global))
            .map(|g| {
                let start = g * global;
                let len = global.min(total - start);
                let from = start + index * len / count;
                let to = start + (index + 1) * len / count;
                if to > from {
                    (from, from..to, (to - from) as f32 / len as f32)
                } else {
                    (start, start..start + 1, 0.0)
                }
            })
            .collect()
    }

    /// The order of the samples in `epoch`: a permutation keyed on the seed and the epoch for
    /// training, the stored order for validation.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.split == Split::Train {
            let key = mix(self.batcher.seed, epoch as u64, u64::MAX);
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(key));
        }
        order
    }
}

impl<B: Backend> DataLoader<B, ExitBatch<B>> for EpochLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ExitBatch<B>> + 'a> {
        let epoch = match self.split {
            Split::Train => self.epochs.0.fetch_add(1, Ordering::SeqCst),
            Split::Valid => self.epochs.started().saturating_sub(1),
        };
        let order = self.order(epoch);
        let parts = self.parts(order.len());
        let total = parts.iter().map(|(_, r, _)| r.len()).sum();
        let (tx, rx) = sync_channel(PREFETCH);
        let loader = self.clone();
        std::thread::Builder::new()
            .name(format!("loader-epoch-{}", epoch + 1))
            .spawn(move || {
                // One batch is held back until the next is ready, so that the epoch's last
                // batch sent (not always the last chunk: see below) is marked as such.
                let mut held: Option<(usize, ExitBatch<B>)> = None;
                let mut done = 0;
                for (first, positions, share) in parts {
                    let samples: Vec<&Sample> = order[positions]
                        .iter()
                        .map(|&i| &loader.samples[i])
                        .collect();
                    let mut batch = loader.batcher.batch::<B>(
                        &samples,
                        epoch,
                        first,
                        loader.workers,
                        &loader.device,
                    );
                    batch.share = share;
                    done += samples.len();
                    // A batch of only unreadable images has nothing to train on. Alone, skip it;
                    // sharded, the step must still be taken (the others sum with this one):
                    // with the first readable image of the epoch at share 0.
                    if batch.targets.dims()[0] == 0 {
                        if loader.shard.count() == 1 {
                            continue;
                        }
                        let Some(stand_in) = order.iter().find_map(|&i| {
                            let b = loader.batcher.batch::<B>(
                                &[&loader.samples[i]],
                                epoch,
                                first,
                                1,
                                &loader.device,
                            );
                            (b.targets.dims()[0] > 0).then_some(b)
                        }) else {
                            continue;
                        };
                        batch = stand_in;
                        batch.share = 0.0;
                    }
                    if let Some(previous) = held.replace((done, batch))
                        && tx.send(previous).is_err()
                    {
                        // The consumer stopped early (interrupted run).
                        return;
                    }
                }
                if let Some((_, mut last)) = held {
                    last.ends_epoch = true;
                    let _ = tx.send((total, last));
                }
            })
            .expect("spawning the data loader thread");
        Box::new(EpochIter { rx, done: 0, total })
    }

    fn num_items(&self) -> usize {
        self.samples.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, ExitBatch<B>>> {
        Arc::new(Self {
            device: device.clone(),
            ..self.clone()
        })
    }

    /// A loader made [`for_devices`](Self::for_devices) gives shard `k` for Burn's `k`-th range
    /// (`start = k * len / devices`); any other keeps the samples in `start..end`.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, ExitBatch<B>>> {
        let devices = self.shard.devices;
        if devices > 1 {
            let step = (self.samples.len() / devices).max(1);
            let local = (start / step).min(devices - 1);
            // The first device advances the shared epoch counter (the validation loader reads
            // it); the others count their own epochs from the same start.
            let epochs = if local == 0 {
                self.epochs.clone()
            } else {
                EpochCounter::new(self.epochs.started())
            };
            return Arc::new(Self {
                shard: Shard {
                    device: local,
                    ..self.shard
                },
                epochs,
                ..self.clone()
            });
        }
        let end = end.min(self.samples.len());
        Arc::new(Self {
            samples: self.samples[start.min(end)..end].to_vec().into(),
            ..self.clone()
        })
    }
}

struct EpochIter<O> {
    rx: Receiver<(usize, O)>,
    done: usize,
    total: usize,
}

impl<O> Iterator for EpochIter<O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        let (done, batch) = self.rx.recv().ok()?;
        self.done = done;
        Some(batch)
    }
}

impl<O> DataLoaderIterator<O> for EpochIter<O> {
    fn progress(&self) -> Progress {
        Progress::new(self.done, self.total)
    }
}
