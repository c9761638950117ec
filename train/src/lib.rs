//! # dmpo-train
//!
//! Turns a frozen backbone plus the DMPO add-ons into a tuned multi-exit model with Burn's
//! `Learner`: the two-phase weighted multi-exit loss ([`LossSchedule`]), datasets and timm
//! preprocessing ([`data`], [`transform`]), per-exit metrics shown live, AdamW with warm-up +
//! cosine, decoupled weight decay on matrices only, gradient clipping, checkpoints and resume.

mod arm;
mod atomic_recorder;
mod batcher;
mod epoch_loader;
mod epoch_metrics;
mod held_apart;
mod learner;
mod loss_guard;
mod loss_schedule;
mod lr_schedule;
mod metrics;
mod peak_memory;
mod pixel_baseline;
mod pretrain;
mod progress_log;
mod resume_check;
mod self_distillation;
mod step_bench;
mod synthetic;
mod trainee;

pub use arm::Arm;
pub use atomic_recorder::{AtomicFileRecorder, PARTIAL_DIR, last_complete_checkpoint};
pub use batcher::{EpochWeights, ExitBatch, ExitBatcher};
pub use epoch_loader::{EpochCounter, EpochLoader, Split};
pub use epoch_metrics::{read_epoch_metrics, write_epoch_metrics};
pub use held_apart::exclude_images;
pub use learner::{
    CHECKPOINT_EXTENSION, CheckpointRecorder, Run, TrainConfig, TrainError, fit, train,
};
pub use loss_guard::LossGuard;
pub use loss_schedule::{LossSchedule, PhaseTwo};
pub use lr_schedule::WarmupCosine;
pub use metrics::{ExitMetric, ExitMetricKind, HostExits, MultiExitOutput, metric_kinds};
pub use peak_memory::PeakMemory;
pub use pixel_baseline::{
    PixelBaselineConfig, PixelBaselineReport, pixel_baseline, pixel_features,
};
pub use pretrain::{
    PretrainConfig, PretrainTrainee, backbone_accuracy, demo_vit_config, pretrain, pretrain_on,
};
pub use progress_log::ProgressLog;
pub use self_distillation::SelfDistillation;
pub use step_bench::{StepBenchConfig, StepReport, Tuning, bench_train_step};
pub use synthetic::{SYNTHETIC_CLASSES, render, synthetic_dataset};
pub use trainee::{Guarded, Trainee};
