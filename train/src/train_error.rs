//! Why a training run did not finish.

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A NaN or infinite loss: the run stopped before that epoch's checkpoint.
    #[error(
        "training stopped in epoch {epoch}: {reason}. {kept} Try a lower learning rate \
         (--lr) or gradient clipping, then --resume."
    )]
    NonFiniteLoss {
        epoch: usize,
        reason: String,
        /// What is left on disk to resume from.
        kept: String,
    },
    /// The devices cannot share the batch.
    #[error("{0}")]
    Devices(String),
    /// A recipe setting that cannot work (named in the message).
    #[error("{0}")]
    Config(String),
    /// A checkpoint to resume from that does not fit the model being trained.
    #[error(
        "cannot resume from {}: {reason}. It was written by another version of dmpo-burn or \
         for another model (method, exits, backbone); start afresh without --resume, or \
         delete {}",
        path.display(),
        dir.display()
    )]
    Checkpoint {
        path: std::path::PathBuf,
        dir: std::path::PathBuf,
        reason: String,
    },
}
