//! `train` and `compare`: arguments mapped onto a [`TuneConfig`] (from a named [`Recipe`]) and
//! the library calls `dmpo_train::tune` / `dmpo_train::compare`.

use std::path::PathBuf;

use burn::backend::Autodiff;
use clap::Args;
use dmpo_infer::backend::{self, Backend};
use dmpo_infer::summary_table;
use dmpo_train::{
    Arm, BackboneSource, CompareConfig, DataOptions, Recipe, SelfDistillation, TuneConfig, TuneData,
};

use crate::checkpoint_args::CheckpointArgs;
use crate::node_args::NodeArgs;
use crate::{Error, paths};

pub type TrainBackend = Autodiff<Backend>;

/// Tune with DMPO (or `--method dyt|dmpo+dyt`, `--baseline`), then calibrate and evaluate
/// early exit.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The method: dmpo, dyt (token dispatch, one exit), dmpo+dyt (both), or any `compare`
    /// arm (baseline, last-exit, linear-probe).
    #[arg(long, default_value = "dmpo")]
    method: Arm,
    /// The plain multi-exit baseline (`--method baseline`): no bypass, linear heads,
    /// one-phase uniform loss.
    #[arg(long)]
    baseline: bool,
    /// Continue an interrupted run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    nodes: NodeArgs,
}

/// Train DMPO and the baseline (or the `--arms` given) on the same data and budget, for one or
/// several `--seeds`; plot the curves together and tabulate mean ± std per budget.
#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The methods to train: dmpo, baseline (plain multi-exit), last-exit (adapters, one exit
    /// after the last block), linear-probe (frozen backbone, linear head), dyt (DyT's token
    /// dispatch, one exit), dmpo+dyt.
    #[arg(long, value_delimiter = ',', default_value = "dmpo,baseline")]
    arms: Vec<Arm>,
    /// Seeds, each a full run of every arm, in `<arm>/seed-<s>` [default: --seed, in `<arm>`].
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Keep the runs already finished in --out and continue an interrupted one from its last
    /// checkpoint.
    #[arg(long)]
    resume: bool,
}

/// What `train` and `compare` share. Every setting left out takes the recipe's value.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// Backbone: a checkpoint file (timm / HF / PyTorch / ONNX) or a directory from `import`
    /// [default: the embedded demo backbone, assets/backbone].
    #[arg(long)]
    backbone: Option<PathBuf>,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Dataset directory (IDX, CIFAR, VTAB-1k lists or train/ + val/ image folders)
    /// [default: the embedded Fashion-MNIST subset, assets/fashion-mnist-demo].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory [default: runs/default].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The settings every flag below starts from: general (datasets of useful size) or demo
    /// (the embedded demo's) [default: demo without --data, general with it].
    #[arg(long)]
    recipe: Option<Recipe>,
    /// Blocks after which the exits sit [default: the recipe's; general: every depth/4].
    #[arg(long, value_delimiter = ',')]
    exits: Vec<usize>,
    /// Training epochs [default: the recipe's; general 8, demo 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// Global batch size [default: 64].
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate [default: the recipe's; general 1e-3, demo 5e-3].
    #[arg(long)]
    lr: Option<f64>,
    /// [default: 1]
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// [default: 1e-4]
    #[arg(long)]
    weight_decay: Option<f64>,
    /// [default: 0]
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Adapter bottleneck width [default: 16].
    #[arg(long)]
    adapter_dim: Option<usize>,
    /// Adapter branch scale [default: the recipe's; general 0.1, demo 1.0].
    #[arg(long)]
    adapter_scale: Option<f64>,
    /// Reduced token width d' of the covariance heads [default: the recipe's; general
    /// width/12 (at least 8), demo 32].
    #[arg(long)]
    cov_dim: Option<usize>,
    /// Add a linear head on the class token to each covariance head's logits (So-ViT's
    /// fusion) [default: the recipe's; on in the demo recipe].
    #[arg(long)]
    fuse_cls: bool,
    /// Use at most this many training images per class (0 = all).
    #[arg(long, default_value_t = 0)]
    per_class: usize,
    /// Use at most this many test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Fraction of the training split held out for validation and calibration.
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    /// No random crops / flips.
    #[arg(long)]
    no_augment: bool,
    /// Smallest area fraction of the random resized crops; 1.0 = flips only [default: the
    /// recipe's; general 0.35, demo 1.0].
    #[arg(long)]
    min_crop_scale: Option<f64>,
    /// Self-distillation: share α of each early exit's loss spent matching the last exit's
    /// softened prediction, 0 = off [default: 0]. Not used by the baseline.
    #[arg(long)]
    distill: Option<f64>,
    /// Temperature T of self-distillation [default: 2].
    #[arg(long)]
    distill_temperature: Option<f64>,
    /// DyT's target activation rate r: the share of patch tokens the MLPs keep (methods dyt,
    /// dmpo+dyt) [default: 0.5].
    #[arg(long)]
    token_rate: Option<f64>,
    /// [default: 42]
    #[arg(long)]
    seed: Option<u64>,
    /// Threads decoding and augmenting images [default: 2].
    #[arg(long)]
    workers: Option<usize>,
    /// Train data-parallel on these devices (GPU indices: CUDA's, or wgpu's discrete GPUs);
    /// --batch is the global batch, split evenly between them [default: the backend's device].
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    /// Budgets (fractions of the backbone's MACs) for the evaluation curve [default:
    /// 0.3,0.4,...,0.9].
    #[arg(long, value_delimiter = ',')]
    budgets: Vec<f64>,
    /// Budget whose thresholds are saved in model.json for `infer` [default: 0.5].
    #[arg(long)]
    budget: Option<f64>,
}

impl RunArgs {
    fn recipe(&self) -> Recipe {
        self.recipe.unwrap_or(match self.data {
            None => Recipe::Demo,
            Some(_) => Recipe::General,
        })
    }

    /// The recipe's settings with every flag given laid over them.
    fn tune_config(&self, method: Arm) -> TuneConfig {
        let base = self.recipe().config();
        let mut t = base.train.clone();
        t.epochs = self.epochs.unwrap_or(t.epochs);
        t.batch_size = self.batch.unwrap_or(t.batch_size);
        t.lr = self.lr.unwrap_or(t.lr);
        t.warmup_epochs = self.warmup_epochs.unwrap_or(t.warmup_epochs);
        t.weight_decay = self.weight_decay.unwrap_or(t.weight_decay);
        t.label_smoothing = self.label_smoothing.unwrap_or(t.label_smoothing);
        t.seed = self.seed.unwrap_or(t.seed);
        t.num_workers = self.workers.unwrap_or(t.num_workers);
        t.augment = t.augment && !self.no_augment;
        t.min_crop_scale = self.min_crop_scale.unwrap_or(t.min_crop_scale);
        let d = SelfDistillation::new();
        t.distillation = d
            .clone()
            .with_weight(self.distill.unwrap_or(d.weight))
            .with_temperature(self.distill_temperature.unwrap_or(d.temperature));
        t.loss_check_every = loss_check_every();
        TuneConfig {
            method,
            exits: if self.exits.is_empty() {
                base.exits
            } else {
                self.exits.clone()
            },
            adapter_dim: self.adapter_dim.unwrap_or(base.adapter_dim),
            adapter_scale: self.adapter_scale.unwrap_or(base.adapter_scale),
            cov_dim: self.cov_dim.or(base.cov_dim),
            fuse_cls: self.fuse_cls || base.fuse_cls,
            token_rate: self.token_rate.unwrap_or(base.token_rate),
            train: t,
            budgets: if self.budgets.is_empty() {
                base.budgets
            } else {
                self.budgets.clone()
            },
            budget: self.budget.unwrap_or(base.budget),
        }
    }

    fn backbone(&self) -> BackboneSource {
        BackboneSource {
            path: self
                .backbone
                .clone()
                .unwrap_or_else(paths::default_backbone),
            import: self.checkpoint.options(),
        }
    }

    fn data(&self) -> Result<TuneData, Error> {
        let dir = self.data.clone().unwrap_or_else(paths::default_data);
        let options = DataOptions {
            per_class: self.per_class,
            held_out: self.held_out,
            test_limit: self.test_limit,
        };
        Ok(TuneData::load(&dir, &options)?)
    }

    fn out(&self) -> PathBuf {
        paths::normalised(&self.out.clone().unwrap_or_else(paths::default_out))
    }

    /// Logs where everything comes from and goes to, paths normalised.
    fn announce(&self, task: &str) {
        tracing::info!(
            "{task}: recipe {}, backbone {}, data {}, output {}",
            self.recipe().name(),
            paths::normalised(&self.backbone().path).display(),
            paths::normalised(&self.data.clone().unwrap_or_else(paths::default_data)).display(),
            self.out().display()
        );
    }
}

/// Steps between two reads of the NaN guard's summed losses: a read is a device sync on a GPU
/// (and free on the CPU); every epoch's last step is read whatever this says.
pub fn loss_check_every() -> usize {
    if backend::IS_GPU { 16 } else { 1 }
}

/// The devices `--devices` names (the first also holds the model for evaluation), or the
/// backend's one device.
pub fn training_devices(ids: &[usize]) -> Result<Vec<burn::tensor::Device<TrainBackend>>, Error> {
    if ids.is_empty() {
        return Ok(vec![backend::device()]);
    }
    Ok(backend::devices(ids)?)
}

pub fn train(a: TrainArgs) -> Result<(), Error> {
    let method = if a.baseline { Arm::Baseline } else { a.method };
    let mut config = a.run.tune_config(method);
    config.train.nodes = a.nodes.group()?;
    config.check()?;
    let devices = training_devices(&a.run.devices)?;
    a.run.announce("train");
    let data = a.run.data()?;
    let tuned = dmpo_train::tune::<TrainBackend>(
        &config,
        &a.run.backbone(),
        data,
        &a.run.out(),
        a.resume,
        &devices,
    )?;
    println!("\n{}", tuned.report);
    Ok(())
}

pub fn compare(a: CompareArgs) -> Result<(), Error> {
    let config = CompareConfig {
        tune: a.run.tune_config(Arm::Dmpo),
        arms: a.arms,
        seeds: a.seeds,
    };
    for &arm in &config.arms {
        config.tune.clone().with_method(arm).check()?;
    }
    let devices = training_devices(&a.run.devices)?;
    a.run.announce("compare");
    let data = a.run.data()?;
    let report = dmpo_train::compare::<TrainBackend>(
        &config,
        &a.run.backbone(),
        &data,
        &a.run.out(),
        a.resume,
        &devices,
    )?;
    if report.runs.iter().all(|r| r.len() == 1) {
        for (r, _) in report.runs.iter().flatten() {
            println!("\n{r}");
        }
    }
    println!("\n{}", summary_table(&report.summaries, &report.fractions));
    Ok(())
}
