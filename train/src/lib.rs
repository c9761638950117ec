//! # dmpo-train
//!
//! Turns a frozen backbone plus the DMPO add-ons into a tuned multi-exit model with Burn's
//! `Learner`: the two-phase weighted multi-exit loss ([`LossSchedule`]), per-exit metrics shown
//! live, AdamW with warm-up + cosine, decoupled weight decay on matrices only, gradient
//! clipping, checkpoints and resume. Datasets and timm's preprocessing come from
//! `dmpo_infer::data` and `dmpo_infer::transform`.
//!
//! The tasks of the command line are library calls with typed configs: [`tune`] (a
//! [`TuneConfig`], from a named [`Recipe`]), [`compare`] and [`pretrain_backbone`].
//!
//! ```no_run
//! # fn main() -> Result<(), dmpo_train::TuneError> {
//! use dmpo_train::{BackboneSource, DataOptions, Recipe, TuneData, tune};
//! type B = burn::backend::Autodiff<burn::backend::NdArray>;
//! let data = TuneData::load("assets/fashion-mnist-demo".as_ref(), &DataOptions::default())?;
//! let config = Recipe::Demo.config();
//! let backbone = BackboneSource::new("assets/backbone");
//! let tuned = tune::<B>(&config, &backbone, data, "runs/mine".as_ref(), false, &[Default::default()])?;
//! println!("{}", tuned.report);
//! # Ok(())
//! # }
//! ```

mod arm;
mod atomic_recorder;
mod batcher;
mod compare;
mod dyt_loss;
mod epoch_loader;
mod epoch_metrics;
mod held_apart;
mod learner;
mod loss_guard;
mod loss_schedule;
mod lr_schedule;
mod metrics;
mod node_group;
mod pixel_baseline;
mod pretrain;
mod pretrain_job;
mod progress_log;
mod resume_check;
mod self_distillation;
mod step_bench;
mod synthetic;
mod train_error;
mod trainee;
mod tune;
mod tune_config;

pub use arm::Arm;
pub use atomic_recorder::{
    AtomicFileRecorder, CHECKPOINT_EXTENSION, CheckpointRecorder, PARTIAL_DIR,
    last_complete_checkpoint, wait_for_checkpoint_writes,
};
pub use batcher::{EpochWeights, ExitBatch, ExitBatcher};
pub use compare::{CompareConfig, CompareReport, RUN_TIME_FILE, compare};
pub use dmpo_infer::PeakMemory;
pub use dyt_loss::DytLoss;
pub use epoch_loader::{EpochCounter, EpochLoader, Split};
pub use epoch_metrics::{read_epoch_metrics, write_epoch_metrics};
pub use held_apart::exclude_images;
pub use learner::{Run, TrainConfig, fit, train};
pub use loss_guard::LossGuard;
pub use loss_schedule::{LossSchedule, PhaseTwo};
pub use lr_schedule::WarmupCosine;
pub use metrics::{ExitMetric, ExitMetricKind, HostExits, MultiExitOutput, metric_kinds};
pub use node_group::{GradientSync, LOST_PEER_EXIT_CODE, NodeGroup};
pub use pixel_baseline::{
    PixelBaselineConfig, PixelBaselineReport, pixel_baseline, pixel_features,
};
pub use pretrain::{
    PretrainConfig, PretrainTrainee, backbone_accuracy, demo_vit_config, pretrain, pretrain_on,
};
pub use pretrain_job::{
    PretrainJob, PretrainOverrides, RECIPE_FILE, load_recipe, pretrain_backbone,
};
pub use progress_log::ProgressLog;
pub use self_distillation::SelfDistillation;
pub use step_bench::{StepBenchConfig, StepReport, Tuning, bench_model_config, bench_train_step};
pub use synthetic::{SYNTHETIC_CLASSES, render, synthetic_dataset};
pub use train_error::TrainError;
pub use trainee::{Guarded, Trainee};
pub use tune::{BackboneSource, DataOptions, TuneData, Tuned, tune};
pub use tune_config::{Recipe, TuneConfig, TuneError};
