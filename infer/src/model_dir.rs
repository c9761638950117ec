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
    /// Every budget calibrated for this model, the default one included, by fraction: a server
    /// picks one per request without the held-out data at hand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<CalibratedBudget>,
}

/// Exit thresholds calibrated to spend `fraction` of the backbone's MACs on average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibratedBudget {
    pub fraction: f64,
    pub policy: ExitPolicy,
}

/// Two budget fractions are the same budget when they agree to this (they come from the
/// command line and JSON, never from arithmetic).
const SAME_BUDGET: f64 = 1e-9;

impl ModelInfo {
    pub fn new(dmpo: DmpoConfig, preprocess: Preprocess, classes: Vec<String>) -> Self {
        Self {
            format: FORMAT.into(),
            dmpo,
            preprocess,
            classes,
            policy: None,
            budget_fraction: None,
            budgets: Vec::new(),
        }
    }

    /// Adds (or replaces) the thresholds for budget `fraction`, keeping the list by fraction.
    pub fn add_budget(&mut self, fraction: f64, policy: ExitPolicy) {
        self.budgets
            .retain(|b| (b.fraction - fraction).abs() > SAME_BUDGET);
        self.budgets.push(CalibratedBudget { fraction, policy });
        self.budgets
            .sort_by(|a, b| a.fraction.total_cmp(&b.fraction));
    }

    /// Makes `fraction`'s thresholds the default ones (`policy`) and adds them to the budgets.
    pub fn set_default_budget(&mut self, fraction: f64, policy: ExitPolicy) {
        self.add_budget(fraction, policy.clone());
        self.policy = Some(policy);
        self.budget_fraction = Some(fraction);
    }

    /// The thresholds calibrated for budget `fraction`: one of [`Self::budgets`] or the default.
    pub fn budget_policy(&self, fraction: f64) -> Option<&ExitPolicy> {
        self.budgets
            .iter()
            .find(|b| (b.fraction - fraction).abs() <= SAME_BUDGET)
            .map(|b| &b.policy)
            .or(match (&self.policy, self.budget_fraction) {
                (Some(p), Some(f)) if (f - fraction).abs() <= SAME_BUDGET => Some(p),
                _ => None,
            })
    }

    /// Every calibrated budget fraction, the default's included, ascending.
    pub fn budget_fractions(&self) -> Vec<f64> {
        let mut f: Vec<f64> = self.budgets.iter().map(|b| b.fraction).collect();
        if let (Some(_), Some(d)) = (&self.policy, self.budget_fraction)
            && !f.iter().any(|x| (x - d).abs() <= SAME_BUDGET)
        {
            f.push(d);
            f.sort_by(f64::total_cmp);
        }
        f
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
    let policies = info.policy.iter().map(|p| ("policy".to_string(), p)).chain(
        info.budgets
            .iter()
            .map(|b| (format!("budgets: budget {}", b.fraction), &b.policy)),
    );
    for (name, policy) in policies {
        let exits = info.dmpo.exits.len().max(1);
        if !info.dmpo.exits.is_empty() {
            policy
                .validate(exits)
                .map_err(|e| bad(format!("{name}: {e}")))?;
        } else if let Some(t) = policy.thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(bad(format!("{name}: threshold {t} is outside [0, 1]")));
        }
    }
    // Above 1 is a budget too: adapters, heads and dispatchers cost MACs of their own.
    if let Some(b) = info
        .budgets
        .iter()
        .find(|b| !(b.fraction > 0.0 && b.fraction.is_finite()))
    {
        return Err(bad(format!(
            "budgets: budget {} is not a positive fraction",
            b.fraction
        )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Criterion;

    fn policy(t: f32) -> ExitPolicy {
        ExitPolicy {
            criterion: Criterion::MaxProb,
            thresholds: vec![t],
        }
    }

    #[test]
    fn budgets_are_kept_by_fraction_and_the_default_is_one_of_them() {
        let dmpo = DmpoConfig::new(5).with_exits(vec![2, 4]);
        let classes = (0..5).map(|c| c.to_string()).collect();
        let mut info = ModelInfo::new(dmpo, Preprocess::new(16), classes);
        assert!(info.budget_fractions().is_empty());
        info.add_budget(0.7, policy(0.7));
        info.add_budget(0.3, policy(0.3));
        info.add_budget(0.7, policy(0.71));
        info.set_default_budget(0.5, policy(0.5));
        assert_eq!(info.budget_fractions(), vec![0.3, 0.5, 0.7]);
        assert_eq!(info.budget_policy(0.7), Some(&policy(0.71)));
        assert_eq!(info.policy, Some(policy(0.5)));
        assert_eq!(info.budget_policy(0.4), None);
        // A model.json from before the budget list still offers its one calibrated budget.
        let mut old = info.clone();
        old.budgets.clear();
        assert_eq!(old.budget_fractions(), vec![0.5]);
        assert_eq!(old.budget_policy(0.5), Some(&policy(0.5)));
        // And the list survives model.json.
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(parse_model_info(&text, "model.json".into()).unwrap(), info);
        // A budget whose thresholds do not fit the exits is refused, named.
        let mut bad = info.clone();
        bad.budgets[0].policy.thresholds = vec![0.5, 0.5];
        let text = serde_json::to_string(&bad).unwrap();
        let e = parse_model_info(&text, "model.json".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("budgets: budget 0.3"), "{e}");
    }
}
