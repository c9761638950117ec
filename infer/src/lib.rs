//! # dmpo-infer
//!
//! The dmpo-burn runtime. Load a tuned model ([`TunedModel`], from a folder or from bytes), turn
//! images into its input, and run adaptive early exit for real: a batch runs stage by stage;
//! after each exit the samples whose criterion passes leave with that exit's prediction and the
//! rest are gathered into a smaller batch that continues ([`run_early_exit`]). Thresholds are
//! calibrated on held-out data to meet a compute budget ([`calibrate`]), and evaluated as an
//! accuracy-vs-cost curve ([`evaluate`]).
//!
//! Everything is generic over `B: Backend`. The compile-time backend choice of the command line
//! and the examples ([`backend`]: Flex, NdArray, wgpu or CUDA by cargo feature) and the fused
//! Flex CPU kernels (`flex_kernels`) live here too; with `default-features = false` the crate
//! builds no backend and no plotting, for an app that brings its own.

mod batches;
mod bench;
mod calibrate;
#[cfg(feature = "flex")]
mod cpu_threads;
pub mod data;
mod engine;
mod error;
mod evaluate;
mod exit_policy;
mod memory;
mod model_dir;
mod multi_exit;
#[cfg(feature = "plot")]
mod plot;
mod seed_summary;
pub mod transform;
mod tuned_model;

pub mod backend;
#[cfg(feature = "flex")]
pub mod flex_kernels;
pub mod panics;
#[cfg(feature = "flex")]
pub mod roofline;

pub use batches::eval_batches;
pub use bench::{BenchConfig, PolicyTiming, bench_early_exit, median, percentile};
pub use calibrate::{
    Budget, ExitScores, Simulated, calibrate, calibrate_geometric, collect_scores, simulate,
};
#[cfg(feature = "flex")]
pub use cpu_threads::on_compute_thread;
pub use engine::{Prediction, run_early_exit, run_early_exit_each};
pub use error::{InferError, Result};
pub use evaluate::{CurvePoint, EvalReport, evaluate, write_report};
pub use exit_policy::{Criterion, ExitPolicy};
pub use memory::{PeakMemory, resident_bytes};
pub use model_dir::{
    BACKBONE_DIR, CalibratedBudget, MODEL_FILE, ModelBytes, ModelInfo, TRAINED_FILE,
    load_model_bytes, load_model_dir, parse_model_info, read_model_info, write_model_info,
};
pub use multi_exit::{MultiExit, cumulative_costs};
#[cfg(feature = "plot")]
pub use plot::plot_curves;
pub use seed_summary::{
    ArmSummary, BudgetSummary, MeanStd, SeedRun, runs_csv, summary_table, write_runs, write_summary,
};
pub use tuned_model::{TunedModel, image_from_pixels};

// What a caller of this crate's functions needs to name their errors and inputs, without
// depending on the crates below it.
pub use dmpo_import::ImportError;
pub use dmpo_model::Preprocess;
pub use image::{self, DynamicImage};
