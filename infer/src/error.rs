//! What can go wrong running a tuned model, each variant naming the input at fault.

use std::path::PathBuf;

use dmpo_import::ImportError;

use crate::backend::DeviceError;
use crate::data::DataError;

/// Why an inference call could not answer. Nothing in this crate's public API panics on bad
/// input: a model folder, bytes, an image, a policy or a tensor that does not fit comes back as
/// one of these, with the file (or what stood for it) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A model folder or its bytes: missing, corrupt, or not matching each other.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A dataset or an image file that cannot be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The backend could not start on its device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// An exit policy that does not fit the model (another model's thresholds, a threshold
    /// outside [0, 1]), or a model that has none yet.
    #[error("exit policy: {0}")]
    Policy(String),
    /// Input that does not fit the model: raw pixels of the wrong length or channel count,
    /// a tensor of the wrong shape.
    #[error("{input}: {reason}")]
    Input { input: String, reason: String },
    /// A dataset split with no image that could be read.
    #[error("{path}: {reason}")]
    Empty { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, InferError>;
