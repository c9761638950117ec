//! The trained add-ons of a DMPO model (adapters, bypasses, heads) in one small safetensors file,
//! bound to the exact backbone they were trained on: the file's metadata records the backbone's
//! architecture and a fingerprint of its weights, and loading onto any other backbone is refused.

use std::path::Path;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn_store::{ModuleSnapshot, PathFilter, SafetensorsStore};
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use dmpo_model::vit::{VisionTransformer, VitConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ImportError, Result};

const FORMAT: &str = "dmpo-burn/trained";
const METADATA_KEY: &str = "dmpo";

/// What a trained-parts file is bound to, stored in its safetensors metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainedBinding {
    pub format: String,
    pub dmpo: DmpoConfig,
    pub backbone: VitConfig,
    /// [`backbone_fingerprint`] of the frozen trunk the parts were trained with.
    pub backbone_fingerprint: String,
}

impl TrainedBinding {
    pub fn new<B: Backend>(dmpo: &DmpoConfig, vit: &VitConfig, model: &DmpoModel<B>) -> Self {
        Self {
            format: FORMAT.into(),
            dmpo: dmpo.clone(),
            backbone: vit.clone(),
            backbone_fingerprint: backbone_fingerprint(&model.backbone),
        }
    }
}

/// SHA-256 over every parameter of the frozen trunk (shapes and `f32` values, in module order):
/// the same weights give the same fingerprint whatever file or format they came from.
pub fn backbone_fingerprint<B: Backend>(backbone: &VisionTransformer<B>) -> String {
    struct Hasher(Sha256);
    impl<B: Backend> ModuleVisitor<B> for Hasher {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for dim in param.shape().iter() {
                self.0.update((*dim as u64).to_le_bytes());
            }
            let data = param.val().into_data().convert::<f32>();
            for v in data.iter::<f32>() {
                self.0.update(v.to_le_bytes());
            }
        }
    }
    let mut h = Hasher(Sha256::new());
    backbone.visit(&mut h);
    crate::converted::hex(&h.0.finalize())
}

/// Only the add-ons: everything outside the frozen trunk.
fn trained_parts_filter() -> PathFilter {
    PathFilter::new().with_predicate(|path, _| !path.starts_with("backbone."))
}

/// Writes the add-ons of `model` to `path` atomically (temporary file, then rename).
pub fn save_trained<B: Backend>(
    path: &Path,
    model: &DmpoModel<B>,
    binding: &TrainedBinding,
) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("trained");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let json = serde_json::to_string(binding).expect("binding serialises");
    let mut store = SafetensorsStore::from_file(&tmp)
        .filter(trained_parts_filter())
        .metadata(METADATA_KEY, json)
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| ImportError::Io {
        path: tmp.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads what a trained-parts file is bound to, without loading it.
pub fn read_binding(path: &Path) -> Result<TrainedBinding> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_binding(&bytes, path)
}

/// What the bytes of a trained-parts file are bound to; `path` names them in errors.
fn parse_binding(bytes: &[u8], path: &Path) -> Result<TrainedBinding> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        ImportError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: format!("not a safetensors file: {e}"),
        }
    })?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| ImportError::Config {
            path: path.to_path_buf(),
            reason: "not a dmpo-burn trained-parts file (no `dmpo` metadata)".into(),
        })?;
    let invalid = |e: serde_json::Error| ImportError::Config {
        path: path.to_path_buf(),
        reason: format!("invalid `dmpo` metadata: {e}"),
    };
    // Files written before a setting existed (the backbone's `reg_tokens`, say) take its default.
    let mut value = serde_json::json!({
        "dmpo": DmpoConfig::new(0),
        "backbone": VitConfig::new(),
    });
    crate::overlay(&mut value, serde_json::from_str(json).map_err(invalid)?);
    let binding: TrainedBinding = serde_json::from_value(value).map_err(invalid)?;
    if binding.format != FORMAT {
        return Err(ImportError::Config {
            path: path.to_path_buf(),
            reason: format!("format is `{}`, expected `{FORMAT}`", binding.format),
        });
    }
    Ok(binding)
}

/// Loads the add-ons in `path` into `model`, after checking that `model`'s backbone is the one
/// they were trained on.
pub fn load_trained<B: Backend>(path: &Path, model: DmpoModel<B>) -> Result<DmpoModel<B>> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_trained_bytes(bytes, path, model)
}

/// [`load_trained`] from the file's bytes (e.g. `include_bytes!`); `path` names them in errors.
pub fn load_trained_bytes<B: Backend>(
    bytes: Vec<u8>,
    path: &Path,
    mut model: DmpoModel<B>,
) -> Result<DmpoModel<B>> {
    let binding = parse_binding(&bytes, path)?;
    let found = backbone_fingerprint(&model.backbone);
    if found != binding.backbone_fingerprint {
        return Err(ImportError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "these parts were trained on another backbone (fingerprint {}…, {} blocks of \
                 width {}), not the one given (fingerprint {}…): load the backbone they were \
                 trained with",
                &binding.backbone_fingerprint[..12],
                binding.backbone.depth,
                binding.backbone.embed_dim,
                &found[..12]
            ),
        });
    }
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .filter(trained_parts_filter())
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| ImportError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| !p.starts_with("backbone."))
        .collect();
    let dispatcher = |p: &String| p.starts_with("dispatchers.");
    if missing.iter().any(dispatcher) || result.unused.iter().any(dispatcher) {
        let (says, holds) = if model.dispatches() {
            ("dispatches tokens (DyT)", "holds no dispatcher tensors")
        } else {
            ("does not dispatch tokens", "holds DyT dispatcher tensors")
        };
        return Err(ImportError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "the method does not match the tensors: model.json says the model {says}, but \
                 this file {holds}; keep the model folder's files together"
            ),
        });
    }
    if !result.errors.is_empty() || !missing.is_empty() || !result.unused.is_empty() {
        return Err(ImportError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "the parts do not fit the model built from its config (missing: {missing:?}, \
                 unexpected: {:?}, errors: {:?})",
                result.unused, result.errors
            ),
        });
    }
    Ok(model)
}
