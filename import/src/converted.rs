//! A converted model on disk: a directory with `config.json` (architecture, preprocessing, where
//! it came from, a hash of the weights) and `model.bpk` (burn-store's Burnpack, full precision:
//! loading it checks every tensor's presence and shape and reports, not panics).
//! Written atomically, so an interrupted save never leaves a half-written model behind.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn_store::{BurnpackStore, ModuleSnapshot};
use dmpo_model::Preprocess;
use dmpo_model::vit::{VisionTransformer, VitConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ImportError, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.bpk";
const FORMAT: &str = "dmpo-burn/vit";

/// The `config.json` of a converted backbone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackboneInfo {
    /// Always `dmpo-burn/vit`; tells our files from others.
    pub format: String,
    pub vit: VitConfig,
    pub preprocess: Preprocess,
    /// The file it was imported from, for the record.
    pub source: String,
    /// SHA-256 of `model.bpk`: trained add-ons are bound to exactly these weights.
    pub weights_sha256: String,
}

/// Writes `model` and its description into `dir` (created if needed), atomically per file:
/// each is written under a temporary name and renamed into place, weights first.
pub fn save_backbone<B: Backend>(
    dir: &Path,
    vit: &VitConfig,
    preprocess: &Preprocess,
    model: VisionTransformer<B>,
    source: &str,
) -> Result<BackboneInfo> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp_weights = dir.join(format!(".model-{}-tmp.bpk", std::process::id()));
    model
        .save_into(&mut BurnpackStore::from_file(&tmp_weights).overwrite(true))
        .map_err(|e| ImportError::Io {
            path: tmp_weights.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&tmp_weights).map_err(io(&tmp_weights))?;
    let info = BackboneInfo {
        format: FORMAT.into(),
        vit: vit.clone(),
        preprocess: preprocess.clone(),
        source: source.into(),
        weights_sha256: sha256_hex(&bytes),
    };
    std::fs::rename(&tmp_weights, &weights).map_err(io(&weights))?;
    let json = serde_json::to_string_pretty(&info).expect("config serialises");
    write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())?;
    Ok(info)
}

/// Reads `config.json` of a converted backbone directory.
pub fn read_backbone_info(dir: &Path) -> Result<BackboneInfo> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| ImportError::Io {
        path: path.clone(),
        source,
    })?;
    parse_backbone_info(&text, path)
}

/// Parses and checks the text of a backbone's `config.json`; `path` names it in errors.
pub fn parse_backbone_info(text: &str, path: PathBuf) -> Result<BackboneInfo> {
    let bad = |e: serde_json::Error| ImportError::Config {
        path: path.clone(),
        reason: format!("not a dmpo-burn backbone config: {e}"),
    };
    let mut saved: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
    // Architecture settings added since the file was written (e.g. register tokens) take their
    // defaults, so older converted backbones keep loading.
    if let Some(vit) = saved.get_mut("vit") {
        let mut current = serde_json::to_value(VitConfig::new()).expect("config serialises");
        crate::overlay(&mut current, vit.take());
        *vit = current;
    }
    let info: BackboneInfo = serde_json::from_value(saved).map_err(bad)?;
    if info.format != FORMAT {
        return Err(ImportError::Config {
            path,
            reason: format!("format is `{}`, expected `{FORMAT}`", info.format),
        });
    }
    info.vit
        .validate()
        .map_err(|reason| ImportError::Config { path, reason })?;
    Ok(info)
}

/// Loads a directory written by [`save_backbone`].
pub fn load_backbone<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(BackboneInfo, VisionTransformer<B>)> {
    let info = read_backbone_info(dir)?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Err(ImportError::Io {
            path: weights,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file missing"),
        });
    }
    let model = load_weights(&info, BurnpackStore::from_file(&weights), &weights, device)?;
    Ok((info, model))
}

/// A backbone from the bytes of its two files (`config.json`, `model.bpk`), e.g. embedded in
/// a binary with `include_bytes!`; `label` names them in errors (say, the folder they came
/// from).
pub fn load_backbone_bytes<B: Backend>(
    config: &[u8],
    weights: &[u8],
    label: &Path,
    device: &B::Device,
) -> Result<(BackboneInfo, VisionTransformer<B>)> {
    let config_path = label.join(CONFIG_FILE);
    let text = std::str::from_utf8(config).map_err(|e| ImportError::Config {
        path: config_path.clone(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let info = parse_backbone_info(text, config_path)?;
    let store =
        BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(weights.to_vec())));
    let model = load_weights(&info, store, &label.join(WEIGHTS_FILE), device)?;
    Ok((info, model))
}

/// `info`'s architecture with the weights in `store` (every tensor present and of its shape).
fn load_weights<B: Backend>(
    info: &BackboneInfo,
    mut store: BurnpackStore,
    weights: &Path,
    device: &B::Device,
) -> Result<VisionTransformer<B>> {
    let weights = weights.to_path_buf();
    let mut model = info.vit.init::<B>(device);
    let result = model
        .load_from(&mut store)
        .map_err(|e| ImportError::Corrupt {
            path: weights.clone(),
            reason: e.to_string(),
        })?;
    if !result.is_success() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(ImportError::Corrupt {
            path: weights,
            reason: format!("the weights do not fit the architecture in config.json: {result}"),
        });
    }
    Ok(model)
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    };
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
