//! Tuning as a library call: a backbone and a dataset in, a tuned model folder (calibrated for a
//! budget) and its accuracy-vs-cost report out. What `cargo xtask train` runs.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use dmpo_import::{ImportOptions, TrainedBinding, load_any, save_backbone, save_trained};
use dmpo_infer::data::{ImageDataset, load_splits};
use dmpo_infer::{
    BACKBONE_DIR, Budget, Criterion, EvalReport, ModelInfo, TRAINED_FILE, TunedModel, calibrate,
    collect_scores, eval_batches, evaluate, write_model_info, write_report,
};
use dmpo_model::dmpo::{AdapterConfig, DmpoModel};
use dmpo_model::dyt::DispatchConfig;

use crate::{Arm, SelfDistillation, TrainConfig, TuneConfig, TuneError};

/// Where the backbone comes from: a checkpoint file (timm / Hugging Face / PyTorch / ONNX) or a
/// folder written by `import` or `pretrain`, and how to read a checkpoint whose file does not
/// say everything (heads, input size).
#[derive(Debug, Clone)]
pub struct BackboneSource {
    pub path: PathBuf,
    pub import: ImportOptions,
}

impl BackboneSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            import: ImportOptions::default(),
        }
    }
}

/// Which images of a dataset folder a run uses.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// At most this many training images per class (0 = all).
    pub per_class: usize,
    /// Fraction of the training split held out for validation and calibration.
    pub held_out: f64,
    /// At most this many test images (0 = all).
    pub test_limit: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            per_class: 0,
            held_out: 0.1,
            test_limit: 0,
        }
    }
}

/// The three splits of a run: training, held out from training (validation, calibration and
/// every choice), and test (read once, to report).
#[derive(Debug, Clone)]
pub struct TuneData {
    pub train: ImageDataset,
    pub held_out: ImageDataset,
    pub test: ImageDataset,
}

impl TuneData {
    /// The splits of a dataset folder (IDX, CIFAR, VTAB-1k lists or image folders).
    pub fn load(dir: &Path, options: &DataOptions) -> Result<Self, TuneError> {
        let mut s = load_splits(dir)?;
        if options.per_class > 0 {
            s.train.take_per_class(options.per_class);
        }
        let held_out = s.train.split_off_held_out(options.held_out);
        if options.test_limit > 0 {
            s.test.samples.truncate(options.test_limit);
        }
        let data = Self {
            train: s.train,
            held_out,
            test: s.test,
        };
        for (name, set) in [
            ("training", &data.train),
            ("held-out", &data.held_out),
            ("test", &data.test),
        ] {
            if set.samples.is_empty() {
                return Err(TuneError::Config(format!(
                    "{}: the {name} split has no images (per class {}, held out {})",
                    dir.display(),
                    options.per_class,
                    options.held_out
                )));
            }
        }
        Ok(data)
    }
}

/// A tuned model and what it measured.
pub struct Tuned<B: Backend> {
    /// The model as saved in the output folder, thresholds for the config's budget included.
    pub model: TunedModel<B>,
    /// Accuracy vs cost on the test split, thresholds calibrated on the held-out split.
    pub report: EvalReport,
}

/// Trains one model of `config.method` into `out` (a model folder `TunedModel::load` and
/// `cargo xtask infer` read), calibrates its exits on the held-out split and evaluates them on
/// the test split. `resume` continues from the last complete checkpoint in `out`. The model is
/// built and evaluated on the first of `devices`; several train data-parallel.
pub fn tune<B: AutodiffBackend>(
    config: &TuneConfig,
    backbone: &BackboneSource,
    data: TuneData,
    out: &Path,
    resume: bool,
    devices: &[B::Device],
) -> Result<Tuned<B::InnerBackend>, TuneError> {
    let arm = config.method;
    let (distillation, dispatch) = arm_settings(config, arm)?;
    let device = devices
        .first()
        .ok_or_else(|| TuneError::Config("no device to train on was given".into()))?;
    std::fs::create_dir_all(out).map_err(|source| TuneError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let TuneData {
        train: train_set,
        held_out,
        test,
    } = data;
    let classes = train_set.classes.clone();

    // The backbone travels with the model: copy it into the output folder once.
    let backbone_dir = out.join(BACKBONE_DIR);
    let (info, backbone) = if resume && backbone_dir.is_dir() {
        dmpo_import::load_backbone::<B>(&backbone_dir, device)?
    } else {
        let (info, vit) = load_any::<B>(&backbone.path, &backbone.import, device)?;
        if let Some(size) = backbone.import.img_size
            && size != info.vit.img_size
        {
            return Err(TuneError::Config(format!(
                "--img-size {size}: {} holds a backbone converted for {} px; pass the checkpoint \
                 file instead, whose position grid is then resampled",
                backbone.path.display(),
                info.vit.img_size
            )));
        }
        let source = backbone.path.display().to_string();
        let info = save_backbone(
            &backbone_dir,
            &info.vit,
            &info.preprocess,
            vit.clone(),
            &source,
        )?;
        (info, vit)
    };
    let adapter = AdapterConfig::new()
        .with_dim(config.adapter_dim)
        .with_scale(config.adapter_scale);
    let mut dmpo = arm.model_config(
        classes.len(),
        info.vit.depth,
        &config.exits,
        adapter,
        dispatch,
    );
    dmpo.covariance.dim = config.cov_dim;
    dmpo.covariance.fuse_cls = config.fuse_cls;
    // Seeded before the add-ons are initialised: the same seed gives the same run.
    B::seed(device, config.train.seed);
    let model: DmpoModel<B> = dmpo.init(backbone, device)?;
    let counts = model.param_counts();
    tracing::info!(
        "{} model: exits after blocks {:?}, {} trainable of {} parameters ({:.2}%)",
        arm.name(),
        model.exits,
        counts.trainable,
        counts.total,
        100.0 * counts.trainable as f64 / counts.total as f64
    );
    let mut model_info = ModelInfo::new(dmpo.clone(), info.preprocess.clone(), classes);
    write_model_info(out, &model_info)?;

    let train_config = TrainConfig {
        schedule: arm.schedule(),
        distillation,
        ..config.train.clone()
    };
    let artifacts = out.join("training");
    let resume_epoch = if resume {
        crate::last_complete_checkpoint(&artifacts.join("checkpoint"), crate::CHECKPOINT_EXTENSION)
    } else {
        None
    };
    if let Some(e) = resume_epoch {
        tracing::info!("resuming after epoch {e}");
    }
    let trained = crate::train(
        model,
        train_set,
        held_out.clone(),
        &info.preprocess,
        &train_config,
        &artifacts,
        resume_epoch,
        devices,
    )?;
    crate::write_epoch_metrics(&artifacts, out).map_err(|source| TuneError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let binding = TrainedBinding::new(&dmpo, &info.vit, &trained);
    save_trained(&out.join(TRAINED_FILE), &trained, &binding)?;

    // Calibrate on the held-out split, measure on the test split.
    let full = trained.backbone_macs();
    let batches = |set: &ImageDataset| {
        eval_batches::<B::InnerBackend>(
            &set.samples,
            &info.preprocess,
            train_config.batch_size,
            device,
        )
    };
    let calib = collect_scores(&trained, batches(&held_out), Criterion::MaxProb, full);
    let measured = collect_scores(&trained, batches(&test), Criterion::MaxProb, full);
    let report = evaluate(arm.name(), &calib, &measured, &config.budgets);
    write_report(out, "eval", std::slice::from_ref(&report)).map_err(|source| TuneError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    // Every budget the report calibrated is kept with the model (a server picks one per
    // request); `config.budget`'s is the default.
    for point in &report.curve {
        model_info.add_budget(point.budget_fraction, point.policy.clone());
    }
    // The report has usually calibrated the default budget already (it is one of the curve's).
    let default = match report
        .curve
        .iter()
        .find(|p| p.budget_fraction == config.budget)
    {
        Some(point) => Ok(point.policy.clone()),
        None => calibrate(&calib, Budget::Fraction(config.budget)).map(|(policy, _)| policy),
    };
    match default {
        Ok(policy) => model_info.set_default_budget(config.budget, policy),
        Err(e) => tracing::warn!("no thresholds saved for budget {}: {e}", config.budget),
    }
    write_model_info(out, &model_info)?;
    tracing::info!(
        "model, thresholds for {:.0}% budget and eval.{{json,csv,svg}} in {}",
        100.0 * config.budget,
        out.display()
    );
    Ok(Tuned {
        model: TunedModel::new(model_info, trained, device.clone()),
        report,
    })
}

/// Arm `arm`'s self-distillation and token dispatch from `config`, each refused with its
/// setting's name when out of range (before any work).
pub(crate) fn arm_settings(
    config: &TuneConfig,
    arm: Arm,
) -> Result<(SelfDistillation, DispatchConfig), TuneError> {
    let distillation = config.train.distillation.clone();
    distillation
        .validate()
        .map_err(|e| TuneError::Config(format!("--distill: {e}")))?;
    let dispatch = DispatchConfig::new().with_token_rate(config.token_rate);
    if arm.dispatches() {
        dispatch
            .validate()
            .map_err(|e| TuneError::Config(format!("--token-rate: {e}")))?;
    }
    // The plain multi-exit baseline trains every exit on the labels alone.
    let distillation = if arm.distills() {
        distillation
    } else {
        SelfDistillation::off()
    };
    Ok((distillation, dispatch))
}
