//! Pretraining a backbone from scratch (`cargo xtask pretrain`): a small ViT trained end to end,
//! supervised, on a labelled dataset (`--data`: the embedded demo backbone is pretrained on
//! Fashion-MNIST with the demo's images [held apart](crate::held_apart)), or on
//! [formula-driven synthetic images](crate::synthetic) when no data is given.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use dmpo_infer::data::ImageDataset;
use dmpo_model::Preprocess;
use dmpo_model::dmpo::LinearHead;
use dmpo_model::vit::{GlobalPool, VisionTransformer, VitConfig};

use crate::batcher::ExitBatch;
use crate::metrics::MultiExitOutput;
use crate::synthetic::{SYNTHETIC_CLASSES, synthetic_dataset};
use crate::trainee::{cross_entropy, exit_loss_steps, weighted_sum};
use crate::{LossGuard, LossSchedule, Run, TrainConfig, TrainError, fit};

/// The embedded demo backbone: a ViT for 28×28 inputs (Fashion-MNIST's own size, no resize),
/// patch 4 (49 patches + class token), width 96, 6 blocks of 3 heads: 0.68 M parameters,
/// 0.036 GMACs per image.
pub fn demo_vit_config() -> VitConfig {
    VitConfig::new()
        .with_img_size(28)
        .with_patch_size(4)
        .with_embed_dim(96)
        .with_depth(6)
        .with_num_heads(3)
        .with_mlp_hidden_dim(384)
        .with_global_pool(GlobalPool::Token)
        .with_num_classes(10)
}

/// A pretraining recipe: the architecture, what it trains on and how.
#[derive(Config, Debug)]
pub struct PretrainConfig {
    #[config(default = "demo_vit_config()")]
    pub vit: VitConfig,
    /// Synthetic images per class (64 classes); only without a dataset.
    #[config(default = 100)]
    pub per_class: usize,
    /// Synthetic validation images per class; only without a dataset.
    #[config(default = 8)]
    pub valid_per_class: usize,
    /// Images of a dataset's training split held out to validate each epoch (every n-th image,
    /// so every class is represented). The test split is never read while pretraining.
    #[config(default = 2000)]
    pub valid_images: usize,
    /// The backbone the weights start from (a second stage); `None`: random initialisation.
    #[config(default = "None")]
    pub init: Option<String>,
    /// Deep supervision: blocks (counted from 1, before the last) after which an auxiliary
    /// classifier (LayerNorm + linear on the class token) also learns the labels while
    /// pretraining, so those blocks' features are discriminative on their own (as in
    /// multi-exit networks trained end to end). The heads are dropped afterwards: the backbone
    /// ships as a plain ViT. Empty: the head alone.
    #[config(default = "Vec::new()")]
    pub aux_exits: Vec<usize>,
    #[config(
        default = "TrainConfig::new().with_epochs(10).with_lr(2e-3).with_min_lr(1e-5).with_warmup_epochs(1).with_weight_decay(0.05).with_batch_size(128).with_min_crop_scale(1.0).with_label_smoothing(0.1)"
    )]
    pub train: TrainConfig,
}

impl PretrainConfig {
    /// The synthetic recipe (no dataset): 64 pattern classes at 32×32, 5 epochs.
    pub fn synthetic() -> Self {
        Self::new()
            .with_vit(
                demo_vit_config()
                    .with_img_size(32)
                    .with_num_classes(SYNTHETIC_CLASSES),
            )
            .with_train(
                TrainConfig::new()
                    .with_epochs(5)
                    .with_lr(2e-3)
                    .with_weight_decay(0.05)
                    .with_batch_size(128)
                    .with_min_crop_scale(0.5)
                    .with_label_smoothing(0.1),
            )
    }

    /// Refuses auxiliary exits outside blocks 1..depth−1, or listed twice or out of order.
    pub fn validate_aux_exits(&self) -> Result<(), String> {
        let depth = self.vit.depth;
        let ordered = self.aux_exits.windows(2).all(|w| w[0] < w[1]);
        if !ordered || self.aux_exits.iter().any(|&e| e == 0 || e >= depth) {
            return Err(format!(
                "auxiliary exits {:?}: each must be a block from 1 to {} (the last block has the \
                 head), in increasing order",
                self.aux_exits,
                depth.saturating_sub(1)
            ));
        }
        Ok(())
    }

    /// The preprocessing the backbone is trained with and ships with: mean = std = 0.5, no crop
    /// margin (the images are brought to the input size whole).
    pub fn preprocess(&self) -> Preprocess {
        Preprocess::new(self.vit.img_size).with_crop_pct(1.0)
    }
}

/// A plain ViT trained end to end with cross-entropy on its head and, with deep supervision,
/// on auxiliary heads after earlier blocks (the exits' losses weighted equally).
#[derive(Module, Debug)]
pub struct PretrainTrainee<B: Backend> {
    pub vit: VisionTransformer<B>,
    /// One per auxiliary exit (deep supervision), none otherwise.
    pub aux_heads: Vec<LinearHead<B>>,
    /// The blocks (from 1) the auxiliary heads read.
    #[module(skip)]
    pub aux_exits: Vec<usize>,
    pub label_smoothing: f64,
    pub weight_decay: f64,
    #[module(skip)]
    pub guard: LossGuard,
    #[module(skip)]
    pub sync: crate::GradientSync,
}

impl<B: Backend> PretrainTrainee<B> {
    fn forward_loss(&self, batch: ExitBatch<B>) -> MultiExitOutput<B> {
        // The blocks as `vit.forward` runs them, with each auxiliary head's logits on the way.
        let mut x = self.vit.embed(batch.images);
        let mut logits = Vec::with_capacity(self.aux_heads.len() + 1);
        let mut heads = self.aux_exits.iter().zip(&self.aux_heads).peekable();
        for (i, block) in self.vit.blocks.iter().enumerate() {
            x = block.forward(x);
            if let Some((_, head)) = heads.next_if(|(e, _)| **e == i + 1) {
                logits.push(head.forward(x.clone()));
            }
        }
        let features = self.vit.pool(self.vit.final_norm(x));
        logits.push(self.vit.forward_head(features));
        let ce = cross_entropy(self.label_smoothing, &logits[0].device());
        let exit_losses: Vec<Tensor<B, 1>> = logits
            .iter()
            .map(|l| ce.forward(l.clone(), batch.targets.clone()))
            .collect();
        let loss = weighted_sum(&exit_losses, &batch.loss_weights);
        MultiExitOutput {
            loss,
            exit_losses,
            logits,
            targets: batch.targets,
        }
    }
}

exit_loss_steps!(PretrainTrainee);

/// Pretrains a backbone by `config` on the synthetic patterns, on `devices` (data-parallel
/// over more than one, as [`fit`]).
pub fn pretrain<B: AutodiffBackend>(
    config: &PretrainConfig,
    artifact_dir: &Path,
    resume_epoch: Option<usize>,
    devices: &[B::Device],
) -> Result<VisionTransformer<B::InnerBackend>, TrainError> {
    let device = devices.first().ok_or(TrainError::Devices(
        "no device to train on was given".to_string(),
    ))?;
    B::seed(device, config.train.seed);
    let size = config.vit.img_size as u32;
    let train_set = synthetic_dataset(config.per_class, size, config.train.seed);
    let valid_set = synthetic_dataset(config.valid_per_class, size, config.train.seed + 1);
    let vit = config.vit.init::<B>(device);
    pretrain_on::<B>(
        config,
        vit,
        train_set,
        valid_set,
        artifact_dir,
        resume_epoch,
        devices,
    )
}

/// Trains `vit` (fresh from `config.vit.init`, or a backbone to train further) by `config` on
/// `train_set`, validating on `valid_set` after every epoch; checkpoints in `artifact_dir`,
/// resumable after `resume_epoch`; data-parallel over more than one of `devices`.
pub fn pretrain_on<B: AutodiffBackend>(
    config: &PretrainConfig,
    vit: VisionTransformer<B>,
    train_set: ImageDataset,
    valid_set: ImageDataset,
    artifact_dir: &Path,
    resume_epoch: Option<usize>,
    devices: &[B::Device],
) -> Result<VisionTransformer<B::InnerBackend>, TrainError> {
    config.validate_aux_exits().map_err(TrainError::Config)?;
    let preprocess = config.preprocess();
    let device = devices.first().ok_or(TrainError::Devices(
        "no device to train on was given".to_string(),
    ))?;
    let v = &config.vit;
    let aux_heads = config
        .aux_exits
        .iter()
        .map(|_| {
            LinearHead::new(
                v.embed_dim,
                v.num_classes,
                v.global_pool,
                v.num_prefix_tokens(),
                device,
            )
        })
        .collect();
    let trainee = PretrainTrainee {
        vit,
        aux_heads,
        aux_exits: config.aux_exits.clone(),
        label_smoothing: config.train.label_smoothing,
        weight_decay: config.train.weight_decay,
        guard: LossGuard::every(config.train.loss_check_every),
        sync: crate::GradientSync::none(),
    };
    let train_config = config.train.clone().with_schedule(LossSchedule::uniform());
    let run = Run {
        train_set,
        valid_set,
        preprocess: &preprocess,
        config: &train_config,
        artifact_dir,
        resume_epoch,
    };
    let mut exits = config.aux_exits.clone();
    exits.push(config.vit.depth);
    let trained = fit(trainee, exits, run, devices)?;
    Ok(trained.vit)
}

/// Top-1 accuracy of a plain ViT's head on `set` (evaluation transform).
pub fn backbone_accuracy<B: Backend>(
    vit: &VisionTransformer<B>,
    set: &ImageDataset,
    preprocess: &Preprocess,
    batch_size: usize,
    device: &B::Device,
) -> f64 {
    let (mut right, mut total) = (0usize, 0usize);
    for (images, labels) in
        dmpo_infer::eval_batches::<B>(&set.samples, preprocess, batch_size, device)
    {
        let predicted = vit.forward(images).argmax(1).into_data();
        let predicted = predicted.iter::<i64>();
        right += predicted
            .zip(&labels)
            .filter(|(p, l)| *p as usize == **l)
            .count();
        total += labels.len();
    }
    right as f64 / total.max(1) as f64
}
