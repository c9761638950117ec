//! `dmpo-train`: tune a backbone with DMPO (or the plain multi-exit baseline) on a dataset,
//! then calibrate and evaluate early exit. Run through `cargo xtask train|compare`.

/// mimalloc keeps freed activation buffers for reuse where glibc's malloc returns them to the
/// kernel after every layer (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::backend::Autodiff;
use clap::{Args, Parser, Subcommand};
use dmpo_import::backend::{self, Backend};
use dmpo_import::{ImportOptions, TrainedBinding, load_any, save_backbone, save_trained};
use dmpo_infer::data::{ImageDataset, load_splits};
use dmpo_infer::{
    ArmSummary, BACKBONE_DIR, Budget, Criterion, EvalReport, ModelInfo, TRAINED_FILE, calibrate,
    collect_scores, eval_batches, evaluate, summary_table, write_model_info, write_report,
    write_summary,
};
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use dmpo_model::dyt::DispatchConfig;
use dmpo_model::vit::preset;
use dmpo_train::{
    Arm, PixelBaselineConfig, PretrainConfig, SelfDistillation, StepBenchConfig, TrainConfig,
    Tuning, backbone_accuracy, bench_train_step, demo_vit_config, exclude_images, pixel_baseline,
    pretrain, train,
};

type TrainBackend = Autodiff<Backend>;
type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(version, about = "Tune a ViT with DMPO and evaluate early exit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tune with DMPO (or `--method dyt|dmpo+dyt`, `--baseline`), then calibrate and evaluate
    /// early exit.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// The method: dmpo, dyt (token dispatch, one exit), dmpo+dyt (both), or any `compare`
        /// arm (baseline, last-exit, linear-probe).
        #[arg(long, value_enum, default_value = "dmpo")]
        method: Arm,
        /// The plain multi-exit baseline (`--method baseline`): no bypass, linear heads,
        /// one-phase uniform loss.
        #[arg(long)]
        baseline: bool,
        /// Continue an interrupted run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Train DMPO and the baseline (or the `--arms` given) on the same data and budget, for one
    /// or several `--seeds`; plot the curves together and tabulate mean ± std per budget.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        /// The methods to train: dmpo, baseline (plain multi-exit), last-exit (adapters, one exit
        /// after the last block), linear-probe (frozen backbone, linear head), dyt (DyT's token
        /// dispatch, one exit), dmpo+dyt.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "dmpo,baseline"
        )]
        arms: Vec<Arm>,
        /// Seeds, each a full run of every arm, in `<arm>/seed-<s>` [default: --seed, in
        /// `<arm>`].
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Keep the runs already finished in --out and continue an interrupted one from its last
        /// checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Pretrain a small ViT from scratch, supervised: on a labelled dataset (`--data`; the
    /// embedded demo backbone is Fashion-MNIST's training split less the demo's images), or on
    /// formula-driven synthetic images when no dataset is given.
    Pretrain(PretrainArgs),
    /// Time the training step (forward of every exit, loss, backward, AdamW) on random images of
    /// a randomly initialised timm architecture; prints one JSON line (images/s, peak memory).
    /// Against PyTorch: `benches/bench_train_vs_torch.py`.
    BenchStep {
        /// timm architecture name, e.g. vit_base_patch16_224, or `demo`: the embedded demo
        /// backbone's architecture with the demo recipe's exits and heads.
        #[arg(long)]
        arch: String,
        /// Frozen backbone (DMPO) or full fine-tuning.
        #[arg(long, value_enum, default_value_t = Tuning::Frozen)]
        tuning: Tuning,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 100)]
        classes: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 3)]
        steps: usize,
    },
    /// Logistic regression on the raw pixels (L2 chosen on a held-out tenth of the training
    /// images, refitted on all): the floor a tuned model must clear. Prints one JSON line.
    PixelBaseline {
        /// Dataset directory (default: the embedded Fashion-MNIST subset).
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Write a class-balanced subset of an IDX dataset (the demo data in assets/).
    Subset {
        /// An MNIST-style directory (e.g. /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        train_per_class: usize,
        #[arg(long, default_value_t = 100)]
        test_per_class: usize,
    },
}

/// The embedded default: backbone, demo data and output, relative to the workspace.
const DEFAULT_BACKBONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/backbone");
const DEFAULT_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fashion-mnist-demo");
const DEFAULT_OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runs/default");
const DEFAULT_PRETRAIN_WORK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runs/pretrain");

#[derive(Args, Clone)]
struct RunArgs {
    /// Backbone: a checkpoint file (timm / HF / PyTorch) or a directory from `import`
    /// (default: the embedded demo backbone).
    #[arg(long, default_value = DEFAULT_BACKBONE)]
    backbone: PathBuf,
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    heads: Option<usize>,
    /// Run the backbone at this input size: a checkpoint file's position grid is resampled to
    /// it (as timm does, or as the ONNX graph does) [default: the backbone's].
    #[arg(long)]
    img_size: Option<usize>,
    /// Dataset directory (IDX, CIFAR, VTAB-1k lists or train/ + val/ image folders; default:
    /// the embedded Fashion-MNIST subset).
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Output directory.
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Blocks after which the exits sit [default: every depth/4; the demo recipe's on the
    /// embedded demo data].
    #[arg(long, value_delimiter = ',')]
    exits: Vec<usize>,
    /// Training epochs [default: 8; the demo recipe's on the embedded demo data].
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate [default: 1e-3; the demo recipe's on the embedded demo data].
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Adapter bottleneck width.
    #[arg(long, default_value_t = 16)]
    adapter_dim: usize,
    /// Adapter branch scale [default: 0.1, large datasets; the demo recipe's (1.0, as DyT uses
    /// for small VTAB-1k sets) on the embedded demo data].
    #[arg(long)]
    adapter_scale: Option<f64>,
    /// Reduced token width d' of the covariance heads [default: width/12, at least 8; the demo
    /// recipe's on the embedded demo data].
    #[arg(long)]
    cov_dim: Option<usize>,
    /// Add a linear head on the class token to each covariance head's logits (So-ViT's
    /// fusion): worth it when the backbone's early class tokens were trained to classify
    /// (`pretrain --aux-exits`) [default: off; on with the demo recipe].
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
    /// Smallest area fraction of the random resized crops; 1.0 = flips only [default: 0.35;
    /// the demo recipe's on the embedded demo data].
    #[arg(long)]
    min_crop_scale: Option<f64>,
    /// Self-distillation: share α of each early exit's loss spent matching the last exit's
    /// softened prediction, 0 = off. Not used by `--baseline`.
    #[arg(long, default_value_t = 0.0)]
    distill: f64,
    /// Temperature T of self-distillation.
    #[arg(long, default_value_t = 2.0)]
    distill_temperature: f64,
    /// DyT's target activation rate r: the share of patch tokens the MLPs keep (methods dyt,
    /// dmpo+dyt).
    #[arg(long, default_value_t = 0.5)]
    token_rate: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Train data-parallel on these devices (GPU indices: CUDA's, or wgpu's discrete GPUs);
    /// --batch is the global batch, split evenly between them [default: the backend's device].
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    /// Budgets (fractions of the backbone's MACs) for the evaluation curve.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )]
    budgets: Vec<f64>,
    /// Budget whose thresholds are saved in model.json for `infer`.
    #[arg(long, default_value_t = 0.5)]
    budget: f64,
}

fn main() -> ExitCode {
    dmpo_import::cli::run_main(|| run(Cli::parse()))
}

fn run(cli: Cli) -> Result<(), Error> {
    backend::check_device()?;
    match cli.command {
        Command::Train {
            run,
            method,
            baseline,
            resume,
        } => {
            let arm = if baseline { Arm::Baseline } else { method };
            let report = tune(&run, arm, resume, &run.out)?;
            println!("\n{report}");
        }
        Command::Compare {
            run,
            arms,
            seeds,
            resume,
        } => compare(&run, &arms, &seeds, resume)?,
        Command::Pretrain(args) => run_pretrain(&args)?,
        Command::PixelBaseline { data } => {
            let splits = load_splits(&data)?;
            let report = pixel_baseline::<TrainBackend>(
                &splits.train,
                &splits.test,
                &PixelBaselineConfig::new(),
                &backend::device(),
            )?;
            tracing::info!(
                "logistic regression on raw pixels: {:.2}% on {} test images (L2 {:e}, chosen on a held-out tenth of the {} training images)",
                100.0 * report.test_accuracy,
                report.test_images,
                report.l2,
                report.train_images
            );
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::BenchStep {
            arch,
            tuning,
            batch,
            classes,
            warmup,
            steps,
        } => {
            let (vit, dmpo) = if arch == "demo" {
                // The embedded demo: its backbone's architecture and the demo recipe's model.
                let mut dmpo = DmpoConfig::new(classes);
                dmpo.exits = DEMO.exits.to_vec();
                dmpo.covariance.dim = DEMO.cov_dim;
                dmpo.covariance.fuse_cls = DEMO.fuse_cls;
                dmpo.adapter =
                    Some(dmpo_model::dmpo::AdapterConfig::new().with_scale(DEMO.adapter_scale));
                (demo_vit_config(), dmpo)
            } else {
                let vit = preset(&arch).ok_or_else(|| {
                    format!("`{arch}` is not a timm ViT name this crate knows, nor `demo`")
                })?;
                (vit, DmpoConfig::new(classes))
            };
            let vit = vit.with_num_classes(classes);
            let device = backend::device();
            let model = dmpo.init(vit.init::<TrainBackend>(&device), &device)?;
            let config = StepBenchConfig {
                batch: batch.max(1),
                warmup,
                steps: steps.max(1),
                tuning,
            };
            let report = bench_train_step(model, &config, &device);
            tracing::info!(
                "{arch} on {}: {tuning:?}, batch {batch}, median step {:.1} ms, {} of {} parameters train",
                backend::NAME,
                report.step_s * 1e3,
                report.trainable_params,
                report.total_params
            );
            let mut line = serde_json::to_value(&report)?;
            line["backend"] = backend::NAME.into();
            line["arch"] = arch.into();
            // The one machine-readable line, on stdout.
            println!("{line}");
        }
        Command::Subset {
            from,
            out,
            train_per_class,
            test_per_class,
        } => write_subset(&from, &out, train_per_class, test_per_class)?,
    }
    Ok(())
}

/// `pretrain`'s arguments: where the data and the outputs are, and what the command line
/// changes in the recipe.
#[derive(Args)]
struct PretrainArgs {
    #[arg(long, default_value = DEFAULT_BACKBONE)]
    out: PathBuf,
    /// A labelled dataset (any layout `train` reads); only its training split is used for
    /// training and validation. Without it: synthetic patterns.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Datasets whose images (both splits, matched by pixels) are removed from the
    /// pretraining data, e.g. the demo subset the backbone will later be tuned on.
    #[arg(long)]
    exclude: Vec<PathBuf>,
    /// Checkpoints, the recipe and Burn's logs of the run, for `--resume`.
    #[arg(long, default_value = DEFAULT_PRETRAIN_WORK)]
    work: PathBuf,
    /// Continue the run in --work from its last complete checkpoint, with its saved recipe.
    #[arg(long)]
    resume: bool,
    /// Start from this backbone's weights instead of a random initialisation (a second
    /// stage: train a pretrained backbone further, usually with a lower --lr); it must have
    /// the recipe's architecture.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Override the recipe's peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Override the recipe's warm-up epochs.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Override the recipe's epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override the recipe's batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Override the recipe's synthetic images per class (synthetic pretraining only).
    #[arg(long)]
    per_class: Option<usize>,
    /// Override the recipe's training images held out for validation (dataset only).
    #[arg(long)]
    valid_images: Option<usize>,
    /// Threads decoding and augmenting images.
    #[arg(long)]
    workers: Option<usize>,
    /// Train data-parallel on these GPUs, as `train --devices` (--batch is the global batch).
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    /// Override the recipe's number of blocks.
    #[arg(long)]
    depth: Option<usize>,
    /// Override the recipe's token width (the MLP is 4× as wide).
    #[arg(long)]
    width: Option<usize>,
    /// Override the recipe's attention heads (they must divide the width).
    #[arg(long)]
    num_heads: Option<usize>,
    /// Deep supervision: also train an auxiliary classifier after each of these blocks
    /// (e.g. 1,2,3), dropped once pretraining ends; makes the early blocks' features
    /// discriminative for early exits.
    #[arg(long, value_delimiter = ',')]
    aux_exits: Vec<usize>,
}

/// Steps between two reads of the NaN guard's summed losses: a read is a device sync on a GPU
/// (and free on the CPU); every epoch's last step is read whatever this says.
const LOSS_CHECK_EVERY: usize = if backend::IS_GPU { 16 } else { 1 };

/// A saved pretraining recipe; settings added to the recipe since it was written take their
/// defaults, so a run started by an older version still resumes.
fn load_recipe(path: &Path) -> Result<PretrainConfig, Error> {
    let bad =
        |e: &dyn std::fmt::Display| format!("{}: not a pretraining recipe: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let saved: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e))?;
    let mut recipe = serde_json::to_value(PretrainConfig::new())?;
    dmpo_import::overlay(&mut recipe, saved);
    Ok(serde_json::from_value(recipe).map_err(|e| bad(&e))?)
}

/// The file in the work folder that holds the recipe of a pretraining run (read back on resume).
const RECIPE_FILE: &str = "recipe.json";

/// Pretrains a backbone and writes it to `out` with its recipe (`pretrain.json`) and what it
/// measured (`pretrain-result.json`).
fn run_pretrain(o: &PretrainArgs) -> Result<(), Error> {
    let (out, data, exclude, work) = (&o.out, o.data.as_deref(), &o.exclude, &o.work);
    let started = std::time::Instant::now();
    let devices = training_devices(&o.devices)?;
    let device = &devices[0];
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let recipe_path = work.join(RECIPE_FILE);
    let artifacts = work.join("training");
    let resume_epoch = if o.resume {
        dmpo_train::last_complete_checkpoint(
            &artifacts.join("checkpoint"),
            dmpo_train::CHECKPOINT_EXTENSION,
        )
    } else {
        None
    };
    let mut recipe = if o.resume && recipe_path.is_file() {
        if o.epochs.is_some()
            || o.init.is_some()
            || o.lr.is_some()
            || o.warmup_epochs.is_some()
            || o.batch.is_some()
            || o.per_class.is_some()
            || o.valid_images.is_some()
            || o.depth.is_some()
            || o.width.is_some()
            || o.num_heads.is_some()
            || !o.aux_exits.is_empty()
        {
            tracing::warn!(
                "--resume continues with the saved recipe in {}; --init, --lr, \
                 --warmup-epochs, --epochs, --batch, --per-class, --valid-images, --depth, \
                 --width, --num-heads and --aux-exits are ignored",
                recipe_path.display()
            );
        }
        load_recipe(&recipe_path)?
    } else {
        if o.resume {
            tracing::warn!("{}: no run to resume; starting afresh", work.display());
        }
        let mut r = if data.is_some() {
            PretrainConfig::new()
        } else {
            PretrainConfig::synthetic()
        };
        if let Some(e) = o.epochs {
            r.train.epochs = e.max(1);
        }
        if let Some(b) = o.batch {
            r.train.batch_size = b.max(1);
        }
        if let Some(n) = o.per_class {
            r.per_class = n.max(1);
        }
        if let Some(n) = o.valid_images {
            r.valid_images = n.max(1);
        }
        if let Some(lr) = o.lr {
            r.train.lr = lr;
        }
        if let Some(w) = o.warmup_epochs {
            r.train.warmup_epochs = w;
        }
        if let Some(d) = o.depth {
            r.vit.depth = d;
        }
        if let Some(w) = o.width {
            r.vit.embed_dim = w;
            r.vit.mlp_hidden_dim = 4 * w;
        }
        if let Some(h) = o.num_heads {
            r.vit.num_heads = h;
        }
        let v = &r.vit;
        if v.depth == 0 || v.num_heads == 0 || v.embed_dim % v.num_heads != 0 {
            return Err(format!(
                "a backbone of depth {}, width {} and {} heads cannot be built: the depth and \
                 heads must be at least 1 and the heads must divide the width",
                v.depth, v.embed_dim, v.num_heads
            )
            .into());
        }
        r.init = o.init.as_ref().map(|p| p.display().to_string());
        r.aux_exits = o.aux_exits.clone();
        r
    };
    recipe.validate_aux_exits()?;
    recipe.train.loss_check_every = LOSS_CHECK_EVERY;
    if let Some(w) = o.workers {
        recipe.train.num_workers = w.max(1);
    }
    if let Some(e) = resume_epoch {
        tracing::info!("resuming pretraining after epoch {e}");
    }

    let mut result = serde_json::json!({
        "backend": backend::NAME,
        "epochs": recipe.train.epochs,
        "init": recipe.init,
    });
    // Seeded before the weights are drawn: the same recipe gives the same run.
    <TrainBackend as burn::prelude::Backend>::seed(device, recipe.train.seed);
    let initial = |recipe: &PretrainConfig| -> Result<_, Error> {
        let Some(init) = &recipe.init else {
            return Ok(recipe.vit.init::<TrainBackend>(device));
        };
        let (info, vit) =
            load_any::<TrainBackend>(Path::new(init), &ImportOptions::default(), device)?;
        if info.vit.to_string() != recipe.vit.to_string() {
            return Err(format!(
                "{init}: its architecture differs from the recipe's ({} vs {})",
                info.vit, recipe.vit
            )
            .into());
        }
        Ok(vit)
    };
    if recipe.init.is_some() && data.is_none() {
        return Err("--init needs --data: synthetic pretraining starts from scratch".into());
    }
    let (vit, source) = match data {
        None => {
            dmpo_import::write_atomic(&recipe_path, recipe.to_string().as_bytes())?;
            let vit = pretrain::<TrainBackend>(&recipe, &artifacts, resume_epoch, &devices)?;
            let source = "cargo xtask pretrain: formula-driven synthetic patterns \
                          (train/src/synthetic.rs), recipe in pretrain.json";
            (vit, source.to_string())
        }
        Some(dir) => {
            let splits = load_splits(dir)?;
            let mut train_set = splits.train;
            let held = exclude
                .iter()
                .map(|p| load_splits(p))
                .collect::<Result<Vec<_>, _>>()?;
            let held_sets: Vec<&ImageDataset> =
                held.iter().flat_map(|s| [&s.train, &s.test]).collect();
            let excluded = exclude_images(&mut train_set, &held_sets)?;
            let held_apart_from: Vec<String> =
                exclude.iter().map(|p| p.display().to_string()).collect();
            if !exclude.is_empty() {
                tracing::info!(
                    "{excluded} training images held apart (they appear in {})",
                    held_apart_from.join(", ")
                );
            }
            let n = train_set.samples.len();
            if recipe.valid_images >= n {
                return Err(format!(
                    "{}: {n} training images left, too few to hold {} out for validation",
                    dir.display(),
                    recipe.valid_images
                )
                .into());
            }
            let valid_set = train_set.split_off_held_out(recipe.valid_images as f64 / n as f64);
            recipe.vit.num_classes = train_set.num_classes();
            dmpo_import::write_atomic(&recipe_path, recipe.to_string().as_bytes())?;
            let train_images = train_set.samples.len();
            tracing::info!(
                "pretraining on {train_images} images, validating on {} ({} classes)",
                valid_set.samples.len(),
                train_set.num_classes()
            );
            let vit = dmpo_train::pretrain_on::<TrainBackend>(
                &recipe,
                initial(&recipe)?,
                train_set,
                valid_set.clone(),
                &artifacts,
                resume_epoch,
                &devices,
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
    dmpo_train::write_epoch_metrics(&artifacts, work)?;
    let preprocess = recipe.preprocess();
    save_backbone(out, &recipe.vit, &preprocess, vit, &source)?;
    dmpo_import::write_atomic(&out.join("pretrain.json"), recipe.to_string().as_bytes())?;
    result["minutes_this_run"] = (started.elapsed().as_secs_f64() / 60.0).into();
    result["resumed_after_epoch"] = resume_epoch.into();
    dmpo_import::write_atomic(
        &out.join("pretrain-result.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    tracing::info!("pretrained backbone written to {}", out.display());
    Ok(())
}

/// What `train` uses for every setting the command line leaves out.
struct TuneDefaults {
    /// Empty: every depth/4 blocks.
    exits: &'static [usize],
    epochs: usize,
    lr: f64,
    adapter_scale: f64,
    /// `None`: width/12, at least 8.
    cov_dim: Option<usize>,
    /// A linear head on the class token added to each covariance head (`--fuse-cls`).
    fuse_cls: bool,
    min_crop_scale: f64,
}

/// The library's defaults, for datasets of useful size (DyT / VTAB peers, `docs/method.md`).
const GENERAL: TuneDefaults = TuneDefaults {
    exits: &[],
    epochs: 8,
    lr: 1e-3,
    adapter_scale: 0.1,
    cov_dim: None,
    fuse_cls: false,
    min_crop_scale: 0.35,
};

/// The embedded demo: its data is small (1,800 training images) and its backbone tiny (6
/// blocks), so exits start after block 1 (a 30 % budget must be reachable), the covariance heads
/// get more than width/12 = 8 dimensions, the adapters a full-scale branch (as DyT uses for small
/// VTAB-1k sets), and crops are off (the backbone saw whole, centred 28×28 images). Its
/// backbone was pretrained with auxiliary class-token classifiers after blocks 1–3 (deep
/// supervision), so the covariance heads also read the class token (`--fuse-cls`).
const DEMO: TuneDefaults = TuneDefaults {
    exits: &[1, 2, 3, 6],
    epochs: 10,
    lr: 5e-3,
    adapter_scale: 1.0,
    cov_dim: Some(32),
    fuse_cls: true,
    min_crop_scale: 1.0,
};

/// The training, held-out and test splits the arguments ask for.
fn datasets(a: &RunArgs) -> Result<(ImageDataset, ImageDataset, ImageDataset), Error> {
    let mut s = load_splits(&a.data)?;
    if a.per_class > 0 {
        s.train.take_per_class(a.per_class);
    }
    let held_out = s.train.split_off_held_out(a.held_out);
    if a.test_limit > 0 {
        s.test.samples.truncate(a.test_limit);
    }
    Ok((s.train, held_out, s.test))
}

/// Every arm for every seed into `a.out/<arm>[/seed-<s>]`, then the summary: mean ± std per
/// budget over the seeds, and the time each arm took.
fn compare(a: &RunArgs, arms: &[Arm], seeds: &[u64], resume: bool) -> Result<(), Error> {
    // Settings a later arm would refuse are refused before the first arm trains.
    for &arm in arms {
        arm_settings(a, arm)?;
    }
    // With `--seeds`, each run in `<arm>/seed-<s>`, so any subset of the seeds can be summarised
    // later (`--resume` keeps the finished ones); without, in `<arm>` as `train` writes.
    let per_seed_dirs = !seeds.is_empty();
    let seeds = if seeds.is_empty() {
        vec![a.seed]
    } else {
        seeds.to_vec()
    };
    // Seed by seed, every arm: an interrupted comparison has whole seeds to show.
    let mut runs: Vec<Vec<(EvalReport, f64)>> = vec![Vec::new(); arms.len()];
    for &seed in &seeds {
        for (i, &arm) in arms.iter().enumerate() {
            let mut dir = a.out.join(arm.dir());
            if per_seed_dirs {
                dir = dir.join(format!("seed-{seed}"));
            }
            let run = RunArgs { seed, ..a.clone() };
            let done = finished_run(&dir).filter(|_| resume);
            if done.is_some() {
                tracing::info!(
                    "{} seed {seed}: finished before, in {}",
                    arm.name(),
                    dir.display()
                );
            }
            let finished = match done {
                Some(done) => done,
                None => {
                    let start = std::time::Instant::now();
                    let report = tune(&run, arm, resume, &dir)?;
                    let s = start.elapsed().as_secs_f64();
                    let time = serde_json::json!({ "seconds": s });
                    dmpo_import::write_atomic(
                        &dir.join(RUN_TIME_FILE),
                        time.to_string().as_bytes(),
                    )?;
                    (report, s)
                }
            };
            runs[i].push(finished);
        }
    }
    let summaries: Vec<ArmSummary> = arms
        .iter()
        .zip(&runs)
        .map(|(arm, runs)| {
            let (reports, seconds): (Vec<EvalReport>, Vec<f64>) = runs.iter().cloned().unzip();
            ArmSummary::new(arm.name(), &seeds, &reports, &seconds)
        })
        .collect();
    let all: Vec<EvalReport> = runs.into_iter().flatten().map(|(r, _)| r).collect();
    if seeds.len() == 1 {
        for r in &all {
            println!("\n{r}");
        }
        write_report(&a.out, "compare", &all)?;
    }
    let mut fractions = a.budgets.clone();
    fractions.push(1.0);
    write_summary(&a.out, &summaries, &fractions)?;
    println!("\n{}", summary_table(&summaries, &fractions));
    tracing::info!("wrote {}/summary.{{json,csv,md,svg}}", a.out.display());
    Ok(())
}

/// Where a finished run records its wall-clock time.
const RUN_TIME_FILE: &str = "run-time.json";

/// The report and time of a run already finished in `dir`.
fn finished_run(dir: &Path) -> Option<(EvalReport, f64)> {
    let report: Vec<EvalReport> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).ok()?).ok()?;
    let time: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(RUN_TIME_FILE)).ok()?).ok()?;
    Some((report.into_iter().next()?, time["seconds"].as_f64()?))
}

/// Arm `arm`'s self-distillation and token dispatch from the command line, each refused with
/// its flag's name when out of range (before any work).
fn arm_settings(a: &RunArgs, arm: Arm) -> Result<(SelfDistillation, DispatchConfig), Error> {
    let distillation = SelfDistillation::new()
        .with_weight(a.distill)
        .with_temperature(a.distill_temperature);
    distillation
        .validate()
        .map_err(|e| format!("--distill: {e}"))?;
    let dispatch = DispatchConfig::new().with_token_rate(a.token_rate);
    if arm.dispatches() {
        dispatch
            .validate()
            .map_err(|e| format!("--token-rate: {e}"))?;
    }
    // The plain multi-exit baseline trains every exit on the labels alone.
    let distillation = if arm.distills() {
        distillation
    } else {
        SelfDistillation::off()
    };
    Ok((distillation, dispatch))
}

/// Trains one model of method `arm` into `out` and evaluates it.
fn tune(a: &RunArgs, arm: Arm, resume: bool, out: &Path) -> Result<EvalReport, Error> {
    // The embedded demo data is small: it gets the small-data recipe unless told otherwise.
    let defaults = if a.data == Path::new(DEFAULT_DATA) {
        &DEMO
    } else {
        &GENERAL
    };
    let (distillation, dispatch) = arm_settings(a, arm)?;
    // The model is built, and evaluated, on the first training device.
    let devices = training_devices(&a.devices)?;
    let device = &devices[0];
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (train_set, held_out, test) = datasets(a)?;
    let classes = train_set.classes.clone();

    // The backbone travels with the model: copy it into the output directory once.
    let backbone_dir = out.join(BACKBONE_DIR);
    let opts = ImportOptions {
        arch: a.arch.clone(),
        num_heads: a.heads,
        img_size: a.img_size,
        ..Default::default()
    };
    let (info, backbone) = if resume && backbone_dir.is_dir() {
        dmpo_import::load_backbone::<TrainBackend>(&backbone_dir, device)?
    } else {
        let (info, backbone) = load_any::<TrainBackend>(&a.backbone, &opts, device)?;
        if let Some(size) = a.img_size
            && size != info.vit.img_size
        {
            return Err(format!(
                "--img-size {size}: {} holds a backbone converted for {} px; pass the checkpoint \
                 file instead, whose position grid is then resampled",
                a.backbone.display(),
                info.vit.img_size
            )
            .into());
        }
        let source = a.backbone.display().to_string();
        let info = save_backbone(
            &backbone_dir,
            &info.vit,
            &info.preprocess,
            backbone.clone(),
            &source,
        )?;
        (info, backbone)
    };
    let exits = if a.exits.is_empty() {
        defaults.exits.to_vec()
    } else {
        a.exits.clone()
    };
    let adapter = dmpo_model::dmpo::AdapterConfig::new()
        .with_dim(a.adapter_dim)
        .with_scale(a.adapter_scale.unwrap_or(defaults.adapter_scale));
    let mut dmpo = arm.model_config(classes.len(), info.vit.depth, &exits, adapter, dispatch);
    dmpo.covariance.dim = a.cov_dim.or(defaults.cov_dim);
    dmpo.covariance.fuse_cls = a.fuse_cls || defaults.fuse_cls;
    // Seeded before the add-ons are initialised: the same seed gives the same run.
    <TrainBackend as burn::prelude::Backend>::seed(device, a.seed);
    let model: DmpoModel<TrainBackend> = dmpo.init(backbone, device)?;
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

    let schedule = arm.schedule();
    let config = TrainConfig::new()
        .with_epochs(a.epochs.unwrap_or(defaults.epochs))
        .with_batch_size(a.batch)
        .with_lr(a.lr.unwrap_or(defaults.lr))
        .with_warmup_epochs(a.warmup_epochs)
        .with_weight_decay(a.weight_decay)
        .with_label_smoothing(a.label_smoothing)
        .with_seed(a.seed)
        .with_num_workers(a.workers)
        .with_schedule(schedule)
        .with_augment(!a.no_augment)
        .with_min_crop_scale(a.min_crop_scale.unwrap_or(defaults.min_crop_scale))
        .with_distillation(distillation)
        .with_loss_check_every(LOSS_CHECK_EVERY);
    let artifacts = out.join("training");
    let resume_epoch = if resume {
        dmpo_train::last_complete_checkpoint(
            &artifacts.join("checkpoint"),
            dmpo_train::CHECKPOINT_EXTENSION,
        )
    } else {
        None
    };
    if let Some(e) = resume_epoch {
        tracing::info!("resuming after epoch {e}");
    }
    let trained = train(
        model,
        train_set,
        held_out.clone(),
        &info.preprocess,
        &config,
        &artifacts,
        resume_epoch,
        &devices,
    )?;
    dmpo_train::write_epoch_metrics(&artifacts, out)?;
    let binding = TrainedBinding::new(&dmpo, &info.vit, &trained);
    save_trained(&out.join(TRAINED_FILE), &trained, &binding)?;

    // Calibrate on the held-out split, measure on the test split.
    let full = trained.backbone_macs();
    let batches = |set: &ImageDataset| {
        eval_batches::<Backend>(&set.samples, &info.preprocess, a.batch, device)
    };
    let calib = collect_scores(&trained, batches(&held_out), Criterion::MaxProb, full);
    let measured = collect_scores(&trained, batches(&test), Criterion::MaxProb, full);
    let report = evaluate(arm.name(), &calib, &measured, &a.budgets);
    write_report(out, "eval", std::slice::from_ref(&report))?;
    match calibrate(&calib, Budget::Fraction(a.budget)) {
        Ok((policy, _)) => {
            model_info.policy = Some(policy);
            model_info.budget_fraction = Some(a.budget);
            write_model_info(out, &model_info)?;
        }
        Err(e) => tracing::warn!("no thresholds saved for budget {}: {e}", a.budget),
    }
    tracing::info!(
        "model, thresholds for {:.0}% budget and eval.{{json,csv,svg}} in {}",
        100.0 * a.budget,
        out.display()
    );
    Ok(report)
}

/// The devices `--devices` names (the first also holds the model for evaluation), or the
/// backend's one device.
fn training_devices(ids: &[usize]) -> Result<Vec<burn::tensor::Device<TrainBackend>>, Error> {
    if ids.is_empty() {
        return Ok(vec![backend::device()]);
    }
    Ok(backend::devices(ids)?)
}

/// Copies the first `n` images of each class of an IDX dataset's splits into gzip'ed IDX files.
fn write_subset(from: &Path, out: &Path, train_n: usize, test_n: usize) -> Result<(), Error> {
    use std::io::Write;
    std::fs::create_dir_all(out)?;
    for (prefix, n) in [("train", train_n), ("t10k", test_n)] {
        let find = |kind: &str| {
            let plain = from.join(format!("{prefix}-{kind}"));
            if plain.is_file() {
                plain
            } else {
                from.join(format!("{prefix}-{kind}.gz"))
            }
        };
        let images = dmpo_infer::data::read_idx_images(&find("images-idx3-ubyte"))?;
        let labels = dmpo_infer::data::read_idx_labels(&find("labels-idx1-ubyte"))?;
        let mut counts = [0usize; 256];
        let keep: Vec<usize> = (0..labels.len())
            .filter(|&i| {
                counts[labels[i]] += 1;
                counts[labels[i]] <= n
            })
            .collect();
        let (rows, cols) = (images[0].height(), images[0].width());
        let mut img_bytes = vec![0, 0, 8, 3];
        for v in [keep.len() as u32, rows, cols] {
            img_bytes.extend(v.to_be_bytes());
        }
        let mut lbl_bytes = vec![0, 0, 8, 1];
        lbl_bytes.extend((keep.len() as u32).to_be_bytes());
        for &i in &keep {
            img_bytes.extend_from_slice(images[i].as_raw());
            lbl_bytes.push(labels[i] as u8);
        }
        for (kind, bytes) in [
            ("images-idx3-ubyte", img_bytes),
            ("labels-idx1-ubyte", lbl_bytes),
        ] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&bytes)?;
            let path = out.join(format!("{prefix}-{kind}.gz"));
            dmpo_import::write_atomic(&path, &gz.finish()?)?;
        }
        tracing::info!("{prefix}: {} images", keep.len());
    }
    Ok(())
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
