//! Before `--resume` hands a checkpoint to burn-train, load it as the Learner will and compare
//! it with the model being trained: burn-train panics on a record it cannot read, and Burn's
//! `load_record` neither checks tensor shapes nor survives lists of other lengths (it asserts),
//! so a checkpoint of another version, method, exit set or backbone would otherwise panic deep
//! inside Burn, or load silently wrong. Here it is one error naming the file.

use std::path::Path;

use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::{Record, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use burn::train::checkpoint::{Checkpointer, CheckpointerError, FileCheckpointer};

use crate::atomic_recorder::{CHECKPOINT_EXTENSION, CheckpointRecorder};
use crate::train_error::TrainError;

/// Checks the model, optimizer and scheduler checkpoints of `epoch` in `dir` against the run
/// about to resume from them.
pub(crate) fn check_resumable<B, M, O, S>(
    model: &M,
    _optim: &O,
    _scheduler: &S,
    dir: &Path,
    epoch: usize,
    device: &B::Device,
) -> Result<(), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: LrScheduler,
{
    let record = check_restorable::<B, M::Record>(dir, "model", epoch, device)?;
    check_model_fits(model, record).map_err(|reason| TrainError::Checkpoint {
        path: dir.join(format!("model-{epoch}.{CHECKPOINT_EXTENSION}")),
        dir: dir.to_path_buf(),
        reason,
    })?;
    check_restorable::<B, O::Record>(dir, "optim", epoch, device)?;
    check_restorable::<B, S::Record<B>>(dir, "scheduler", epoch, device)?;
    Ok(())
}

/// Loads the checkpoint `dir/<name>-<epoch>` as the Learner will when it resumes.
fn check_restorable<B: Backend, R: Record<B>>(
    dir: &Path,
    name: &str,
    epoch: usize,
    device: &B::Device,
) -> Result<R, TrainError> {
    let checkpointer = FileCheckpointer::new(CheckpointRecorder::default(), dir, name);
    checkpointer
        .restore(epoch, device)
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(format!("{name}-{epoch}.{CHECKPOINT_EXTENSION}")),
            dir: dir.to_path_buf(),
            reason: checkpoint_reason(&e),
        })
}

/// Whether a model record has this model's layout: as many tensors, of the same shapes.
fn check_model_fits<B: Backend, M: Module<B>>(model: &M, record: M::Record) -> Result<(), String> {
    let expected = ParamShapes::of(model);
    let loaded = dmpo_infer::panics::quietly(|| model.clone().load_record(record)).map_err(
        |_| "its lists of blocks, exits or dispatchers have other lengths than this model's",
    )?;
    let found = ParamShapes::of(&loaded);
    if found.0.len() != expected.0.len() {
        return Err(format!(
            "it holds {} tensors where this model has {}",
            found.0.len(),
            expected.0.len()
        ));
    }
    match expected.0.iter().zip(&found.0).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "tensor {i} has shape {:?} where this model has {:?}",
            found.0[i], expected.0[i]
        )),
    }
}

/// The shapes of a module's parameters, in visiting order.
struct ParamShapes(Vec<Vec<usize>>);

impl ParamShapes {
    fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut shapes = Self(Vec::new());
        module.visit(&mut shapes);
        shapes
    }
}

impl<B: Backend> ModuleVisitor<B> for ParamShapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.shape().to_vec());
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.0.push(param.shape().to_vec());
    }
    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.0.push(param.shape().to_vec());
    }
}

/// The useful part of a recorder's error: serde's message (e.g. "missing field `dispatchers`")
/// without the nested `Unknown("...")` wrappers.
fn checkpoint_reason(e: &CheckpointerError) -> String {
    let text = match e {
        CheckpointerError::RecorderError(
            RecorderError::Unknown(s)
            | RecorderError::DeserializeError(s)
            | RecorderError::FileNotFound(s),
        ) => s.clone(),
        other => other.to_string(),
    };
    let last = text.lines().last().unwrap_or_default().trim();
    let last = last.strip_prefix("Error:").unwrap_or(last).trim();
    let inner = last
        .strip_prefix("Unknown(\"")
        .or_else(|| last.strip_prefix("DeserializeError(\""))
        .and_then(|s| s.strip_suffix("\")"))
        .unwrap_or(last);
    inner.replace("\\\"", "\"")
}
