use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ImportError, Result};

/// One tensor read from a checkpoint, already converted to `f32` on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

/// The tensors of one checkpoint, by name, with the file they came from.
///
/// Tensors are *taken* as the model is built, so whatever is left at the end is a key the
/// model has no place for, and is reported rather than silently dropped.
#[derive(Debug, Clone)]
pub struct TensorMap {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
}

impl TensorMap {
    pub fn new(path: &Path, tensors: BTreeMap<String, HostTensor>) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    /// Removes `key`, checking its shape; a missing key or another shape is an error naming both.
    pub fn take(&mut self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        let tensor = self
            .tensors
            .remove(key)
            .ok_or_else(|| ImportError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
            })?;
        if tensor.shape != expected {
            return Err(ImportError::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                found: tensor.shape,
                expected: expected.to_vec(),
            });
        }
        Ok(tensor)
    }

    /// Removes `key` if present (optional parameters such as biases), checking its shape.
    pub fn take_optional(&mut self, key: &str, expected: &[usize]) -> Result<Option<HostTensor>> {
        if self.contains(key) {
            self.take(key, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Removes every key for which `drop` is true (tensors a model deliberately ignores).
    pub fn discard(&mut self, drop: impl Fn(&str) -> bool) {
        self.tensors.retain(|k, _| !drop(k));
    }

    /// Errors if any tensor was left untaken.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = self.tensors.into_keys().collect();
        let hint = unsupported_feature_hint(&keys);
        Err(ImportError::UnexpectedKeys {
            path: self.path,
            keys,
            hint,
        })
    }
}

/// Names the timm feature behind keys we do not support, so the error says *why*.
fn unsupported_feature_hint(keys: &[String]) -> Option<String> {
    let features = [
        ("norm_pre", "a pre-norm before the blocks (CLIP-style)"),
        ("q_norm", "QK normalisation"),
        ("attn_pool", "attention pooling (global_pool='map')"),
        ("dist_token", "a distillation token (DeiT-distilled)"),
        ("head_dist", "a distillation head (DeiT-distilled)"),
    ];
    let found: Vec<&str> = features
        .iter()
        .filter(|(needle, _)| keys.iter().any(|k| k.contains(needle)))
        .map(|(_, what)| *what)
        .collect();
    (!found.is_empty()).then(|| {
        format!(
            "this checkpoint uses {}, which dmpo-burn's ViT does not support",
            found.join(", ")
        )
    })
}

/// Training scripts save `{"model": state_dict, "optimizer": ...}` or wrap models in
/// `DataParallel` (`module.`). Find the prefix under which the position embedding lives, keep only
/// the tensors under it, and strip it.
pub(crate) fn select_model_tensors(
    tensors: BTreeMap<String, HostTensor>,
) -> BTreeMap<String, HostTensor> {
    // Longest first, so a Hugging Face `vit.` prefix stays part of the key.
    const ANCHORS: [&str; 3] = [
        "vit.embeddings.position_embeddings",
        "embeddings.position_embeddings",
        "pos_embed",
    ];
    let prefix = tensors.keys().find_map(|k| {
        ANCHORS
            .iter()
            .find_map(|a| k.strip_suffix(a))
            .filter(|p| p.is_empty() || p.ends_with('.'))
            .map(str::to_string)
    });
    match prefix {
        Some(p) if !p.is_empty() => tensors
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v)))
            .collect(),
        _ => tensors,
    }
}
