use std::path::Path;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{
    ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim, SupervisedTraining, TrainStep,
};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::DmpoModel;

use crate::atomic_recorder::{CHECKPOINT_EXTENSION, CheckpointRecorder};
use crate::batcher::{EpochWeights, ExitBatch, ExitBatcher};
use crate::epoch_loader::{EpochCounter, EpochLoader, Split};
use crate::loss_guard::LossGuard;
use crate::metrics::{ExitMetric, MultiExitOutput, metric_kinds};
use crate::resume_check::check_resumable;
use crate::self_distillation::SelfDistillation;
use crate::train_error::TrainError;
use crate::trainee::{Guarded, Trainee};
use crate::{LossSchedule, WarmupCosine};
use dmpo_infer::data::ImageDataset;
use dmpo_infer::transform::Augment;

/// The optimisation recipe (defaults: DyT / VTAB-1k peers, see `docs/method.md`).
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// Epochs over the training split (8: the general tuning recipe; `Recipe::Demo` and
    /// `PretrainConfig` set their own).
    #[config(default = 8)]
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
    /// Steps between two reads of the summed losses by the NaN guard (and always at an epoch's
    /// end, before a checkpoint): 1 on the CPU, more on a GPU, where each read is a sync.
    #[config(default = 1)]
    pub loss_check_every: usize,
    /// Early exits also learn from the last exit's prediction (off by default).
    #[config(default = "SelfDistillation::off()")]
    pub distillation: SelfDistillation,
    /// How DyT's dispatchers train, when the model has them.
    #[config(default = "crate::DytLoss::new()")]
    pub dyt: crate::DytLoss,
    #[config(default = 42)]
    pub seed: u64,
    /// Threads decoding and augmenting each batch's images.
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
    /// Train as one node of a group of machines (gradients summed through Burn's collective);
    /// `None`: this process alone.
    #[config(default = "None")]
    pub nodes: Option<crate::NodeGroup>,
}

/// Trains the add-ons of `model` with Burn's Learner: per-exit metrics live, checkpoints of
/// every epoch under `artifact_dir/checkpoint`, resumable from `resume_epoch`. More than one
/// device trains data-parallel (see [`fit`]).
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    model: DmpoModel<B>,
    train_set: ImageDataset,
    valid_set: ImageDataset,
    preprocess: &Preprocess,
    config: &TrainConfig,
    artifact_dir: &Path,
    resume_epoch: Option<usize>,
    devices: &[B::Device],
) -> Result<DmpoModel<B::InnerBackend>, TrainError> {
    let exit_blocks = model.exits.clone();
    let trainee = Trainee {
        model,
        label_smoothing: config.label_smoothing,
        weight_decay: config.weight_decay,
        distillation: config.distillation.clone(),
        dyt: config.dyt.clone(),
        guard: LossGuard::every(config.loss_check_every),
        sync: crate::GradientSync::none(),
    };
    let run = Run {
        train_set,
        valid_set,
        preprocess,
        config,
        artifact_dir,
        resume_epoch,
    };
    Ok(fit(trainee, exit_blocks, run, devices)?.model)
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
///
/// On several `devices` it trains data-parallel with Burn's multi-device strategy: each step,
/// every device takes `batch_size / devices` items of the global batch, the gradients are summed
/// on the first device (each device's loss scaled by its share, so the sum is the global mean's
/// gradient) and one optimizer updates the weights there. Validation, metrics, checkpoints and
/// `--resume` run on the first device as on one.
pub fn fit<B, M>(
    trainee: M,
    exit_blocks: Vec<usize>,
    run: Run<'_>,
    devices: &[B::Device],
) -> Result<M::InnerModule, TrainError>
where
    B: AutodiffBackend,
    M: TrainStep<Input = ExitBatch<B>, Output = MultiExitOutput<B>>
        + AutodiffModule<B>
        + Guarded
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
    let device = devices.first().ok_or(TrainError::Devices(
        "no device to train on was given".to_string(),
    ))?;
    let (rank, nodes) = config
        .nodes
        .as_ref()
        .map_or((0, 1), |g| (g.rank as usize, g.nodes as usize));
    let per_device_batch = per_device_batch(
        config.batch_size,
        devices.len() * nodes,
        train_set.samples.len(),
    )?;
    // Seeded before anything draws: parameters made lazily draw their values at first use.
    B::seed(device, config.seed);
    let mut trainee = trainee;
    let mut resume_epoch = resume_epoch;
    if let Some(group) = &config.nodes {
        let sync = crate::GradientSync::join::<B::InnerBackend>(group, device)
            .map_err(TrainError::Devices)?;
        // Burn sums the gradients parameter by parameter in the order of their ids, which are
        // random per process: number them in the model's own order, the same on every node.
        trainee = trainee.map(&mut NumberParams(0));
        resume_epoch = sync.agree_on_resume::<B::InnerBackend>(resume_epoch, config.epochs, device);
        sync.set_checkpoints(artifact_dir.join("checkpoint"));
        tracing::info!(
            "node {rank} of {nodes}: {per_device_batch} images per device and step, {} per step \
             over the group",
            config.batch_size
        );
        trainee.set_sync(sync);
    }
    let guard = trainee.guard().clone();
    let batches_per_epoch = train_set.samples.len().div_ceil(config.batch_size);
    let weights = EpochWeights::new(config.schedule.clone(), exit_blocks.clone(), config.epochs);
    for epoch in 0..config.epochs {
        tracing::info!(
            "epoch {}: exit loss weights {:?}",
            epoch + 1,
            weights.weights(epoch)
        );
    }
    let augment = config.augment.then_some(Augment {
        min_scale: config.min_crop_scale,
        hflip: true,
    });
    let train_batcher = ExitBatcher {
        preprocess: preprocess.clone(),
        augment,
        weights,
        seed: config.seed,
    };
    let valid_batcher = ExitBatcher {
        augment: None,
        ..train_batcher.clone()
    };
    let epochs = EpochCounter::new(resume_epoch.unwrap_or(0));
    let train_loader = Arc::new(
        EpochLoader::<B>::new(
            train_set.samples,
            train_batcher,
            per_device_batch,
            Split::Train,
            epochs.clone(),
            config.num_workers,
            device,
        )
        .for_devices(devices.len())
        .for_node(rank, nodes),
    );
    let valid_loader = Arc::new(EpochLoader::<B::InnerBackend>::new(
        valid_set.samples,
        valid_batcher,
        config.batch_size,
        Split::Valid,
        epochs.clone(),
        config.num_workers,
        device,
    ));

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
    if let Some(epoch) = resume_epoch {
        check_resumable(
            &trainee,
            &optim,
            &scheduler,
            &artifact_dir.join("checkpoint"),
            epoch,
            device,
        )?;
    }
    let learner = Learner::new(trainee, optim, scheduler);
    let mut training = SupervisedTraining::new(artifact_dir, train_loader, valid_loader)
        .with_file_checkpointer(CheckpointRecorder::default())
        .with_interrupter(guard.interrupter())
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
    if devices.len() > 1 {
        tracing::info!(
            "data-parallel over {} devices, {per_device_batch} images each per step",
            devices.len()
        );
        training = training.with_training_strategy(
            ExecutionStrategy::multi(devices.to_vec(), MultiDeviceOptim::OptimMainDevice).into(),
        );
    }
    // On a terminal Burn draws its dashboard; elsewhere, concise log lines.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        training = training.renderer(crate::ProgressLog::default());
    }
    let model = training.launch(learner).model;
    match guard.reason() {
        None => Ok(model),
        Some(reason) => {
            let checkpoints = artifact_dir.join("checkpoint");
            let kept = match crate::last_complete_checkpoint(&checkpoints, CHECKPOINT_EXTENSION) {
                Some(e) => format!(
                    "The checkpoint of epoch {e} (the last good state) is kept in {}.",
                    checkpoints.display()
                ),
                None => "No epoch had finished, so there is no checkpoint.".to_string(),
            };
            Err(TrainError::NonFiniteLoss {
                epoch: epochs.started(),
                reason,
                kept,
            })
        }
    }
}

/// Numbers every parameter in the model's visiting order (a [`ParamId`] is random otherwise).
struct NumberParams(u64);

impl<B: burn::prelude::Backend> burn::module::ModuleMapper<B> for NumberParams {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::prelude::Tensor<B, D>>,
    ) -> burn::module::Param<burn::prelude::Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        burn::module::Param::from_mapped_value(burn::module::ParamId::from(self.0), tensor, mapper)
    }
}

/// Each device's part of a global batch of `batch_size` (`devices`: over every node): it must
/// divide evenly, so that every step sees the same items as on one device.
fn per_device_batch(batch_size: usize, devices: usize, items: usize) -> Result<usize, TrainError> {
    if devices > 1 && !batch_size.is_multiple_of(devices) {
        return Err(TrainError::Devices(format!(
            "--batch {batch_size} does not split evenly over {devices} devices: pick a multiple \
             of {devices} (the batch is the global one, shared by the devices of every node)"
        )));
    }
    if devices > items {
        return Err(TrainError::Devices(format!(
            "{devices} devices for {items} training images: each device needs at least one"
        )));
    }
    Ok(batch_size / devices)
}
