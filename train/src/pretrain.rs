//! Pretraining the embedded demo backbone (`cargo xtask pretrain`): a small ViT trained end to
//! end on [formula-driven synthetic images](crate::synthetic), disjoint from the demo task.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use dmpo_model::Preprocess;
use dmpo_model::vit::{GlobalPool, VisionTransformer, VitConfig};

use crate::batcher::ExitBatch;
use crate::metrics::MultiExitOutput;
use crate::synthetic::{SYNTHETIC_CLASSES, synthetic_dataset};
use crate::trainee::{cross_entropy, exit_loss_steps};
use crate::{LossGuard, LossSchedule, Run, TrainConfig, TrainError, fit};

/// The embedded demo backbone: a ViT for 32×32 inputs, patch 4 (64 patches + class token),
/// width 96, 6 blocks of 3 heads: 0.69 M parameters, 0.05 GMACs per image.
pub fn demo_vit_config() -> VitConfig {
    VitConfig::new()
        .with_img_size(32)
        .with_patch_size(4)
        .with_embed_dim(96)
        .with_depth(6)
        .with_num_heads(3)
        .with_mlp_hidden_dim(384)
        .with_global_pool(GlobalPool::Token)
        .with_num_classes(SYNTHETIC_CLASSES)
}

/// The committed pretraining recipe.
#[derive(Config, Debug)]
pub struct PretrainConfig {
    #[config(default = "demo_vit_config()")]
    pub vit: VitConfig,
    /// Synthetic training images per class (64 classes).
    #[config(default = 100)]
    pub per_class: usize,
    #[config(default = 8)]
    pub valid_per_class: usize,
    #[config(
        default = "TrainConfig::new().with_epochs(5).with_lr(2e-3).with_weight_decay(0.05).with_batch_size(128).with_min_crop_scale(0.5).with_label_smoothing(0.1)"
    )]
    pub train: TrainConfig,
}

/// A plain ViT trained end to end with cross-entropy (one "exit": the head).
#[derive(Module, Debug)]
pub struct PretrainTrainee<B: Backend> {
    pub vit: VisionTransformer<B>,
    pub label_smoothing: f64,
    pub weight_decay: f64,
    #[module(skip)]
    pub guard: LossGuard,
}

impl<B: Backend> PretrainTrainee<B> {
    fn forward_loss(&self, batch: ExitBatch<B>) -> MultiExitOutput<B> {
        let logits = self.vit.forward(batch.images);
        let loss = cross_entropy(self.label_smoothing, &logits.device())
            .forward(logits.clone(), batch.targets.clone());
        MultiExitOutput {
            loss: loss.clone(),
            exit_losses: vec![loss],
            logits: vec![logits],
            targets: batch.targets,
        }
    }
}

exit_loss_steps!(PretrainTrainee);

/// Pretrains a backbone by `config` and returns it with its preprocessing (mean = std = 0.5,
/// no crop margin: the images are already the input size).
pub fn pretrain<B: AutodiffBackend>(
    config: &PretrainConfig,
    artifact_dir: &Path,
    device: &B::Device,
) -> Result<(VisionTransformer<B::InnerBackend>, Preprocess), TrainError> {
    B::seed(device, config.train.seed);
    let size = config.vit.img_size as u32;
    let train_set = synthetic_dataset(config.per_class, size, config.train.seed);
    let valid_set = synthetic_dataset(config.valid_per_class, size, config.train.seed + 1);
    let preprocess = Preprocess::new(config.vit.img_size).with_crop_pct(1.0);
    let trainee = PretrainTrainee {
        vit: config.vit.init::<B>(device),
        label_smoothing: config.train.label_smoothing,
        weight_decay: config.train.weight_decay,
        guard: LossGuard::default(),
    };
    let train_config = config.train.clone().with_schedule(LossSchedule::uniform());
    let run = Run {
        train_set,
        valid_set,
        preprocess: &preprocess,
        config: &train_config,
        artifact_dir,
        resume_epoch: None,
    };
    let trained = fit(trainee, vec![config.vit.depth], run, device)?;
    Ok((trained.vit, preprocess))
}
