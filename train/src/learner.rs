use std::path::Path;

use burn::data::dataloader::DataLoaderBuilder;
use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, Learner, SupervisedTraining, TrainStep};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::DmpoModel;

use crate::batcher::{EpochClock, ExitBatch, ExitBatcher};
use crate::metrics::{ExitMetric, MultiExitOutput, metric_kinds};
use crate::trainee::Trainee;
use crate::{LossSchedule, WarmupCosine};
use dmpo_infer::data::ImageDataset;
use dmpo_infer::transform::Augment;

/// The optimisation recipe (defaults: DyT / VTAB-1k peers, see `docs/method.md`).
#[derive(Config, Debug)]
pub struct TrainConfig {
    #[config(default = 10)]
    pub epochs: usize,
    #[config(default = 64)]
    pub batch_size: usize,
    /// Peak AdamW learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    #[config(default = 1e-5)]
    pub min_lr: f64,
    #[config(default = 1)]
    pub warmup_epochs: usize,
    /// Decoupled weight decay on trainable matrices (not norms or biases).
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    /// Gradient clipping by global norm; 0 turns it off.
    #[config(default = 1.0)]
    pub grad_clip: f64,
    #[config(default = 0.0)]
    pub label_smoothing: f64,
    #[config(default = 42)]
    pub seed: u64,
    /// Threads decoding and augmenting images.
    #[config(default = 2)]
    pub num_workers: usize,
    #[config(default = "LossSchedule::new()")]
    pub schedule: LossSchedule,
    /// Random resized crops and flips; off: evaluation transform for training too.
    #[config(default = true)]
    pub augment: bool,
    /// Smallest crop area fraction when augmenting.
    #[config(default = 0.35)]
    pub min_crop_scale: f64,
}

/// Trains the add-ons of `model` with Burn's Learner: per-exit metrics live, checkpoints of
/// every epoch under `artifact_dir/checkpoint`, resumable from `resume_epoch`.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    model: DmpoModel<B>,
    train_set: ImageDataset,
    valid_set: ImageDataset,
    preprocess: &Preprocess,
    config: &TrainConfig,
    artifact_dir: &Path,
    resume_epoch: Option<usize>,
    device: &B::Device,
) -> DmpoModel<B::InnerBackend> {
    let exit_blocks = model.exits.clone();
    let trainee = Trainee {
        model,
        label_smoothing: config.label_smoothing,
        weight_decay: config.weight_decay,
    };
    let run = Run {
        train_set,
        valid_set,
        preprocess,
        config,
        artifact_dir,
        resume_epoch,
    };
    fit(trainee, exit_blocks, run, device).model
}

/// Everything a training run needs besides the model.
pub struct Run<'a> {
    pub train_set: ImageDataset,
    pub valid_set: ImageDataset,
    pub preprocess: &'a Preprocess,
    pub config: &'a TrainConfig,
    pub artifact_dir: &'a Path,
    pub resume_epoch: Option<usize>,
}

/// The Learner loop shared by tuning and pretraining: any model whose steps take
/// [`ExitBatch`]es and give [`MultiExitOutput`]s with `exit_blocks.len()` exits.
pub fn fit<B, M>(
    trainee: M,
    exit_blocks: Vec<usize>,
    run: Run<'_>,
    device: &B::Device,
) -> M::InnerModule
where
    B: AutodiffBackend,
    M: TrainStep<Input = ExitBatch<B>, Output = MultiExitOutput<B>>
        + AutodiffModule<B>
        + core::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<Input = ExitBatch<B::InnerBackend>, Output = MultiExitOutput<B::InnerBackend>>,
{
    let Run {
        train_set,
        valid_set,
        preprocess,
        config,
        artifact_dir,
        resume_epoch,
    } = run;
    B::seed(device, config.seed);
    let batches_per_epoch = train_set.samples.len().div_ceil(config.batch_size);
    let clock = EpochClock::new(
        config.schedule.clone(),
        exit_blocks.clone(),
        config.epochs,
        batches_per_epoch,
        resume_epoch.unwrap_or(0),
    );
    for epoch in 0..config.epochs {
        tracing::info!(
            "epoch {}: exit loss weights {:?}",
            epoch + 1,
            clock.weights(epoch)
        );
    }
    let augment = config.augment.then_some(Augment {
        min_scale: config.min_crop_scale,
        hflip: true,
    });
    let train_batcher = ExitBatcher {
        preprocess: preprocess.clone(),
        train: true,
        augment,
        clock: clock.clone(),
        seed: config.seed,
    };
    let valid_batcher = ExitBatcher {
        train: false,
        augment: None,
        ..train_batcher.clone()
    };
    let train_loader = DataLoaderBuilder::new(train_batcher)
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .num_workers(config.num_workers)
        .set_device(device.clone())
        .build(train_set);
    let valid_loader = DataLoaderBuilder::new(valid_batcher)
        .batch_size(config.batch_size)
        .num_workers(config.num_workers)
        .set_device(device.clone())
        .build(valid_set);

    let clip =
        (config.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(config.grad_clip as f32));
    // Weight decay is applied in the trainee's `optimize`, to matrices only.
    let optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_grad_clipping(clip)
        .init();
    let scheduler = WarmupCosine::new(
        config.lr,
        config.min_lr,
        config.warmup_epochs * batches_per_epoch,
        config.epochs * batches_per_epoch,
    );
    let learner = Learner::new(trainee, optim, scheduler);
    let mut training = SupervisedTraining::new(artifact_dir, train_loader, valid_loader)
        .with_file_checkpointer(NamedMpkFileRecorder::<FullPrecisionSettings>::new())
        .num_epochs(config.epochs)
        // Our binaries install their own tracing subscriber.
        .with_application_logger(None)
        .summary();
    for kind in metric_kinds(exit_blocks.len()) {
        training = training
            .metric_train_numeric(ExitMetric::new(kind))
            .metric_valid_numeric(ExitMetric::new(kind));
    }
    if let Some(epoch) = resume_epoch {
        training = training.checkpoint(epoch);
    }
    // On a terminal Burn draws its dashboard; elsewhere, concise log lines.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        training = training.renderer(crate::ProgressLog::default());
    }
    training.launch(learner).model
}
