//! Every setting of a tuning run, with one set of defaults, and the named recipes that
//! change them.

use burn::prelude::*;
use dmpo_infer::data::DataError;
use dmpo_infer::{ImportError, InferError};
use dmpo_model::ConfigError;

use crate::{Arm, TrainConfig, TrainError};

/// What to build and how to train it. `TuneConfig::new()` is the general recipe (large
/// datasets, the DyT / VTAB peers' settings, docs/method.md); [`Recipe::Demo`] is the embedded
/// demo's.
#[derive(Config, Debug)]
pub struct TuneConfig {
    /// The method: DMPO, the plain multi-exit baseline, or a reference arm.
    #[config(default = "Arm::Dmpo")]
    pub method: Arm,
    /// Blocks after which the exits sit; empty: every depth/4 blocks.
    #[config(default = "Vec::new()")]
    pub exits: Vec<usize>,
    /// Adapter bottleneck width.
    #[config(default = 16)]
    pub adapter_dim: usize,
    /// Adapter branch scale (0.1 for large datasets; 1.0, as DyT uses for small VTAB-1k sets).
    #[config(default = 0.1)]
    pub adapter_scale: f64,
    /// Reduced token width d' of the covariance heads; `None`: width/12, at least 8.
    #[config(default = "None")]
    pub cov_dim: Option<usize>,
    /// A linear head on the class token added to each covariance head's logits (So-ViT's
    /// fusion): worth it when the backbone's early class tokens were trained to classify.
    #[config(default = false)]
    pub fuse_cls: bool,
    /// DyT's target activation rate r: the share of patch tokens the MLPs keep (dyt, dmpo+dyt).
    #[config(default = 0.5)]
    pub token_rate: f64,
    /// The optimisation (epochs, learning rate, batch, augmentation, seed, ...).
    #[config(default = "TrainConfig::new()")]
    pub train: TrainConfig,
    /// Budgets (fractions of the backbone's MACs) of the evaluation curve.
    #[config(default = "vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]")]
    pub budgets: Vec<f64>,
    /// The budget whose thresholds are saved with the model.
    #[config(default = 0.5)]
    pub budget: f64,
}

/// A named set of tuning settings, so that a run says which one it started from rather than
/// the code guessing from its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// [`TuneConfig::new`]: datasets of useful size, the DyT / VTAB peers' settings.
    General,
    /// The embedded demo: its data is small (1,800 training images) and its backbone tiny (6
    /// blocks), so exits start after block 1 (a 30 % budget must be reachable), the covariance
    /// heads get more than width/12 = 8 dimensions, the adapters a full-scale branch (as DyT
    /// uses for small VTAB-1k sets), and crops are off (the backbone saw whole, centred 28×28
    /// images). Its backbone was pretrained with auxiliary class-token classifiers after blocks
    /// 1–3 (deep supervision), so the covariance heads also read the class token. That stage
    /// and `fuse_cls` were chosen on a validation split carved from training images, not on the
    /// demo's test split (`assets/rederive-demo.sh`, docs/results.md).
    Demo,
}

impl Recipe {
    pub fn name(self) -> &'static str {
        match self {
            Recipe::General => "general",
            Recipe::Demo => "demo",
        }
    }

    /// The recipe's settings; every other one keeps [`TuneConfig::new`]'s default.
    pub fn config(self) -> TuneConfig {
        let general = TuneConfig::new();
        match self {
            Recipe::General => general,
            Recipe::Demo => {
                let train = general
                    .train
                    .clone()
                    .with_epochs(10)
                    .with_lr(5e-3)
                    .with_min_crop_scale(1.0);
                general
                    .with_exits(vec![1, 2, 3, 6])
                    .with_adapter_scale(1.0)
                    .with_cov_dim(Some(32))
                    .with_fuse_cls(true)
                    .with_train(train)
            }
        }
    }
}

impl TuneConfig {
    /// Refuses settings that cannot work for the method (a self-distillation weight or a
    /// token rate out of range), naming the flag: a run checks before it reads any data.
    pub fn check(&self) -> Result<(), TuneError> {
        crate::tune::arm_settings(self, self.method).map(drop)
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "general" => Ok(Recipe::General),
            "demo" => Ok(Recipe::Demo),
            _ => Err(format!("`{s}` is not a recipe; choose general or demo")),
        }
    }
}

/// Why a tuning, comparison or pretraining run stopped, naming the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Model(#[from] ConfigError),
    /// A setting that cannot work, named in the message.
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_recipe_changes_only_what_it_names() {
        let (general, demo) = (Recipe::General.config(), Recipe::Demo.config());
        assert_eq!(demo.exits, vec![1, 2, 3, 6]);
        assert_eq!(demo.train.epochs, 10);
        assert_eq!(demo.train.batch_size, general.train.batch_size);
        assert_eq!(demo.budgets, general.budgets);
        assert_eq!("demo".parse::<Recipe>(), Ok(Recipe::Demo));
    }
}
