//! Pretraining a backbone as a library call, resumable: what `cargo xtask pretrain` runs.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use dmpo_import::{ImportOptions, load_any, save_backbone};
use dmpo_infer::data::{ImageDataset, load_splits};

use crate::{PretrainConfig, TuneError, backbone_accuracy, exclude_images};

/// The file in the work folder that holds the recipe of a pretraining run (read back on resume).
pub const RECIPE_FILE: &str = "recipe.json";

/// Changes to the recipe; `None` (or empty) keeps the recipe's value. Ignored on `resume`,
/// which continues with the saved recipe.
#[derive(Debug, Clone, Default)]
pub struct PretrainOverrides {
    /// Start from this backbone's weights (a second stage); it must have the recipe's
    /// architecture.
    pub init: Option<PathBuf>,
    pub lr: Option<f64>,
    pub warmup_epochs: Option<usize>,
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    /// Synthetic images per class (synthetic pretraining only).
    pub per_class: Option<usize>,
    /// Training images held out for validation (dataset only).
    pub valid_images: Option<usize>,
    pub depth: Option<usize>,
    /// Token width (the MLP is 4× as wide).
    pub width: Option<usize>,
    pub num_heads: Option<usize>,
    /// Deep supervision: auxiliary classifiers after these blocks, dropped once pretraining ends.
    pub aux_exits: Vec<usize>,
}

impl PretrainOverrides {
    /// Whether any recipe setting is changed (a resumed run ignores them, and says so).
    fn any(&self) -> bool {
        self.init.is_some()
            || self.lr.is_some()
            || self.warmup_epochs.is_some()
            || self.epochs.is_some()
            || self.batch.is_some()
            || self.per_class.is_some()
            || self.valid_images.is_some()
            || self.depth.is_some()
            || self.width.is_some()
            || self.num_heads.is_some()
            || !self.aux_exits.is_empty()
    }

    fn apply(&self, r: &mut PretrainConfig) -> Result<(), TuneError> {
        if let Some(e) = self.epochs {
            r.train.epochs = e.max(1);
        }
        if let Some(b) = self.batch {
            r.train.batch_size = b.max(1);
        }
        if let Some(n) = self.per_class {
            r.per_class = n.max(1);
        }
        if let Some(n) = self.valid_images {
            r.valid_images = n.max(1);
        }
        if let Some(lr) = self.lr {
            r.train.lr = lr;
        }
        if let Some(w) = self.warmup_epochs {
            r.train.warmup_epochs = w;
        }
        if let Some(d) = self.depth {
            r.vit.depth = d;
        }
        if let Some(w) = self.width {
            r.vit.embed_dim = w;
            r.vit.mlp_hidden_dim = 4 * w;
        }
        if let Some(h) = self.num_heads {
            r.vit.num_heads = h;
        }
        let v = &r.vit;
        if v.depth == 0 || v.num_heads == 0 || !v.embed_dim.is_multiple_of(v.num_heads) {
            return Err(TuneError::Config(format!(
                "a backbone of depth {}, width {} and {} heads cannot be built: the depth and \
                 heads must be at least 1 and the heads must divide the width",
                v.depth, v.embed_dim, v.num_heads
            )));
        }
        r.init = self.init.as_ref().map(|p| p.display().to_string());
        r.aux_exits = self.aux_exits.clone();
        Ok(())
    }
}

/// A pretraining run: where its data and outputs are.
#[derive(Debug, Clone)]
pub struct PretrainJob {
    /// Where the backbone is written (a folder `train --backbone` reads).
    pub out: PathBuf,
    /// A labelled dataset (its training split only is used); `None`: synthetic patterns.
    pub data: Option<PathBuf>,
    /// Datasets whose images (both splits, matched by pixels) are removed from the pretraining
    /// data, e.g. the demo subset the backbone will later be tuned on.
    pub exclude: Vec<PathBuf>,
    /// Checkpoints, the recipe and Burn's logs of the run.
    pub work: PathBuf,
    /// Continue the run in `work` from its last complete checkpoint, with its saved recipe.
    pub resume: bool,
    pub overrides: PretrainOverrides,
    /// Threads decoding and augmenting images (not part of the recipe).
    pub workers: Option<usize>,
    /// Steps between two reads of the NaN guard (1 on the CPU; more on a GPU, where a read is
    /// a sync).
    pub loss_check_every: usize,
    /// The backend's name, for the result file.
    pub backend: String,
    /// Train as one node of a group of machines (not part of the recipe).
    pub nodes: Option<crate::NodeGroup>,
}

/// The recipe as saved: where this run trained (`train.nodes`) is not part of it.
fn recipe_text(recipe: &PretrainConfig) -> String {
    let mut saved = recipe.clone();
    saved.train.nodes = None;
    saved.to_string()
}

/// A saved pretraining recipe; settings added to the recipe since it was written take their
/// defaults, so a run started by an older version still resumes.
pub fn load_recipe(path: &Path) -> Result<PretrainConfig, TuneError> {
    let bad = |e: &dyn std::fmt::Display| {
        TuneError::Config(format!("{}: not a pretraining recipe: {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|source| TuneError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let saved: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e))?;
    let mut recipe = serde_json::to_value(PretrainConfig::new()).map_err(|e| bad(&e))?;
    dmpo_import::overlay(&mut recipe, saved);
    serde_json::from_value(recipe).map_err(|e| bad(&e))
}

/// Pretrains a backbone and writes it to `job.out` with its recipe (`pretrain.json`) and what
/// it measured (`pretrain-result.json`, also returned).
pub fn pretrain_backbone<B: AutodiffBackend>(
    job: &PretrainJob,
    devices: &[B::Device],
) -> Result<serde_json::Value, TuneError> {
    let (out, data, work) = (&job.out, job.data.as_deref(), &job.work);
    let started = std::time::Instant::now();
    let device = devices
        .first()
        .ok_or_else(|| TuneError::Config("no device to train on was given".into()))?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TuneError::Io { path, source }
    };
    std::fs::create_dir_all(work).map_err(io(work))?;
    let recipe_path = work.join(RECIPE_FILE);
    let artifacts = work.join("training");
    let resume_epoch = if job.resume {
        crate::last_complete_checkpoint(&artifacts.join("checkpoint"), crate::CHECKPOINT_EXTENSION)
    } else {
        None
    };
    let mut recipe = if job.resume && recipe_path.is_file() {
        if job.overrides.any() {
            tracing::warn!(
                "--resume continues with the saved recipe in {}; --init, --lr, \
                 --warmup-epochs, --epochs, --batch, --per-class, --valid-images, --depth, \
                 --width, --num-heads and --aux-exits are ignored",
                recipe_path.display()
            );
        }
        load_recipe(&recipe_path)?
    } else {
        if job.resume {
            tracing::warn!("{}: no run to resume; starting afresh", work.display());
        }
        let mut r = if data.is_some() {
            PretrainConfig::new()
        } else {
            PretrainConfig::synthetic()
        };
        job.overrides.apply(&mut r)?;
        r
    };
    recipe.validate_aux_exits().map_err(TuneError::Config)?;
    recipe.train.loss_check_every = job.loss_check_every;
    recipe.train.nodes = job.nodes.clone();
    if let Some(w) = job.workers {
        recipe.train.num_workers = w.max(1);
    }
    if let Some(e) = resume_epoch {
        tracing::info!("resuming pretraining after epoch {e}");
    }

    let mut result = serde_json::json!({
        "backend": job.backend,
        "epochs": recipe.train.epochs,
        "init": recipe.init,
    });
    // Seeded before the weights are drawn: the same recipe gives the same run.
    B::seed(device, recipe.train.seed);
    if recipe.init.is_some() && data.is_none() {
        return Err(TuneError::Config(
            "--init needs --data: synthetic pretraining starts from scratch".into(),
        ));
    }
    let write_recipe = |recipe: &PretrainConfig| {
        dmpo_import::write_atomic(&recipe_path, recipe_text(recipe).as_bytes())
    };
    let (vit, source) = match data {
        None => {
            write_recipe(&recipe)?;
            let vit = crate::pretrain::<B>(&recipe, &artifacts, resume_epoch, devices)?;
            let source = "cargo xtask pretrain: formula-driven synthetic patterns \
                          (train/src/synthetic.rs), recipe in pretrain.json";
            (vit, source.to_string())
        }
        Some(dir) => {
            let splits = load_splits(dir)?;
            let mut train_set = splits.train;
            let held = job
                .exclude
                .iter()
                .map(|p| load_splits(p))
                .collect::<Result<Vec<_>, _>>()?;
            let held_sets: Vec<&ImageDataset> =
                held.iter().flat_map(|s| [&s.train, &s.test]).collect();
            let excluded = exclude_images(&mut train_set, &held_sets)?;
            let held_apart_from: Vec<String> = job
                .exclude
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            if !job.exclude.is_empty() {
                tracing::info!(
                    "{excluded} training images held apart (they appear in {})",
                    held_apart_from.join(", ")
                );
            }
            let n = train_set.samples.len();
            if recipe.valid_images >= n {
                return Err(TuneError::Config(format!(
                    "{}: {n} training images left, too few to hold {} out for validation",
                    dir.display(),
                    recipe.valid_images
                )));
            }
            let valid_set = train_set.split_off_held_out(recipe.valid_images as f64 / n as f64);
            recipe.vit.num_classes = train_set.num_classes();
            write_recipe(&recipe)?;
            let train_images = train_set.samples.len();
            tracing::info!(
                "pretraining on {train_images} images, validating on {} ({} classes)",
                valid_set.samples.len(),
                train_set.num_classes()
            );
            let initial = match &recipe.init {
                None => recipe.vit.init::<B>(device),
                Some(init) => {
                    let (info, vit) =
                        load_any::<B>(Path::new(init), &ImportOptions::default(), device)?;
                    if info.vit.to_string() != recipe.vit.to_string() {
                        return Err(TuneError::Config(format!(
                            "{init}: its architecture differs from the recipe's ({} vs {})",
                            info.vit, recipe.vit
                        )));
                    }
                    vit
                }
            };
            let vit = crate::pretrain_on::<B>(
                &recipe,
                initial,
                train_set,
                valid_set.clone(),
                &artifacts,
                resume_epoch,
                devices,
            )?;
            // Measured once the weights are final: the test split plays no part in training.
            let preprocess = recipe.preprocess();
            let acc = |set: &ImageDataset| {
                backbone_accuracy(&vit, set, &preprocess, recipe.train.batch_size, device)
            };
            let (valid_acc, test_acc) = (acc(&valid_set), acc(&splits.test));
            tracing::info!(
                "pretrained backbone: {:.2}% on the {} validation images, {:.2}% on the {} test images",
                100.0 * valid_acc,
                valid_set.samples.len(),
                100.0 * test_acc,
                splits.test.samples.len()
            );
            result["data"] = dir.display().to_string().into();
            result["train_images"] = train_images.into();
            result["held_apart_images"] = excluded.into();
            result["held_apart_from"] = held_apart_from.into();
            result["valid_images"] = valid_set.samples.len().into();
            result["valid_accuracy"] = valid_acc.into();
            result["test_images"] = splits.test.samples.len().into();
            result["test_accuracy"] = test_acc.into();
            let start = match &recipe.init {
                Some(init) => format!("from {init}"),
                None => "from scratch".to_string(),
            };
            let source = format!(
                "cargo xtask pretrain --data {}: supervised {start} on its training split \
                 less {excluded} held-apart images, recipe in pretrain.json",
                dir.display()
            );
            (vit, source)
        }
    };
    // Every epoch's loss and accuracy (training and validation) beside the checkpoints.
    crate::write_epoch_metrics(&artifacts, work).map_err(io(work))?;
    let preprocess = recipe.preprocess();
    save_backbone(out, &recipe.vit, &preprocess, vit, &source)?;
    dmpo_import::write_atomic(&out.join("pretrain.json"), recipe_text(&recipe).as_bytes())?;
    result["minutes_this_run"] = (started.elapsed().as_secs_f64() / 60.0).into();
    result["resumed_after_epoch"] = resume_epoch.into();
    let text = serde_json::to_string_pretty(&result)
        .map_err(|e| TuneError::Config(format!("pretrain-result.json: {e}")))?;
    dmpo_import::write_atomic(&out.join("pretrain-result.json"), text.as_bytes())?;
    tracing::info!("pretrained backbone written to {}", out.display());
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_written_before_newer_settings_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECIPE_FILE);
        let mut old = serde_json::to_value(PretrainConfig::new().with_valid_images(123)).unwrap();
        let train = old["train"].as_object_mut().unwrap();
        train.remove("distillation");
        train.remove("loss_check_every");
        std::fs::write(&path, old.to_string()).unwrap();
        let recipe = load_recipe(&path).unwrap();
        assert_eq!(recipe.valid_images, 123, "saved values are kept");
        assert_eq!(
            recipe.train.loss_check_every, 1,
            "new ones take their defaults"
        );

        std::fs::write(&path, "{\"train\": 3}").unwrap();
        let err = load_recipe(&path).unwrap_err().to_string();
        assert!(err.contains("not a pretraining recipe"), "{err}");
    }
}
