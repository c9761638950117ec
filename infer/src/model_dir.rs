//! A tuned model on disk, self-contained so it can be shipped as one folder:
//!
//! ```text
//! <dir>/model.json            what it is: DMPO config, preprocessing, classes, exit policy
//! <dir>/backbone/             the frozen backbone (config.json + model.bpk)
//! <dir>/trained.safetensors   the trained add-ons, bound to that backbone's fingerprint
//! ```

use std::path::{Path, PathBuf};

use burn::prelude::*;
use dmpo_import::{ImportError, load_backbone, load_trained, write_atomic};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use serde::{Deserialize, Serialize};

use crate::ExitPolicy;

pub const MODEL_FILE: &str = "model.json";
pub const BACKBONE_DIR: &str = "backbone";
pub const TRAINED_FILE: &str = "trained.safetensors";
const FORMAT: &str = "dmpo-burn/model";
/// `dmpo.dispatch` fields of older model files, now training settings.
const LEGACY_DISPATCH_KEYS: [&str; 4] = [
    "temperature",
    "rate_weight",
    "complete_weight",
    "distill_weight",
];

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub format: String,
    pub dmpo: DmpoConfig,
    pub preprocess: Preprocess,
    pub classes: Vec<String>,
    /// Calibrated exit thresholds; `None` until `calibrate` has run.
    #[serde(default)]
    pub policy: Option<ExitPolicy>,
    /// The budget the policy was calibrated for, as a fraction of the backbone's MACs.
    #[serde(default)]
    pub budget_fraction: Option<f64>,
}

impl ModelInfo {
    pub fn new(dmpo: DmpoConfig, preprocess: Preprocess, classes: Vec<String>) -> Self {
        Self {
            format: FORMAT.into(),
            dmpo,
            preprocess,
            classes,
            policy: None,
            budget_fraction: None,
        }
    }

    /// The calibrated policy, or an error telling the user how to make one.
    pub fn require_policy(&self, dir: &Path) -> Result<&ExitPolicy, ImportError> {
        self.policy.as_ref().ok_or_else(|| ImportError::Config {
            path: dir.join(MODEL_FILE),
            reason: format!(
                "this model has no exit thresholds yet; calibrate them for a compute budget \
                 first: `cargo xtask calibrate --model {} --data <dataset dir> --budget 0.5`",
                dir.display()
            ),
        })
    }
}

/// Reads and checks `model.json`.
pub fn read_model_info(dir: &Path) -> Result<ModelInfo, ImportError> {
    let path = dir.join(MODEL_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| ImportError::Io {
        path: path.clone(),
        source,
    })?;
    parse_model_info(&text, path)
}

/// Parses and checks the text of a `model.json`; `path` names it in errors.
pub fn parse_model_info(text: &str, path: PathBuf) -> Result<ModelInfo, ImportError> {
    let not_ours = |e: serde_json::Error| ImportError::Config {
        path: path.clone(),
        reason: format!("not a dmpo-burn model description: {e}"),
    };
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(not_ours)?;
    // Models tuned before DyT's training settings moved to the trainer (`dmpo_train::DytLoss`)
    // recorded them with the dispatchers; they say nothing about the model, so they are dropped.
    if let Some(dispatch) = value
        .pointer_mut("/dmpo/dispatch")
        .and_then(|d| d.as_object_mut())
    {
        for key in LEGACY_DISPATCH_KEYS {
            dispatch.remove(key);
        }
    }
    let info: ModelInfo = serde_json::from_value(value.clone()).map_err(not_ours)?;
    let bad = |reason: String| ImportError::Config {
        path: path.clone(),
        reason,
    };
    // Burn's `Config` structs ignore fields they do not know: a misspelt `"bypas"` would
    // silently fall back to the default. Every key must survive a round trip.
    let known = serde_json::to_value(&info).expect("model info serialises");
    if let Some(key) = unknown_keys(&value, &known, "").first() {
        return Err(bad(format!("unknown field `{key}`")));
    }
    info.preprocess.validate().map_err(bad)?;
    dmpo_model::dmpo::check_exit_order(&info.dmpo.exits).map_err(|e| bad(format!("dmpo.{e}")))?;
    if info.format != FORMAT {
        return Err(bad(format!(
            "format is `{}`, expected `{FORMAT}`",
            info.format
        )));
    }
    if info.classes.len() != info.dmpo.num_classes {
        return Err(bad(format!(
            "{} class names for {} classes",
            info.classes.len(),
            info.dmpo.num_classes
        )));
    }
    if let Some(policy) = &info.policy {
        let exits = info.dmpo.exits.len().max(1);
        if !info.dmpo.exits.is_empty() {
            policy.validate(exits).map_err(bad)?;
        } else if let Some(t) = policy.thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(bad(format!("threshold {t} is outside [0, 1]")));
        }
    }
    Ok(info)
}

/// Keys of `given` (dotted paths) that `known`, the same document re-serialised, lacks.
fn unknown_keys(given: &serde_json::Value, known: &serde_json::Value, prefix: &str) -> Vec<String> {
    use serde_json::Value;
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g
            .iter()
            .flat_map(|(key, v)| {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_keys(v, kv, &path),
                    None => vec![path],
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Writes `model.json` atomically.
pub fn write_model_info(dir: &Path, info: &ModelInfo) -> Result<(), ImportError> {
    let json = serde_json::to_string_pretty(info).expect("model info serialises");
    write_atomic(&dir.join(MODEL_FILE), json.as_bytes())
}

/// Loads a tuned model: backbone, DMPO structure, trained add-ons (refused if they were trained
/// on another backbone).
pub fn load_model_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ModelInfo, DmpoModel<B>), ImportError> {
    let info = read_model_info(dir)?;
    let backbone_dir: PathBuf = dir.join(BACKBONE_DIR);
    let (backbone_info, backbone) = load_backbone::<B>(&backbone_dir, device)?;
    let model = assemble(&info, backbone_info.vit.depth, backbone, dir, device)?;
    let model = load_trained(&dir.join(TRAINED_FILE), model)?;
    Ok((info, model))
}

/// The bytes of a tuned model folder's four files, e.g. embedded in an app's binary:
///
/// ```ignore
/// let bytes = ModelBytes {
///     model_json: include_bytes!("../model/model.json"),
///     backbone_config: include_bytes!("../model/backbone/config.json"),
///     backbone_weights: include_bytes!("../model/backbone/model.bpk"),
///     trained: include_bytes!("../model/trained.safetensors"),
/// };
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ModelBytes<'a> {
    /// `model.json`.
    pub model_json: &'a [u8],
    /// `backbone/config.json`.
    pub backbone_config: &'a [u8],
    /// `backbone/model.bpk`.
    pub backbone_weights: &'a [u8],
    /// `trained.safetensors`.
    pub trained: &'a [u8],
}

/// [`load_model_dir`] from the folder's bytes; errors name the files as if they lay in a
/// folder called `label`.
pub fn load_model_bytes<B: Backend>(
    bytes: ModelBytes<'_>,
    label: &Path,
    device: &B::Device,
) -> Result<(ModelInfo, DmpoModel<B>), ImportError> {
    let path = label.join(MODEL_FILE);
    let text = std::str::from_utf8(bytes.model_json).map_err(|e| ImportError::Config {
        path: path.clone(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let info = parse_model_info(text, path)?;
    let (backbone_info, backbone) = dmpo_import::load_backbone_bytes::<B>(
        bytes.backbone_config,
        bytes.backbone_weights,
        &label.join(BACKBONE_DIR),
        device,
    )?;
    let model = assemble(&info, backbone_info.vit.depth, backbone, label, device)?;
    let model =
        dmpo_import::load_trained_bytes(bytes.trained.to_vec(), &label.join(TRAINED_FILE), model)?;
    Ok((info, model))
}

/// The DMPO structure `info` describes around `backbone`, its saved policy checked against it.
fn assemble<B: Backend>(
    info: &ModelInfo,
    depth: usize,
    backbone: dmpo_model::vit::VisionTransformer<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<DmpoModel<B>, ImportError> {
    let model = info
        .dmpo
        .init(backbone, device)
        .map_err(|reason| ImportError::Config {
            path: dir.join(MODEL_FILE),
            reason: format!("does not fit the backbone ({depth} blocks): {reason}"),
        })?;
    if let Some(policy) = &info.policy {
        policy
            .validate(model.num_exits())
            .map_err(|reason| ImportError::Config {
                path: dir.join(MODEL_FILE),
                reason,
            })?;
    }
    Ok(model)
}
