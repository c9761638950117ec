//! # dmpo-infer
//!
//! Adaptive early exit, for real: a batch runs stage by stage; after each exit the samples whose
//! criterion passes leave with that exit's prediction and the rest are gathered into a smaller
//! batch that continues ([`run_early_exit`]). Thresholds are calibrated on held-out data to meet a
//! compute budget ([`calibrate`]), and evaluated as an accuracy-vs-cost curve ([`evaluate`]).
//! Everything is generic over `B: Backend`.

mod batches;
mod calibrate;
pub mod data;
mod engine;
mod evaluate;
mod exit_policy;
mod model_dir;
mod multi_exit;
mod plot;
mod seed_summary;
pub mod transform;

pub use batches::eval_batches;
pub use calibrate::{
    Budget, ExitScores, Simulated, calibrate, calibrate_geometric, collect_scores, simulate,
};
pub use engine::{Prediction, run_early_exit};
pub use evaluate::{CurvePoint, EvalReport, evaluate, write_report};
pub use exit_policy::{Criterion, ExitPolicy};
pub use model_dir::{
    BACKBONE_DIR, MODEL_FILE, ModelInfo, TRAINED_FILE, load_model_dir, read_model_info,
    write_model_info,
};
pub use multi_exit::{MultiExit, cumulative_costs};
pub use plot::plot_curves;
pub use seed_summary::{ArmSummary, BudgetSummary, MeanStd, summary_table, write_summary};
