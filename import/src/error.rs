use std::path::PathBuf;

/// Everything that can go wrong turning a file into a model, each naming the file and what is
/// wrong with it, so a user can fix the input instead of reading a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not a checkpoint this importer understands ({reason}); expected a .safetensors \
         file, a PyTorch .pth/.pt/.bin state dict, an ONNX model, or a directory written by `import`"
    )]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error("{path}: corrupt or truncated checkpoint: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: tensor `{key}` is missing (expected shape {expected:?})")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
    },
    #[error(
        "{path}: unexpected tensors the model has no place for: {}{}",
        keys.join(", "),
        hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    UnexpectedKeys {
        path: PathBuf,
        keys: Vec<String>,
        hint: Option<String>,
    },
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{path}: tensor `{key}` has dtype {dtype}; only floating-point weights can be imported"
    )]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ImportError>;
